//! The planner and a node's life: lost and failed instances replaced per the reschedule
//! policy, draining nodes' instances moved, closed nodes filtered with their reason.

use windflow_protocol::{
    AllocEventKind, ClientStatus, DrainStrategy, Eligibility, HumanDuration, NodeStatus,
    RescheduleLimit, ReschedulePolicy,
};
use windflow_raft::{ReplaceKind, Replacement};

use super::tests::{alloc, node, plan, service, stopped, view};
use super::*;

/// A service of one instance whose replacements wait 5 s, doubling.
fn job_with(limit: RescheduleLimit) -> Job {
    let mut job = service(1, 100, 64);
    job.spec.groups[0].reschedule = ReschedulePolicy {
        limit,
        delay: HumanDuration::from_secs(5),
        max_delay: HumanDuration::from_secs(60),
    };
    job
}

/// Allocation `id` of instance 0 on `node`, ended `client` at `ended_at` ms.
fn ended(id: u64, node: u64, client: ClientStatus, ended_at: u64) -> Allocation {
    let mut a = alloc(id, 0, node);
    a.client = client;
    a.created_at = Timestamp(ended_at.saturating_sub(500));
    let kind = match client {
        ClientStatus::Lost => AllocEventKind::Lost,
        _ => AllocEventKind::Failed,
    };
    a.push_event(Timestamp(ended_at), kind, "ended");
    a.modified_at = Timestamp(ended_at + 1);
    a
}

/// `a` as the replacement of `previous`, one reschedule further.
fn replacing(mut a: Allocation, previous: &Allocation) -> Allocation {
    a.previous = Some(previous.id);
    a.reschedules = previous.reschedules + 1;
    a
}

fn at(job: &Job, existing: &[Allocation], v: &mut ClusterView, ms: u64) -> Outcome {
    plan_job(
        job.id,
        Some(job),
        None,
        existing,
        v,
        EvalId(9),
        Timestamp(ms),
    )
}

#[test]
fn a_lost_instance_is_replaced_on_another_node_once_its_delay_passed() {
    let mut down = node(1, 8000, 8192);
    down.status = NodeStatus::Down;
    let mut v = view(vec![down, node(2, 8000, 8192)]);
    let job = job_with(RescheduleLimit::Unlimited);
    let lost = ended(1, 1, ClientStatus::Lost, 1000);
    // 5 s after it was lost: due.
    let o = at(&job, std::slice::from_ref(&lost), &mut v, 6000);
    assert!(
        o.unplaced.is_empty() && o.waiting.is_empty(),
        "{:?}",
        o.unplaced
    );
    assert_eq!(o.plan.place.len(), 1);
    let p = &o.plan.place[0];
    assert_eq!((p.node, p.index), (NodeId(2), 0));
    assert_eq!(
        p.replaces,
        Some(Replacement {
            alloc: AllocId(1),
            kind: ReplaceKind::Reschedule
        })
    );
    // Apply stops the lost one as it places the replacement; the plan stops nothing else.
    assert!(o.plan.stop.is_empty());

    // Once replaced (apply set the old one's desired to stop), nothing more is placed.
    let mut old = lost.clone();
    old.desired = windflow_protocol::DesiredStatus::Stop;
    let new = replacing(alloc(2, 0, 2), &lost);
    let o = at(&job, &[old, new], &mut v, 7000);
    assert!(o.is_empty() && o.wait_until.is_none());
}

#[test]
fn a_replacement_whose_delay_has_not_passed_waits_with_its_due_time() {
    let mut v = view(vec![node(1, 8000, 8192), node(2, 8000, 8192)]);
    let job = job_with(RescheduleLimit::Unlimited);
    // The third reschedule of the lineage: 5 s doubled twice = 20 s after it failed.
    let first = ended(1, 1, ClientStatus::Failed, 100);
    let mut second = replacing(ended(2, 2, ClientStatus::Failed, 200), &first);
    second.desired = windflow_protocol::DesiredStatus::Stop;
    let third = replacing(ended(3, 1, ClientStatus::Failed, 1000), &second);
    let mut first_stopped = first.clone();
    first_stopped.desired = windflow_protocol::DesiredStatus::Stop;
    let existing = [first_stopped, second, third];
    let o = at(&job, &existing, &mut v, 10_000);
    assert!(o.plan.place.is_empty());
    assert_eq!(o.wait_until, Some(Timestamp(21_000)));
    assert!(
        o.waiting[0].contains("AL3 failed") && o.waiting[0].contains("reschedule delay 20s"),
        "{:?}",
        o.waiting
    );
    // At its due time it is placed, away from the node it failed on when it can be.
    let o = at(&job, &existing, &mut v, 21_000);
    assert_eq!(o.plan.place.len(), 1);
    assert_eq!(o.plan.place[0].node, NodeId(2));
    assert_eq!(o.wait_until, None);
}

#[test]
fn past_its_reschedule_limit_an_instance_stays_failed_and_the_plan_says_why() {
    let mut v = view(vec![node(1, 8000, 8192), node(2, 8000, 8192)]);
    let limit = |secs| RescheduleLimit::Attempts {
        attempts: 2,
        interval: HumanDuration::from_secs(secs),
    };
    let stop = |mut a: Allocation| {
        a.desired = windflow_protocol::DesiredStatus::Stop;
        a
    };
    let first = ended(1, 1, ClientStatus::Lost, 1000);
    let second = replacing(ended(2, 2, ClientStatus::Failed, 20_000), &first);
    let third = replacing(ended(3, 1, ClientStatus::Failed, 50_000), &second);
    let existing = [stop(first), stop(second), third];
    // Two reschedules (created at 19.5 s and 49.5 s) within the hour: used up.
    let o = at(&job_with(limit(3600)), &existing, &mut v, 200_000);
    assert!(o.plan.place.is_empty() && o.wait_until.is_none());
    assert_eq!(o.failed.len(), 1, "{:?}", o.failed);
    assert!(
        o.failed[0].contains("AL3 failed; not rescheduled")
            && o.failed[0].contains("2 reschedule attempt(s) within 1h are used up"),
        "{}",
        o.failed[0]
    );
    // Within the last 160 s only one was made: one attempt is left.
    let o = at(&job_with(limit(160)), &existing, &mut v, 200_000);
    assert!(o.failed.is_empty(), "{:?}", o.failed);
    assert_eq!(o.plan.place.len(), 1);
}

#[test]
fn down_draining_ineligible_and_new_nodes_take_nothing_and_say_why() {
    let mut nodes: Vec<Node> = (1..=5).map(|i| node(i, 8000, 8192)).collect();
    nodes[0].status = NodeStatus::Down;
    nodes[1].eligibility = Eligibility::Ineligible;
    nodes[1].drain = Some(DrainStrategy {
        started_at: Timestamp(0),
        deadline: None,
    });
    nodes[2].eligibility = Eligibility::Ineligible;
    nodes[3].status = NodeStatus::Initializing;
    let mut v = view(nodes.clone());
    let o = plan(&service(2, 100, 64), &[], &mut v);
    // Only the ready, eligible node 5 takes them.
    assert!(o.plan.place.iter().all(|p| p.node == NodeId(5)));
    nodes.pop();
    let o = plan(&service(1, 100, 64), &[], &mut view(nodes));
    let why = &o.unplaced[0];
    for want in [
        "N1: down",
        "N2: draining",
        "N3: ineligible",
        "N4: initializing",
    ] {
        assert!(why.contains(want), "{want} in {why}");
    }
}

#[test]
fn a_draining_nodes_instance_moves_first_and_stops_once_its_replacement_runs() {
    let mut draining = node(1, 8000, 8192);
    draining.drain = Some(DrainStrategy {
        started_at: Timestamp(0),
        deadline: None,
    });
    draining.eligibility = Eligibility::Ineligible;
    let mut v = view(vec![draining, node(2, 8000, 8192)]);
    let job = service(1, 100, 64);
    let old = alloc(1, 0, 1);
    let o = plan(&job, std::slice::from_ref(&old), &mut v);
    assert!(o.plan.stop.is_empty(), "it keeps serving until replaced");
    assert_eq!(o.plan.place.len(), 1);
    assert_eq!(o.plan.place[0].node, NodeId(2));
    assert_eq!(
        o.plan.place[0].replaces,
        Some(Replacement {
            alloc: AllocId(1),
            kind: ReplaceKind::Migrate
        })
    );
    // The replacement is placed but not running yet: nothing to do.
    let mut new = alloc(2, 0, 2);
    new.previous = Some(AllocId(1));
    new.client = ClientStatus::Pending;
    let o = plan(&job, &[old.clone(), new.clone()], &mut v);
    assert!(o.is_empty(), "{:?}", stopped(&o));
    // It runs: the old one stops.
    new.client = ClientStatus::Running;
    let o = plan(&job, &[old, new], &mut v);
    assert_eq!(stopped(&o), [AllocId(1)]);
    assert!(o.plan.stop[0].reason.contains("AL2 runs on N2"));
    assert!(o.plan.place.is_empty());
}
