//! What a user asks to run.
//!
//! A job has a type, task groups with a count, and tasks with a driver and that driver's
//! config. `windflow job create NAME --cmd CMD` is shorthand for a batch job with one group
//! of one exec task: [`JobSpec::exec`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::HumanDuration;

/// How the scheduler treats a job's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    /// Runs to completion when asked.
    #[default]
    Batch,
    /// Kept running at its count.
    Service,
}

/// A job as its owner wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique in the cluster; accepted wherever a job ID is.
    pub name: String,
    /// Names are unique within a namespace.
    #[serde(default)]
    pub namespace: crate::namespace::Namespace,
    #[serde(rename = "type", default)]
    pub job_type: JobType,
    pub groups: Vec<TaskGroup>,
    /// Which node a batch run goes to.
    #[serde(default)]
    pub target: crate::batch::RunTarget,
    /// How many finished runs to keep; `None`: the cluster's retention.
    #[serde(default)]
    pub retention: Option<crate::batch::RunRetention>,
}

/// Tasks that are placed together, `count` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGroup {
    pub name: String,
    pub count: u32,
    pub tasks: Vec<TaskSpec>,
    /// Rules a node must satisfy to run this group.
    #[serde(default)]
    pub constraints: Vec<crate::alloc::Constraint>,
    #[serde(default)]
    pub placement: crate::alloc::Placement,
    /// What the node does when a task of a running allocation exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// What the scheduler does when an allocation fails or is lost.
    #[serde(default)]
    pub reschedule: ReschedulePolicy,
    /// How a new job version replaces this group's allocations (a service's).
    #[serde(default)]
    pub update: crate::deploy::UpdatePolicy,
    /// What its node checks to call an allocation healthy.
    #[serde(default)]
    pub checks: Vec<crate::deploy::HealthCheck>,
}

/// On the node: restart a service allocation's exited task up to `attempts` times within
/// `interval`, waiting `delay` before each; past that, `mode` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub interval: HumanDuration,
    pub delay: HumanDuration,
    pub mode: RestartMode,
}

/// What a node does once an allocation used up its restart attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// The allocation ends `failed`, and the scheduler may reschedule it.
    #[default]
    Fail,
    /// Wait out the rest of the interval, then start counting attempts again.
    Delay,
}

impl Default for RestartPolicy {
    /// Nomad's service default: 2 attempts in 30 minutes, 15 s apart, then fail.
    fn default() -> Self {
        RestartPolicy {
            attempts: 2,
            interval: HumanDuration::from_secs(30 * 60),
            delay: HumanDuration::from_secs(15),
            mode: RestartMode::Fail,
        }
    }
}

/// On the servers: how a failed or lost allocation is replaced on another node. The wait
/// before the n-th replacement is `delay * 2^(n-1)`, capped at `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReschedulePolicy {
    pub limit: RescheduleLimit,
    pub delay: HumanDuration,
    pub max_delay: HumanDuration,
}

/// How many replacements an allocation may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescheduleLimit {
    Unlimited,
    /// At most `attempts` within any `interval`.
    Attempts {
        attempts: u32,
        interval: HumanDuration,
    },
}

impl Default for ReschedulePolicy {
    /// Nomad's service default: unlimited, 30 s doubling up to an hour.
    fn default() -> Self {
        ReschedulePolicy {
            limit: RescheduleLimit::Unlimited,
            delay: HumanDuration::from_secs(30),
            max_delay: HumanDuration::from_secs(3600),
        }
    }
}

impl ReschedulePolicy {
    /// The wait before replacement number `n` (1-based).
    pub fn delay_before(&self, n: u32) -> std::time::Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.delay
            .0
            .checked_mul(factor)
            .unwrap_or(self.max_delay.0)
            .min(self.max_delay.0)
    }
}

impl TaskGroup {
    /// What one instance of the group holds on its node: the sum of its tasks' asks.
    pub fn resources(&self) -> crate::alloc::Resources {
        self.tasks
            .iter()
            .fold(Default::default(), |sum, t| sum.saturating_add(t.resources))
    }
}

/// One unit of work for one driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub driver: DriverConfig,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Env vars whose values are secret: sealed under the cluster key ring (the var's name
    /// bound as associated data), opened only by the dispatcher that sends the task to its
    /// agent. Never shown by the API.
    #[serde(default)]
    pub secret_env: BTreeMap<String, crate::secret::Sealed>,
    /// The whole attempt is killed after this long.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_task_resources")]
    pub resources: crate::alloc::Resources,
}

fn default_task_resources() -> crate::alloc::Resources {
    crate::alloc::Resources::TASK_DEFAULT
}

/// A task's driver and that driver's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverConfig {
    Exec(ExecConfig),
    /// Boxed: it is much larger than an exec task, and travels in every `RunTask`.
    Docker(Box<crate::docker::DockerConfig>),
}

impl DriverConfig {
    /// The driver a node must offer to run it.
    pub fn kind(&self) -> crate::node::DriverKind {
        match self {
            DriverConfig::Exec(_) => crate::node::DriverKind::Exec,
            DriverConfig::Docker(_) => crate::node::DriverKind::Docker,
        }
    }
}

impl TaskSpec {
    /// An exec task that runs `command` as it is: no workdir, env, timeout or retries.
    pub fn exec(name: impl Into<String>, command: impl Into<String>) -> Self {
        TaskSpec {
            name: name.into(),
            driver: DriverConfig::Exec(ExecConfig {
                command: command.into(),
                workdir: None,
            }),
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            timeout: None,
            retry: RetryPolicy::default(),
            resources: crate::alloc::Resources::TASK_DEFAULT,
        }
    }
}

/// A shell command (`sh -c`), run in its own process group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecConfig {
    pub command: String,
    /// The directory the command starts in; it must exist on the node.
    #[serde(default)]
    pub workdir: Option<String>,
}

/// How often a failed attempt is tried again, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Wait before the first retry; doubles for each further one, capped at
    /// [`RetryPolicy::MAX_DELAY`].
    pub delay: HumanDuration,
}

impl RetryPolicy {
    pub const MAX_DELAY: HumanDuration = HumanDuration(std::time::Duration::from_secs(60));

    /// The wait before attempt `attempt` (1-based; the first attempt never waits).
    pub fn delay_before(&self, attempt: u32) -> std::time::Duration {
        if attempt <= 1 {
            return std::time::Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 2).unwrap_or(u32::MAX);
        self.delay
            .0
            .checked_mul(factor)
            .unwrap_or(Self::MAX_DELAY.0)
            .min(Self::MAX_DELAY.0)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            delay: HumanDuration::from_secs(1),
        }
    }
}

impl JobSpec {
    /// The shorthand form: a batch job of one group with one exec task.
    pub fn exec(name: impl Into<String>, task: TaskSpec) -> Self {
        let name = name.into();
        JobSpec {
            groups: vec![TaskGroup {
                name: name.clone(),
                count: 1,
                tasks: vec![task],
                constraints: Vec::new(),
                placement: Default::default(),
                restart: Default::default(),
                reschedule: Default::default(),
                update: Default::default(),
                checks: Vec::new(),
            }],
            name,
            namespace: Default::default(),
            job_type: JobType::Batch,
            target: Default::default(),
            retention: None,
        }
    }

    /// The tasks of every group, in order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskSpec> {
        self.groups.iter().flat_map(|g| g.tasks.iter())
    }

    /// The exec task of a shorthand job, if this is one.
    pub fn single_exec(&self) -> Option<(&TaskSpec, &ExecConfig)> {
        let mut tasks = self.tasks();
        let task = tasks.next()?;
        if tasks.next().is_some() {
            return None;
        }
        match &task.driver {
            DriverConfig::Exec(cfg) => Some((task, cfg)),
            DriverConfig::Docker(_) => None,
        }
    }
}

/// A registered job: its spec and what the cluster assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: crate::ids::JobId,
    pub spec: JobSpec,
    pub created_at: crate::time::Timestamp,
    pub updated_at: crate::time::Timestamp,
    /// 1 at creation, one more for each update that changes the spec; every version is
    /// kept, so a deployment can go back to one.
    #[serde(default)]
    pub version: u64,
    /// The latest version whose deployment succeeded: where an automatic revert goes.
    #[serde(default)]
    pub stable_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let p = RetryPolicy {
            max_retries: 10,
            delay: HumanDuration::from_secs(2),
        };
        assert_eq!(p.delay_before(1), Duration::ZERO);
        assert_eq!(p.delay_before(2), Duration::from_secs(2));
        assert_eq!(p.delay_before(3), Duration::from_secs(4));
        assert_eq!(p.delay_before(40), Duration::from_secs(60));
    }
}
