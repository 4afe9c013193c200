use std::collections::BTreeMap;

use windflow_protocol::{
    ClientStatus, Constraint, DesiredStatus, DriverKind, JobId, JobSpec, JobType, Operator,
    TaskSpec,
};

use super::*;

pub(super) fn node(id: u64, cpu_mhz: u64, memory_mb: u64) -> Node {
    Node {
        id: NodeId(id),
        name: format!("host-{id}"),
        drivers: vec![DriverKind::Exec],
        registered_at: Timestamp(0),
        last_seen_at: None,
        agent_version: None,
        resources: Resources {
            cpu_mhz,
            memory_mb,
            disk_mb: 0,
        },
        attributes: BTreeMap::from([("os".into(), "linux".into())]),
        labels: BTreeMap::new(),
        revoked_at: None,
        status: windflow_protocol::NodeStatus::Ready,
        eligibility: Default::default(),
        drain: None,
    }
}

pub(super) fn view(nodes: Vec<Node>) -> ClusterView {
    ClusterView::new(nodes, HashMap::new())
}

pub(super) fn service(count: u32, cpu_mhz: u64, memory_mb: u64) -> Job {
    let mut task = TaskSpec::exec("web", "httpd");
    task.resources = Resources {
        cpu_mhz,
        memory_mb,
        disk_mb: 0,
    };
    let mut spec = JobSpec::exec("web", task);
    spec.job_type = JobType::Service;
    spec.groups[0].count = count;
    Job {
        id: JobId(1),
        spec,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        version: 1,
        stable_version: None,
    }
}

pub(super) fn plan(job: &Job, existing: &[Allocation], view: &mut ClusterView) -> Outcome {
    plan_job(
        job.id,
        Some(job),
        None,
        existing,
        view,
        EvalId(1),
        Timestamp(1),
    )
}

pub(super) fn stopped(o: &Outcome) -> Vec<AllocId> {
    o.plan.stop.iter().map(|s| s.alloc).collect()
}

fn placed_on(o: &Outcome) -> BTreeMap<NodeId, u32> {
    let mut m = BTreeMap::new();
    for p in &o.plan.place {
        *m.entry(p.node).or_default() += 1;
    }
    m
}

#[test]
fn six_instances_fit_three_unequal_nodes_within_capacity() {
    // Room for 1, 2 and 3 instances of 1 GB.
    let nodes = vec![
        node(1, 8000, 1024),
        node(2, 8000, 2048),
        node(3, 8000, 3072),
    ];
    let mut v = view(nodes.clone());
    let o = plan(&service(6, 100, 1024), &[], &mut v);
    assert!(o.unplaced.is_empty(), "{:?}", o.unplaced);
    assert_eq!(o.plan.place.len(), 6);
    let per_node = placed_on(&o);
    for n in &nodes {
        let mem = u64::from(per_node.get(&n.id).copied().unwrap_or(0)) * 1024;
        assert!(mem <= n.resources.memory_mb, "{per_node:?}");
    }
    let mut indexes: Vec<u32> = o.plan.place.iter().map(|p| p.index).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_group_that_fits_nowhere_says_why_for_each_node() {
    let mut v = view(vec![node(1, 8000, 512), node(2, 8000, 512)]);
    let o = plan(&service(2, 100, 1024), &[], &mut v);
    assert!(o.plan.place.is_empty());
    assert_eq!(o.unplaced.len(), 1);
    let why = &o.unplaced[0];
    assert!(why.contains("2 of 2 instance(s)"), "{why}");
    assert!(why.contains("N1: memory exhausted"), "{why}");
    assert!(why.contains("N2: memory exhausted"), "{why}");

    let mut job = service(1, 100, 10);
    job.spec.groups[0].constraints.push(Constraint {
        attribute: "os".into(),
        operator: Operator::Equal,
        value: "windows".into(),
    });
    let o = plan(&job, &[], &mut v);
    assert!(
        o.unplaced[0].contains("constraint `os = windows` not met"),
        "{:?}",
        o.unplaced
    );
    let o = plan(&service(1, 1, 1), &[], &mut view(vec![]));
    assert!(o.unplaced[0].contains("no nodes"), "{:?}", o.unplaced);
}

#[test]
fn binpack_prefers_busy_nodes_spread_empty_ones_and_instances_spread_out() {
    let nodes: Vec<Node> = (1..=4).map(|i| node(i, 10_000, 10_000)).collect();
    let busy = |nodes: &[Node]| {
        let mut v = view(nodes.to_vec());
        // Another job holds half of node 3.
        v.used.insert(
            NodeId(3),
            Resources {
                cpu_mhz: 5000,
                memory_mb: 5000,
                disk_mb: 0,
            },
        );
        v
    };
    let packed = plan(&service(1, 100, 100), &[], &mut busy(&nodes));
    assert_eq!(packed.plan.place[0].node, NodeId(3));
    let mut job = service(1, 100, 100);
    job.spec.groups[0].placement = Placement::Spread;
    let spread = plan(&job, &[], &mut busy(&nodes));
    assert_ne!(spread.plan.place[0].node, NodeId(3));
    // A job's own instances avoid each other among the nodes sampled for each (3 of 4
    // here), rather than all landing on the busy node.
    let four = placed_on(&plan(&service(4, 100, 100), &[], &mut busy(&nodes)));
    assert!(
        four.len() >= 3 && four.values().all(|n| *n <= 2),
        "{four:?}"
    );
}

pub(super) fn alloc(id: u64, index: u32, node: u64) -> Allocation {
    Allocation {
        id: AllocId(id),
        job: JobId(1),
        namespace: Default::default(),
        group: "web".into(),
        index,
        node: NodeId(node),
        resources: Resources::TASK_DEFAULT,
        desired: DesiredStatus::Run,
        client: ClientStatus::Running,
        eval: EvalId(1),
        created_at: Timestamp(0),
        modified_at: Timestamp(0),
        modify_index: 0,
        restarts: 0,
        previous: None,
        reschedules: 0,
        events: Vec::new(),
        ports: Vec::new(),
        job_version: 1,
        deployment: None,
        health: Default::default(),
    }
}

#[test]
fn running_instances_stay_extra_ones_stop_and_a_deleted_job_stops() {
    let mut v = view(vec![node(1, 8000, 8192)]);
    let mut ended = alloc(4, 1, 1);
    ended.client = ClientStatus::Failed;
    let existing = vec![alloc(1, 0, 1), alloc(2, 0, 1), alloc(3, 5, 1), ended];
    let o = plan(&service(2, 100, 64), &existing, &mut v);
    // Index 0 runs (its duplicate stops), 5 is past the count, 1 failed: its replacement
    // waits for the default reschedule delay (30 s after it failed).
    assert_eq!(stopped(&o), [AllocId(3), AllocId(2)]);
    assert!(o.plan.place.is_empty());
    assert_eq!(o.wait_until, Some(Timestamp(30_000)));

    let gone = plan_job(
        JobId(1),
        None,
        None,
        &existing,
        &mut v,
        EvalId(2),
        Timestamp(2),
    );
    assert_eq!(stopped(&gone), [AllocId(1), AllocId(2), AllocId(3)]);
    assert!(gone.plan.place.is_empty());
}
