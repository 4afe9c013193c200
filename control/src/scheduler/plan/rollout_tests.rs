//! Rolling updates: the planner under a running deployment, and when the watcher ends one.

use windflow_protocol::{
    AllocHealth, ClientStatus, Deployment, DeploymentId, DeploymentStatus, HealthStatus,
};
use windflow_raft::DeploymentEnd;

use super::tests::{alloc, node, service, stopped, view};
use super::*;
use crate::scheduler::deploy_watch::verdict;

fn deployment(version: u64, promoted: bool) -> Deployment {
    Deployment {
        id: DeploymentId(7),
        job: windflow_protocol::JobId(1),
        namespace: Default::default(),
        version,
        from_version: Some(version - 1),
        status: DeploymentStatus::Running,
        description: String::new(),
        promoted,
        progress_deadline: Timestamp(1_000),
        reverts: None,
        created_at: Timestamp(0),
        modified_at: Timestamp(0),
    }
}

fn at_version(mut a: Allocation, version: u64, health: HealthStatus) -> Allocation {
    a.job_version = version;
    a.health = AllocHealth {
        status: health,
        message: String::new(),
    };
    if version == 2 {
        a.deployment = Some(DeploymentId(7));
    }
    a
}

fn version_2(count: u32, max_parallel: u32, canary: u32) -> Job {
    let mut job = service(count, 100, 64);
    job.version = 2;
    job.spec.groups[0].update.max_parallel = max_parallel;
    job.spec.groups[0].update.canary = canary;
    job
}

fn roll(job: &Job, d: &Deployment, existing: &[Allocation]) -> Outcome {
    let mut v = view(vec![node(1, 8000, 8192), node(2, 8000, 8192)]);
    plan_job(
        job.id,
        Some(job),
        Some(d),
        existing,
        &mut v,
        EvalId(1),
        Timestamp(1),
    )
}

fn placed_indices(o: &Outcome) -> Vec<u32> {
    o.plan.place.iter().map(|p| p.index).collect()
}

#[test]
fn a_rollout_places_max_parallel_new_ones_and_stops_nothing_yet() {
    let job = version_2(3, 2, 0);
    let old: Vec<Allocation> = (0..3)
        .map(|i| at_version(alloc(i as u64 + 1, i, 1), 1, HealthStatus::Healthy))
        .collect();
    let o = roll(&job, &deployment(2, true), &old);
    assert_eq!(placed_indices(&o), [0, 1]);
    assert!(stopped(&o).is_empty(), "{:?}", o.plan.stop);
    assert!(
        o.plan
            .place
            .iter()
            .all(|p| p.job_version == 2 && p.deployment == Some(DeploymentId(7)))
    );
}

#[test]
fn an_old_one_stops_only_once_its_new_one_is_healthy() {
    let job = version_2(3, 1, 0);
    let mut existing: Vec<Allocation> = (0..3)
        .map(|i| at_version(alloc(i as u64 + 1, i, 1), 1, HealthStatus::Healthy))
        .collect();
    // Index 0's new one is not healthy yet: nothing moves, nothing more is placed.
    existing.push(at_version(alloc(10, 0, 2), 2, HealthStatus::Unknown));
    let o = roll(&job, &deployment(2, true), &existing);
    assert!(o.is_empty(), "{:?} {:?}", o.plan.stop, o.plan.place);
    // Healthy: index 0's old one stops and index 1 gets its new one.
    existing[3].health.status = HealthStatus::Healthy;
    let o = roll(&job, &deployment(2, true), &existing);
    assert_eq!(stopped(&o), [AllocId(1)]);
    assert_eq!(placed_indices(&o), [1]);
}

#[test]
fn canaries_run_next_to_the_old_ones_until_promoted() {
    let job = version_2(3, 3, 1);
    let mut existing: Vec<Allocation> = (0..3)
        .map(|i| at_version(alloc(i as u64 + 1, i, 1), 1, HealthStatus::Healthy))
        .collect();
    let o = roll(&job, &deployment(2, false), &existing);
    assert_eq!(placed_indices(&o), [0], "one canary");
    existing.push(at_version(alloc(10, 0, 2), 2, HealthStatus::Healthy));
    let o = roll(&job, &deployment(2, false), &existing);
    assert!(
        o.is_empty(),
        "a healthy canary replaces nothing before the promotion"
    );
    let o = roll(&job, &deployment(2, true), &existing);
    assert_eq!(stopped(&o), [AllocId(1)]);
    assert_eq!(placed_indices(&o), [1, 2]);
}

#[test]
fn without_a_deployment_a_mixed_instance_keeps_its_older_allocation() {
    let job = version_2(1, 1, 0);
    let existing = vec![
        at_version(alloc(1, 0, 1), 1, HealthStatus::Healthy),
        at_version(alloc(2, 0, 2), 2, HealthStatus::Unhealthy),
    ];
    let mut v = view(vec![node(1, 8000, 8192), node(2, 8000, 8192)]);
    let o = plan_job(
        job.id,
        Some(&job),
        None,
        &existing,
        &mut v,
        EvalId(1),
        Timestamp(1),
    );
    assert_eq!(stopped(&o), [AllocId(2)]);
}

#[test]
fn the_watcher_ends_deployments_by_health_progress_and_completion() {
    let job = version_2(2, 1, 0);
    let d = deployment(2, true);
    let old = at_version(alloc(1, 0, 1), 1, HealthStatus::Healthy);
    let mut new0 = at_version(alloc(2, 0, 2), 2, HealthStatus::Healthy);
    let new1 = at_version(alloc(3, 1, 2), 2, HealthStatus::Healthy);
    // An old one still runs: not done.
    assert_eq!(
        verdict(
            &d,
            Some(&job),
            &[old.clone(), new0.clone(), new1.clone()],
            Timestamp(5)
        ),
        None
    );
    let mut stopping = old.clone();
    stopping.desired = windflow_protocol::DesiredStatus::Stop;
    let ended = verdict(
        &d,
        Some(&job),
        &[stopping, new0.clone(), new1.clone()],
        Timestamp(5),
    );
    assert_eq!(ended.map(|(o, _)| o), Some(DeploymentEnd::Successful));

    new0.health.status = HealthStatus::Unhealthy;
    let (o, why) = verdict(&d, Some(&job), &[old.clone(), new0.clone()], Timestamp(5)).unwrap();
    assert_eq!(o, DeploymentEnd::Failed);
    assert!(why.contains("AL2"), "{why}");
    new0.health.status = HealthStatus::Unknown;
    new0.client = ClientStatus::Failed;
    assert_eq!(
        verdict(&d, Some(&job), &[new0], Timestamp(5)).map(|(o, _)| o),
        Some(DeploymentEnd::Failed)
    );

    let (o, why) = verdict(&d, Some(&job), &[old], Timestamp(2_000)).unwrap();
    assert_eq!(o, DeploymentEnd::Failed);
    assert!(why.contains("progress deadline"), "{why}");
    assert_eq!(
        verdict(&d, None, &[], Timestamp(5)).map(|(o, _)| o),
        Some(DeploymentEnd::Cancelled)
    );
}
