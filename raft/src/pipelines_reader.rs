//! [`StateReader`]'s reads of pipelines, their runs, contexts and run retention.

use windflow_protocol::{
    Context, JobId, Namespace, Pipeline, PipelineId, PipelineRun, PipelineRunId, PipelineRunStatus,
    RunRetention, Timestamp,
};

use crate::page::tail_id;
use crate::reader::StateReader;
use crate::state::key;
use crate::{StoreError, decode};

impl StateReader {
    pub fn pipeline(&self, id: PipelineId) -> Result<Option<Pipeline>, StoreError> {
        self.get(&key::id(key::PIPELINE, id.0), "pipeline")
    }

    pub fn pipeline_by_name(
        &self,
        ns: &Namespace,
        name: &str,
    ) -> Result<Option<Pipeline>, StoreError> {
        match self.id_at(&crate::pipelines::name_key(ns, name))? {
            Some(id) => self.pipeline(PipelineId(id)),
            None => Ok(None),
        }
    }

    /// Every pipeline, by ascending ID.
    pub fn pipelines(&self) -> Result<Vec<Pipeline>, StoreError> {
        self.scan(key::PIPELINE, "pipeline")
    }

    /// The pipelines a job is a step of.
    pub fn pipelines_of_job(&self, job: JobId) -> Result<Vec<PipelineId>, StoreError> {
        let mut ids = Vec::new();
        for k in self
            .tree()
            .scan_prefix(key::id(key::PIPELINE_BY_JOB, job.0))
            .keys()
        {
            ids.extend(tail_id(&k?).map(PipelineId));
        }
        Ok(ids)
    }

    pub fn pipeline_run(&self, id: PipelineRunId) -> Result<Option<PipelineRun>, StoreError> {
        self.get(&key::id(key::PIPELINE_RUN, id.0), "pipeline run")
    }

    /// A pipeline's runs, oldest first.
    pub fn runs_of_pipeline(&self, id: PipelineId) -> Result<Vec<PipelineRun>, StoreError> {
        let mut runs = Vec::new();
        for k in self
            .tree()
            .scan_prefix(key::id(key::PIPELINE_RUN_BY_PIPELINE, id.0))
            .keys()
        {
            if let Some(run) = tail_id(&k?) {
                runs.extend(self.pipeline_run(PipelineRunId(run))?);
            }
        }
        Ok(runs)
    }

    /// Runs waiting for their start time, soonest first, with that time.
    pub fn scheduled_pipeline_runs(
        &self,
        limit: usize,
    ) -> Result<Vec<(Timestamp, PipelineRunId)>, StoreError> {
        let mut out = Vec::new();
        for k in self
            .tree()
            .scan_prefix(key::PIPELINE_RUN_SCHEDULED)
            .keys()
            .take(limit)
        {
            let k = k?;
            let at = k
                .get(key::PIPELINE_RUN_SCHEDULED.len()..key::PIPELINE_RUN_SCHEDULED.len() + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            if let (Some(at), Some(run)) = (at, tail_id(&k)) {
                out.push((Timestamp(at), PipelineRunId(run)));
            }
        }
        Ok(out)
    }

    /// Every context: jobs' (`CJ`) first, then pipelines' (`CP`), each by ascending ID.
    pub fn contexts(&self) -> Result<Vec<Context>, StoreError> {
        self.tree()
            .scan_prefix(key::CONTEXT)
            .values()
            .map(|v| decode(&v?, "context"))
            .collect()
    }

    pub fn pipeline_count(&self) -> Result<u64, StoreError> {
        Ok(self.id_at(key::PIPELINE_COUNT)?.unwrap_or(0))
    }

    /// How many pipeline runs are in each status now.
    pub fn pipeline_run_counts(&self) -> Result<Vec<(PipelineRunStatus, u64)>, StoreError> {
        crate::pipelines::RUN_STATUSES
            .iter()
            .map(|s| {
                Ok((
                    *s,
                    self.id_at(&crate::pipelines::count_key(*s))?.unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The cluster's run retention (unlimited until set).
    pub fn run_retention(&self) -> Result<RunRetention, StoreError> {
        Ok(self
            .get(key::RUN_RETENTION, "run retention")?
            .unwrap_or_default())
    }
}
