//! The supervisor: the agent's own binary started again as `<binary> supervise --spec FILE`,
//! one per execution. It leaves the agent's session first (setsid), so the agent's death,
//! its terminal going away and signals to its process group do not reach it; then it runs
//! the task's attempts with their retries and timeouts and writes the result, whole, into
//! the execution's directory. The agent only watches that directory, so it may stop and
//! start again while the task runs. SIGTERM or SIGINT to the supervisor stops the task
//! (its process group killed) and still records a result.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use windflow_protocol::{DriverConfig, HumanDuration, RunOutcome, Timestamp};

use super::attempt::{Attempt, AttemptPlan, run_attempt};
use super::files::{
    Durability, ExecDir, ExecResult, PRIVATE, SuperviseSpec, read_value, write_value,
};
use crate::process::ProcessIdentity;

/// The hidden subcommand both binaries (`windflow-agent`, and `windflow` for `windflow dev`)
/// answer to before parsing anything else.
pub const SUBCOMMAND: &str = "supervise";
/// `supervise --spec-from-stdin`: a warm supervisor, started before there is a task for
/// it; it reads the spec's path from its stdin (one line), and exits quietly on EOF.
pub const WAIT_FOR_SPEC: &str = "--spec-from-stdin";

/// Where the supervisor's spec comes from.
enum SpecFrom {
    /// `--spec FILE`; stderr is already the execution's log.
    Argument(PathBuf),
    /// `--spec-from-stdin`; the log is opened once the path is known.
    Stdin,
}

/// Runs the supervisor when this process was started as one (`<binary> supervise --spec
/// FILE`), and returns its exit code; `None` for any other command line. Both binaries call
/// this first thing in `main`, outside any async runtime.
pub fn main_if_invoked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SUBCOMMAND {
        return None;
    }
    Some(match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(spec), None) if flag == "--spec" => {
            supervise_main(SpecFrom::Argument(PathBuf::from(spec)))
        }
        (Some(flag), None, None) if flag == WAIT_FOR_SPEC => supervise_main(SpecFrom::Stdin),
        _ => {
            eprintln!(
                "usage: {SUBCOMMAND} --spec FILE (the agent starts this; not for use by hand)"
            );
            ExitCode::from(2)
        }
    })
}

fn supervise_main(from: SpecFrom) -> ExitCode {
    // Out of the agent's session and process group before anything else.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("supervisor: setsid failed: {e}");
    }
    let (spec, log) = match from {
        SpecFrom::Argument(spec) => (spec, BoxMakeWriter::new(io::stderr)),
        SpecFrom::Stdin => {
            let mut line = String::new();
            match io::stdin().read_line(&mut line) {
                // The agent let its warm supervisor go (it stopped): nothing to run.
                Ok(0) | Err(_) => return ExitCode::SUCCESS,
                Ok(_) => {}
            }
            let spec = PathBuf::from(line.trim_end_matches('\n'));
            let log = spec
                .parent()
                .map(|d| ExecDir::new(d).supervisor_log())
                .and_then(|p| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .ok()
                });
            match log {
                Some(file) => (spec, BoxMakeWriter::new(std::sync::Mutex::new(file))),
                None => (spec, BoxMakeWriter::new(io::sink)),
            }
        }
    };
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(log)
        .init();
    let Some(dir) = spec.parent().map(ExecDir::new) else {
        tracing::error!(spec = %spec.display(), "the spec file has no directory");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the supervisor's runtime");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = tokio::spawn(stop_on_signals(stop.clone()));
        let r = supervise(&dir, &spec, &stop).await;
        signals.abort();
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(dir = %dir.path().display(), error = %e, "cannot record the task's result");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `stop` on SIGTERM or SIGINT.
async fn stop_on_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM; the task can only be killed");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the task"),
        _ = int.recv() => tracing::info!("SIGINT: stopping the task"),
    }
    stop.cancel();
}

/// The supervisor's work, in this process: say who it is, take the spec (and delete it:
/// it holds the task's secrets), run, write the result.
pub(crate) async fn supervise(
    dir: &ExecDir,
    spec_path: &Path,
    stop: &CancellationToken,
) -> io::Result<()> {
    let started_at = Timestamp::now();
    if let Some(me) = ProcessIdentity::current() {
        write_value(&dir.supervisor(), &me, PRIVATE, Durability::ProcessCrash)?;
    }
    let spec = read_value::<SuperviseSpec>(spec_path);
    let _ = std::fs::remove_file(spec_path);
    let result = match spec {
        Ok(Some(spec)) => run_all(dir, &spec, stop).await,
        Ok(None) => ExecResult::failed(0, started_at, "the task's spec file is missing".into()),
        Err(e) => ExecResult::failed(0, started_at, format!("cannot read the task's spec: {e}")),
    };
    write_value(&dir.result(), &result, PRIVATE, Durability::PowerLoss)
}

/// Runs an exec task's attempts with their retries; the result of the last one.
pub(crate) async fn run_all(
    dir: &ExecDir,
    spec: &SuperviseSpec,
    stop: &CancellationToken,
) -> ExecResult {
    let task = &spec.task;
    let started_at = Timestamp::now();
    let DriverConfig::Exec(cfg) = &task.driver else {
        return ExecResult::failed(
            0,
            started_at,
            format!(
                "the exec supervisor got a {} task",
                task.driver.kind().as_str()
            ),
        );
    };
    let clock = Instant::now();
    let finish = |attempts: u32, a: Attempt| ExecResult {
        outcome: a.outcome,
        exit_code: a.exit_code,
        attempts,
        started_at,
        duration: HumanDuration(clock.elapsed()),
        stdout: a.stdout,
        stdout_truncated: a.stdout_truncated,
        stderr_tail: a.stderr_tail,
        error: a.error,
    };
    // A missing directory is a mistake in the job, not a passing failure: no retries.
    if let Some(workdir) = &cfg.workdir {
        let problem = match std::fs::metadata(workdir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!("workdir `{workdir}` is not a directory")),
            Err(_) => Some(format!("workdir `{workdir}` does not exist")),
        };
        if let Some(why) = problem {
            return finish(1, Attempt::failed(why));
        }
    }
    let plan = AttemptPlan {
        cfg,
        env: &task.env,
        timeout: task.timeout,
        stdout_cap: spec.stdout_cap,
        output_file_cap: spec.output_file_cap,
        stop_grace: spec.stop_grace.map(|g| g.0),
        logs: spec.logs.as_ref(),
    };
    let attempts = task.retry.max_retries.saturating_add(1);
    let mut last = Attempt::failed("no attempt was made".into());
    for attempt in 1..=attempts {
        let delay = task.retry.delay_before(attempt);
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => {
                    last.error = Some(format!("stopped before attempt {attempt}"));
                    return finish(attempt - 1, last);
                }
            }
        }
        let span = tracing::info_span!("exec", attempt);
        last = tracing::Instrument::instrument(run_attempt(dir, attempt, &plan, stop), span).await;
        tracing::info!(attempt, outcome = ?last.outcome, exit_code = ?last.exit_code, "attempt ended");
        if last.outcome == RunOutcome::Succeeded || last.stopped {
            return finish(attempt, last);
        }
    }
    finish(attempts, last)
}
