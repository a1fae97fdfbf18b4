//! The `valora` command under another name, so that this package's tests
//! can start it as a real process (`CARGO_BIN_EXE_valora-e2e-node`).

fn main() -> std::process::ExitCode {
    valora::main()
}
