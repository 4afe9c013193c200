//! The allocation modify index and what agents report: every change advances the index,
//! a node's changes after an index are found exactly, and apply checks the reporting node.

use windflow_protocol::{
    ALLOC_EVENTS_MAX, AllocEvent, AllocEventKind, AllocId, Allocation, ClientStatus, DriverKind,
    EvalId, Fingerprint, JobId, NodeId, Resources, Timestamp,
};

use crate::apply_tests::Fixture;
use crate::command::{AllocReport, Applied, ApplyError, Command, NewAlloc, Plan, StopAlloc};

fn node(f: &Fixture) -> NodeId {
    let Ok(Applied::Node(n)) = f.apply(Command::RegisterNode {
        name: "n".into(),
        drivers: vec![DriverKind::Exec],
        at: Timestamp(1),
    }) else {
        panic!("no node")
    };
    f.apply(Command::NodeHello {
        node: n.id,
        hostname: "n".into(),
        drivers: vec![DriverKind::Exec],
        agent_version: "0".into(),
        fingerprint: Fingerprint {
            resources: Resources {
                cpu_mhz: 10_000,
                memory_mb: 10_000,
                disk_mb: 0,
            },
            attributes: Default::default(),
        },
        at: Timestamp(2),
    })
    .unwrap();
    n.id
}

fn plan(f: &Fixture, stop: Vec<AllocId>, place: &[NodeId]) -> Vec<AllocId> {
    let place = place
        .iter()
        .enumerate()
        .map(|(i, n)| NewAlloc {
            job: JobId(1),
            namespace: Default::default(),
            group: "web".into(),
            index: i as u32,
            node: *n,
            resources: Resources {
                cpu_mhz: 10,
                memory_mb: 10,
                disk_mb: 0,
            },
            replaces: None,
            job_version: 1,
            deployment: None,
        })
        .collect();
    match f.apply(Command::SubmitPlan(Plan {
        eval: EvalId(1),
        stop: stop
            .into_iter()
            .map(|alloc| StopAlloc {
                alloc,
                reason: "test".into(),
            })
            .collect(),
        place,
        at: Timestamp(3),
    })) {
        Ok(Applied::Plan(r)) => {
            assert!(r.rejected.is_empty(), "{r:?}");
            r.placed
        }
        other => panic!("{other:?}"),
    }
}

fn report(alloc: AllocId, node: NodeId, client: ClientStatus, events: Vec<AllocEvent>) -> Command {
    Command::AllocStatus(AllocReport {
        alloc,
        node,
        client,
        restarts: 0,
        events,
        ports: Vec::new(),
        at: Timestamp(10),
        health: Default::default(),
    })
}

fn event(at: u64, kind: AllocEventKind, message: &str) -> AllocEvent {
    AllocEvent {
        at: Timestamp(at),
        kind,
        message: message.into(),
    }
}

fn get(f: &Fixture, id: AllocId) -> Allocation {
    f.reader.allocation(id).unwrap().unwrap()
}

fn ids(allocs: &[Allocation]) -> Vec<AllocId> {
    allocs.iter().map(|a| a.id).collect()
}

#[test]
fn the_modify_index_strictly_increases_on_every_change() {
    let f = Fixture::new();
    let n = node(&f);
    assert_eq!(f.reader.alloc_index().unwrap(), 0);
    let placed = plan(&f, vec![], &[n, n]);
    let (a, b) = (placed[0], placed[1]);
    assert!(get(&f, a).modify_index < get(&f, b).modify_index);
    let mut last = get(&f, a).modify_index;
    let mut seen = |f: &Fixture, id: AllocId| {
        let i = get(f, id).modify_index;
        assert!(i > last, "index {i} after {last}");
        assert_eq!(
            f.reader.alloc_index().unwrap(),
            i,
            "the counter is the latest"
        );
        last = i;
    };
    seen(&f, b);
    f.apply(report(a, n, ClientStatus::Running, vec![]))
        .unwrap();
    seen(&f, a);
    f.apply(report(
        a,
        n,
        ClientStatus::Running,
        vec![event(11, AllocEventKind::Restarting, "exit 1")],
    ))
    .unwrap();
    seen(&f, a);
    plan(&f, vec![b], &[]);
    seen(&f, b);
    f.apply(report(b, n, ClientStatus::Complete, vec![]))
        .unwrap();
    seen(&f, b);
    // The index apply answers with is the stored one.
    let Ok(Applied::Allocation(answered)) = f.apply(report(a, n, ClientStatus::Failed, vec![]))
    else {
        panic!()
    };
    assert_eq!(answered, get(&f, a));
    seen(&f, a);
}

#[test]
fn a_report_that_changes_nothing_does_not_advance_the_index() {
    let f = Fixture::new();
    let n = node(&f);
    let a = plan(&f, vec![], &[n])[0];
    let started = vec![event(11, AllocEventKind::Started, "pid 7")];
    f.apply(report(a, n, ClientStatus::Running, started.clone()))
        .unwrap();
    let before = get(&f, a);
    // The same report again (the agent resends until acknowledged): nothing twice.
    f.apply(report(a, n, ClientStatus::Running, started))
        .unwrap();
    assert_eq!(get(&f, a), before);
    assert_eq!(f.reader.alloc_index().unwrap(), before.modify_index);
    let started_events = before
        .events
        .iter()
        .filter(|e| e.kind == AllocEventKind::Started)
        .count();
    assert_eq!(started_events, 1, "{:?}", before.events);
}

#[test]
fn the_since_query_returns_exactly_the_nodes_changed_allocations() {
    let f = Fixture::new();
    let (n1, n2) = (node(&f), node(&f));
    let placed = plan(&f, vec![], &[n1, n1, n1, n2]);
    let (a1, a2, a3, b1) = (placed[0], placed[1], placed[2], placed[3]);
    let after_place = f.reader.alloc_index().unwrap();

    let (all, upto) = f.reader.allocations_of_node_since(n1, 0).unwrap();
    assert_eq!(ids(&all), [a1, a2, a3]);
    assert_eq!(upto, after_place);
    let (none, upto) = f.reader.allocations_of_node_since(n1, after_place).unwrap();
    assert!(none.is_empty());
    assert_eq!(upto, after_place);

    f.apply(report(a2, n1, ClientStatus::Running, vec![]))
        .unwrap();
    f.apply(report(b1, n2, ClientStatus::Running, vec![]))
        .unwrap();
    plan(&f, vec![a3], &[]);
    // Changed twice: listed once, with its latest state, in the order of last change.
    f.apply(report(a2, n1, ClientStatus::Failed, vec![]))
        .unwrap();
    let now = f.reader.alloc_index().unwrap();
    let (changed, upto) = f.reader.allocations_of_node_since(n1, after_place).unwrap();
    assert_eq!(ids(&changed), [a3, a2]);
    assert_eq!(changed[1].client, ClientStatus::Failed);
    assert_eq!(upto, now);
    let (other, _) = f.reader.allocations_of_node_since(n2, after_place).unwrap();
    assert_eq!(ids(&other), [b1]);
    // From an index in the middle: only what changed after it.
    let b1_index = get(&f, b1).modify_index;
    let (later, _) = f.reader.allocations_of_node_since(n1, b1_index).unwrap();
    assert_eq!(ids(&later), [a3, a2]);
    let (later, _) = f.reader.allocations_of_node_since(n2, b1_index).unwrap();
    assert!(later.is_empty());

    assert_eq!(
        f.reader
            .nodes_with_alloc_changes(after_place, now)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [n1, n2]
    );
    assert_eq!(
        f.reader
            .nodes_with_alloc_changes(b1_index, now)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [n1]
    );
    assert!(
        f.reader
            .nodes_with_alloc_changes(now, now)
            .unwrap()
            .is_empty()
    );
    // A server that starts over this state saw none of those changes: it does not claim
    // to know which nodes they were on, but it knows the ones applied after it started.
    let restarted = crate::StateReader::new(f.reader.tree().clone());
    assert_eq!(restarted.nodes_with_alloc_changes(after_place, now), None);
    assert_eq!(
        restarted.nodes_with_alloc_changes(now, now),
        Some(Default::default())
    );
}

#[test]
fn a_report_from_another_node_is_rejected_and_changes_nothing() {
    let f = Fixture::new();
    let (n1, n2) = (node(&f), node(&f));
    let a = plan(&f, vec![], &[n1])[0];
    let before = get(&f, a);
    let answer = f.apply(report(
        a,
        n2,
        ClientStatus::Failed,
        vec![event(11, AllocEventKind::Failed, "forged")],
    ));
    match answer {
        Err(ApplyError::Refused(why)) => {
            assert!(why.contains(&format!("not on node {n2}")), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&f, a), before);
    let unknown = f.apply(report(AllocId(99), n1, ClientStatus::Running, vec![]));
    assert!(
        matches!(unknown, Err(ApplyError::NotFound { .. })),
        "{unknown:?}"
    );
}

#[test]
fn a_terminal_status_stays_terminal() {
    let f = Fixture::new();
    let n = node(&f);
    let a = plan(&f, vec![], &[n])[0];
    f.apply(report(
        a,
        n,
        ClientStatus::Failed,
        vec![event(11, AllocEventKind::Failed, "past its restarts")],
    ))
    .unwrap();
    let failed = get(&f, a);
    assert_eq!(failed.client, ClientStatus::Failed);
    for late in [
        ClientStatus::Running,
        ClientStatus::Pending,
        ClientStatus::Complete,
    ] {
        f.apply(report(
            a,
            n,
            late,
            vec![event(12, AllocEventKind::Started, "late")],
        ))
        .unwrap();
        assert_eq!(get(&f, a), failed, "{late:?} changed a failed allocation");
    }
}

#[test]
fn events_are_appended_bounded_and_restarts_recorded() {
    let f = Fixture::new();
    let n = node(&f);
    let a = plan(&f, vec![], &[n])[0];
    let many: Vec<AllocEvent> = (0..40)
        .map(|i| event(100 + i, AllocEventKind::Restarting, &"x".repeat(5000)))
        .collect();
    f.apply(Command::AllocStatus(AllocReport {
        alloc: a,
        node: n,
        client: ClientStatus::Running,
        restarts: 40,
        events: many,
        ports: Vec::new(),
        at: Timestamp(200),
        health: Default::default(),
    }))
    .unwrap();
    let got = get(&f, a);
    assert_eq!(got.restarts, 40);
    assert_eq!(got.events.len(), ALLOC_EVENTS_MAX);
    assert_eq!(
        got.events.last().unwrap().at,
        Timestamp(139),
        "the newest kept"
    );
    assert!(got.events.iter().all(|e| e.message.len() <= 1024));
    // Restarts never go back, whatever an agent says.
    f.apply(Command::AllocStatus(AllocReport {
        alloc: a,
        node: n,
        client: ClientStatus::Running,
        restarts: 1,
        events: vec![],
        ports: Vec::new(),
        at: Timestamp(201),
        health: Default::default(),
    }))
    .unwrap();
    assert_eq!(get(&f, a).restarts, 40);
}
