//! Drivers turn a task into something running on this host and back into a result.

use tokio::sync::mpsc;
use windflow_protocol::messages::{AgentMessage, TaskFinished};
use windflow_protocol::{DriverConfig, DriverKind, RunId, TaskSpec};

pub mod exec;

/// The drivers this agent offers, as announced in its Hello.
pub fn available() -> Vec<DriverKind> {
    vec![DriverKind::Exec]
}

/// Runs a task with the driver its config names, to completion with its retries.
pub async fn run_task(
    run: RunId,
    task: &TaskSpec,
    output: mpsc::Sender<AgentMessage>,
) -> TaskFinished {
    match &task.driver {
        DriverConfig::Exec(_) => exec::run_exec(run, task, output).await,
    }
}
