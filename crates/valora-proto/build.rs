//! Compiles `proto/` with the protoc binary shipped by `protoc-bin-vendored`,
//! so building needs no system protoc.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "valora/auth/v1/auth.proto",
    "valora/marketplace/v1/marketplace.proto",
    "valora/marketplace/v1/webhook.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("valora_descriptor.bin"))
        .compile_with_config(config, &files, &[proto_root.clone(), well_known])?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
