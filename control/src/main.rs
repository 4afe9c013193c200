//! The `windflow` binary: the server (`windflow server`, `windflow dev`) and the CLI.

/// sled copies a page on most writes; under glibc's malloc that churn was a quarter of the
/// apply path's CPU (BENCHMARKS.md, "Placement throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // `windflow dev` runs an agent in this process, whose tasks each run under this binary
    // started again as their supervisor (`windflow supervise --spec FILE`).
    if let Some(code) = windflow_agent::supervise_if_invoked() {
        return code;
    }
    windflow_control::cli::main()
}
