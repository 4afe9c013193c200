//! The `windflow` binary: the server (`windflow server`, `windflow dev`) and the CLI.

fn main() -> std::process::ExitCode {
    // `windflow dev` runs an agent in this process, whose tasks each run under this binary
    // started again as their supervisor (`windflow supervise --spec FILE`).
    if let Some(code) = windflow_agent::supervise_if_invoked() {
        return code;
    }
    windflow_control::cli::main()
}
