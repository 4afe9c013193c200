//! Apply's rules for a node's life: liveness (servers report whom they heard, the leader
//! reports who fell silent), drains and eligibility.
//!
//! Heartbeats are not replicated one by one: every server proposes one
//! `NodeHeartbeats` per interval listing the nodes it heard and when, and apply keeps each
//! node's last-heard time in its own key (`nodeheard/<node>`), rewriting the node itself
//! only when its status changes. The leader's `NodesDown` names the nodes it found silent
//! since a cutoff; apply re-checks each against its last-heard time, so a heartbeat
//! committed in between wins and no node goes down that was heard in time.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use windflow_protocol::{
    AllocEventKind, ClientStatus, DrainStrategy, Eligibility, EvalTrigger, JobId, Node, NodeId,
    NodeStatus, Timestamp,
};

use crate::StoreError;
use crate::allocs::{alloc, create_eval, ids_on_node, put_alloc, request_stop};
use crate::command::{Applied, ApplyError, DrainChange, DrainEnd, Response};
use crate::state::{Pending, key};

/// What the store keeps of a node's liveness, apart from the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeLiveness {
    /// The latest time a server heard the node's agent (that server's clock).
    pub last_heard: Option<Timestamp>,
    /// The cutoff it was last marked down for: only news from after it brings it back.
    pub down_cutoff: Option<Timestamp>,
}

pub(crate) fn liveness(p: &Pending<'_>, node: NodeId) -> Result<NodeLiveness, StoreError> {
    Ok(
        p.get_as(&key::id(key::NODE_HEARD, node.0), "node liveness")?
            .unwrap_or_default(),
    )
}

fn node(p: &Pending<'_>, id: NodeId) -> Result<Option<Node>, StoreError> {
    p.get_as(&key::id(key::NODE, id.0), "node")
}

fn put_node(p: &mut Pending<'_>, n: &Node) -> Result<(), StoreError> {
    p.put_as(key::id(key::NODE, n.id.0), n)
}

/// The node's agent was heard at `heard`: recorded if newer than what is known, and a node
/// not yet ready (or down, and heard after its cutoff) becomes ready. True when the node
/// itself changed (the caller stores it).
pub(crate) fn heard(
    p: &mut Pending<'_>,
    n: &mut Node,
    heard: Timestamp,
) -> Result<bool, StoreError> {
    let mut live = liveness(p, n.id)?;
    if live.last_heard.is_some_and(|last| heard <= last) {
        return Ok(false);
    }
    live.last_heard = Some(heard);
    p.put_as(key::id(key::NODE_HEARD, n.id.0), &live)?;
    let revived = live.down_cutoff.is_none_or(|cutoff| heard > cutoff);
    if n.status != NodeStatus::Ready && n.revoked_at.is_none() && revived {
        n.status = NodeStatus::Ready;
        return Ok(true);
    }
    Ok(false)
}

/// `Command::NodeHeartbeats`.
pub(crate) fn heartbeats(
    p: &mut Pending<'_>,
    nodes: Vec<(NodeId, Timestamp)>,
) -> Result<Response, StoreError> {
    let mut changed = Vec::new();
    for (id, at) in nodes {
        // A node unknown here (a report racing its registration elsewhere) is skipped.
        let Some(mut n) = node(p, id)? else {
            continue;
        };
        if heard(p, &mut n, at)? {
            put_node(p, &n)?;
            changed.push(n);
        }
    }
    Ok(Ok(Applied::Nodes(changed)))
}

/// `Command::NodesDown`: each node still ready and not heard after `cutoff` goes down; its
/// live allocations are lost, and every job that had one is evaluated again.
pub(crate) fn down(
    p: &mut Pending<'_>,
    nodes: Vec<NodeId>,
    cutoff: Timestamp,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let mut changed = Vec::new();
    let mut jobs: BTreeSet<JobId> = BTreeSet::new();
    for id in nodes {
        let Some(mut n) = node(p, id)? else {
            continue;
        };
        let mut live = liveness(p, id)?;
        if n.status != NodeStatus::Ready || live.last_heard.is_some_and(|h| h > cutoff) {
            continue;
        }
        n.status = NodeStatus::Down;
        live.down_cutoff = Some(cutoff);
        p.put_as(key::id(key::NODE_HEARD, id.0), &live)?;
        put_node(p, &n)?;
        let silent = match live.last_heard {
            Some(h) => format!("node {id} is down: not heard from since {h}"),
            None => format!("node {id} is down: never heard from"),
        };
        for alloc_id in ids_on_node(p, id) {
            let Some(mut a) = alloc(p, alloc_id)? else {
                continue;
            };
            if !a.is_live() {
                continue;
            }
            a.client = ClientStatus::Lost;
            a.modified_at = at;
            a.push_event(at, AllocEventKind::Lost, &silent);
            put_alloc(p, &a, true)?;
            jobs.insert(a.job);
        }
        changed.push(n);
    }
    for job in jobs {
        create_eval(p, job, EvalTrigger::AllocFailed, at)?;
    }
    Ok(Ok(Applied::Nodes(changed)))
}

/// `Command::SetNodeDrain`.
pub(crate) fn set_drain(
    p: &mut Pending<'_>,
    id: NodeId,
    change: DrainChange,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut n) = node(p, id)? else {
        return Ok(Err(ApplyError::not_found("node", id)));
    };
    match change {
        DrainChange::Start { deadline } => {
            let started_at = n.drain.map_or(at, |d| d.started_at);
            let already = n.drain.is_some();
            n.drain = Some(DrainStrategy {
                started_at,
                deadline,
            });
            n.eligibility = Eligibility::Ineligible;
            put_node(p, &n)?;
            if !already {
                let message = format!("node {id} is draining");
                let jobs = mark_draining(p, id, at, &message)?;
                for job in jobs {
                    create_eval(p, job, EvalTrigger::NodeDrain, at)?;
                }
            }
        }
        DrainChange::Cancel => {
            if n.drain.is_none() {
                return Ok(Err(ApplyError::Refused(format!(
                    "node {id} is not draining"
                ))));
            }
            n.drain = None;
            put_node(p, &n)?;
        }
    }
    Ok(Ok(Applied::Node(n)))
}

/// Records a `Draining` event on each live allocation of the node; answers their jobs.
fn mark_draining(
    p: &mut Pending<'_>,
    node: NodeId,
    at: Timestamp,
    message: &str,
) -> Result<BTreeSet<JobId>, StoreError> {
    let mut jobs = BTreeSet::new();
    for alloc_id in ids_on_node(p, node) {
        let Some(mut a) = alloc(p, alloc_id)? else {
            continue;
        };
        if a.is_live() {
            a.modified_at = at;
            a.push_event(at, AllocEventKind::Draining, message);
            put_alloc(p, &a, true)?;
            jobs.insert(a.job);
        }
    }
    Ok(jobs)
}

/// `Command::SetNodeEligibility`.
pub(crate) fn set_eligibility(
    p: &mut Pending<'_>,
    id: NodeId,
    eligibility: Eligibility,
) -> Result<Response, StoreError> {
    let Some(mut n) = node(p, id)? else {
        return Ok(Err(ApplyError::not_found("node", id)));
    };
    if eligibility == Eligibility::Eligible && n.drain.is_some() {
        return Ok(Err(ApplyError::Refused(format!(
            "node {id} is draining: cancel the drain first"
        ))));
    }
    if n.eligibility != eligibility {
        n.eligibility = eligibility;
        put_node(p, &n)?;
    }
    Ok(Ok(Applied::Node(n)))
}

/// `Command::FinishDrain`.
pub(crate) fn finish_drain(
    p: &mut Pending<'_>,
    id: NodeId,
    end: DrainEnd,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut n) = node(p, id)? else {
        return Ok(Err(ApplyError::not_found("node", id)));
    };
    let Some(drain) = n.drain else {
        return Ok(Err(ApplyError::Refused(format!(
            "node {id} is not draining"
        ))));
    };
    let live: Vec<_> = ids_on_node(p, id)
        .into_iter()
        .filter_map(|a| alloc(p, a).transpose())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|a| a.is_live())
        .collect();
    match end {
        DrainEnd::Complete if !live.is_empty() => {
            return Ok(Err(ApplyError::Refused(format!(
                "node {id} still holds {} live allocation(s)",
                live.len()
            ))));
        }
        DrainEnd::Complete => {}
        DrainEnd::Deadline => {
            if drain.deadline.is_none_or(|d| at < d) {
                return Ok(Err(ApplyError::Refused(format!(
                    "the drain of node {id} has no deadline passed at {at}"
                ))));
            }
            let mut jobs = BTreeSet::new();
            for a in live {
                jobs.insert(a.job);
                request_stop(p, a, at, "its node's drain deadline passed")?;
            }
            for job in jobs {
                create_eval(p, job, EvalTrigger::NodeDrain, at)?;
            }
        }
    }
    n.drain = None;
    put_node(p, &n)?;
    Ok(Ok(Applied::Node(n)))
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
