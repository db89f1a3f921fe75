fn main() -> std::process::ExitCode {
    serin::cli::main()
}
