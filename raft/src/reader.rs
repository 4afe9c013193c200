//! [`StateReader`]: typed reads of the state machine's tables (see [`crate::state`] for
//! the keys and for `apply`, the only writer).

use std::sync::Arc;

use tokio::sync::watch;
use windflow_protocol::{
    AllocId, Allocation, AuditEntry, Context, ContextId, EvalId, Evaluation, Job, JobId, Namespace,
    NamespaceInfo, Node, NodeId, Resources, Run, RunId, RunStatus, TokenId,
};

use crate::command::{JoinTokenRecord, NodeCert, TokenRecord, UserRecord};
use crate::state::{id_of, key, u64_of};
use crate::{StoreError, decode};

/// Typed reads of the local state. Cheap to clone; reads never wait on raft.
#[derive(Clone)]
pub struct StateReader {
    tree: sled::Tree,
    applied: Arc<watch::Sender<u64>>,
    /// Held while a command's writes are committed, and while a snapshot or a backup copies
    /// the tree: a sled iterator is not a point-in-time view.
    commit_lock: Arc<std::sync::Mutex<()>>,
    /// Snapshots built or installed by this server since it started.
    snapshots: Arc<std::sync::atomic::AtomicU64>,
    timings: crate::timings::RaftTimings,
    alloc_changes: Arc<std::sync::Mutex<crate::alloc_changes::AllocChanges>>,
}

impl StateReader {
    pub(crate) fn count_snapshot(&self) {
        self.snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commit and apply latencies on this server.
    pub fn timings(&self) -> &crate::timings::RaftTimings {
        &self.timings
    }

    /// Snapshots this server has built or installed since it started.
    pub fn snapshots_total(&self) -> u64 {
        self.snapshots.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits a command's writes, recording its allocation changes in the in-memory log
    /// first: the feed reads the log only up to the store's index, so it never sees a
    /// change before it is in the tree, nor misses one that is.
    pub(crate) fn commit(&self, p: crate::state::Pending<'_>) -> Result<(), StoreError> {
        let replaced_all = p.replaced_all;
        self.changes().record(p.alloc_changes.iter().copied());
        p.commit_tree()?;
        if replaced_all {
            self.reset_alloc_changes();
        }
        Ok(())
    }

    /// The tree was replaced: changes up to its index are no longer known in memory.
    pub(crate) fn reset_alloc_changes(&self) {
        let index = self.alloc_index().unwrap_or(u64::MAX);
        self.changes().reset(index);
    }

    fn changes(&self) -> std::sync::MutexGuard<'_, crate::alloc_changes::AllocChanges> {
        self.alloc_changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops commits while the guard lives.
    pub(crate) fn commits_paused(&self) -> std::sync::MutexGuard<'_, ()> {
        self.commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn new(tree: sled::Tree) -> Self {
        let reader = StateReader {
            tree,
            applied: Arc::new(watch::channel(0).0),
            commit_lock: Arc::default(),
            snapshots: Arc::default(),
            timings: Default::default(),
            alloc_changes: Arc::default(),
        };
        reader.reset_alloc_changes();
        // Subscribers start from what is already applied, not from zero.
        reader.notify_applied(reader.last_applied_index().unwrap_or(0));
        reader
    }

    /// What `cmd` would answer if it were applied now, writing nothing: apply runs against
    /// the committed state (commits wait meanwhile) and its writes are dropped. For
    /// `import --dry-run`, so the plan shown is apply's own.
    pub fn preview(&self, cmd: crate::Command) -> Result<crate::Response, StoreError> {
        let _paused = self.commits_paused();
        let mut p = crate::state::Pending::new(&self.tree);
        crate::state::apply(&mut p, cmd)
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub(crate) fn notify_applied(&self, index: u64) {
        self.applied.send_replace(index);
    }

    pub(crate) fn get<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.tree.get(k)?.map(|v| decode(&v, what)).transpose()
    }

    pub(crate) fn scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|e| decode(&e?.1, what))
            .collect()
    }

    /// Every join token ever issued (revoked and spent ones too), by ascending ID.
    pub fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        self.scan(key::JOIN_TOKEN, "join token")
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.get(&key::id(key::JOB, id.0), "job")
    }

    /// The job named `name` in namespace `ns`.
    pub fn job_by_name(&self, ns: &Namespace, name: &str) -> Result<Option<Job>, StoreError> {
        match self.id_at(&key::job_name(ns, name))? {
            Some(id) => self.job(JobId(id)),
            None => Ok(None),
        }
    }

    /// The namespace, if it exists (`default` always does).
    pub fn namespace(&self, name: &Namespace) -> Result<Option<NamespaceInfo>, StoreError> {
        if name.is_default() {
            return Ok(Some(NamespaceInfo::builtin_default()));
        }
        self.get(&key::namespace(name), "namespace")
    }

    /// Every namespace, `default` first, then by name.
    pub fn namespaces(&self) -> Result<Vec<NamespaceInfo>, StoreError> {
        let mut all = vec![NamespaceInfo::builtin_default()];
        all.extend(self.scan(key::NAMESPACE, "namespace")?);
        Ok(all)
    }

    /// How many jobs a namespace holds.
    pub fn namespace_job_count(&self, name: &Namespace) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree.get(key::namespace_jobs(name))?))
    }

    /// All jobs, by ascending ID.
    pub fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.scan(key::JOB, "job")
    }

    pub fn job_count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree.get(key::JOB_COUNT)?))
    }

    pub fn run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        self.get(&key::id(key::RUN, id.0), "run")
    }

    fn runs_by_index(&self, prefix: Vec<u8>) -> Result<Vec<Run>, StoreError> {
        let mut runs = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, _) = entry?;
            let Some(id) = k
                .get(k.len() - 8..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            else {
                continue;
            };
            if let Some(run) = self.run(RunId(u64::from_be_bytes(id)))? {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// A job's runs, oldest first.
    pub fn runs_of_job(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.runs_by_index(key::id(key::RUN_BY_JOB, job.0))
    }

    /// The runs in one status, oldest first (from an index, not a scan of every run).
    pub fn runs_with_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError> {
        // The index key holds the status as 8 bytes (`key::pair`), so the prefix must too: a
        // one-byte prefix of 0 would match every status.
        self.runs_by_index(key::id(key::RUN_BY_STATUS, key::status(status).into()))
    }

    /// How many runs are in each status now.
    pub fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        RunStatus::ALL
            .iter()
            .map(|s| {
                Ok((
                    *s,
                    u64_of(
                        self.tree
                            .get(key::named(key::RUN_COUNT, &[key::status(*s)]))?,
                    ),
                ))
            })
            .collect()
    }

    pub fn context(&self, id: ContextId) -> Result<Option<Context>, StoreError> {
        self.get(&key::context(id), "context")
    }

    pub fn node(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        self.get(&key::id(key::NODE, id.0), "node")
    }

    pub fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.scan(key::NODE, "node")
    }

    pub fn allocation(&self, id: AllocId) -> Result<Option<Allocation>, StoreError> {
        self.get(&key::id(key::ALLOC, id.0), "allocation")
    }

    /// Every allocation, by ascending ID.
    pub fn allocations(&self) -> Result<Vec<Allocation>, StoreError> {
        self.scan(key::ALLOC, "allocation")
    }

    fn allocs_by_index(&self, prefix: Vec<u8>) -> Result<Vec<Allocation>, StoreError> {
        let mut allocs = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, _) = entry?;
            let Some(id) = id_of(k.get(k.len().saturating_sub(8)..).map(sled::IVec::from)) else {
                continue;
            };
            if let Some(a) = self.allocation(AllocId(id))? {
                allocs.push(a);
            }
        }
        Ok(allocs)
    }

    /// A job's allocations (stopped and ended ones too), oldest first.
    pub fn allocations_of_job(&self, job: JobId) -> Result<Vec<Allocation>, StoreError> {
        self.allocs_by_index(key::id(key::ALLOC_BY_JOB, job.0))
    }

    /// A node's allocations (stopped and ended ones too), oldest first.
    pub fn allocations_of_node(&self, node: NodeId) -> Result<Vec<Allocation>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .tree
            .scan_prefix(key::id(key::NODE_ALLOC_CHANGE, node.0))
        {
            let (_, v) = entry?;
            ids.extend(id_of(Some(v)).map(AllocId));
        }
        ids.sort_unstable();
        let mut allocs = Vec::with_capacity(ids.len());
        for id in ids {
            allocs.extend(self.allocation(id)?);
        }
        Ok(allocs)
    }

    /// When each node's agent was last heard, for the nodes ever heard.
    pub fn node_liveness(&self) -> Result<Vec<(NodeId, crate::NodeLiveness)>, StoreError> {
        self.tree
            .scan_prefix(key::NODE_HEARD)
            .map(|e| {
                let (k, v) = e?;
                let id = id_of(k.get(key::NODE_HEARD.len()..).map(sled::IVec::from)).unwrap_or(0);
                Ok((NodeId(id), decode(&v, "node liveness")?))
            })
            .collect()
    }

    /// What one node's live allocations hold.
    pub fn node_used(&self, node: NodeId) -> Result<Resources, StoreError> {
        Ok(self
            .get(&key::id(key::NODE_USED, node.0), "node usage")?
            .unwrap_or_default())
    }

    /// The allocations' modify index now: the highest any allocation has had.
    pub fn alloc_index(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree.get(key::NEXT_ALLOC_INDEX)?))
    }

    /// The node's allocations changed after index `since`, in the order they changed, and
    /// the index they are complete up to: every change up to it is either in the list or
    /// was overtaken by a later one (listed then with its newer state, or due after the
    /// returned index). Reads only the node's changes, not its whole history.
    pub fn allocations_of_node_since(
        &self,
        node: NodeId,
        since: u64,
    ) -> Result<(Vec<Allocation>, u64), StoreError> {
        // The counter first: a batch commits its index entries and the counter together,
        // so every entry at or below it is already there.
        let upto = self.alloc_index()?;
        if upto <= since {
            return Ok((Vec::new(), upto));
        }
        let from = key::pair(key::NODE_ALLOC_CHANGE, node.0, since + 1);
        let to = key::pair(key::NODE_ALLOC_CHANGE, node.0, upto);
        let mut allocs = Vec::new();
        for entry in self.tree.range(from..=to) {
            let (_, v) = entry?;
            if let Some(a) = id_of(Some(v)).map(AllocId)
                && let Some(a) = self.allocation(a)?
            {
                allocs.push(a);
            }
        }
        Ok((allocs, upto))
    }

    /// Which nodes' allocations changed after index `after` up to `upto` (each node once),
    /// for the gateway's one feed to wake only the sessions concerned; `None` when this
    /// server does not know (changes from before it started, or before a snapshot or a
    /// restore replaced its state): then every session should look.
    pub fn nodes_with_alloc_changes(
        &self,
        after: u64,
        upto: u64,
    ) -> Option<std::collections::BTreeSet<NodeId>> {
        self.changes().nodes(after, upto)
    }

    /// What every node's live allocations hold, for the nodes that hold anything.
    pub fn node_usage(&self) -> Result<Vec<(NodeId, Resources)>, StoreError> {
        self.tree
            .scan_prefix(key::NODE_USED)
            .map(|e| {
                let (k, v) = e?;
                let id = id_of(k.get(key::NODE_USED.len()..).map(sled::IVec::from)).unwrap_or(0);
                Ok((NodeId(id), decode(&v, "node usage")?))
            })
            .collect()
    }

    pub fn evaluation(&self, id: EvalId) -> Result<Option<Evaluation>, StoreError> {
        self.get(&key::id(key::EVAL, id.0), "evaluation")
    }

    /// The scheduler's queue: evaluations still pending, oldest first.
    pub fn pending_evaluations(&self) -> Result<Vec<Evaluation>, StoreError> {
        let mut evals = Vec::new();
        for entry in self.tree.scan_prefix(key::EVAL_PENDING) {
            let (k, _) = entry?;
            let id = id_of(k.get(key::EVAL_PENDING.len()..).map(sled::IVec::from)).unwrap_or(0);
            if let Some(e) = self.evaluation(EvalId(id))? {
                evals.push(e);
            }
        }
        Ok(evals)
    }

    /// Every evaluation, by ascending ID.
    pub fn evaluations(&self) -> Result<Vec<Evaluation>, StoreError> {
        self.scan(key::EVAL, "evaluation")
    }

    /// The revocation list: every revoked node certificate.
    pub fn revoked_certs(&self) -> Result<Vec<NodeCert>, StoreError> {
        self.scan(key::REVOKED, "revoked certificate")
    }

    /// How many certificates are on the revocation list; it only grows, so a reader that
    /// keeps a copy reloads it when this moves.
    pub fn revoked_count(&self) -> Result<u64, StoreError> {
        Ok(self.id_at(key::REVOKED_COUNT)?.unwrap_or(0))
    }

    /// The token whose secret hashes to `hash` (revoked and expired ones too).
    pub fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        match self.id_at(&key::named(key::TOKEN_HASH, hash))? {
            Some(id) => self.token(TokenId(id)),
            None => Ok(None),
        }
    }

    pub fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.get(&key::id(key::TOKEN, id.0), "token")
    }

    /// A named ([`windflow_protocol::TokenKind::Api`]) token.
    pub fn token_by_name(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.id_at(&key::named(key::TOKEN_NAME, name.as_bytes()))? {
            Some(id) => self.token(TokenId(id)),
            None => Ok(None),
        }
    }

    /// Every token, revoked ones too, by ascending ID.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.scan(key::TOKEN, "token")
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.id_at(&key::named(key::USER_NAME, name.as_bytes()))? {
            Some(id) => self.get(&key::id(key::USER, id), "user"),
            None => Ok(None),
        }
    }

    /// Every user, by ascending ID.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.scan(key::USER, "user")
    }

    /// Audit entries, newest first, that `keep` accepts, at most `limit` of them.
    pub fn audit(
        &self,
        limit: usize,
        mut keep: impl FnMut(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(key::AUDIT).rev() {
            if out.len() >= limit {
                break;
            }
            let e: AuditEntry = decode(&entry?.1, "audit entry")?;
            if keep(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub(crate) fn id_at(&self, index: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(id_of(self.tree.get(index)?))
    }

    /// The index of the last log entry applied here.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.get::<Option<openraft::LogId<u64>>>(key::LAST_APPLIED, "last applied")
            .ok()
            .flatten()
            .flatten()
            .map(|l| l.index)
    }

    /// Changes to the last-applied index; wakes after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}
