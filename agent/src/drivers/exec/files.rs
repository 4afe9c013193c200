//! What a supervised execution leaves on disk, in its own directory: the spec the agent
//! hands over, the supervisor's identity, each attempt's output and process group, and the
//! result. Everything but the output files is written whole (temporary file, rename), so a
//! reader after any crash sees either nothing or all of it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use windflow_protocol::messages::{OutputStream, TaskFinished};
use windflow_protocol::{HumanDuration, RunId, RunOutcome, TaskSpec, Timestamp, codec};

/// Files holding secrets (the spec carries the task's opened env) and state: owner only.
pub(crate) const PRIVATE: u32 = 0o600;

/// What the agent hands its supervisor: the task, and how much of its output to keep.
#[derive(Clone, Serialize, Deserialize)]
pub struct SuperviseSpec {
    /// The task with its secret env already opened into `env`.
    pub task: TaskSpec,
    /// The most stdout the result keeps (the head); more sets `stdout_truncated`.
    pub stdout_cap: usize,
    /// The most bytes an attempt's output file takes per stream; live output stops there,
    /// the result's head and tail are kept regardless.
    pub output_file_cap: u64,
    /// How a stop ends the task: `None` kills its group at once (a run); `Some(grace)`
    /// sends SIGTERM to the group and SIGKILL only after `grace` (an allocation's task).
    pub stop_grace: Option<HumanDuration>,
    /// Where the task's output is kept for people, rotated and time-stamped (an
    /// allocation's task); `None` for a run, whose output is its result.
    pub logs: Option<crate::logs::LogTarget>,
}

/// How a supervised execution ended, after its last attempt: a run's [`TaskFinished`]
/// without the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub outcome: RunOutcome,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub started_at: Timestamp,
    pub duration: HumanDuration,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: Vec<u8>,
    pub error: Option<String>,
}

impl ExecResult {
    /// A failure that ran nothing (or whose attempts are unknown), with its reason.
    pub fn failed(attempts: u32, started_at: Timestamp, why: String) -> ExecResult {
        ExecResult {
            outcome: RunOutcome::Failed,
            exit_code: None,
            attempts,
            started_at,
            duration: HumanDuration(std::time::Duration::ZERO),
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr_tail: Vec::new(),
            error: Some(why),
        }
    }

    /// The result of run `run`.
    pub fn into_finished(self, run: RunId) -> TaskFinished {
        TaskFinished {
            run,
            outcome: self.outcome,
            exit_code: self.exit_code,
            attempts: self.attempts,
            started_at: self.started_at,
            duration: self.duration,
            stdout: self.stdout,
            stdout_truncated: self.stdout_truncated,
            stderr_tail: self.stderr_tail,
            error: self.error,
        }
    }
}

/// The directory of one supervised execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecDir(PathBuf);

impl ExecDir {
    pub fn new(path: impl Into<PathBuf>) -> ExecDir {
        ExecDir(path.into())
    }

    /// Creates the directory (and its parents), owner only.
    pub fn create(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The spec, with secrets: the supervisor deletes it once read.
    pub fn spec(&self) -> PathBuf {
        self.0.join("spec")
    }

    /// The supervisor's [`crate::process::ProcessIdentity`], written by the supervisor.
    pub fn supervisor(&self) -> PathBuf {
        self.0.join("supervisor")
    }

    /// The supervisor's own log (its errors, never the task's output).
    pub fn supervisor_log(&self) -> PathBuf {
        self.0.join("supervisor.log")
    }

    /// The process group leader (`sh`) of an attempt, for killing what a dead supervisor
    /// left behind.
    pub fn group(&self, attempt: u32) -> PathBuf {
        self.0.join(format!("attempt-{attempt}.group"))
    }

    /// An attempt's output; it exists from the moment the attempt starts.
    pub fn output(&self, attempt: u32, stream: OutputStream) -> PathBuf {
        let name = match stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        self.0.join(format!("attempt-{attempt}.{name}"))
    }

    /// The result, present once the execution is over.
    pub fn result(&self) -> PathBuf {
        self.0.join("result")
    }

    /// Removes the directory and everything in it; an absent one is fine.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What a file written whole must survive. Every one survives the death of any process
/// (the page cache keeps it); only what must outlive the machine is flushed to disk, since
/// a machine that goes down takes the supervisors and their tasks with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Only processes dying: the spec, the identities of live processes.
    ProcessCrash,
    /// A power loss too: the result (its rename is made durable by the agent's store
    /// flush that follows when it takes the result).
    PowerLoss,
}

/// Writes `bytes` to `path` whole: a temporary file with mode `mode` in the same
/// directory, flushed to disk when `durability` asks, then renamed over `path`.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durability == Durability::PowerLoss {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes a value whole, in the protocol's encoding.
pub fn write_value<T: Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes, mode, durability)
}

/// Reads a value written by [`write_value`]; `None` when the file does not exist.
pub fn read_value<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (value, _) = codec::decode_frame(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn values_are_written_whole_with_their_mode_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let exec = ExecDir::new(dir.path().join("runs/R1"));
        exec.create().unwrap();
        let result = ExecResult::failed(2, Timestamp(5), "boom".into());
        write_value(&exec.result(), &result, PRIVATE, Durability::PowerLoss).unwrap();
        assert_eq!(read_value(&exec.result()).unwrap(), Some(result));
        let mode = fs::metadata(exec.result()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(exec.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["result"], "no temporary file is left");
        assert_eq!(read_value::<ExecResult>(&exec.spec()).unwrap(), None);
        fs::write(exec.spec(), b"\0\0\0\x05junk").unwrap();
        assert!(read_value::<ExecResult>(&exec.spec()).is_err());
        exec.remove().unwrap();
        exec.remove().unwrap();
        assert!(!exec.path().exists());
    }
}
