//! A running deployment's say in reconciling a group: which instances move to the new
//! version now. Per instance, an allocation of an older version keeps serving until one
//! of the deployment's version at the same index is healthy, and only then is told to stop,
//! so a running version is never replaced by nothing. At most `max_parallel` instances are
//! in flight (new, not yet healthy); before promotion only the first `canary` instances
//! get one, and their old ones keep running next to them.

use std::collections::HashSet;

use windflow_protocol::{AllocId, Allocation, Deployment, HealthStatus, TaskGroup};

use super::plan::Outcome;
use super::reconcile::stop;

/// What the rollout decided for one group.
pub(super) struct Rolled {
    /// Old-version allocations the usual reconcile must not see: they stay (or were
    /// told to stop here), and their instance is the new version's to fill.
    pub(super) held: HashSet<AllocId>,
}

/// Decides the group's rollout step: old allocations whose new one is healthy are
/// stopped (into `out`), and instances that may get their new allocation now are left
/// to the reconcile to fill (their old ones held out of its sight).
pub(super) fn roll(
    group: &TaskGroup,
    existing: &[Allocation],
    d: &Deployment,
    out: &mut Outcome,
) -> Rolled {
    let live: Vec<&Allocation> = existing
        .iter()
        .filter(|a| a.group == group.name && a.is_live() && a.index < group.count)
        .collect();
    let is_new = |a: &Allocation| a.job_version >= d.version;
    let mut in_flight = live
        .iter()
        .filter(|a| is_new(a) && a.health.status != HealthStatus::Healthy)
        .count() as u32;
    let max_parallel = group.update.max_parallel.max(1);
    let mut held = HashSet::new();
    for index in 0..group.count {
        let (new, old): (Vec<&Allocation>, Vec<&Allocation>) = live
            .iter()
            .filter(|a| a.index == index)
            .partition(|a| is_new(a));
        if old.is_empty() {
            continue;
        }
        let canary = index < group.update.canary;
        if !d.promoted && !canary {
            // Waits for the promotion: the old version keeps this instance.
            continue;
        }
        if new.is_empty() {
            if in_flight >= max_parallel {
                continue;
            }
            in_flight += 1;
        } else if d.promoted
            && let Some(healthy) = new
                .iter()
                .find(|a| a.health.status == HealthStatus::Healthy)
        {
            for o in &old {
                stop(
                    out,
                    o,
                    format!(
                        "replaced by {} of version {} (healthy) in {}",
                        healthy.id, d.version, d.id
                    ),
                );
            }
        }
        held.extend(old.iter().map(|a| a.id));
    }
    Rolled { held }
}
