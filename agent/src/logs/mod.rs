//! Allocation logs for people: each exec task's stdout and stderr kept in rotated files
//! under `DATA_DIR/alloc-logs/AL<n>/<task>/`, every line stamped with when it was read (so
//! `--since` cuts exactly), and served to the servers on streams of their own (`serve.rs`),
//! for exec tasks from these files and for docker tasks from the engine.
//!
//! The task's supervisor writes the files (`writer.rs`), so they go on filling while no
//! agent runs, and survive agent restarts and task restarts (a restarted task appends).
//! `reader.rs` reads them back: the cut by time and count, then following new lines
//! across rotations.
//!
//! Retention: a rotated stream keeps at most [`LogPolicy::max_files`] files of at most
//! [`LogPolicy::max_file_bytes`] each. An allocation's logs outlive it on the node: they
//! are removed once the agent no longer holds the allocation (it ended and the servers
//! know) *and* nothing was written to them for [`LogPolicy::retention`].

mod reader;
mod serve;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use windflow_protocol::AllocId;
use windflow_protocol::messages::OutputStream;

pub use reader::{Cut, Follower, Record, history, render};
pub(crate) use serve::{Served, serve_requests};
pub use writer::LogWriter;

/// How much of each task stream is kept, and for how long after its allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// Files kept per stream, the one being written included (Nomad's `max_files`).
    pub max_files: u32,
    /// A file is rotated before it would grow past this (Nomad's `max_file_size`).
    pub max_file_bytes: u64,
    /// How long an ended allocation's logs stay once nothing writes to them.
    pub retention: Duration,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_files: 5,
            max_file_bytes: 10 * 1024 * 1024,
            retention: Duration::from_secs(3600),
        }
    }
}

/// Where a supervisor writes one task's logs, and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    pub dir: PathBuf,
    pub policy: LogPolicy,
}

/// `DATA_DIR/alloc-logs`: every allocation's logs, with the policy they are kept by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRoot {
    pub dir: PathBuf,
    pub policy: LogPolicy,
}

impl LogRoot {
    pub fn new(data_dir: &Path, policy: LogPolicy) -> LogRoot {
        LogRoot {
            dir: data_dir.join("alloc-logs"),
            policy,
        }
    }

    pub fn alloc_dir(&self, alloc: AllocId) -> PathBuf {
        self.dir.join(alloc.to_string())
    }

    /// The directory of one task's logs.
    pub fn task_dir(&self, alloc: AllocId, task: &str) -> PathBuf {
        self.alloc_dir(alloc).join(dir_name(task))
    }

    /// What a supervisor of this task is told.
    pub fn target(&self, alloc: AllocId, task: &str) -> LogTarget {
        LogTarget {
            dir: self.task_dir(alloc, task),
            policy: self.policy,
        }
    }

    /// Removes the logs of allocations `held` says no are held here any more, once nothing
    /// was written to them for the retention. Returns how many were removed.
    pub fn sweep(&self, held: impl Fn(AllocId) -> bool) -> usize {
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let cutoff = SystemTime::now()
            .checked_sub(self.policy.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for dir in dirs.flatten() {
            let id = dir
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<AllocId>().ok());
            if id.is_some_and(&held) {
                continue;
            }
            if newest_write(&dir.path()).is_some_and(|t| t > cutoff) {
                continue;
            }
            match std::fs::remove_dir_all(dir.path()) {
                Ok(()) => {
                    tracing::info!(dir = %dir.path().display(), "removed an ended allocation's logs");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.path().display(), error = %e, "cannot remove old logs")
                }
            }
        }
        removed
    }
}

/// The latest modification time of the files under `dir` (two levels: tasks, files).
fn newest_write(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    for task in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(task.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(t) = file.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

/// A task name as a directory name: letters, digits, `-` and `_` as they are, every other
/// byte as `%XX` (so `.`, `..` and `/` can never escape the allocation's directory).
pub fn dir_name(task: &str) -> String {
    let mut out = String::with_capacity(task.len());
    for b in task.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// The file name prefix of a stream's files: `stdout.<k>`, `stderr.<k>`.
pub(crate) fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

/// A stream's files in `dir`, oldest first, by their number.
pub(crate) fn stream_files(dir: &Path, stream: OutputStream) -> Vec<(u64, PathBuf)> {
    let prefix = format!("{}.", stream_name(stream));
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let k = name.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((k, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// The path of file `k` of a stream.
pub(crate) fn stream_file(dir: &Path, stream: OutputStream, k: u64) -> PathBuf {
    dir.join(format!("{}.{k}", stream_name(stream)))
}

#[cfg(test)]
mod tests;
