//! The docker driver: tasks as containers of the local Docker Engine, through its API
//! (bollard, over the engine's unix socket).
//!
//! The engine, not the agent, keeps containers running, so an agent restart loses
//! nothing: every container carries labels naming who it belongs to
//! ([`Owner::labels`]), and a restarted agent finds its containers again by those labels
//! instead of creating them anew.
//!
//! - `client.rs`: the connection (the API version is negotiated once) and the fingerprint;
//! - `spec.rs`: a task → the container to create (env, ports, mounts, limits, labels);
//! - `image.rs`: pulling an image the engine lacks, with progress;
//! - `container.rs`: create, start, stop (grace, then kill), wait, find by label, ports;
//! - `network.rs`: the per-agent networks a stack's containers share;
//! - `logs.rs`: a container's output (stdout head and stderr tail, live chunks);
//! - `run.rs`: a batch run of a docker task (attempts, retries, timeout);
//! - `stats.rs`: one sample of a container's resource use.

mod client;
mod container;
mod image;
mod logs;
mod network;
mod run;
mod spec;
mod stats;

use windflow_protocol::{AllocId, JobId, RunId};

pub use client::DockerDriver;
pub use container::{Container, ContainerExit, Found};
pub use logs::{LogLine, LogQuery};
pub use run::{RunOwner, resume as resume_run, run_to_end};

/// What went wrong talking to the engine, said for people (these end up in events and
/// run errors).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the Docker Engine cannot be reached: {0}")]
    Unreachable(String),
    #[error("image `{image}` is not on this node and cannot be pulled: {why}")]
    Pull { image: String, why: String },
    #[error("the Docker Engine refused to {what}: {why}")]
    Engine { what: &'static str, why: String },
}

impl DockerError {
    fn engine(what: &'static str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        move |e| DockerError::Engine {
            what,
            why: describe(&e),
        }
    }
}

/// An engine error without bollard's framing: the engine's own message when it sent one.
fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Whether an engine error is a 404 (no such container or image).
fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The label naming the agent (its data dir) a container belongs to: two agents, or two
/// clusters, on one engine never take each other's containers.
pub const LABEL_AGENT: &str = "windflow.agent";
pub const LABEL_ALLOC: &str = "windflow.alloc";
pub const LABEL_JOB: &str = "windflow.job";
pub const LABEL_TASK: &str = "windflow.task";
/// Set on the containers of batch runs (with [`LABEL_ATTEMPT`]).
pub const LABEL_RUN: &str = "windflow.run";
pub const LABEL_ATTEMPT: &str = "windflow.attempt";

/// Whom a container belongs to; its labels say it, and finding it again uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A task of an allocation.
    Alloc {
        alloc: AllocId,
        job: JobId,
        task: String,
    },
    /// An attempt of a batch run.
    Run {
        run: RunId,
        job: JobId,
        task: String,
        attempt: u32,
    },
}

impl Owner {
    /// The labels the container carries (besides the agent's own, added by the driver).
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        match self {
            Owner::Alloc { alloc, job, task } => vec![
                (LABEL_ALLOC, alloc.to_string()),
                (LABEL_JOB, job.to_string()),
                (LABEL_TASK, task.clone()),
            ],
            Owner::Run {
                run,
                job,
                task,
                attempt,
            } => vec![
                (LABEL_RUN, run.to_string()),
                (LABEL_JOB, job.to_string()),
                (LABEL_TASK, task.clone()),
                (LABEL_ATTEMPT, attempt.to_string()),
            ],
        }
    }

    /// The labels that find the containers of task `task` of the same job, whatever
    /// their allocation (what a stack's `depends_on` waits for).
    pub fn sibling_selector(&self, task: &str) -> Vec<(&'static str, String)> {
        let job = match self {
            Owner::Alloc { job, .. } | Owner::Run { job, .. } => job,
        };
        vec![(LABEL_JOB, job.to_string()), (LABEL_TASK, task.to_owned())]
    }

    /// The labels that find it again: its allocation and task, or its run.
    pub fn selector(&self) -> Vec<(&'static str, String)> {
        match self {
            Owner::Alloc { alloc, task, .. } => {
                vec![(LABEL_ALLOC, alloc.to_string()), (LABEL_TASK, task.clone())]
            }
            Owner::Run { run, .. } => vec![(LABEL_RUN, run.to_string())],
        }
    }

    /// The container's name, for people (`docker ps`): unique per agent and owner.
    pub fn container_name(&self, agent: &str) -> String {
        match self {
            Owner::Alloc { alloc, task, .. } => format!("wf-{alloc}-{task}-{agent}"),
            Owner::Run { run, attempt, .. } => format!("wf-{run}-{attempt}-{agent}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_labelled_and_found_by_what_identifies_them() {
        let alloc = Owner::Alloc {
            alloc: AllocId(12),
            job: JobId(3),
            task: "web".into(),
        };
        assert_eq!(
            alloc.selector(),
            [
                (LABEL_ALLOC, "AL12".to_owned()),
                (LABEL_TASK, "web".to_owned())
            ]
        );
        assert!(alloc.labels().contains(&(LABEL_JOB, "J3".to_owned())));
        assert_eq!(alloc.container_name("a1"), "wf-AL12-web-a1");
        let run = Owner::Run {
            run: RunId(7),
            job: JobId(3),
            task: "t".into(),
            attempt: 2,
        };
        // Every attempt of a run is found by the run alone.
        assert_eq!(run.selector(), [(LABEL_RUN, "R7".to_owned())]);
        assert!(run.labels().contains(&(LABEL_ATTEMPT, "2".to_owned())));
        assert_eq!(run.container_name("a1"), "wf-R7-2-a1");
    }
}
