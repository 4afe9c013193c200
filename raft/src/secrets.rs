//! Apply's rules for sealed values: replacing a task's sealed env (key rotation). Apply
//! never opens or seals anything; it only checks the replacement fits the task.

use std::collections::BTreeMap;

use windflow_protocol::{Job, JobId, Sealed, Timestamp};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, key};

/// Replaces the sealed values of task `task` of `job`. The names must be exactly the ones
/// the task has: a rotation re-encrypts values, it never adds or drops a variable.
pub(crate) fn reseal(
    p: &mut Pending<'_>,
    job: JobId,
    task: String,
    secret_env: BTreeMap<String, Sealed>,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let job_key = key::id(key::JOB, job.0);
    let Some(mut j) = p.get_as::<Job>(&job_key, "job")? else {
        return Ok(Err(ApplyError::not_found("job", job)));
    };
    let Some(spec) = j
        .spec
        .groups
        .iter_mut()
        .flat_map(|g| g.tasks.iter_mut())
        .find(|t| t.name == task)
    else {
        return Ok(Err(ApplyError::not_found("task", format!("{job}/{task}"))));
    };
    if !spec.secret_env.keys().eq(secret_env.keys()) {
        return Ok(Err(ApplyError::Refused(format!(
            "task {job}/{task}: a reseal must name exactly the task's secret env vars"
        ))));
    }
    if secret_env.values().any(Sealed::is_redacted) {
        return Ok(Err(ApplyError::Refused(
            "a reseal must carry sealed values, not redacted markers".into(),
        )));
    }
    spec.secret_env = secret_env;
    j.updated_at = at;
    p.put_as(job_key, &j)?;
    Ok(Ok(Applied::Job(j)))
}

#[cfg(test)]
mod tests {
    use windflow_protocol::{JobSpec, KeyId, TaskSpec};

    use super::*;
    use crate::Command;
    use crate::apply_tests::Fixture;

    fn sealed(key: u32, byte: u8) -> Sealed {
        Sealed {
            key: KeyId(key),
            nonce: [byte; 12],
            ciphertext: vec![byte; 20],
        }
    }

    fn job_with_secret(f: &Fixture) -> JobId {
        let mut task = TaskSpec::exec("t", "true");
        task.secret_env.insert("PASS".into(), sealed(1, 1));
        match f.apply(Command::CreateJob {
            spec: JobSpec::exec("j", task),
            at: Timestamp(1),
        }) {
            Ok(Applied::Job(j)) => j.id,
            other => panic!("{other:?}"),
        }
    }

    fn reseal_cmd(job: JobId, task: &str, env: &[(&str, Sealed)]) -> Command {
        Command::ResealSecretEnv {
            job,
            task: task.into(),
            secret_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            at: Timestamp(9),
        }
    }

    #[test]
    fn a_reseal_replaces_the_sealed_values_of_the_same_vars() {
        let f = Fixture::new();
        let job = job_with_secret(&f);
        let answer = f.apply(reseal_cmd(job, "t", &[("PASS", sealed(2, 2))]));
        assert!(matches!(answer, Ok(Applied::Job(_))), "{answer:?}");
        let stored = f.reader.job(job).unwrap().unwrap();
        let task = stored.spec.tasks().next().unwrap();
        assert_eq!(task.secret_env["PASS"], sealed(2, 2));
        assert_eq!(stored.updated_at, Timestamp(9));
    }

    #[test]
    fn a_reseal_cannot_add_drop_or_redact_vars() {
        let f = Fixture::new();
        let job = job_with_secret(&f);
        let refused = |cmd| matches!(f.apply(cmd), Err(ApplyError::Refused(_)));
        assert!(refused(reseal_cmd(job, "t", &[("OTHER", sealed(2, 2))])));
        assert!(refused(reseal_cmd(
            job,
            "t",
            &[("PASS", sealed(2, 2)), ("MORE", sealed(2, 3))]
        )));
        assert!(refused(reseal_cmd(
            job,
            "t",
            &[("PASS", Sealed::redacted(KeyId(2)))]
        )));
        assert!(matches!(
            f.apply(reseal_cmd(job, "nope", &[("PASS", sealed(2, 2))])),
            Err(ApplyError::NotFound { .. })
        ));
        assert!(matches!(
            f.apply(reseal_cmd(JobId(99), "t", &[("PASS", sealed(2, 2))])),
            Err(ApplyError::NotFound { .. })
        ));
        let task_env = f.reader.job(job).unwrap().unwrap().spec.groups[0].tasks[0]
            .secret_env
            .clone();
        assert_eq!(task_env["PASS"], sealed(1, 1));
    }
}
