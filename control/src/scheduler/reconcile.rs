//! Per instance of a task group, what its allocations call for: keep, stop a duplicate,
//! move off a draining node, or replace an ended one (a failed or lost one per the
//! group's reschedule policy: its delay, doubling with each reschedule, and its limit of
//! attempts within an interval, counted along the replacement lineage).

use std::collections::{BTreeMap, HashMap};

use windflow_protocol::{
    AllocEventKind, AllocId, Allocation, ClientStatus, DesiredStatus, HumanDuration, NodeId,
    RescheduleLimit, ReschedulePolicy, TaskGroup, Timestamp,
};
use windflow_raft::{ReplaceKind, Replacement, StopAlloc};

use super::plan::{ClusterView, Outcome};

/// An instance to place, and what it replaces.
pub(super) struct Wanted {
    pub(super) index: u32,
    pub(super) replaces: Option<Replacement>,
    /// The node it failed on: placed elsewhere when another node fits.
    pub(super) avoid: Option<NodeId>,
}

pub(super) fn stop(out: &mut Outcome, a: &Allocation, reason: String) {
    if !out.plan.stop.iter().any(|s| s.alloc == a.id) {
        out.plan.stop.push(StopAlloc {
            alloc: a.id,
            reason,
        });
    }
}

/// One group's allocations against its count: what to stop (into `out`), what to place.
pub(super) fn reconcile(
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
        } else if a.desired == DesiredStatus::Run {
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
