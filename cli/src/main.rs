//! The `nexus` binary; everything is in the `nexus_cli` library.

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
