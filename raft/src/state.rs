//! The state machine's tables: one sled tree, a key prefix per table, and [`apply`], the
//! only code that writes them. Each command's writes (and the new last-applied log id) go
//! into one `sled::Batch`, so a crash leaves either all of a command or none of it.

use std::collections::HashMap;

use windflow_protocol::run::{capped_text, tail_text};
use windflow_protocol::{
    CONTEXT_MAX_BYTES, Context, ContextId, EvalTrigger, Job, JobId, JobType, Namespace, Node,
    NodeId, Run, RunId, RunStatus, STDERR_TAIL_BYTES,
};

use crate::command::{Applied, ApplyError, Command, Response};
use crate::{StoreError, decode, encode};

/// Table prefixes. IDs are big-endian so sled's order is numeric order.
pub(crate) mod key {
    pub const JOB: &[u8] = b"job/";
    pub const JOB_NAME: &[u8] = b"jobname/";
    pub const RUN: &[u8] = b"run/";
    pub const RUN_BY_STATUS: &[u8] = b"runstatus/";
    pub const RUN_COUNT: &[u8] = b"runcount/";
    pub const RUN_BY_JOB: &[u8] = b"jobrun/";
    pub const CONTEXT: &[u8] = b"ctx/";
    pub const NODE: &[u8] = b"node/";
    pub const TOKEN: &[u8] = b"token/";
    pub const TOKEN_HASH: &[u8] = b"tokenhash/";
    pub const TOKEN_NAME: &[u8] = b"tokenname/";
    pub const NEXT_TOKEN: &[u8] = b"counter/token";
    pub const USER: &[u8] = b"user/";
    pub const USER_NAME: &[u8] = b"username/";
    pub const NEXT_USER: &[u8] = b"counter/user";
    /// `usertoken/<user name>/<token id>`: the tokens acting for a user.
    pub const USER_TOKEN: &[u8] = b"usertoken/";
    pub const AUDIT: &[u8] = b"audit/";
    pub const NEXT_AUDIT: &[u8] = b"counter/audit";
    pub const NEXT_JOB: &[u8] = b"counter/job";
    pub const NEXT_RUN: &[u8] = b"counter/run";
    pub const NEXT_NODE: &[u8] = b"counter/node";
    pub const JOIN_TOKEN: &[u8] = b"jointoken/";
    pub const JOIN_TOKEN_HASH: &[u8] = b"jointokenhash/";
    pub const NEXT_JOIN_TOKEN: &[u8] = b"counter/jointoken";
    pub const JOB_COUNT: &[u8] = b"count/jobs";
    /// `nodecert/<node id><serial>`: certificates issued to a node.
    pub const NODE_CERT: &[u8] = b"nodecert/";
    /// `revoked/<serial>`: the certificate revocation list.
    pub const REVOKED: &[u8] = b"revoked/";
    /// How many serials are on the revocation list: readers reload it when this moves.
    pub const REVOKED_COUNT: &[u8] = b"count/revoked";
    pub const NAMESPACE: &[u8] = b"ns/";
    pub const ALLOC: &[u8] = b"alloc/";
    /// `joballoc/<job>/<alloc>`: allocations by job. (A node's are under
    /// `nodeallocchange/<node>/`, each listed once.)
    pub const ALLOC_BY_JOB: &[u8] = b"joballoc/";
    /// `nodeused/<node>`: the resources its live allocations hold.
    pub const NODE_USED: &[u8] = b"nodeused/";
    pub const NEXT_ALLOC: &[u8] = b"counter/alloc";
    /// The allocations' modify index: a sequence advanced on every change of one.
    pub const NEXT_ALLOC_INDEX: &[u8] = b"counter/allocindex";
    /// `nodeallocchange/<node>/<modify index>` → alloc: each allocation once, at its latest
    /// change, so a node's changes after an index are one range scan; so also the node's
    /// allocations (there is no separate by-node index to write). Which nodes changed is
    /// kept in memory only (`alloc_changes.rs`).
    pub const NODE_ALLOC_CHANGE: &[u8] = b"nodeallocchange/";
    pub const EVAL: &[u8] = b"eval/";
    /// `evalpending/<eval>`: the scheduler's queue.
    pub const EVAL_PENDING: &[u8] = b"evalpending/";
    pub const NEXT_EVAL: &[u8] = b"counter/eval";
    /// `nodeheard/<node>`: when its agent was last heard (see `crate::nodes`).
    pub const NODE_HEARD: &[u8] = b"nodeheard/";
    /// `count/nsjobs/<namespace>`: how many jobs a namespace holds.
    pub const NAMESPACE_JOBS: &[u8] = b"count/nsjobs/";
    // Pipelines and run retention (issue 7; see `crate::pipelines`).
    pub const PIPELINE: &[u8] = b"pipeline/";
    /// `pipelinename/<namespace>/<name>`.
    pub const PIPELINE_NAME: &[u8] = b"pipelinename/";
    pub const NEXT_PIPELINE: &[u8] = b"counter/pipeline";
    /// `pipelinejob/<job>/<pipeline>`: the pipelines a job is a step of.
    pub const PIPELINE_BY_JOB: &[u8] = b"pipelinejob/";
    pub const PIPELINE_RUN: &[u8] = b"prun/";
    pub const NEXT_PIPELINE_RUN: &[u8] = b"counter/prun";
    /// `pipelineprun/<pipeline>/<pipeline run>`: a pipeline's runs.
    pub const PIPELINE_RUN_BY_PIPELINE: &[u8] = b"pipelineprun/";
    /// `prsched/<start ms>/<pipeline run>`: runs waiting for their start time, soonest first.
    pub const PIPELINE_RUN_SCHEDULED: &[u8] = b"prsched/";
    /// The cluster's default run retention.
    pub const RUN_RETENTION: &[u8] = b"config/runretention";
    pub const PIPELINE_COUNT: &[u8] = b"count/pipelines";
    /// `count/prun/<status>`: pipeline runs per status.
    pub const PIPELINE_RUN_COUNT: &[u8] = b"count/prun/";
    /// Raft's bookkeeping, which backups neither carry nor overwrite.
    pub const META: &[u8] = b"meta/";
    pub const LAST_APPLIED: &[u8] = b"meta/last_applied";

    // --- Schedules and webhooks (issue 7) ---
    pub const SCHEDULE: &[u8] = b"sched/";
    /// `schedname/<namespace>/<name>` → schedule ID.
    pub const SCHEDULE_NAME: &[u8] = b"schedname/";
    pub const NEXT_SCHEDULE: &[u8] = b"counter/schedule";
    /// `schedfire/<schedule><seq>`: a schedule's fire log, the last `FIRE_LOG_MAX`.
    pub const SCHEDULE_FIRE: &[u8] = b"schedfire/";
    /// Moves on every change to a schedule's definition (not on fires), so the leader's
    /// cron loop reloads only when it must.
    pub const SCHEDULE_VERSION: &[u8] = b"count/schedversion";
    pub const WEBHOOK: &[u8] = b"hook/";
    /// `hookname/<namespace>/<name>` → webhook ID.
    pub const WEBHOOK_NAME: &[u8] = b"hookname/";
    pub const NEXT_WEBHOOK: &[u8] = b"counter/webhook";
    /// How many webhooks exist: no event is recorded while there are none.
    pub const WEBHOOK_COUNT: &[u8] = b"count/webhooks";
    /// `event/<seq>`: the events webhooks deliver, the last `EVENT_LOG_MAX`.
    pub const EVENT: &[u8] = b"event/";
    pub const NEXT_EVENT: &[u8] = b"counter/event";
    /// `hookdelivery/<webhook><seq>`: a webhook's delivery log, the last `DELIVERY_LOG_MAX`.
    pub const WEBHOOK_DELIVERY: &[u8] = b"hookdelivery/";
    /// `counter/hookdelivery/<webhook>`: the last delivery's number.
    pub const NEXT_WEBHOOK_DELIVERY: &[u8] = b"counter/hookdelivery/";

    /// `<prefix><namespace>/<name>`, like [`job_name`].
    pub fn ns_name(prefix: &[u8], ns: &super::Namespace, name: &str) -> Vec<u8> {
        [prefix, ns.as_str().as_bytes(), b"/", name.as_bytes()].concat()
    }
    pub const MEMBERSHIP: &[u8] = b"meta/membership";

    pub fn id(prefix: &[u8], id: u64) -> Vec<u8> {
        [prefix, &id.to_be_bytes()].concat()
    }

    pub fn pair(prefix: &[u8], a: u64, b: u64) -> Vec<u8> {
        [prefix, &a.to_be_bytes(), &b.to_be_bytes()].concat()
    }

    pub fn named(prefix: &[u8], name: &[u8]) -> Vec<u8> {
        [prefix, name].concat()
    }

    /// `jobname/<namespace>/<name>`: names are unique within a namespace, and a
    /// namespace name holds no `/`.
    pub fn job_name(ns: &super::Namespace, name: &str) -> Vec<u8> {
        [JOB_NAME, ns.as_str().as_bytes(), b"/", name.as_bytes()].concat()
    }

    pub fn namespace(ns: &super::Namespace) -> Vec<u8> {
        named(NAMESPACE, ns.as_str().as_bytes())
    }

    pub fn namespace_jobs(ns: &super::Namespace) -> Vec<u8> {
        named(NAMESPACE_JOBS, ns.as_str().as_bytes())
    }

    pub fn status(s: super::RunStatus) -> u8 {
        super::RunStatus::ALL
            .iter()
            .position(|x| *x == s)
            .unwrap_or(0) as u8
    }

    pub fn context(id: super::ContextId) -> Vec<u8> {
        match id {
            super::ContextId::Job(j) => [CONTEXT, b"J", &j.0.to_be_bytes()].concat(),
            super::ContextId::Pipeline(p) => [CONTEXT, b"P", &p.0.to_be_bytes()].concat(),
        }
    }
}

pub(crate) fn u64_of(bytes: Option<sled::IVec>) -> u64 {
    id_of(bytes).unwrap_or(0)
}

/// The ID an index entry points at (a big-endian u64), if there is a well-formed one.
pub(crate) fn id_of(bytes: Option<sled::IVec>) -> Option<u64> {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
}

/// Writes of one command, readable before they are committed to the tree.
pub(crate) struct Pending<'a> {
    tree: &'a sled::Tree,
    /// The command's writes (`None`: deleted), the last one per key; they become one
    /// `sled::Batch` at commit, so each key and value is held once.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Each allocation change's modify index and node, for the in-memory change log.
    pub(crate) alloc_changes: Vec<(u64, NodeId)>,
    /// Every key was rewritten (a restore): the change log starts again.
    pub(crate) replaced_all: bool,
}

/// A [`Pending`]'s writes at one moment.
pub(crate) struct Checkpoint {
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    alloc_changes: usize,
}

impl<'a> Pending<'a> {
    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        Pending {
            tree,
            writes: HashMap::new(),
            alloc_changes: Vec::new(),
            replaced_all: false,
        }
    }

    /// The tree as it was before this command: scans read it, and miss this command's own
    /// writes.
    pub(crate) fn tree(&self) -> &sled::Tree {
        self.tree
    }

    pub(crate) fn get(&self, k: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        match self.writes.get(k) {
            Some(v) => Ok(v.as_ref().map(|v| sled::IVec::from(v.as_slice()))),
            None => Ok(self.tree.get(k)?),
        }
    }

    pub(crate) fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.get(k)?.map(|v| decode(&v, what)).transpose()
    }

    pub(crate) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    pub(crate) fn put_as<T: serde::Serialize>(
        &mut self,
        k: Vec<u8>,
        v: &T,
    ) -> Result<(), StoreError> {
        self.put(k, encode(v)?);
        Ok(())
    }

    pub(crate) fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// Advances a counter and returns the new value (IDs start at 1).
    pub(crate) fn next(&mut self, counter: &[u8]) -> Result<u64, StoreError> {
        let n = u64_of(self.get(counter)?) + 1;
        self.put(counter.to_vec(), n.to_be_bytes().to_vec());
        Ok(n)
    }

    pub(crate) fn add(&mut self, counter: Vec<u8>, delta: i64) -> Result<(), StoreError> {
        let n = u64_of(self.get(&counter)?).saturating_add_signed(delta);
        self.put(counter, n.to_be_bytes().to_vec());
        Ok(())
    }

    /// What has been written so far, to go back to with [`Pending::rollback`].
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            writes: self.writes.clone(),
            alloc_changes: self.alloc_changes.len(),
        }
    }

    /// Forgets every write made since `saved` was taken: a command that must be all or
    /// nothing (an import) goes back to it when one of its parts is refused.
    pub(crate) fn rollback(&mut self, saved: Checkpoint) {
        self.writes = saved.writes;
        self.alloc_changes.truncate(saved.alloc_changes);
    }

    /// Writes the batch. Callers go through [`crate::StateReader::commit`], which also
    /// records the allocation changes.
    pub(crate) fn commit_tree(self) -> Result<(), StoreError> {
        // A batch keeps the last write per key, as `writes` does: the same batch as
        // writing each change into it in turn.
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    /// Stores a run, keeping the status index and the per-status counts in step.
    pub(crate) fn put_run(
        &mut self,
        run: &Run,
        before: Option<RunStatus>,
    ) -> Result<(), StoreError> {
        if before != Some(run.status) {
            if let Some(old) = before {
                self.del(key::pair(
                    key::RUN_BY_STATUS,
                    key::status(old).into(),
                    run.id.0,
                ));
                self.add(key::named(key::RUN_COUNT, &[key::status(old)]), -1)?;
            }
            self.put(
                key::pair(key::RUN_BY_STATUS, key::status(run.status).into(), run.id.0),
                Vec::new(),
            );
            self.add(key::named(key::RUN_COUNT, &[key::status(run.status)]), 1)?;
        }
        self.put_as(key::id(key::RUN, run.id.0), run)
    }
}

/// Applies one command. Deterministic: it reads nothing but the tree and the command.
pub(crate) fn apply(p: &mut Pending<'_>, cmd: Command) -> Result<Response, StoreError> {
    Ok(match cmd {
        Command::CreateToken(token) => crate::identity::create_token(p, token)?,
        Command::RevokeToken { id, at } => crate::identity::revoke_token(p, id, at)?,
        Command::RotateToken {
            id,
            hash,
            prefix,
            at,
        } => crate::identity::rotate_token(p, id, hash, prefix, at)?,
        Command::CreateUser {
            name,
            role,
            namespace,
            password_hash,
            at,
        } => crate::identity::create_user(p, name, role, namespace, password_hash, at)?,
        Command::CreateNamespace {
            name,
            description,
            at,
        } => crate::namespaces::create(p, name, description, at)?,
        Command::DeleteNamespace { name } => crate::namespaces::delete(p, name)?,
        Command::SetUserPassword {
            name,
            password_hash,
            at,
        } => crate::identity::set_password(p, name, password_hash, at)?,
        Command::DeleteUser { name, at } => crate::identity::delete_user(p, name, at)?,
        Command::RecordAudit(entry) => crate::identity::record_audit(p, entry)?,
        Command::PruneAudit { before } => crate::identity::prune_audit(p, before)?,
        Command::CreateEvaluation { job, trigger, at } => Ok(Applied::Evaluation(
            crate::allocs::create_eval(p, job, trigger, at)?,
        )),
        Command::UpdateEvaluation {
            eval,
            status,
            unplaced,
            at,
        } => crate::allocs::update_eval(p, eval, status, unplaced, at)?,
        Command::SubmitPlan(plan) => crate::allocs::submit_plan(p, plan)?,
        Command::AllocStatus(report) => crate::allocs::set_status(p, report)?,
        Command::RegisterNode { name, drivers, at } => {
            let node = Node {
                id: NodeId(p.next(key::NEXT_NODE)?),
                name,
                drivers,
                registered_at: at,
                last_seen_at: None,
                agent_version: None,
                resources: Default::default(),
                attributes: Default::default(),
                labels: Default::default(),
                revoked_at: None,
                status: Default::default(),
                eligibility: Default::default(),
                drain: None,
            };
            p.put_as(key::id(key::NODE, node.id.0), &node)?;
            Ok(Applied::Node(node))
        }
        Command::NodeHello {
            node,
            hostname,
            drivers,
            agent_version,
            fingerprint,
            at,
        } => {
            let Some(mut n) = p.get_as::<Node>(&key::id(key::NODE, node.0), "node")? else {
                return Ok(Err(ApplyError::not_found("node", node)));
            };
            n.name = hostname;
            n.drivers = drivers;
            n.agent_version = Some(agent_version);
            n.resources = fingerprint.resources;
            n.attributes = fingerprint.attributes;
            n.last_seen_at = Some(at);
            crate::nodes::heard(p, &mut n, at)?;
            p.put_as(key::id(key::NODE, node.0), &n)?;
            Ok(Applied::Node(n))
        }
        Command::CreateJob { spec, at } => create_job(p, spec, at)?,
        Command::Import(set) => crate::import::import(p, *set)?,
        Command::ResealSecretEnv {
            job,
            task,
            secret_env,
            at,
        } => crate::secrets::reseal(p, job, task, secret_env, at)?,
        Command::DeleteJob { job, at } => {
            let Some(j) = p.get_as::<Job>(&key::id(key::JOB, job.0), "job")? else {
                return Ok(Err(ApplyError::not_found("job", job)));
            };
            if let Some(refusal) = crate::pipelines::job_in_use(p, &j)? {
                return Ok(Err(refusal));
            }
            p.del(key::id(key::JOB, job.0));
            p.del(key::job_name(&j.spec.namespace, &j.spec.name));
            p.del(key::context(ContextId::of_job(job)));
            p.add(key::JOB_COUNT.to_vec(), -1)?;
            p.add(key::namespace_jobs(&j.spec.namespace), -1)?;
            crate::allocs::stop_job(p, job, at)?;
            crate::deployments::forget_job(p, job)?;
            for entry in p.tree.scan_prefix(key::id(key::RUN_BY_JOB, job.0)) {
                let (k, _) = entry?;
                let Some(run_id) = k
                    .get(k.len() - 8..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                else {
                    continue;
                };
                let run_key = key::id(key::RUN, u64::from_be_bytes(run_id));
                let Some(mut run) = p.get_as::<Run>(&run_key, "run")? else {
                    continue;
                };
                if run.status == RunStatus::Pending {
                    run.status = RunStatus::Failed;
                    run.finished_at = Some(at);
                    run.error = Some("job deleted before the run started".into());
                    p.put_run(&run, Some(RunStatus::Pending))?;
                }
            }
            Ok(Applied::Job(j))
        }
        Command::CreateRun { job, at } => create_run(p, job, None, at)?,
        Command::RunDispatched { run, node, at } => {
            let Some(mut r) = p.get_as::<Run>(&key::id(key::RUN, run.0), "run")? else {
                return Ok(Err(ApplyError::not_found("run", run)));
            };
            if r.status != RunStatus::Pending {
                return Ok(Err(ApplyError::InvalidTransition {
                    run,
                    from: r.status.as_str().into(),
                    to: "running".into(),
                }));
            }
            r.status = RunStatus::Running;
            r.node = Some(node);
            r.started_at = Some(at);
            p.put_run(&r, Some(RunStatus::Pending))?;
            Ok(Applied::Run(r))
        }
        Command::CreateJoinToken {
            kind,
            hash,
            expires_at,
            uses,
            labels,
            at,
        } => crate::join_tokens::create(p, kind, hash, expires_at, uses, labels, at)?,
        Command::EnrollNode {
            hash,
            hostname,
            serial,
            not_after,
            at,
        } => crate::node_certs::enroll(p, hash, hostname, serial, not_after, at)?,
        Command::NodeCertIssued {
            node,
            serial,
            not_after,
            at,
        } => crate::node_certs::issued(p, node, serial, not_after, at)?,
        Command::RevokeNode { node, at } => crate::node_certs::revoke(p, node, at)?,
        Command::UseJoinToken { kind, hash, by, at } => {
            crate::join_tokens::spend(p, kind, hash, by, at)?
        }
        Command::RevokeJoinToken { id, at } => crate::join_tokens::revoke(p, id, at)?,
        Command::NodeHeartbeats { nodes, at: _ } => crate::nodes::heartbeats(p, nodes)?,
        Command::NodesDown { nodes, cutoff, at } => crate::nodes::down(p, nodes, cutoff, at)?,
        Command::SetNodeDrain { node, change, at } => crate::nodes::set_drain(p, node, change, at)?,
        Command::SetNodeEligibility {
            node,
            eligibility,
            at: _,
        } => crate::nodes::set_eligibility(p, node, eligibility)?,
        Command::FinishDrain { node, end, at } => crate::nodes::finish_drain(p, node, end, at)?,
        Command::WaitEvaluation {
            eval,
            until,
            unplaced,
            at,
        } => crate::allocs::wait_eval(p, eval, until, unplaced, at)?,
        Command::UpdateJob { job, spec, at } => crate::deployments::update(p, job, spec, at)?,
        Command::ScaleJob {
            job,
            group,
            count,
            at,
        } => crate::deployments::scale(p, job, group, count, at)?,
        Command::EndDeployment {
            deployment,
            outcome,
            reason,
            at,
        } => crate::deployments::end(p, deployment, outcome, reason, at)?,
        Command::PromoteDeployment { deployment, at } => {
            crate::deployments::promote(p, deployment, at)?
        }
        // Schedules and webhooks (issue 7).
        Command::CreateSchedule { spec, at } => crate::schedules::create(p, spec, at)?,
        Command::SetScheduleEnabled {
            schedule,
            enabled,
            at,
        } => crate::schedules::set_enabled(p, schedule, enabled, at)?,
        Command::DeleteSchedule { schedule, at: _ } => crate::schedules::delete(p, schedule)?,
        Command::FireSchedule {
            schedule,
            due,
            missed,
            at,
        } => crate::schedules::fire(p, schedule, due, missed, at, &[])?,
        Command::FireSchedulePlaced {
            schedule,
            due,
            missed,
            at,
            placed,
        } => crate::schedules::fire(p, schedule, due, missed, at, &placed)?,
        Command::CreateWebhook { spec, secret, at } => {
            crate::webhooks::create(p, spec, secret, at)?
        }
        Command::DeleteWebhook { webhook, at: _ } => crate::webhooks::delete(p, webhook)?,
        Command::WebhookAttempt {
            webhook,
            event,
            attempt,
            status,
            error,
            outcome,
            at,
        } => crate::webhooks::attempt(
            p,
            crate::webhooks::Attempt {
                webhook,
                event,
                attempt,
                status,
                error,
                outcome,
            },
            at,
        )?,
        Command::Batch(cmds) => {
            let mut responses = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                // A batch is built from batchable commands only; anything else is refused
                // whole rather than applied against a half-written view.
                if !cmd.batchable() {
                    responses.push(Err(ApplyError::NotBatchable {
                        kind: cmd.kind().into(),
                    }));
                    continue;
                }
                responses.push(apply(p, cmd)?);
            }
            Ok(Applied::Batch(responses))
        }
        Command::RestoreState { pairs } => {
            p.replaced_all = true;
            for entry in p.tree.iter() {
                let (k, _) = entry?;
                if !k.starts_with(key::META) {
                    p.del(k.to_vec());
                }
            }
            let mut keys = 0;
            for (k, v) in pairs.into_iter().filter(|(k, _)| !k.starts_with(key::META)) {
                p.put(k, v);
                keys += 1;
            }
            Ok(Applied::Restored { keys })
        }
        Command::RunFinished {
            run,
            node,
            outcome,
            exit_code,
            attempts,
            started_at,
            duration,
            stdout,
            stdout_truncated,
            stderr_tail,
            error,
            at,
        } => {
            let Some(mut r) = p.get_as::<Run>(&key::id(key::RUN, run.0), "run")? else {
                return Ok(Err(ApplyError::not_found("run", run)));
            };
            if r.status.is_finished() {
                return Ok(Ok(Applied::Run(r)));
            }
            let before = r.status;
            r.status = outcome.into();
            r.node = Some(node);
            r.exit_code = exit_code;
            r.attempts = attempts;
            r.started_at = Some(started_at);
            r.duration = Some(duration);
            r.finished_at = Some(at);
            r.error = error;
            // The agent caps both already; apply enforces it too (deterministically), so an
            // oversized command cannot bloat every server's state.
            r.stderr_tail = if stderr_tail.len() > STDERR_TAIL_BYTES {
                tail_text(stderr_tail.as_bytes(), STDERR_TAIL_BYTES)
            } else {
                stderr_tail
            };
            p.put_run(&r, Some(before))?;
            crate::webhooks::run_ended(p, &r, at)?;
            let ctx_key = key::context(ContextId::of_job(r.job));
            if p.get(&key::id(key::JOB, r.job.0))?.is_some() {
                let mut ctx = Context::empty_for_job(r.job, at);
                let (value, cut) = if stdout.len() > CONTEXT_MAX_BYTES {
                    capped_text(stdout.as_bytes(), CONTEXT_MAX_BYTES)
                } else {
                    (stdout, false)
                };
                ctx.value = value;
                ctx.truncated = stdout_truncated || cut;
                ctx.run = Some(run);
                ctx.node = Some(node);
                ctx.started_at = Some(started_at);
                ctx.duration = Some(duration);
                ctx.exit_code = exit_code;
                ctx.attempts = attempts;
                p.put_as(ctx_key, &ctx)?;
            }
            crate::pipelines::run_ended(p, &r, at)?;
            Ok(Applied::Run(r))
        }
        // Pipelines, contexts and run retention (issue 7).
        Command::CreatePipeline { spec, at } => crate::pipelines::create(p, spec, at)?,
        Command::DeletePipeline { pipeline, at } => crate::pipelines::delete(p, pipeline, at)?,
        Command::CreatePipelineRun {
            pipeline,
            start_at,
            at,
        } => crate::pipelines::create_run(p, pipeline, start_at, at)?,
        Command::StartPipelineRun { run, at } => crate::pipelines::start_run(p, run, at)?,
        Command::RetryPipelineRun { run, at } => crate::pipelines::retry_run(p, run, at)?,
        Command::RunRefused { run, error, at } => crate::run_retention::refuse(p, run, error, at)?,
        Command::ResetContext { context, at } => crate::pipelines::reset_context(p, context, at)?,
        Command::PruneRuns { runs, at: _ } => crate::run_retention::prune(p, runs)?,
        Command::SetRunRetention { retention, at: _ } => {
            crate::run_retention::set_default(p, retention)?
        }
    })
}

/// `Command::CreateJob`: the next [`JobId`], the first version, the empty context, the
/// counts, and a service's first evaluation.
pub(crate) fn create_job(
    p: &mut Pending<'_>,
    spec: windflow_protocol::JobSpec,
    at: windflow_protocol::Timestamp,
) -> Result<Response, StoreError> {
    if let Err(e) = crate::namespaces::require(p, &spec.namespace)? {
        return Ok(Err(e));
    }
    let name_key = key::job_name(&spec.namespace, &spec.name);
    if p.get(&name_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "job".into(),
            name: spec.name,
        }));
    }
    let id = JobId(p.next(key::NEXT_JOB)?);
    let mut job = Job {
        id,
        spec,
        created_at: at,
        updated_at: at,
        version: 1,
        stable_version: None,
    };
    crate::deployments::created(p, &mut job, at)?;
    p.put(name_key, id.0.to_be_bytes().to_vec());
    p.put_as(key::id(key::JOB, id.0), &job)?;
    p.put_as(
        key::context(ContextId::of_job(id)),
        &Context::empty_for_job(id, at),
    )?;
    p.add(key::JOB_COUNT.to_vec(), 1)?;
    p.add(key::namespace_jobs(&job.spec.namespace), 1)?;
    // A service is kept running: its registration is the scheduler's to place.
    if job.spec.job_type == JobType::Service {
        crate::allocs::create_eval(p, id, EvalTrigger::JobRegister, at)?;
    }
    Ok(Ok(Applied::Job(job)))
}

/// Queues a run of `job` (`pending`), as a step of `pipeline_run` if given.
pub(crate) fn create_run(
    p: &mut Pending<'_>,
    job: JobId,
    pipeline_run: Option<windflow_protocol::PipelineRunId>,
    at: windflow_protocol::Timestamp,
) -> Result<Response, StoreError> {
    let Some(j) = p.get_as::<Job>(&key::id(key::JOB, job.0), "job")? else {
        return Ok(Err(ApplyError::not_found("job", job)));
    };
    Ok(Ok(Applied::Run(insert_run(p, &j, pipeline_run, at, None)?)))
}

/// Stores a new run of `job`: pending, or already running on `placed` (dispatched at `at`
/// in the same entry).
pub(crate) fn insert_run(
    p: &mut Pending<'_>,
    job: &Job,
    pipeline_run: Option<windflow_protocol::PipelineRunId>,
    at: windflow_protocol::Timestamp,
    placed: Option<NodeId>,
) -> Result<Run, StoreError> {
    let run = Run {
        id: RunId(p.next(key::NEXT_RUN)?),
        job: job.id,
        namespace: job.spec.namespace.clone(),
        status: if placed.is_some() {
            RunStatus::Running
        } else {
            RunStatus::Pending
        },
        node: placed,
        requested_at: at,
        started_at: placed.map(|_| at),
        finished_at: None,
        attempts: 0,
        exit_code: None,
        duration: None,
        error: None,
        stderr_tail: String::new(),
        pipeline_run,
    };
    p.put(key::pair(key::RUN_BY_JOB, job.id.0, run.id.0), Vec::new());
    p.put_run(&run, None)?;
    Ok(run)
}

pub(crate) use key::{LAST_APPLIED, MEMBERSHIP, META};
