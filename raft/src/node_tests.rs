//! A node's life in apply: heard → ready, silent → down with its allocations lost and
//! their jobs evaluated, drains and eligibility, and the lineage of replacements.

use windflow_protocol::{
    AllocEventKind, AllocId, Allocation, ClientStatus, DesiredStatus, DriverKind, Eligibility,
    EvalStatus, EvalTrigger, Fingerprint, JobId, Node, NodeId, NodeStatus, Resources, Timestamp,
};

use crate::apply_tests::Fixture;
use crate::command::{
    AllocReport, Applied, ApplyError, Command, DrainChange, DrainEnd, NewAlloc, Plan, ReplaceKind,
    Replacement, StopAlloc,
};

const CAPACITY: Resources = Resources {
    cpu_mhz: 10_000,
    memory_mb: 4096,
    disk_mb: 0,
};

fn register(f: &Fixture) -> NodeId {
    match f.apply(Command::RegisterNode {
        name: "n".into(),
        drivers: vec![DriverKind::Exec],
        at: Timestamp(1),
    }) {
        Ok(Applied::Node(n)) => n.id,
        other => panic!("{other:?}"),
    }
}

/// A registered node whose agent said Hello at `at`.
fn hello(f: &Fixture, at: u64) -> NodeId {
    let id = register(f);
    f.apply(Command::NodeHello {
        node: id,
        hostname: format!("host-{}", id.0),
        drivers: vec![DriverKind::Exec],
        agent_version: "0".into(),
        fingerprint: Fingerprint {
            resources: CAPACITY,
            attributes: Default::default(),
        },
        at: Timestamp(at),
    })
    .unwrap();
    id
}

fn node(f: &Fixture, id: NodeId) -> Node {
    f.reader.node(id).unwrap().unwrap()
}

fn alloc(f: &Fixture, id: AllocId) -> Allocation {
    f.reader.allocation(id).unwrap().unwrap()
}

fn place(job: u64, index: u32, node: NodeId, replaces: Option<Replacement>) -> NewAlloc {
    NewAlloc {
        job: JobId(job),
        namespace: Default::default(),
        group: "web".into(),
        index,
        node,
        resources: Resources {
            cpu_mhz: 10,
            memory_mb: 64,
            disk_mb: 0,
        },
        replaces,
        job_version: 1,
        deployment: None,
    }
}

fn submit(f: &Fixture, stop: Vec<StopAlloc>, place: Vec<NewAlloc>, at: u64) -> Vec<AllocId> {
    match f.apply(Command::SubmitPlan(Plan {
        eval: windflow_protocol::EvalId(1),
        stop,
        place,
        at: Timestamp(at),
    })) {
        Ok(Applied::Plan(r)) => {
            assert!(r.rejected.is_empty(), "{r:?}");
            r.placed
        }
        other => panic!("{other:?}"),
    }
}

fn heartbeat(f: &Fixture, nodes: &[(NodeId, u64)]) -> Vec<Node> {
    match f.apply(Command::NodeHeartbeats {
        nodes: nodes.iter().map(|(n, t)| (*n, Timestamp(*t))).collect(),
        at: Timestamp(0),
    }) {
        Ok(Applied::Nodes(changed)) => changed,
        other => panic!("{other:?}"),
    }
}

fn down(f: &Fixture, nodes: &[NodeId], cutoff: u64, at: u64) -> Vec<Node> {
    match f.apply(Command::NodesDown {
        nodes: nodes.to_vec(),
        cutoff: Timestamp(cutoff),
        at: Timestamp(at),
    }) {
        Ok(Applied::Nodes(changed)) => changed,
        other => panic!("{other:?}"),
    }
}

fn last_heard(f: &Fixture, id: NodeId) -> Option<Timestamp> {
    f.reader
        .node_liveness()
        .unwrap()
        .into_iter()
        .find(|(n, _)| *n == id)
        .and_then(|(_, l)| l.last_heard)
}

#[test]
fn a_heartbeat_makes_a_node_ready_and_is_kept_in_its_own_key() {
    let f = Fixture::new();
    let id = register(&f);
    assert_eq!(node(&f, id).status, NodeStatus::Initializing);
    let changed = heartbeat(&f, &[(id, 100), (NodeId(99), 100)]);
    assert_eq!(changed.len(), 1, "the unknown node is skipped");
    assert_eq!(node(&f, id).status, NodeStatus::Ready);
    assert_eq!(last_heard(&f, id), Some(Timestamp(100)));
    // A later heartbeat moves the time only; the node itself is not rewritten.
    let before = node(&f, id);
    assert!(heartbeat(&f, &[(id, 200)]).is_empty());
    assert_eq!(node(&f, id), before);
    assert_eq!(last_heard(&f, id), Some(Timestamp(200)));
    // An older report (another server's, late) never moves it back.
    heartbeat(&f, &[(id, 150)]);
    assert_eq!(last_heard(&f, id), Some(Timestamp(200)));
}

#[test]
fn a_silent_node_goes_down_its_live_allocations_are_lost_and_their_jobs_evaluated() {
    let f = Fixture::new();
    let silent = hello(&f, 10);
    let other = hello(&f, 10);
    let placed = submit(
        &f,
        vec![],
        vec![
            place(1, 0, silent, None),
            place(1, 1, silent, None),
            place(2, 0, silent, None),
            place(3, 0, silent, None),
            place(1, 2, other, None),
        ],
        20,
    );
    // Job 2's is stopped, job 3's already failed: neither is live.
    submit(
        &f,
        vec![StopAlloc {
            alloc: placed[2],
            reason: "scaled down".into(),
        }],
        vec![],
        21,
    );
    f.apply(Command::AllocStatus(AllocReport {
        alloc: placed[3],
        node: f.reader.allocation(placed[3]).unwrap().unwrap().node,
        client: ClientStatus::Failed,
        restarts: 0,
        events: vec![],
        ports: Vec::new(),
        at: Timestamp(22),
        health: Default::default(),
    }))
    .unwrap();
    heartbeat(&f, &[(other, 500)]);
    let evals_before = f.reader.evaluations().unwrap().len();

    let changed = down(&f, &[silent, other], 400, 1000);
    assert_eq!(changed.len(), 1, "the node heard after the cutoff stays up");
    assert_eq!(node(&f, silent).status, NodeStatus::Down);
    assert_eq!(node(&f, other).status, NodeStatus::Ready);
    for id in &placed[..2] {
        let a = alloc(&f, *id);
        assert_eq!(a.client, ClientStatus::Lost);
        assert_eq!(a.desired, DesiredStatus::Run);
        let event = a.events.last().unwrap();
        assert_eq!(event.kind, AllocEventKind::Lost);
        assert!(event.message.contains("not heard from since"), "{event:?}");
    }
    assert_eq!(alloc(&f, placed[2]).client, ClientStatus::Pending);
    assert_eq!(alloc(&f, placed[3]).client, ClientStatus::Failed);
    assert_eq!(alloc(&f, placed[4]).client, ClientStatus::Pending);
    assert_eq!(
        f.reader.node_used(silent).unwrap(),
        Resources::default(),
        "lost allocations free their node"
    );
    let evals = f.reader.evaluations().unwrap();
    let new: Vec<_> = evals[evals_before..].iter().collect();
    assert_eq!(
        new.len(),
        1,
        "one evaluation, for the job that lost something"
    );
    assert_eq!(new[0].job, JobId(1));
    assert_eq!(new[0].trigger, EvalTrigger::AllocFailed);
    assert_eq!(new[0].status, EvalStatus::Pending);

    // Marked down twice changes nothing more.
    assert!(down(&f, &[silent], 400, 1100).is_empty());
    // A stale report (heard before the cutoff) does not bring it back; news does.
    heartbeat(&f, &[(silent, 300)]);
    assert_eq!(node(&f, silent).status, NodeStatus::Down);
    heartbeat(&f, &[(silent, 1200)]);
    assert_eq!(node(&f, silent).status, NodeStatus::Ready);
    // Its lost allocations stay lost.
    assert_eq!(alloc(&f, placed[0]).client, ClientStatus::Lost);
}

#[test]
fn a_drain_makes_the_node_ineligible_and_ends_when_empty_or_at_its_deadline() {
    let f = Fixture::new();
    let id = hello(&f, 1);
    let placed = submit(
        &f,
        vec![],
        vec![place(1, 0, id, None), place(2, 0, id, None)],
        2,
    );
    let drain = |change| {
        f.apply(Command::SetNodeDrain {
            node: id,
            change,
            at: Timestamp(10),
        })
    };
    let Ok(Applied::Node(n)) = drain(DrainChange::Start {
        deadline: Some(Timestamp(100)),
    }) else {
        panic!()
    };
    assert_eq!(n.eligibility, Eligibility::Ineligible);
    assert_eq!(n.drain.unwrap().deadline, Some(Timestamp(100)));
    assert_eq!(
        alloc(&f, placed[0]).events.last().unwrap().kind,
        AllocEventKind::Draining
    );
    let drains: Vec<_> = f
        .reader
        .pending_evaluations()
        .unwrap()
        .into_iter()
        .filter(|e| e.trigger == EvalTrigger::NodeDrain)
        .map(|e| e.job)
        .collect();
    assert_eq!(drains, [JobId(1), JobId(2)]);

    let eligible = f.apply(Command::SetNodeEligibility {
        node: id,
        eligibility: Eligibility::Eligible,
        at: Timestamp(11),
    });
    assert!(
        matches!(&eligible, Err(ApplyError::Refused(m)) if m.contains("draining")),
        "{eligible:?}"
    );
    let finish = |end, at| {
        f.apply(Command::FinishDrain {
            node: id,
            end,
            at: Timestamp(at),
        })
    };
    assert!(
        matches!(finish(DrainEnd::Complete, 50), Err(ApplyError::Refused(m)) if m.contains("2 live")),
    );
    assert!(matches!(
        finish(DrainEnd::Deadline, 99),
        Err(ApplyError::Refused(_))
    ));
    let Ok(Applied::Node(n)) = finish(DrainEnd::Deadline, 100) else {
        panic!()
    };
    assert_eq!((n.drain, n.eligibility), (None, Eligibility::Ineligible));
    for a in &placed {
        let a = alloc(&f, *a);
        assert_eq!(a.desired, DesiredStatus::Stop);
        assert!(a.events.last().unwrap().message.contains("deadline"));
    }
    assert!(matches!(
        finish(DrainEnd::Complete, 101),
        Err(ApplyError::Refused(m)) if m.contains("not draining")
    ));

    // A drain of an empty node, cancelled: still ineligible until made eligible.
    drain(DrainChange::Start { deadline: None }).unwrap();
    let Ok(Applied::Node(n)) = drain(DrainChange::Cancel) else {
        panic!()
    };
    assert_eq!((n.drain, n.eligibility), (None, Eligibility::Ineligible));
    f.apply(Command::SetNodeEligibility {
        node: id,
        eligibility: Eligibility::Eligible,
        at: Timestamp(12),
    })
    .unwrap();
    assert_eq!(node(&f, id).eligibility, Eligibility::Eligible);
    // An empty drain completes at once.
    drain(DrainChange::Start { deadline: None }).unwrap();
    finish(DrainEnd::Complete, 13).unwrap();
    assert_eq!(node(&f, id).drain, None);
}

#[test]
fn a_rescheduled_replacement_links_to_the_lost_one_which_is_told_to_stop() {
    let f = Fixture::new();
    let a = hello(&f, 1);
    let b = hello(&f, 1);
    let first = submit(&f, vec![], vec![place(1, 0, a, None)], 2)[0];
    down(&f, &[a], 5, 10);
    let second = submit(
        &f,
        vec![],
        vec![place(
            1,
            0,
            b,
            Some(Replacement {
                alloc: first,
                kind: ReplaceKind::Reschedule,
            }),
        )],
        11,
    )[0];
    let (old, new) = (alloc(&f, first), alloc(&f, second));
    assert_eq!((new.previous, new.reschedules), (Some(first), 1));
    assert!(
        new.events[0]
            .message
            .contains(&format!("replacing {first}"))
    );
    assert_eq!(old.desired, DesiredStatus::Stop);
    assert_eq!(old.client, ClientStatus::Lost);
    let last = old.events.last().unwrap();
    assert_eq!(last.kind, AllocEventKind::Rescheduled);
    assert!(last.message.contains(&second.to_string()), "{last:?}");
    // And again: the count grows along the lineage.
    f.apply(Command::AllocStatus(AllocReport {
        alloc: second,
        node: f.reader.allocation(second).unwrap().unwrap().node,
        client: ClientStatus::Failed,
        restarts: 0,
        events: vec![],
        ports: Vec::new(),
        at: Timestamp(12),
        health: Default::default(),
    }))
    .unwrap();
    heartbeat(&f, &[(a, 20)]);
    let third = submit(
        &f,
        vec![],
        vec![place(
            1,
            0,
            a,
            Some(Replacement {
                alloc: second,
                kind: ReplaceKind::Reschedule,
            }),
        )],
        13,
    )[0];
    assert_eq!(alloc(&f, third).reschedules, 2);

    // A migration keeps the old one running and counts no reschedule.
    let moved = submit(
        &f,
        vec![],
        vec![place(
            1,
            1,
            b,
            Some(Replacement {
                alloc: third,
                kind: ReplaceKind::Migrate,
            }),
        )],
        14,
    )[0];
    assert_eq!(alloc(&f, moved).reschedules, 2);
    assert_eq!(alloc(&f, moved).previous, Some(third));
    let kept = alloc(&f, third);
    assert_eq!(kept.desired, DesiredStatus::Run);
    assert_eq!(
        kept.events.last().unwrap().kind,
        AllocEventKind::Rescheduled
    );
}

#[test]
fn a_wanted_allocation_that_fails_queues_its_jobs_evaluation() {
    let f = Fixture::new();
    let id = hello(&f, 1);
    let placed = submit(&f, vec![], vec![place(4, 0, id, None)], 2);
    let pending = |f: &Fixture| {
        f.reader
            .pending_evaluations()
            .unwrap()
            .into_iter()
            .filter(|e| e.job == JobId(4) && e.trigger == EvalTrigger::AllocFailed)
            .count()
    };
    let status = |client| {
        f.apply(Command::AllocStatus(AllocReport {
            alloc: placed[0],
            node: f.reader.allocation(placed[0]).unwrap().unwrap().node,
            client,
            restarts: 0,
            events: vec![],
            ports: Vec::new(),
            at: Timestamp(3),
            health: Default::default(),
        }))
        .unwrap();
    };
    status(ClientStatus::Running);
    assert_eq!(pending(&f), 0);
    status(ClientStatus::Failed);
    assert_eq!(pending(&f), 1);
    // Said again, nothing more.
    status(ClientStatus::Failed);
    assert_eq!(pending(&f), 1);
}
