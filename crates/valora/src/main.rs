fn main() -> std::process::ExitCode {
    valora::main()
}
