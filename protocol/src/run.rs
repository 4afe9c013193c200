//! Runs of jobs and the contexts they leave behind.

use serde::{Deserialize, Serialize};

use crate::ids::{ContextId, JobId, NodeId, PipelineId, PipelineRunId, RunId};
use crate::time::{HumanDuration, Timestamp};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
    ];

    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::TimedOut
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
        }
    }
}

/// How a finished run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    TimedOut,
}

impl From<RunOutcome> for RunStatus {
    fn from(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Failed => RunStatus::Failed,
            RunOutcome::TimedOut => RunStatus::TimedOut,
        }
    }
}

/// One execution of a job, across all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub job: JobId,
    /// The job's namespace, kept so the run stays behind its wall after the job is gone.
    #[serde(default)]
    pub namespace: crate::namespace::Namespace,
    pub status: RunStatus,
    pub node: Option<NodeId>,
    pub requested_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Attempts made so far (1 + retries).
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub duration: Option<HumanDuration>,
    /// Why the run failed, when the reason is not just an exit code.
    pub error: Option<String>,
    /// The end of the last attempt's stderr, at most [`crate::STDERR_TAIL_BYTES`].
    #[serde(default)]
    pub stderr_tail: String,
    /// The pipeline run this run is a step of.
    #[serde(default)]
    pub pipeline_run: Option<PipelineRunId>,
}

/// What made a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextSource {
    Job(JobId),
    Pipeline(PipelineId),
}

/// The captured stdout of the last run of its source, and how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub id: ContextId,
    pub source: ContextSource,
    /// Empty until the first run finishes.
    pub value: String,
    /// The output was longer than [`crate::CONTEXT_MAX_BYTES`] and was cut.
    pub truncated: bool,
    pub run: Option<RunId>,
    pub node: Option<NodeId>,
    pub started_at: Option<Timestamp>,
    pub duration: Option<HumanDuration>,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub updated_at: Timestamp,
    /// For a pipeline's context: the pipeline run that made it.
    #[serde(default)]
    pub pipeline_run: Option<PipelineRunId>,
    /// For a pipeline's context: its jobs' contexts, in the pipeline's order (the steps
    /// of its last run that ran); `value` is the last one's.
    #[serde(default)]
    pub parts: Vec<ContextPart>,
}

/// One job's context inside a pipeline's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextPart {
    pub job: JobId,
    pub context: ContextId,
    pub value: String,
    pub truncated: bool,
    pub run: Option<RunId>,
    pub node: Option<NodeId>,
    pub exit_code: Option<i32>,
}

impl Context {
    /// A job's context before its first run.
    pub fn empty_for_job(job: JobId, at: Timestamp) -> Self {
        Context {
            id: ContextId::of_job(job),
            source: ContextSource::Job(job),
            value: String::new(),
            truncated: false,
            run: None,
            node: None,
            started_at: None,
            duration: None,
            exit_code: None,
            attempts: 0,
            updated_at: at,
            pipeline_run: None,
            parts: Vec::new(),
        }
    }

    /// A pipeline's context before its first run.
    pub fn empty_for_pipeline(pipeline: PipelineId, at: Timestamp) -> Self {
        Context {
            id: ContextId::of_pipeline(pipeline),
            source: ContextSource::Pipeline(pipeline),
            ..Context::empty_for_job(JobId(0), at)
        }
    }

    /// Whether `$$(…)` may use it: a context nothing has filled yet is refused.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Cuts `bytes` to at most `max` bytes at a UTF-8 boundary and says whether it cut.
pub fn capped_text(bytes: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return (text.into_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// The last `max` bytes of `bytes` as text, cut at a UTF-8 boundary.
pub fn tail_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_respects_utf8() {
        let (s, cut) = capped_text("héllo".as_bytes(), 2);
        assert_eq!((s.as_str(), cut), ("h", true));
        assert_eq!(capped_text(b"hi", 10), ("hi".to_owned(), false));
        assert_eq!(tail_text("aé".as_bytes(), 1), "");
        assert_eq!(tail_text(b"abc", 2), "bc");
    }
}
