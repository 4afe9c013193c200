//! `apply`'s re-check of plans: whatever plans race, no node is ever overcommitted.

use proptest::prelude::*;
use windflow_protocol::{
    ClientStatus, DriverKind, EvalId, Fingerprint, JobId, NodeId, Resources, Timestamp,
};

use crate::apply_tests::Fixture;
use crate::command::{AllocReport, Applied, Command, NewAlloc, Plan, PlanResult};

fn node_with(f: &Fixture, capacity: Resources) -> NodeId {
    let Ok(Applied::Node(n)) = f.apply(Command::RegisterNode {
        name: "n".into(),
        drivers: vec![DriverKind::Exec],
        at: Timestamp(1),
    }) else {
        panic!()
    };
    f.apply(Command::NodeHello {
        node: n.id,
        hostname: "n".into(),
        drivers: vec![DriverKind::Exec],
        agent_version: "0".into(),
        fingerprint: Fingerprint {
            resources: capacity,
            attributes: Default::default(),
        },
        at: Timestamp(2),
    })
    .unwrap();
    n.id
}

fn place(node: NodeId, index: u32, memory_mb: u64) -> NewAlloc {
    NewAlloc {
        job: JobId(1),
        namespace: Default::default(),
        group: "web".into(),
        index,
        node,
        resources: Resources {
            cpu_mhz: 10,
            memory_mb,
            disk_mb: 0,
        },
        replaces: None,
        job_version: 1,
        deployment: None,
    }
}

fn submit(f: &Fixture, stop: Vec<windflow_protocol::AllocId>, place: Vec<NewAlloc>) -> PlanResult {
    match f.apply(Command::SubmitPlan(Plan {
        eval: EvalId(1),
        stop: stop
            .into_iter()
            .map(|alloc| crate::command::StopAlloc {
                alloc,
                reason: "test".into(),
            })
            .collect(),
        place,
        at: Timestamp(3),
    })) {
        Ok(Applied::Plan(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn used(f: &Fixture, node: NodeId) -> Resources {
    f.reader
        .node_usage()
        .unwrap()
        .into_iter()
        .find(|(n, _)| *n == node)
        .map(|(_, r)| r)
        .unwrap_or_default()
}

const CAPACITY: Resources = Resources {
    cpu_mhz: 10_000,
    memory_mb: 1024,
    disk_mb: 0,
};

#[test]
fn two_plans_racing_for_the_last_memory_one_is_rejected() {
    let f = Fixture::new();
    let node = node_with(&f, CAPACITY);
    assert_eq!(
        submit(&f, vec![], vec![place(node, 0, 768)]).placed.len(),
        1
    );
    // Both plans were made from a snapshot with 256 MB free; only the first fits.
    let first = submit(&f, vec![], vec![place(node, 1, 256)]);
    let second = submit(&f, vec![], vec![place(node, 2, 256)]);
    assert_eq!((first.placed.len(), first.rejected.len()), (1, 0));
    assert_eq!((second.placed.len(), second.rejected.len()), (0, 1));
    assert!(second.rejected[0].reason.contains("memory"), "{second:?}");
    assert_eq!(used(&f, node).memory_mb, 1024);
}

#[test]
fn stopped_and_ended_allocations_free_their_resources() {
    let f = Fixture::new();
    let node = node_with(&f, CAPACITY);
    let a = submit(&f, vec![], vec![place(node, 0, 1024)]).placed[0];
    assert_eq!(
        submit(&f, vec![], vec![place(node, 1, 1)]).rejected.len(),
        1
    );
    // A plan that stops one and places another in the room it frees.
    let swap = submit(&f, vec![a], vec![place(node, 1, 1000)]);
    assert_eq!(swap.placed.len(), 1, "{swap:?}");
    assert_eq!(used(&f, node).memory_mb, 1000);
    f.apply(Command::AllocStatus(AllocReport {
        alloc: swap.placed[0],
        node,
        client: ClientStatus::Failed,
        restarts: 0,
        events: Vec::new(),
        ports: Vec::new(),
        at: Timestamp(4),
        health: Default::default(),
    }))
    .unwrap();
    assert_eq!(used(&f, node), Resources::default());
    // A terminal status stays: a late "running" does not take the room back.
    f.apply(Command::AllocStatus(AllocReport {
        alloc: swap.placed[0],
        node,
        client: ClientStatus::Running,
        restarts: 0,
        events: Vec::new(),
        ports: Vec::new(),
        at: Timestamp(5),
        health: Default::default(),
    }))
    .unwrap();
    assert_eq!(used(&f, node), Resources::default());
}

#[test]
fn a_placement_on_an_unknown_node_is_rejected() {
    let f = Fixture::new();
    let r = submit(&f, vec![], vec![place(NodeId(9), 0, 1)]);
    assert!(r.rejected[0].reason.contains("does not exist"), "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Plans made blind to each other (each from the same empty snapshot) are applied in
    /// turn: every node's live allocations stay within its capacity, the usage index
    /// matches them, and whatever fits is placed.
    #[test]
    fn racing_plans_never_overcommit_a_node(
        plans in prop::collection::vec(
            prop::collection::vec((0usize..3, 1u64..600), 1..6),
            2..5,
        )
    ) {
        let f = Fixture::new();
        let nodes: Vec<NodeId> = (0..3).map(|_| node_with(&f, CAPACITY)).collect();
        let mut index = 0;
        for plan in plans {
            let place: Vec<NewAlloc> = plan
                .iter()
                .map(|(n, mem)| {
                    index += 1;
                    place(nodes[*n], index, *mem)
                })
                .collect();
            let before: Vec<Resources> = nodes.iter().map(|n| used(&f, *n)).collect();
            let result = submit(&f, vec![], place.clone());
            prop_assert_eq!(result.placed.len() + result.rejected.len(), place.len());
            // A rejection means that placement really did not fit at its turn.
            let mut running = before;
            let mut rejected = result.rejected.iter().map(|r| r.index as usize).peekable();
            for (i, p) in place.iter().enumerate() {
                let slot = nodes.iter().position(|n| *n == p.node).unwrap();
                let fits = running[slot].memory_mb + p.resources.memory_mb <= CAPACITY.memory_mb;
                if rejected.peek() == Some(&i) {
                    rejected.next();
                    prop_assert!(!fits);
                } else {
                    prop_assert!(fits);
                    running[slot] = running[slot].saturating_add(p.resources);
                }
            }
        }
        for node in &nodes {
            let live: u64 = f
                .reader
                .allocations_of_node(*node)
                .unwrap()
                .iter()
                .filter(|a| a.is_live())
                .map(|a| a.resources.memory_mb)
                .sum();
            prop_assert!(live <= CAPACITY.memory_mb);
            prop_assert_eq!(used(&f, *node).memory_mb, live);
        }
    }
}
