//! Pages of the long lists (jobs, pipelines, schedules, webhooks, contexts, a job's or a
//! pipeline's runs): a range scan from the cursor's key that decodes only what it keeps,
//! so a page of a 100,000-job table costs the page, not the table.
//!
//! A cursor is the key of the first entry of the next page (the API shows it as that
//! entry's ID), so a page stays exact while entries are created behind it or deleted.

use windflow_protocol::{
    Context, ContextId, Job, JobId, Pipeline, PipelineId, PipelineRun, PipelineRunId,
    PipelineRunStatus, Run, RunId, RunStatus, Schedule, ScheduleId, Webhook, WebhookId,
};

use crate::reader::StateReader;
use crate::state::{id_of, key};
use crate::{StoreError, decode};

/// Which part of a list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest<I> {
    /// Start at this entry (the previous page's `next`); `None`: at the first.
    pub from: Option<I>,
    /// At most this many entries; `None`: all that follow.
    pub limit: Option<usize>,
}

impl<I> Default for PageRequest<I> {
    fn default() -> Self {
        PageRequest {
            from: None,
            limit: None,
        }
    }
}

/// One page of a list, in ascending ID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, I> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this page holds the last entry kept.
    pub next: Option<I>,
}

/// How an entry of a scanned range becomes a list item (`None`: the entry is not one).
type Load<'a, T> = dyn FnMut(&[u8], &[u8]) -> Result<Option<T>, StoreError> + 'a;

impl StateReader {
    /// Scans `prefix` from `start` (a full key under it), loading each entry, keeping those
    /// `keep` admits, up to `limit`; the first kept entry past the limit is `next`.
    fn page_of<T, I>(
        &self,
        prefix: &[u8],
        start: Vec<u8>,
        limit: Option<usize>,
        load: &mut Load<'_, T>,
        keep: &mut dyn FnMut(&T) -> Result<bool, StoreError>,
        id_of_item: impl Fn(&T) -> I,
    ) -> Result<Page<T, I>, StoreError> {
        let mut items = Vec::new();
        for entry in self.tree().range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(prefix) {
                break;
            }
            let Some(item) = load(&k, &v)? else { continue };
            if !keep(&item)? {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                return Ok(Page {
                    next: Some(id_of_item(&item)),
                    items,
                });
            }
            items.push(item);
        }
        Ok(Page { items, next: None })
    }

    /// A page of a table keyed `prefix<id>`.
    fn page_of_table<T: serde::de::DeserializeOwned, I>(
        &self,
        prefix: &[u8],
        from: Option<u64>,
        limit: Option<usize>,
        what: &'static str,
        keep: &mut dyn FnMut(&T) -> Result<bool, StoreError>,
        id_of_item: impl Fn(&T) -> I,
    ) -> Result<Page<T, I>, StoreError> {
        let start = from.map_or_else(|| prefix.to_vec(), |id| key::id(prefix, id));
        let mut load = |_: &[u8], v: &[u8]| decode(v, what).map(Some);
        self.page_of(prefix, start, limit, &mut load, keep, id_of_item)
    }

    /// A page of the entries an index `prefix<owner><id>` names, loaded by `get`.
    fn page_of_index<T, I>(
        &self,
        prefix: Vec<u8>,
        from: Option<u64>,
        limit: Option<usize>,
        get: impl Fn(u64) -> Result<Option<T>, StoreError>,
        keep: &mut dyn FnMut(&T) -> Result<bool, StoreError>,
        id_of_item: impl Fn(&T) -> I,
    ) -> Result<Page<T, I>, StoreError> {
        let start = from.map_or_else(|| prefix.clone(), |id| key::id(&prefix, id));
        let mut load = |k: &[u8], _: &[u8]| match tail_id(k) {
            Some(id) => get(id),
            None => Ok(None),
        };
        self.page_of(&prefix, start, limit, &mut load, keep, id_of_item)
    }

    /// A page of the jobs `keep` admits, by ascending ID.
    pub fn jobs_page(
        &self,
        req: PageRequest<JobId>,
        keep: &mut dyn FnMut(&Job) -> Result<bool, StoreError>,
    ) -> Result<Page<Job, JobId>, StoreError> {
        let from = req.from.map(|j| j.0);
        self.page_of_table(key::JOB, from, req.limit, "job", keep, |j| j.id)
    }

    /// A page of the pipelines `keep` admits, by ascending ID.
    pub fn pipelines_page(
        &self,
        req: PageRequest<PipelineId>,
        keep: &mut dyn FnMut(&Pipeline) -> Result<bool, StoreError>,
    ) -> Result<Page<Pipeline, PipelineId>, StoreError> {
        let from = req.from.map(|p| p.0);
        self.page_of_table(key::PIPELINE, from, req.limit, "pipeline", keep, |p| p.id)
    }

    /// A page of the schedules `keep` admits, by ascending ID.
    pub fn schedules_page(
        &self,
        req: PageRequest<ScheduleId>,
        keep: &mut dyn FnMut(&Schedule) -> Result<bool, StoreError>,
    ) -> Result<Page<Schedule, ScheduleId>, StoreError> {
        let from = req.from.map(|s| s.0);
        self.page_of_table(key::SCHEDULE, from, req.limit, "schedule", keep, |s| s.id)
    }

    /// A page of the webhooks `keep` admits, by ascending ID.
    pub fn webhooks_page(
        &self,
        req: PageRequest<WebhookId>,
        keep: &mut dyn FnMut(&Webhook) -> Result<bool, StoreError>,
    ) -> Result<Page<Webhook, WebhookId>, StoreError> {
        let from = req.from.map(|w| w.0);
        self.page_of_table(key::WEBHOOK, from, req.limit, "webhook", keep, |w| w.id)
    }

    /// A page of the contexts `keep` admits: the jobs' (`CJ…`) by ID, then the
    /// pipelines' (`CP…`).
    pub fn contexts_page(
        &self,
        req: PageRequest<ContextId>,
        keep: &mut dyn FnMut(&Context) -> Result<bool, StoreError>,
    ) -> Result<Page<Context, ContextId>, StoreError> {
        let start = req.from.map_or_else(|| key::CONTEXT.to_vec(), key::context);
        let mut load = |_: &[u8], v: &[u8]| decode(v, "context").map(Some);
        self.page_of(
            key::CONTEXT,
            start,
            req.limit,
            &mut load,
            keep,
            |c: &Context| c.id,
        )
    }

    /// A page of one job's runs, oldest first.
    pub fn runs_of_job_page(
        &self,
        job: JobId,
        req: PageRequest<RunId>,
        keep: &mut dyn FnMut(&Run) -> Result<bool, StoreError>,
    ) -> Result<Page<Run, RunId>, StoreError> {
        let prefix = key::id(key::RUN_BY_JOB, job.0);
        let from = req.from.map(|r| r.0);
        let get = |id| self.run(RunId(id));
        self.page_of_index(prefix, from, req.limit, get, keep, |r: &Run| r.id)
    }

    /// A page of one pipeline's runs, oldest first.
    pub fn runs_of_pipeline_page(
        &self,
        pipeline: PipelineId,
        req: PageRequest<PipelineRunId>,
        keep: &mut dyn FnMut(&PipelineRun) -> Result<bool, StoreError>,
    ) -> Result<Page<PipelineRun, PipelineRunId>, StoreError> {
        let prefix = key::id(key::PIPELINE_RUN_BY_PIPELINE, pipeline.0);
        let from = req.from.map(|r| r.0);
        let get = |id| self.pipeline_run(PipelineRunId(id));
        self.page_of_index(prefix, from, req.limit, get, keep, |r: &PipelineRun| r.id)
    }

    /// The status of a job's newest run, `None` before its first.
    pub fn last_run_status(&self, job: JobId) -> Result<Option<RunStatus>, StoreError> {
        let newest = self
            .tree()
            .scan_prefix(key::id(key::RUN_BY_JOB, job.0))
            .keys()
            .next_back()
            .transpose()?;
        match newest.as_deref().and_then(tail_id) {
            Some(run) => Ok(self.run(RunId(run))?.map(|r| r.status)),
            None => Ok(None),
        }
    }

    /// The status of a pipeline's newest run, `None` before its first.
    pub fn last_pipeline_run_status(
        &self,
        pipeline: PipelineId,
    ) -> Result<Option<PipelineRunStatus>, StoreError> {
        let newest = self
            .tree()
            .scan_prefix(key::id(key::PIPELINE_RUN_BY_PIPELINE, pipeline.0))
            .keys()
            .next_back()
            .transpose()?;
        match newest.as_deref().and_then(tail_id) {
            Some(run) => Ok(self.pipeline_run(PipelineRunId(run))?.map(|r| r.status)),
            None => Ok(None),
        }
    }
}

/// The last 8 bytes of an index key, as the ID they hold.
pub(crate) fn tail_id(k: &[u8]) -> Option<u64> {
    id_of(k.get(k.len().saturating_sub(8)..).map(sled::IVec::from))
}
