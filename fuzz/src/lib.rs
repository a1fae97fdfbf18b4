//! Entry functions of the fuzz targets in `fuzz_targets/`.
//!
//! Each function takes the fuzzer's bytes, drives one parser or decoder of
//! VALORA mesh through its public functions, and asserts properties of the
//! result beyond "does not panic". The crates' own tests include the same
//! files with `#[path]` and replay `corpus/TARGET/*` through them, so each
//! module uses only what its crate's tests can reach:
//!
//! | module | targets | replayed by |
//! |---|---|---|
//! | `gateway` | `grpc_web_body`, `bearer_token` | `crates/valora-gateway/tests/fuzz_corpus.rs` |
//! | `auth` | `api_key`, `passlib_hash` | `crates/valora-auth/tests/fuzz_corpus.rs` |
//! | `mesh` | `policy_toml` | `crates/valora-mesh/tests/fuzz_corpus.rs` |
//! | `marketplace` | `webhook_url` | `crates/valora-marketplace/tests/fuzz_corpus.rs` |

pub mod auth;
pub mod gateway;
pub mod marketplace;
pub mod mesh;
pub mod replay;
