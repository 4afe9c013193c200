//! Turning a job and a view of the cluster into a plan: which instances to place where,
//! and which to stop. Runs on the leader; `apply` re-checks every placement, so a plan made
//! from a view that has since changed loses only the placements that no longer fit.

use std::collections::{BTreeMap, HashMap};

use windflow_protocol::{
    AllocId, Allocation, Deployment, EvalId, Job, Node, NodeId, Placement, Resources, TaskGroup,
    Timestamp,
};
use windflow_raft::{NewAlloc, Plan, StateReader, StoreError};

use super::feasible::{Checks, Filtered};

/// How many nodes a plan describes by name when an instance fits nowhere.
const NAMED_NODES: usize = 20;

/// The nodes and what their live allocations hold, as the planner sees them; placements
/// made while planning are added as they are chosen.
pub struct ClusterView {
    nodes: Vec<Node>,
    used: HashMap<NodeId, Resources>,
    by_id: HashMap<NodeId, usize>,
}

impl ClusterView {
    pub fn new(nodes: Vec<Node>, used: HashMap<NodeId, Resources>) -> Self {
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        ClusterView { nodes, used, by_id }
    }

    pub fn read(reader: &StateReader) -> Result<Self, StoreError> {
        Ok(Self::new(
            reader.nodes()?,
            reader.node_usage()?.into_iter().collect(),
        ))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.by_id.get(&id).map(|i| &self.nodes[*i])
    }

    pub(super) fn draining(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| n.drain.is_some())
    }

    fn free(&self, node: &Node) -> Resources {
        node.resources
            .saturating_sub(self.used.get(&node.id).copied().unwrap_or_default())
    }
}

/// A plan, and what it leaves for later.
pub struct Outcome {
    pub plan: Plan,
    /// Instances that fit on no node now: per node, why.
    pub unplaced: Vec<String>,
    /// Replacements whose reschedule delay has not passed, with when they are due.
    pub waiting: Vec<String>,
    /// When the first waiting replacement is due.
    pub wait_until: Option<Timestamp>,
    /// Failed or lost instances that will not be replaced (their reschedule limit).
    pub failed: Vec<String>,
}

impl Outcome {
    pub fn is_empty(&self) -> bool {
        self.plan.place.is_empty() && self.plan.stop.is_empty()
    }
}

/// Plans `job` (`None`: deleted) against `view`, given the job's allocations so far.
///
/// Per instance index: a live allocation stays (duplicates stop); one on a draining node
/// gets a replacement elsewhere and stops once that runs; an ended one is replaced, a
/// failed or lost one per the group's reschedule policy (its delay, doubling; its limit).
/// While `rollout` (the job's running deployment) lasts, instances move to its version as
/// [`super::deploy`] decides; every placement runs the job's current version.
pub fn plan_job(
    job_id: windflow_protocol::JobId,
    job: Option<&Job>,
    rollout: Option<&Deployment>,
    existing: &[Allocation],
    view: &mut ClusterView,
    eval: EvalId,
    at: Timestamp,
) -> Outcome {
    let mut out = Outcome {
        plan: Plan {
            eval,
            stop: Vec::new(),
            place: Vec::new(),
            at,
        },
        unplaced: Vec::new(),
        waiting: Vec::new(),
        wait_until: None,
        failed: Vec::new(),
    };
    let Some(job) = job else {
        for a in existing.iter().filter(|a| a.is_live()) {
            super::reconcile::stop(&mut out, a, "the job was deleted".into());
        }
        return out;
    };
    let by_id: HashMap<AllocId, &Allocation> = existing.iter().map(|a| (a.id, a)).collect();
    // Spread a job's instances: nodes already running it score lower.
    let mut on_node: HashMap<NodeId, u32> = HashMap::new();
    for a in existing.iter().filter(|a| a.is_live()) {
        *on_node.entry(a.node).or_default() += 1;
    }
    let mut rng = XorShift::new(eval.0 ^ job_id.0.rotate_left(32));
    for group in &job.spec.groups {
        let rolled = rollout.map(|d| super::deploy::roll(group, existing, d, &mut out));
        let unheld: Vec<Allocation>;
        let seen = match &rolled {
            Some(r) if !r.held.is_empty() => {
                unheld = existing
                    .iter()
                    .filter(|a| !r.held.contains(&a.id))
                    .cloned()
                    .collect();
                &unheld[..]
            }
            _ => existing,
        };
        let wanted = super::reconcile::reconcile(group, seen, &by_id, view, at, &mut out);
        if wanted.is_empty() {
            continue;
        }
        let checks = match Checks::of(group) {
            Ok(c) => c,
            Err(e) => {
                out.unplaced.push(format!("group {}: {e}", group.name));
                continue;
            }
        };
        for (n, want) in wanted.iter().enumerate() {
            match choose(group, &checks, view, &on_node, want.avoid, &mut rng) {
                Ok(node) => {
                    let used = view.used.entry(node).or_default();
                    *used = used.saturating_add(checks.ask);
                    *on_node.entry(node).or_default() += 1;
                    out.plan.place.push(NewAlloc {
                        job: job_id,
                        namespace: job.spec.namespace.clone(),
                        group: group.name.clone(),
                        index: want.index,
                        node,
                        resources: checks.ask,
                        replaces: want.replaces,
                        job_version: job.version,
                        deployment: rollout.map(|d| d.id),
                    });
                }
                Err(why) => {
                    // Nothing changed since: the rest of the group fits nowhere either.
                    out.unplaced.push(format!(
                        "group {}: {} of {} instance(s) fit on no node: {why}",
                        group.name,
                        wanted.len() - n,
                        group.count
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// The best of a few feasible nodes, sampled from a random start: enough to place well
/// without scoring every node of a large cluster (as Nomad's scheduler does). When no node
/// is feasible, every node is looked at and the reasons are summed up.
fn choose(
    group: &TaskGroup,
    checks: &Checks,
    view: &ClusterView,
    on_node: &HashMap<NodeId, u32>,
    avoid: Option<NodeId>,
    rng: &mut XorShift,
) -> Result<NodeId, String> {
    let n = view.nodes.len();
    if n == 0 {
        return Err("no nodes are registered".into());
    }
    let wanted = (usize::BITS - n.leading_zeros()).max(2) as usize;
    let start = rng.below(n);
    let mut best: Option<(f64, NodeId)> = None;
    let mut feasible = 0;
    let mut refusals: Vec<(NodeId, Filtered)> = Vec::new();
    for i in 0..n {
        let node = &view.nodes[(start + i) % n];
        let free = view.free(node);
        match checks.check(node, &free) {
            Ok(()) => {
                let mut s = score(group.placement, node, &free, &checks.ask, on_node);
                if avoid == Some(node.id) {
                    s -= 1.0;
                }
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, node.id));
                }
                feasible += 1;
                if feasible >= wanted {
                    break;
                }
            }
            Err(why) => refusals.push((node.id, why)),
        }
    }
    best.map(|(_, id)| id).ok_or_else(|| explain(refusals))
}

/// Higher is better. Bin-packing prefers the node the placement leaves fullest; spreading
/// the emptiest. Either way a node already running the job's instances is marked down.
fn score(
    placement: Placement,
    node: &Node,
    free: &Resources,
    ask: &Resources,
    on_node: &HashMap<NodeId, u32>,
) -> f64 {
    let fill = |total: u64, free: u64, ask: u64| {
        if total == 0 {
            1.0
        } else {
            1.0 - (free.saturating_sub(ask)) as f64 / total as f64
        }
    };
    let utilization = (fill(node.resources.cpu_mhz, free.cpu_mhz, ask.cpu_mhz)
        + fill(node.resources.memory_mb, free.memory_mb, ask.memory_mb))
        / 2.0;
    let fit = match placement {
        Placement::Binpack => utilization,
        Placement::Spread => 1.0 - utilization,
    };
    fit - 0.5 * f64::from(on_node.get(&node.id).copied().unwrap_or(0))
}

/// Why no node could take an instance: counts per reason, then the first nodes by name.
fn explain(refusals: Vec<(NodeId, Filtered)>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why) in &refusals {
        *counts.entry(why.to_string()).or_default() += 1;
    }
    let mut sorted = refusals;
    sorted.sort_by_key(|(id, _)| *id);
    let named: Vec<String> = sorted
        .iter()
        .take(NAMED_NODES)
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    let summary: Vec<String> = counts
        .iter()
        .map(|(why, n)| format!("{n} node(s) {why}"))
        .collect();
    let more = sorted.len().saturating_sub(NAMED_NODES);
    format!(
        "{} [{}{}]",
        summary.join(", "),
        named.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

/// A small fast generator for where to start sampling; the planner's randomness, never
/// `apply`'s.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;
