//! Allocations and evaluations in the state machine. A plan's placements are re-checked
//! here against each node's free resources (optimistic concurrency): two plans made from
//! the same snapshot can never overcommit a node, because the later one's placements that
//! no longer fit are rejected, deterministically, on every server.

use windflow_protocol::run::capped_text;
use windflow_protocol::{
    ALLOC_EVENTS_MAX, AllocEventKind, AllocId, Allocation, ClientStatus, DesiredStatus,
    Eligibility, EvalId, EvalStatus, EvalTrigger, Evaluation, JobId, Node, NodeId, NodeStatus,
    Resources, Timestamp,
};

use crate::StoreError;
use crate::command::{
    AllocReport, Applied, ApplyError, NewAlloc, Plan, PlanResult, Rejection, ReplaceKind, Response,
};
use crate::state::{Pending, key};

/// What a node's live allocations hold.
pub(crate) fn used(p: &Pending<'_>, node: NodeId) -> Result<Resources, StoreError> {
    Ok(p.get_as(&key::id(key::NODE_USED, node.0), "node usage")?
        .unwrap_or_default())
}

fn set_used(p: &mut Pending<'_>, node: NodeId, used: Resources) -> Result<(), StoreError> {
    p.put_as(key::id(key::NODE_USED, node.0), &used)
}

/// Stores an allocation, keeping its node's usage in step with whether it is live, and
/// stamping the next modify index (the one place allocations are written, so every change
/// gets one). The change indexes move with it: each allocation is listed once, at its
/// latest index. Returns the index it was given.
pub(crate) fn put_alloc(
    p: &mut Pending<'_>,
    alloc: &Allocation,
    was_live: bool,
) -> Result<u64, StoreError> {
    let live = alloc.is_live();
    if live != was_live {
        let before = used(p, alloc.node)?;
        let after = if live {
            before.saturating_add(alloc.resources)
        } else {
            before.saturating_sub(alloc.resources)
        };
        set_used(p, alloc.node, after)?;
    }
    // From the stored copy, not the caller's: a stale index entry would outlive the change.
    if let Some(old) = self::alloc(p, alloc.id)?.map(|a| a.modify_index)
        && old > 0
    {
        p.del(key::pair(key::NODE_ALLOC_CHANGE, alloc.node.0, old));
    }
    let index = p.next(key::NEXT_ALLOC_INDEX)?;
    let mut stored = alloc.clone();
    stored.modify_index = index;
    p.alloc_changes.push((index, alloc.node));
    p.put(
        key::pair(key::NODE_ALLOC_CHANGE, alloc.node.0, index),
        alloc.id.0.to_be_bytes().to_vec(),
    );
    p.put_as(key::id(key::ALLOC, alloc.id.0), &stored)?;
    Ok(index)
}

pub(crate) fn alloc(p: &Pending<'_>, id: AllocId) -> Result<Option<Allocation>, StoreError> {
    p.get_as(&key::id(key::ALLOC, id.0), "allocation")
}

/// The IDs under an index prefix (`joballoc/<job>`), read from the
/// committed tree: only commands that go alone in their entry may call it.
pub(crate) fn ids_under(p: &Pending<'_>, prefix: Vec<u8>) -> Vec<AllocId> {
    p.tree()
        .scan_prefix(prefix)
        .keys()
        .filter_map(|k| k.ok())
        .filter_map(|k| <[u8; 8]>::try_from(&k[k.len().saturating_sub(8)..]).ok())
        .map(|b| AllocId(u64::from_be_bytes(b)))
        .collect()
}

/// A node's allocations (each once, in the order they last changed), read from the
/// committed tree like [`ids_under`]: only commands that go alone in their entry may call it.
pub(crate) fn ids_on_node(p: &Pending<'_>, node: NodeId) -> Vec<AllocId> {
    p.tree()
        .scan_prefix(key::id(key::NODE_ALLOC_CHANGE, node.0))
        .values()
        .filter_map(|v| v.ok())
        .filter_map(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(|b| AllocId(u64::from_be_bytes(b)))
        .collect()
}

/// Tells a live allocation to stop, saying why in its events.
pub(crate) fn request_stop(
    p: &mut Pending<'_>,
    mut a: Allocation,
    at: Timestamp,
    reason: &str,
) -> Result<(), StoreError> {
    if a.desired == DesiredStatus::Stop {
        return Ok(());
    }
    let was_live = a.is_live();
    a.desired = DesiredStatus::Stop;
    a.modified_at = at;
    a.push_event(at, AllocEventKind::StopRequested, reason);
    put_alloc(p, &a, was_live).map(|_| ())
}

/// `Command::CreateEvaluation`, and a service job's registration: a new pending evaluation.
pub(crate) fn create_eval(
    p: &mut Pending<'_>,
    job: JobId,
    trigger: EvalTrigger,
    at: Timestamp,
) -> Result<Evaluation, StoreError> {
    let eval = Evaluation {
        id: EvalId(p.next(key::NEXT_EVAL)?),
        job,
        trigger,
        status: EvalStatus::Pending,
        unplaced: Vec::new(),
        created_at: at,
        modified_at: at,
        wait_until: None,
    };
    p.put_as(key::id(key::EVAL, eval.id.0), &eval)?;
    p.put(key::id(key::EVAL_PENDING, eval.id.0), Vec::new());
    Ok(eval)
}

/// `Command::UpdateEvaluation`: an evaluation leaves the queue when it ends, and goes back
/// into it when set pending again (a blocked one, when the cluster changed).
pub(crate) fn update_eval(
    p: &mut Pending<'_>,
    id: EvalId,
    status: EvalStatus,
    unplaced: Vec<String>,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut eval) = p.get_as::<Evaluation>(&key::id(key::EVAL, id.0), "evaluation")? else {
        return Ok(Err(ApplyError::not_found("evaluation", id)));
    };
    eval.status = status;
    eval.unplaced = unplaced;
    eval.modified_at = at;
    eval.wait_until = None;
    if status == EvalStatus::Pending {
        p.put(key::id(key::EVAL_PENDING, id.0), Vec::new());
    } else {
        p.del(key::id(key::EVAL_PENDING, id.0));
    }
    p.put_as(key::id(key::EVAL, id.0), &eval)?;
    Ok(Ok(Applied::Evaluation(eval)))
}

/// `Command::WaitEvaluation`: the evaluation stays in the queue, due at `until`.
pub(crate) fn wait_eval(
    p: &mut Pending<'_>,
    id: EvalId,
    until: Timestamp,
    unplaced: Vec<String>,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut eval) = p.get_as::<Evaluation>(&key::id(key::EVAL, id.0), "evaluation")? else {
        return Ok(Err(ApplyError::not_found("evaluation", id)));
    };
    eval.status = EvalStatus::Pending;
    eval.unplaced = unplaced;
    eval.modified_at = at;
    eval.wait_until = Some(until);
    p.put(key::id(key::EVAL_PENDING, id.0), Vec::new());
    p.put_as(key::id(key::EVAL, id.0), &eval)?;
    Ok(Ok(Applied::Evaluation(eval)))
}

/// `Command::SubmitPlan`: stops first (they free resources), then each placement if its
/// node exists and still has room; the others are rejected with the reason. A placement
/// that replaces an allocation links to it (`previous`); a rescheduled one counts one
/// more reschedule and stops the one it replaces.
pub(crate) fn submit_plan(p: &mut Pending<'_>, plan: Plan) -> Result<Response, StoreError> {
    for stop in &plan.stop {
        if let Some(a) = alloc(p, stop.alloc)? {
            request_stop(p, a, plan.at, &stop.reason)?;
        }
    }
    let mut result = PlanResult::default();
    for (i, place) in plan.place.into_iter().enumerate() {
        match check(p, &place)? {
            Some(reason) => result.rejected.push(Rejection {
                index: i as u32,
                node: place.node,
                reason,
            }),
            None => {
                let replaced = match place.replaces {
                    Some(r) => alloc(p, r.alloc)?.map(|old| (old, r.kind)),
                    None => None,
                };
                let mut a = Allocation {
                    id: AllocId(p.next(key::NEXT_ALLOC)?),
                    job: place.job,
                    namespace: place.namespace,
                    group: place.group,
                    index: place.index,
                    node: place.node,
                    resources: place.resources,
                    desired: DesiredStatus::Run,
                    client: ClientStatus::Pending,
                    eval: plan.eval,
                    created_at: plan.at,
                    modified_at: plan.at,
                    modify_index: 0,
                    restarts: 0,
                    previous: None,
                    reschedules: 0,
                    events: Vec::new(),
                    ports: Vec::new(),
                    job_version: place.job_version,
                    deployment: place.deployment,
                    health: Default::default(),
                };
                let placed = format!("placed on {} by {}", a.node, plan.eval);
                match replaced {
                    None => a.push_event(plan.at, AllocEventKind::Placed, placed),
                    Some((mut old, kind)) => {
                        a.previous = Some(old.id);
                        a.reschedules =
                            old.reschedules + u32::from(kind == ReplaceKind::Reschedule);
                        a.push_event(
                            plan.at,
                            AllocEventKind::Placed,
                            format!("{placed}, replacing {} on {}", old.id, old.node),
                        );
                        let was_live = old.is_live();
                        old.modified_at = plan.at;
                        old.push_event(
                            plan.at,
                            AllocEventKind::Rescheduled,
                            format!("replaced by {} on {}", a.id, a.node),
                        );
                        // A migrating one runs on until its replacement does (the planner
                        // stops it then); any other is told to stop now, so its node, if
                        // it comes back, stops the duplicate.
                        if kind != ReplaceKind::Migrate {
                            old.desired = DesiredStatus::Stop;
                        }
                        put_alloc(p, &old, was_live)?;
                    }
                }
                p.put(key::pair(key::ALLOC_BY_JOB, a.job.0, a.id.0), Vec::new());
                put_alloc(p, &a, false)?;
                result.placed.push(a.id);
            }
        }
    }
    Ok(Ok(Applied::Plan(result)))
}

/// Why a placement cannot go on its node now, if it cannot.
fn check(p: &Pending<'_>, place: &NewAlloc) -> Result<Option<String>, StoreError> {
    let Some(node) = p.get_as::<Node>(&key::id(key::NODE, place.node.0), "node")? else {
        return Ok(Some(format!("node {} does not exist", place.node)));
    };
    if node.status == NodeStatus::Down {
        return Ok(Some(format!("node {} is down", node.id)));
    }
    if node.eligibility == Eligibility::Ineligible {
        return Ok(Some(format!("node {} is ineligible", node.id)));
    }
    let free = node.resources.saturating_sub(used(p, node.id)?);
    Ok(place.resources.exceeds(&free).map(|d| {
        format!(
            "node {} has too little {d} left (asked {:?}, free {:?})",
            node.id, place.resources, free
        )
    }))
}

/// A deleted job's allocations are all told to stop. Only from `DeleteJob`, which is never
/// batched: the scan reads the committed tree.
pub(crate) fn stop_job(p: &mut Pending<'_>, job: JobId, at: Timestamp) -> Result<(), StoreError> {
    for id in ids_under(p, key::id(key::ALLOC_BY_JOB, job.0)) {
        if let Some(a) = alloc(p, id)? {
            request_stop(p, a, at, "the job was deleted")?;
        }
    }
    Ok(())
}

/// The longest event message apply keeps (the gateway caps them first; this is the rule).
pub(crate) const EVENT_MESSAGE_MAX: usize = 1024;

/// `Command::AllocStatus`: what the node says of an allocation. Refused for an allocation
/// on another node; a terminal status stays (nothing more is recorded then); a report that
/// changes nothing writes nothing, so it does not advance the modify index.
pub(crate) fn set_status(p: &mut Pending<'_>, report: AllocReport) -> Result<Response, StoreError> {
    let Some(mut a) = alloc(p, report.alloc)? else {
        return Ok(Err(ApplyError::not_found("allocation", report.alloc)));
    };
    if a.node != report.node {
        return Ok(Err(ApplyError::Refused(format!(
            "allocation {} is not on node {}",
            a.id, report.node
        ))));
    }
    if a.client.is_terminal() {
        return Ok(Ok(Applied::Allocation(a)));
    }
    let was_live = a.is_live();
    let mut changed =
        a.client != report.client || a.restarts < report.restarts || a.health != report.health;
    let health_before = std::mem::replace(&mut a.health, report.health);
    a.client = report.client;
    a.restarts = a.restarts.max(report.restarts);
    let mut ports = report.ports;
    ports.truncate(windflow_protocol::ALLOC_PORTS_MAX);
    if a.ports != ports {
        a.ports = ports;
        changed = true;
    }
    for e in report.events.into_iter().rev().take(ALLOC_EVENTS_MAX).rev() {
        if a.events
            .iter()
            .any(|k| k.at == e.at && k.kind == e.kind && k.message == e.message)
        {
            continue;
        }
        let message = capped_text(e.message.as_bytes(), EVENT_MESSAGE_MAX).0;
        a.push_event(e.at, e.kind, message);
        changed = true;
    }
    if changed {
        a.modified_at = report.at;
        a.modify_index = put_alloc(p, &a, was_live)?;
        crate::deployments::health_changed(p, &a, &health_before, report.at)?;
        // A wanted instance that ended is the scheduler's to replace (the reschedule
        // policy for a failed one), in the same entry.
        if was_live && a.client.is_terminal() {
            create_eval(p, a.job, EvalTrigger::AllocFailed, report.at)?;
        }
    }
    Ok(Ok(Applied::Allocation(a)))
}
