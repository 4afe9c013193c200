//! Allocations and evaluations in the state machine. A plan's placements are re-checked
//! here against each node's free resources (optimistic concurrency): two plans made from
//! the same snapshot can never overcommit a node, because the later one's placements that
//! no longer fit are rejected, deterministically, on every server.

use windflow_protocol::{
    AllocId, Allocation, ClientStatus, DesiredStatus, EvalId, EvalStatus, EvalTrigger, Evaluation,
    JobId, Node, NodeId, Resources, Timestamp,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, NewAlloc, Plan, PlanResult, Rejection, Response};
use crate::state::{Pending, key};

/// What a node's live allocations hold.
pub(crate) fn used(p: &Pending<'_>, node: NodeId) -> Result<Resources, StoreError> {
    Ok(p.get_as(&key::id(key::NODE_USED, node.0), "node usage")?
        .unwrap_or_default())
}

fn set_used(p: &mut Pending<'_>, node: NodeId, used: Resources) -> Result<(), StoreError> {
    p.put_as(key::id(key::NODE_USED, node.0), &used)
}

/// Stores an allocation, keeping its node's usage in step with whether it is live.
fn put_alloc(p: &mut Pending<'_>, alloc: &Allocation, was_live: bool) -> Result<(), StoreError> {
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
    p.put_as(key::id(key::ALLOC, alloc.id.0), alloc)
}

fn alloc(p: &Pending<'_>, id: AllocId) -> Result<Option<Allocation>, StoreError> {
    p.get_as(&key::id(key::ALLOC, id.0), "allocation")
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
    if status == EvalStatus::Pending {
        p.put(key::id(key::EVAL_PENDING, id.0), Vec::new());
    } else {
        p.del(key::id(key::EVAL_PENDING, id.0));
    }
    p.put_as(key::id(key::EVAL, id.0), &eval)?;
    Ok(Ok(Applied::Evaluation(eval)))
}

/// `Command::SubmitPlan`: stops first (they free resources), then each placement if its
/// node exists and still has room; the others are rejected with the reason.
pub(crate) fn submit_plan(p: &mut Pending<'_>, plan: Plan) -> Result<Response, StoreError> {
    for id in &plan.stop {
        let Some(mut a) = alloc(p, *id)? else {
            continue;
        };
        let was_live = a.is_live();
        a.desired = DesiredStatus::Stop;
        a.modified_at = plan.at;
        put_alloc(p, &a, was_live)?;
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
                let a = Allocation {
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
                };
                p.put(key::pair(key::ALLOC_BY_JOB, a.job.0, a.id.0), Vec::new());
                p.put(key::pair(key::ALLOC_BY_NODE, a.node.0, a.id.0), Vec::new());
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
    let ids: Vec<AllocId> = p
        .tree()
        .scan_prefix(key::id(key::ALLOC_BY_JOB, job.0))
        .keys()
        .filter_map(|k| k.ok())
        .filter_map(|k| <[u8; 8]>::try_from(&k[k.len().saturating_sub(8)..]).ok())
        .map(|b| AllocId(u64::from_be_bytes(b)))
        .collect();
    for id in ids {
        let Some(mut a) = alloc(p, id)? else {
            continue;
        };
        if a.desired == DesiredStatus::Run {
            let was_live = a.is_live();
            a.desired = DesiredStatus::Stop;
            a.modified_at = at;
            put_alloc(p, &a, was_live)?;
        }
    }
    Ok(())
}

/// `Command::AllocStatus`: what the node says of an allocation. A terminal status stays.
pub(crate) fn set_status(
    p: &mut Pending<'_>,
    id: AllocId,
    client: ClientStatus,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut a) = alloc(p, id)? else {
        return Ok(Err(ApplyError::not_found("allocation", id)));
    };
    if !a.client.is_terminal() {
        let was_live = a.is_live();
        a.client = client;
        a.modified_at = at;
        put_alloc(p, &a, was_live)?;
    }
    Ok(Ok(Applied::Allocation(a)))
}
