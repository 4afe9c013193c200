//! Reads of job versions and deployments (see [`crate::deployments`] for the rules).

use windflow_protocol::{Deployment, DeploymentId, JobId, JobSpec};

use crate::deployments::keys;
use crate::state::{id_of, key};
use crate::{StateReader, StoreError, decode};

impl StateReader {
    /// A job's spec at one of its versions.
    pub fn job_version(&self, job: JobId, version: u64) -> Result<Option<JobSpec>, StoreError> {
        self.tree()
            .get(key::pair(keys::JOB_VERSION, job.0, version))?
            .map(|v| decode(&v, "job version"))
            .transpose()
    }

    /// Every kept version of a job, oldest first.
    pub fn job_versions(&self, job: JobId) -> Result<Vec<(u64, JobSpec)>, StoreError> {
        let prefix = key::id(keys::JOB_VERSION, job.0);
        self.tree()
            .scan_prefix(&prefix)
            .map(|e| {
                let (k, v) = e?;
                let n = id_of(k.get(prefix.len()..).map(sled::IVec::from)).unwrap_or(0);
                Ok((n, decode(&v, "job version")?))
            })
            .collect()
    }

    pub fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>, StoreError> {
        self.tree()
            .get(key::id(keys::DEPLOYMENT, id.0))?
            .map(|v| decode(&v, "deployment"))
            .transpose()
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.tree()
            .scan_prefix(keys::DEPLOYMENT)
            .map(|e| decode(&e?.1, "deployment"))
            .collect()
    }

    /// A job's latest deployment (running or ended).
    pub fn latest_deployment(&self, job: JobId) -> Result<Option<Deployment>, StoreError> {
        match id_of(self.tree().get(key::id(keys::JOB_DEPLOYMENT, job.0))?) {
            Some(id) => self.deployment(DeploymentId(id)),
            None => Ok(None),
        }
    }
}
