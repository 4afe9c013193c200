//! Turning a job and a view of the cluster into a plan: which instances to place where,
//! and which to stop. Runs on the leader; `apply` re-checks every placement, so a plan made
//! from a view that has since changed loses only the placements that no longer fit.

use std::collections::{BTreeMap, HashMap};

use windflow_protocol::{
    AllocEventKind, AllocId, Allocation, ClientStatus, EvalId, HumanDuration, Job, Node, NodeId,
    Placement, RescheduleLimit, ReschedulePolicy, Resources, TaskGroup, Timestamp,
};
use windflow_raft::{NewAlloc, Plan, ReplaceKind, Replacement, StateReader, StopAlloc, StoreError};

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

    fn draining(&self, id: NodeId) -> bool {
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

/// An instance to place, and what it replaces.
struct Wanted {
    index: u32,
    replaces: Option<Replacement>,
    /// The node it failed on: placed elsewhere when another node fits.
    avoid: Option<NodeId>,
}

/// Plans `job` (`None`: deleted) against `view`, given the job's allocations so far.
///
/// Per instance index: a live allocation stays (duplicates stop); one on a draining node
/// gets a replacement elsewhere and stops once that runs; an ended one is replaced, a
/// failed or lost one per the group's reschedule policy (its delay, doubling; its limit).
pub fn plan_job(
    job_id: windflow_protocol::JobId,
    job: Option<&Job>,
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
            stop(&mut out, a, "the job was deleted".into());
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
        let wanted = reconcile(group, existing, &by_id, view, at, &mut out);
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

fn stop(out: &mut Outcome, a: &Allocation, reason: String) {
    if !out.plan.stop.iter().any(|s| s.alloc == a.id) {
        out.plan.stop.push(StopAlloc {
            alloc: a.id,
            reason,
        });
    }
}

/// One group's allocations against its count: what to stop (into `out`), what to place.
fn reconcile(
    group: &TaskGroup,
    existing: &[Allocation],
    by_id: &HashMap<AllocId, &Allocation>,
    view: &ClusterView,
    at: Timestamp,
    out: &mut Outcome,
) -> Vec<Wanted> {
    let mut live: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
    // Ended while still wanted: failed, lost or complete, not yet replaced.
    let mut ended: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
    for a in existing.iter().filter(|a| a.group == group.name) {
        if a.is_live() {
            live.entry(a.index).or_default().push(a);
        } else if a.desired == windflow_protocol::DesiredStatus::Run {
            ended.entry(a.index).or_default().push(a);
        }
    }
    for a in live
        .range(group.count..)
        .chain(ended.range(group.count..))
        .flat_map(|(_, v)| v)
    {
        stop(out, a, "past its group's count".into());
    }
    let mut wanted = Vec::new();
    for index in 0..group.count {
        let here = live.get(&index).map(Vec::as_slice).unwrap_or_default();
        let gone = ended.get(&index).map(Vec::as_slice).unwrap_or_default();
        let (moving, staying): (Vec<&Allocation>, Vec<&Allocation>) =
            here.iter().partition(|a| view.draining(a.node));
        if let Some(keep) = staying.first() {
            for dup in &staying[1..] {
                stop(out, dup, format!("a duplicate of {}", keep.id));
            }
            for m in &moving {
                match staying.iter().find(|s| s.previous == Some(m.id)) {
                    Some(r) if r.client == ClientStatus::Running => stop(
                        out,
                        m,
                        format!("moved off its draining node: {} runs on {}", r.id, r.node),
                    ),
                    // Its replacement is not running yet: it keeps serving until then.
                    Some(_) => {}
                    None => stop(out, m, format!("a duplicate of {}", keep.id)),
                }
            }
            for g in gone {
                stop(out, g, format!("superseded by {}", keep.id));
            }
        } else if let Some(m) = moving.first() {
            for dup in &moving[1..] {
                stop(out, dup, format!("a duplicate of {}", m.id));
            }
            for g in gone {
                stop(out, g, format!("superseded by {}", m.id));
            }
            wanted.push(Wanted {
                index,
                replaces: Some(Replacement {
                    alloc: m.id,
                    kind: ReplaceKind::Migrate,
                }),
                avoid: None,
            });
        } else if let Some((last, older)) = gone.split_last() {
            for g in older {
                stop(out, g, format!("superseded by {}", last.id));
            }
            let kind = match last.client {
                ClientStatus::Complete => ReplaceKind::Renew,
                _ => match due(&group.reschedule, last, by_id, at) {
                    Due::Now => ReplaceKind::Reschedule,
                    Due::At(when, delay) => {
                        out.waiting.push(format!(
                            "group {} instance {index}: {} {}; its replacement is due at {when} (reschedule delay {})",
                            group.name,
                            last.id,
                            status(last.client),
                            HumanDuration(delay)
                        ));
                        out.wait_until = Some(out.wait_until.map_or(when, |w| w.min(when)));
                        continue;
                    }
                    Due::Never(why) => {
                        out.failed.push(format!(
                            "group {} instance {index}: {} {}; not rescheduled: {why}",
                            group.name,
                            last.id,
                            status(last.client)
                        ));
                        continue;
                    }
                },
            };
            wanted.push(Wanted {
                index,
                replaces: Some(Replacement {
                    alloc: last.id,
                    kind,
                }),
                avoid: Some(last.node),
            });
        } else {
            wanted.push(Wanted {
                index,
                replaces: None,
                avoid: None,
            });
        }
    }
    wanted
}

fn status(c: ClientStatus) -> &'static str {
    match c {
        ClientStatus::Pending => "pending",
        ClientStatus::Running => "running",
        ClientStatus::Complete => "complete",
        ClientStatus::Failed => "failed",
        ClientStatus::Lost => "lost",
    }
}

/// When a failed or lost allocation's replacement may be placed.
enum Due {
    Now,
    /// Not before then; the delay that applies.
    At(Timestamp, std::time::Duration),
    /// Never: the reschedule limit is used up (why).
    Never(String),
}

fn due(
    policy: &ReschedulePolicy,
    last: &Allocation,
    by_id: &HashMap<AllocId, &Allocation>,
    at: Timestamp,
) -> Due {
    if let RescheduleLimit::Attempts { attempts, interval } = policy.limit {
        let since = Timestamp(at.0.saturating_sub(interval.0.as_millis() as u64));
        // Along the lineage, the allocations that were themselves reschedules, recent ones.
        let mut recent = 0;
        let mut cur = Some(last);
        for _ in 0..=by_id.len() {
            let Some(a) = cur else { break };
            let prev = a.previous.and_then(|p| by_id.get(&p).copied());
            let was_reschedule = a.reschedules > prev.map_or(0, |p| p.reschedules);
            if was_reschedule && a.created_at >= since {
                recent += 1;
            }
            cur = prev;
        }
        if recent >= attempts {
            return Due::Never(format!(
                "its {attempts} reschedule attempt(s) within {interval} are used up"
            ));
        }
    }
    let delay = policy.delay_before(last.reschedules + 1);
    let ended_at = last
        .events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, AllocEventKind::Failed | AllocEventKind::Lost))
        .map_or(last.modified_at, |e| e.at);
    let when = Timestamp(ended_at.0.saturating_add(delay.as_millis() as u64));
    if at >= when {
        Due::Now
    } else {
        Due::At(when, delay)
    }
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
mod tests;
