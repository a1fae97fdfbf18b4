#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| valora_fuzz::mesh::policy_toml(data));
