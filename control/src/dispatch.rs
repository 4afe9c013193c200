//! The leader's dispatcher: sends pending runs to connected agents that can run them,
//! on nodes that take new work (ready, eligible, not draining, not revoked): runs already
//! running on a node that goes down or drains are left to finish.
//!
//! A run is first marked dispatched through raft (so only one leader ever places it), then
//! sent to the agent. If the send is lost, the agent gets it again when its session resumes.
//!
//! Where a run may go is its job's [`RunTarget`], one small function per kind ([`choose`]).
//! A command's `$$(NAME)` references are resolved just before (see [`crate::refs`]); one
//! that cannot be fails the run (`RunRefused`) without it reaching any node.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::messages::{RunTask, ServerMessage};
use windflow_protocol::{
    Job, JobId, Namespace, Node, NodeId, Resources, RunStatus, RunTarget, TaskSpec, Timestamp,
};
use windflow_raft::{ApplyError, Command, RaftNode, StoreError, WriteError};

use crate::gateway::Sessions;
use crate::secrets::Secrets;

/// Re-check pending runs at least this often, even without a change to wake us.
const IDLE_RECHECK: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

#[derive(Clone)]
pub struct Dispatcher {
    raft: RaftNode,
    sessions: Sessions,
    /// Opens the task's secret env for its agent.
    secrets: std::sync::Arc<Secrets>,
}

impl Dispatcher {
    pub fn new(raft: RaftNode, sessions: Sessions, secrets: std::sync::Arc<Secrets>) -> Self {
        Dispatcher {
            raft,
            sessions,
            secrets,
        }
    }

    pub(crate) fn raft(&self) -> &RaftNode {
        &self.raft
    }

    /// Dispatches until `stop`: after each change to the store or to the connected agents,
    /// backing off (capped) while dispatch fails.
    pub async fn run(self, stop: CancellationToken) {
        let mut applied = self.raft.reader().subscribe();
        let mut agents = self.sessions.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.dispatch_pending().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    IDLE_RECHECK
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "dispatch failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = applied.changed() => {}
                _ = agents.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the pending runs, oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn dispatch_pending(&self) -> Result<(), DispatchError> {
        let reader = self.raft.reader();
        let pending = reader.runs_with_status(RunStatus::Pending)?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut view = self.view()?;
        let mut placed = Vec::new();
        for run in pending {
            let Some(job) = reader.job(run.job)? else {
                continue;
            };
            let (node, task) = match self.choose_for(&mut view, &job, &run.namespace)? {
                Choice::Place { node, task } => (node, task),
                Choice::Wait => continue,
                Choice::Refuse(why) => {
                    self.refuse(run.id, why).await?;
                    continue;
                }
            };
            let Some(task) = self.reveal(job.id, &task).await else {
                continue;
            };
            placed.push((
                node,
                RunTask {
                    run: run.id,
                    job: job.id,
                    task,
                },
            ));
        }
        self.place(placed).await
    }

    /// What the nodes are doing now, for one pass of placements.
    pub(crate) fn view(&self) -> Result<View, StoreError> {
        let reader = self.raft.reader();
        let mut view = View::default();
        for run in reader.runs_with_status(RunStatus::Running)? {
            if let Some(node) = run.node {
                *view.load.entry(node).or_default() += 1;
            }
        }
        // Nodes that may take new runs now.
        view.open = reader
            .nodes()?
            .into_iter()
            .filter(|n| crate::scheduler::feasible::unschedulable(n).is_none())
            .map(|n| (n.id, n))
            .collect();
        Ok(view)
    }

    /// Where a run of `job` in namespace `ns` goes now, with its command's references
    /// resolved. The chosen node is counted in `view` at once, so the next choices of the
    /// pass know of this run.
    pub(crate) fn choose_for(
        &self,
        view: &mut View,
        job: &Job,
        ns: &Namespace,
    ) -> Result<Choice, DispatchError> {
        let reader = self.raft.reader();
        let Some(task) = job.spec.tasks().next() else {
            return Ok(Choice::Wait);
        };
        let driver = task.driver.kind();
        let task = match crate::refs::resolve_task(reader, ns, task) {
            Ok(task) => task,
            Err(crate::refs::RefError::Store(e)) => return Err(e.into()),
            Err(refused) => return Ok(Choice::Refuse(refused.to_string())),
        };
        if job.spec.target == RunTarget::LeastLoaded && view.used.is_none() {
            view.used = Some(used_by_node(reader)?);
        }
        // No agent can take it now; a joining agent wakes us.
        let Some(node) = choose(&job.spec.target, &self.sessions.offering(driver), view) else {
            return Ok(Choice::Wait);
        };
        *view.load.entry(node).or_default() += 1;
        if let Some(used) = view.used.as_mut() {
            let u = used.entry(node).or_default();
            *u = u.saturating_add(task.resources);
        }
        Ok(Choice::Place { node, task })
    }

    /// The task with its secret env opened for the agent; `None` (logged) when this
    /// server cannot open it, and the run stays pending rather than run without them.
    pub(crate) async fn reveal(&self, job: JobId, task: &TaskSpec) -> Option<TaskSpec> {
        match self.secrets.reveal(task).await {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::error!(%job, error = %e, "cannot open the task's secret env; its run stays pending");
                None
            }
        }
    }

    /// Sends a run whose placement is committed to its node's agent.
    pub(crate) async fn send(&self, node: NodeId, task: RunTask) {
        let run = task.run;
        tracing::debug!(%run, job = %task.job, %node, "dispatched");
        if !self.sessions.send(node, ServerMessage::RunTask(task)).await {
            tracing::warn!(%run, %node, "agent left before the run reached it; it gets the run when it reconnects");
        }
    }

    /// Marks the runs dispatched, all proposed at once (raft batches them into shared
    /// entries: a thousand runs due in the same second are one pass, not a thousand
    /// commits in a row), and sends each to its agent once its mark is committed.
    async fn place(&self, placed: Vec<(NodeId, RunTask)>) -> Result<(), DispatchError> {
        let mut writes = tokio::task::JoinSet::new();
        for (node, task) in placed {
            let raft = self.raft.clone();
            writes.spawn(async move {
                let written = raft
                    .write(Command::RunDispatched {
                        run: task.run,
                        node,
                        at: Timestamp::now(),
                    })
                    .await;
                (node, task, written)
            });
        }
        let mut failed = None;
        while let Some(done) = writes.join_next().await {
            let Ok((node, task, written)) = done else {
                continue;
            };
            match written {
                Ok(_) => {}
                // Already placed (an earlier leader, or a run finished meanwhile).
                Err(WriteError::Rejected(
                    ApplyError::InvalidTransition { .. } | ApplyError::NotFound { .. },
                )) => continue,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            }
            self.send(node, task).await;
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Dispatcher {
    /// Fails a pending run that cannot start, saying why.
    async fn refuse(
        &self,
        run: windflow_protocol::RunId,
        error: String,
    ) -> Result<(), DispatchError> {
        tracing::info!(%run, %error, "run refused before it started");
        match self
            .raft
            .write(Command::RunRefused {
                run,
                error,
                at: Timestamp::now(),
            })
            .await
        {
            Ok(_)
            | Err(WriteError::Rejected(
                ApplyError::InvalidTransition { .. } | ApplyError::NotFound { .. },
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Where one run goes, as [`Dispatcher::choose_for`] decides.
pub(crate) enum Choice {
    /// To this node, with this task (references resolved, secrets still sealed).
    Place { node: NodeId, task: TaskSpec },
    /// Not now: no connected agent can take it.
    Wait,
    /// Never as it stands: a `$$(NAME)` reference cannot be resolved.
    Refuse(String),
}

/// What the dispatcher knows of the nodes during one pass.
#[derive(Default)]
pub(crate) struct View {
    /// Nodes open to new work.
    open: HashMap<NodeId, Node>,
    /// Runs in flight per node.
    load: HashMap<NodeId, usize>,
    /// What allocations and running runs hold per node; read only when a run needs it.
    used: Option<HashMap<NodeId, Resources>>,
}

/// What each node's live allocations and running runs hold.
fn used_by_node(
    reader: &windflow_raft::StateReader,
) -> Result<HashMap<NodeId, Resources>, StoreError> {
    let mut used: HashMap<NodeId, Resources> = reader.node_usage()?.into_iter().collect();
    let mut jobs = HashMap::new();
    for run in reader.runs_with_status(RunStatus::Running)? {
        let Some(node) = run.node else { continue };
        let res = match jobs.entry(run.job) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => *e.insert(
                reader
                    .job(run.job)?
                    .and_then(|j| j.spec.tasks().next().map(|t| t.resources))
                    .unwrap_or_default(),
            ),
        };
        let u = used.entry(node).or_default();
        *u = u.saturating_add(res);
    }
    Ok(used)
}

/// The node a run of a job with `target` goes to, among the `connected` agents' nodes.
fn choose(target: &RunTarget, connected: &[NodeId], view: &View) -> Option<NodeId> {
    let open = connected
        .iter()
        .copied()
        .filter(|n| view.open.contains_key(n));
    match target {
        RunTarget::Any => fewest_runs(open, &view.load),
        RunTarget::Node(want) => named_node(open, *want),
        RunTarget::Label { key, value } => fewest_runs(
            open.filter(|n| view.open[n].labels.get(key) == Some(value)),
            &view.load,
        ),
        RunTarget::LeastLoaded => least_loaded(open, view),
    }
}

/// The node with the fewest runs in flight (then the lowest ID).
fn fewest_runs(
    nodes: impl Iterator<Item = NodeId>,
    load: &HashMap<NodeId, usize>,
) -> Option<NodeId> {
    nodes.min_by_key(|n| (load.get(n).copied().unwrap_or(0), *n))
}

/// That node, if it is connected and open.
fn named_node(mut nodes: impl Iterator<Item = NodeId>, want: NodeId) -> Option<NodeId> {
    nodes.find(|n| *n == want)
}

/// The node with the smallest share (per mille) of its CPU or memory in use, whichever is
/// higher; then the fewest runs.
fn least_loaded(nodes: impl Iterator<Item = NodeId>, view: &View) -> Option<NodeId> {
    // A node that reports no capacity counts as full.
    let share = |used: u64, cap: u64| {
        used.saturating_mul(1000)
            .checked_div(cap)
            .unwrap_or(u64::MAX)
    };
    nodes.min_by_key(|n| {
        let cap = view.open[n].resources;
        let used = view
            .used
            .as_ref()
            .and_then(|u| u.get(n).copied())
            .unwrap_or_default();
        let busiest = share(used.cpu_mhz, cap.cpu_mhz).max(share(used.memory_mb, cap.memory_mb));
        (busiest, view.load.get(n).copied().unwrap_or(0), *n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_protocol::DriverKind;

    fn node(id: u64, cpu: u64, labels: &[(&str, &str)]) -> (NodeId, Node) {
        let n = Node {
            id: NodeId(id),
            name: format!("n{id}"),
            drivers: vec![DriverKind::Exec],
            registered_at: Timestamp(0),
            last_seen_at: None,
            agent_version: None,
            resources: Resources {
                cpu_mhz: cpu,
                memory_mb: 1000,
                disk_mb: 0,
            },
            attributes: Default::default(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            revoked_at: None,
            status: Default::default(),
            eligibility: Default::default(),
            drain: None,
        };
        (n.id, n)
    }

    /// Nodes 2 and 3 open (node 1 is connected but closed: down, draining or ineligible).
    fn view() -> View {
        View {
            open: HashMap::from([
                node(2, 1000, &[("zone", "eu")]),
                node(3, 4000, &[("zone", "us")]),
            ]),
            load: HashMap::from([(NodeId(2), 4), (NodeId(3), 1)]),
            used: Some(HashMap::from([
                (
                    NodeId(2),
                    Resources {
                        cpu_mhz: 100,
                        memory_mb: 0,
                        disk_mb: 0,
                    },
                ),
                (
                    NodeId(3),
                    Resources {
                        cpu_mhz: 2000,
                        memory_mb: 0,
                        disk_mb: 0,
                    },
                ),
            ])),
        }
    }

    const CONNECTED: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    #[test]
    fn any_goes_to_the_open_node_with_fewest_runs() {
        let v = view();
        assert_eq!(choose(&RunTarget::Any, &CONNECTED, &v), Some(NodeId(3)));
        assert_eq!(
            choose(&RunTarget::Any, &CONNECTED[..2], &v),
            Some(NodeId(2))
        );
        assert_eq!(choose(&RunTarget::Any, &CONNECTED[..1], &v), None);
    }

    #[test]
    fn a_named_node_or_nothing() {
        let v = view();
        assert_eq!(
            choose(&RunTarget::Node(NodeId(2)), &CONNECTED, &v),
            Some(NodeId(2))
        );
        // Closed, or not connected: the run waits.
        assert_eq!(choose(&RunTarget::Node(NodeId(1)), &CONNECTED, &v), None);
        assert_eq!(
            choose(&RunTarget::Node(NodeId(3)), &CONNECTED[..2], &v),
            None
        );
    }

    #[test]
    fn labels_filter_and_least_loaded_weighs_capacity() {
        let v = view();
        let eu = RunTarget::Label {
            key: "zone".into(),
            value: "eu".into(),
        };
        assert_eq!(choose(&eu, &CONNECTED, &v), Some(NodeId(2)));
        let mars = RunTarget::Label {
            key: "zone".into(),
            value: "mars".into(),
        };
        assert_eq!(choose(&mars, &CONNECTED, &v), None);
        // Node 2 runs more but uses 10% of its CPU; node 3 uses 50%.
        assert_eq!(
            choose(&RunTarget::LeastLoaded, &CONNECTED, &v),
            Some(NodeId(2))
        );
    }
}
