//! The `windflow` binary: the server (`windflow server`, `windflow dev`) and the CLI.

fn main() -> std::process::ExitCode {
    windflow_control::cli::main()
}
