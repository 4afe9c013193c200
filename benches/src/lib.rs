//! Windflow's benches live in `benches/benches/`; this library holds what they share.

use std::collections::BTreeMap;

use windflow_protocol::messages::{
    AgentMessage, OutputChunk, OutputStream, RunTask, ServerMessage,
};
use windflow_protocol::{
    DriverConfig, ExecConfig, HumanDuration, JobId, RetryPolicy, RunId, TaskSpec,
};

/// A run-task message as the dispatcher sends it.
pub fn sample_run_task() -> ServerMessage {
    ServerMessage::RunTask(RunTask {
        run: RunId(123_456),
        job: JobId(42),
        task: TaskSpec {
            name: "backup".into(),
            driver: DriverConfig::Exec(ExecConfig {
                command: "pg_dump --format=custom shop > /srv/backup/shop.dump".into(),
                workdir: Some("/srv".into()),
            }),
            env: BTreeMap::from([
                ("PGHOST".into(), "db.internal".into()),
                ("PGUSER".into(), "backup".into()),
            ]),
            timeout: Some(HumanDuration::from_secs(600)),
            retry: RetryPolicy {
                max_retries: 3,
                delay: HumanDuration::from_secs(5),
            },
        },
    })
}

/// An output chunk of `len` bytes.
pub fn sample_output(len: usize) -> AgentMessage {
    AgentMessage::Output(OutputChunk {
        run: RunId(123_456),
        attempt: 1,
        stream: OutputStream::Stdout,
        data: vec![b'x'; len],
    })
}
