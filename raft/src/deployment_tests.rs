//! Apply's rules for job versions, scaling and deployments.

use windflow_protocol::{
    DeploymentStatus, EvalTrigger, Job, JobSpec, JobType, TaskSpec, Timestamp,
};

use crate::apply_tests::Fixture;
use crate::command::{Applied, ApplyError, Command, DeploymentEnd};

fn service(command: &str, auto_revert: bool) -> JobSpec {
    let mut spec = JobSpec::exec("web", TaskSpec::exec("web", command));
    spec.job_type = JobType::Service;
    spec.groups[0].count = 3;
    spec.groups[0].update.auto_revert = auto_revert;
    spec
}

fn create(f: &Fixture, spec: JobSpec) -> Job {
    match f.apply(Command::CreateJob {
        spec,
        at: Timestamp(1),
    }) {
        Ok(Applied::Job(j)) => j,
        other => panic!("{other:?}"),
    }
}

fn update(
    f: &Fixture,
    job: &Job,
    spec: JobSpec,
    at: u64,
) -> (Job, Option<windflow_protocol::Deployment>) {
    match f.apply(Command::UpdateJob {
        job: job.id,
        spec,
        at: Timestamp(at),
    }) {
        Ok(Applied::JobUpdated { job, deployment }) => (job, deployment),
        other => panic!("{other:?}"),
    }
}

fn end(f: &Fixture, d: windflow_protocol::DeploymentId, outcome: DeploymentEnd, at: u64) {
    f.apply(Command::EndDeployment {
        deployment: d,
        outcome,
        reason: "test".into(),
        at: Timestamp(at),
    })
    .unwrap();
}

#[test]
fn a_service_starts_at_version_one_with_a_first_deployment() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    assert_eq!(job.version, 1);
    let d = f.reader.latest_deployment(job.id).unwrap().unwrap();
    assert_eq!(
        (d.version, d.from_version, d.status),
        (1, None, DeploymentStatus::Running)
    );
    assert_eq!(f.reader.job_version(job.id, 1).unwrap().unwrap(), job.spec);
}

#[test]
fn an_update_makes_a_version_and_a_deployment_but_nothing_changed_makes_none() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    let first = f.reader.latest_deployment(job.id).unwrap().unwrap();
    let (same, none) = update(&f, &job, job.spec.clone(), 2);
    assert_eq!((same.version, none), (1, None));

    let (v2, d) = update(&f, &job, service("sleep 200", false), 3);
    assert_eq!(v2.version, 2);
    let d = d.expect("a deployment");
    assert_eq!((d.version, d.from_version), (2, Some(1)));
    // The first one, still running, was cancelled by it.
    let first = f.reader.deployment(first.id).unwrap().unwrap();
    assert_eq!(first.status, DeploymentStatus::Cancelled);
    // Both versions are kept.
    let versions: Vec<u64> = f
        .reader
        .job_versions(job.id)
        .unwrap()
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(versions, [1, 2]);
    assert!(
        f.reader
            .pending_evaluations()
            .unwrap()
            .iter()
            .any(|e| e.job == job.id && e.trigger == EvalTrigger::JobRegister)
    );
}

#[test]
fn an_update_keeps_name_namespace_and_type() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    let mut renamed = job.spec.clone();
    renamed.name = "other".into();
    let mut batch = job.spec.clone();
    batch.job_type = JobType::Batch;
    for spec in [renamed, batch] {
        let refused = f.apply(Command::UpdateJob {
            job: job.id,
            spec,
            at: Timestamp(2),
        });
        assert!(
            matches!(refused, Err(ApplyError::Refused(_))),
            "{refused:?}"
        );
    }
}

#[test]
fn a_count_change_is_a_version_without_a_rollout_and_scaling_is_neither() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    let mut more = job.spec.clone();
    more.groups[0].count = 5;
    let (v2, d) = update(&f, &job, more, 2);
    assert_eq!((v2.version, d), (2, None));

    let Ok(Applied::Job(scaled)) = f.apply(Command::ScaleJob {
        job: job.id,
        group: "web".into(),
        count: 1,
        at: Timestamp(3),
    }) else {
        panic!()
    };
    assert_eq!((scaled.version, scaled.spec.groups[0].count), (2, 1));
    assert_eq!(
        f.reader.job_version(job.id, 2).unwrap().unwrap().groups[0].count,
        1
    );
    let unknown = f.apply(Command::ScaleJob {
        job: job.id,
        group: "nope".into(),
        count: 1,
        at: Timestamp(4),
    });
    assert!(
        matches!(unknown, Err(ApplyError::NotFound { .. })),
        "{unknown:?}"
    );
}

#[test]
fn a_batch_job_update_just_replaces_the_spec() {
    let f = Fixture::new();
    let job = create(
        &f,
        JobSpec::exec("nightly", TaskSpec::exec("nightly", "true")),
    );
    assert!(f.reader.latest_deployment(job.id).unwrap().is_none());
    let (v2, d) = update(
        &f,
        &job,
        JobSpec::exec("nightly", TaskSpec::exec("nightly", "false")),
        2,
    );
    assert_eq!((v2.version, d), (2, None));
    let scaled = f.apply(Command::ScaleJob {
        job: job.id,
        group: "nightly".into(),
        count: 2,
        at: Timestamp(3),
    });
    assert!(matches!(scaled, Err(ApplyError::Refused(_))), "{scaled:?}");
}

#[test]
fn success_marks_the_version_stable_and_failure_reverts_to_it_with_current_counts() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", true));
    let first = f.reader.latest_deployment(job.id).unwrap().unwrap();
    end(&f, first.id, DeploymentEnd::Successful, 2);
    assert_eq!(
        f.reader.job(job.id).unwrap().unwrap().stable_version,
        Some(1)
    );

    let (_, d) = update(&f, &job, service("exit 1", true), 3);
    let d = d.unwrap();
    f.apply(Command::ScaleJob {
        job: job.id,
        group: "web".into(),
        count: 4,
        at: Timestamp(4),
    })
    .unwrap();
    end(&f, d.id, DeploymentEnd::Failed, 5);

    let failed = f.reader.deployment(d.id).unwrap().unwrap();
    assert_eq!(failed.status, DeploymentStatus::Failed);
    assert!(
        failed
            .description
            .contains("reverted to version 1 as version 3"),
        "{}",
        failed.description
    );
    let job = f.reader.job(job.id).unwrap().unwrap();
    assert_eq!(job.version, 3);
    assert_eq!(job.spec.groups[0].count, 4, "the revert keeps the count");
    assert_eq!(
        job.spec.groups[0].tasks,
        service("sleep 100", true).groups[0].tasks
    );
    let revert = f.reader.latest_deployment(job.id).unwrap().unwrap();
    assert_eq!((revert.version, revert.reverts), (3, Some(d.id)));
    // An ended deployment ends once.
    let again = f.apply(Command::EndDeployment {
        deployment: d.id,
        outcome: DeploymentEnd::Failed,
        reason: "again".into(),
        at: Timestamp(6),
    });
    assert!(matches!(again, Err(ApplyError::Refused(_))), "{again:?}");
}

#[test]
fn without_auto_revert_a_failure_leaves_the_version() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    let first = f.reader.latest_deployment(job.id).unwrap().unwrap();
    end(&f, first.id, DeploymentEnd::Successful, 2);
    let (_, d) = update(&f, &job, service("exit 1", false), 3);
    end(&f, d.unwrap().id, DeploymentEnd::Failed, 4);
    assert_eq!(f.reader.job(job.id).unwrap().unwrap().version, 2);
}

#[test]
fn canaries_wait_for_promotion_once() {
    let f = Fixture::new();
    let mut spec = service("sleep 100", false);
    spec.groups[0].update.canary = 1;
    let job = create(&f, spec.clone());
    // A first version has nothing to be a canary next to.
    assert!(
        f.reader
            .latest_deployment(job.id)
            .unwrap()
            .unwrap()
            .promoted
    );
    spec.groups[0].tasks[0].env.insert("V".into(), "2".into());
    let (_, d) = update(&f, &job, spec, 2);
    let d = d.unwrap();
    assert!(!d.promoted);
    let Ok(Applied::Deployment(p)) = f.apply(Command::PromoteDeployment {
        deployment: d.id,
        at: Timestamp(3),
    }) else {
        panic!()
    };
    assert!(p.promoted);
    let twice = f.apply(Command::PromoteDeployment {
        deployment: d.id,
        at: Timestamp(4),
    });
    assert!(matches!(twice, Err(ApplyError::Refused(_))), "{twice:?}");
}

#[test]
fn a_deleted_job_takes_its_versions_along() {
    let f = Fixture::new();
    let job = create(&f, service("sleep 100", false));
    update(&f, &job, service("sleep 200", false), 2);
    f.apply(Command::DeleteJob {
        job: job.id,
        at: Timestamp(3),
    })
    .unwrap();
    assert!(f.reader.job_versions(job.id).unwrap().is_empty());
}

#[test]
fn rollout_commands_round_trip_through_the_log_encoding() {
    let mut spec = service("sleep 100", true);
    spec.groups[0].checks.push(windflow_protocol::HealthCheck {
        name: "http-0".into(),
        kind: windflow_protocol::CheckKind::Http {
            path: "/".into(),
            port: None,
        },
        interval: windflow_protocol::HumanDuration::from_millis(300),
        timeout: windflow_protocol::HumanDuration::from_millis(250),
        grace: windflow_protocol::HumanDuration::from_secs(0),
    });
    for cmd in [
        Command::CreateJob {
            spec: spec.clone(),
            at: Timestamp(1),
        },
        Command::UpdateJob {
            job: windflow_protocol::JobId(1),
            spec,
            at: Timestamp(2),
        },
    ] {
        let entry = openraft::Entry::<crate::TypeConfig> {
            log_id: Default::default(),
            payload: openraft::EntryPayload::Normal(cmd.clone()),
        };
        let bytes = crate::encode(&entry).unwrap();
        let back: openraft::Entry<crate::TypeConfig> = crate::decode(&bytes, "log entry").unwrap();
        assert!(matches!(back.payload, openraft::EntryPayload::Normal(c) if c == cmd));
    }
}

#[test]
fn a_revert_never_waits_for_a_promotion() {
    let f = Fixture::new();
    let mut spec = service("sleep 100", true);
    spec.groups[0].update.canary = 1;
    let job = create(&f, spec.clone());
    let first = f.reader.latest_deployment(job.id).unwrap().unwrap();
    end(&f, first.id, DeploymentEnd::Successful, 2);
    spec.groups[0].tasks[0].env.insert("V".into(), "2".into());
    let (_, d) = update(&f, &job, spec, 3);
    end(&f, d.unwrap().id, DeploymentEnd::Failed, 4);
    let revert = f.reader.latest_deployment(job.id).unwrap().unwrap();
    assert!(revert.reverts.is_some() && revert.promoted, "{revert:?}");
}
