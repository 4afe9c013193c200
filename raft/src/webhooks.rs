//! Apply's rules for webhooks: subscriptions, the cluster's event log, and the log of
//! delivery attempts.
//!
//! Events are written by the commands that cause them (a run's end, a schedule's fire),
//! in the same entry, numbered by a counter, and kept for the last `EVENT_LOG_MAX`. Each
//! webhook remembers up to which event it is done; the leader's delivery loop POSTs what
//! comes after and records every attempt through raft, so a new leader carries on where
//! the old one stopped (an event may be delivered twice, never lost).

use windflow_protocol::webhook::{DELIVERY_LOG_MAX, EVENT_LOG_MAX};
use windflow_protocol::{
    Delivery, DeliveryOutcome, Event, EventKind, Run, RunStatus, Schedule, ScheduleFire, Sealed,
    Timestamp, Webhook, WebhookId, WebhookSpec,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, key, u64_of};

fn webhook_key(id: WebhookId) -> Vec<u8> {
    key::id(key::WEBHOOK, id.0)
}

pub(crate) fn delivery_key(id: WebhookId, seq: u64) -> Vec<u8> {
    key::pair(key::WEBHOOK_DELIVERY, id.0, seq)
}

fn delivery_counter(id: WebhookId) -> Vec<u8> {
    key::id(key::NEXT_WEBHOOK_DELIVERY, id.0)
}

pub(crate) fn create(
    p: &mut Pending<'_>,
    spec: WebhookSpec,
    secret: Sealed,
    at: Timestamp,
) -> Result<Response, StoreError> {
    if let Err(e) = crate::namespaces::require(p, &spec.namespace)? {
        return Ok(Err(e));
    }
    let name_key = key::ns_name(key::WEBHOOK_NAME, &spec.namespace, &spec.name);
    if p.get(&name_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "webhook".into(),
            name: spec.name,
        }));
    }
    let id = WebhookId(p.next(key::NEXT_WEBHOOK)?);
    let hook = Webhook {
        id,
        spec,
        secret,
        created_at: at,
        // Only what happens from now on.
        delivered_upto: u64_of(p.get(key::NEXT_EVENT)?),
    };
    p.put(name_key, id.0.to_be_bytes().to_vec());
    p.put_as(webhook_key(id), &hook)?;
    p.add(key::WEBHOOK_COUNT.to_vec(), 1)?;
    Ok(Ok(Applied::Webhook(hook)))
}

/// Scans the webhook's delivery log: never in a batch.
pub(crate) fn delete(p: &mut Pending<'_>, id: WebhookId) -> Result<Response, StoreError> {
    let Some(hook) = p.get_as::<Webhook>(&webhook_key(id), "webhook")? else {
        return Ok(Err(ApplyError::not_found("webhook", id)));
    };
    p.del(webhook_key(id));
    p.del(key::ns_name(
        key::WEBHOOK_NAME,
        &hook.spec.namespace,
        &hook.spec.name,
    ));
    p.del(delivery_counter(id));
    let log: Vec<Vec<u8>> = p
        .tree()
        .scan_prefix(key::id(key::WEBHOOK_DELIVERY, id.0))
        .keys()
        .map(|k| k.map(|k| k.to_vec()))
        .collect::<Result<_, _>>()?;
    for k in log {
        p.del(k);
    }
    p.add(key::WEBHOOK_COUNT.to_vec(), -1)?;
    Ok(Ok(Applied::Webhook(hook)))
}

/// The fields of one attempt.
pub(crate) struct Attempt {
    pub webhook: WebhookId,
    pub event: u64,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub outcome: DeliveryOutcome,
}

/// The most text an attempt's error keeps.
const ERROR_MAX_BYTES: usize = 1024;

pub(crate) fn attempt(
    p: &mut Pending<'_>,
    a: Attempt,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut hook) = p.get_as::<Webhook>(&webhook_key(a.webhook), "webhook")? else {
        return Ok(Err(ApplyError::not_found("webhook", a.webhook)));
    };
    if a.event <= hook.delivered_upto {
        return Ok(Err(ApplyError::Refused(format!(
            "event {} is already done for webhook {}",
            a.event, a.webhook
        ))));
    }
    let Some(event) = p.get_as::<Event>(&key::id(key::EVENT, a.event), "event")? else {
        return Ok(Err(ApplyError::not_found("event", a.event)));
    };
    let seq = p.next(&delivery_counter(a.webhook))?;
    let delivery = Delivery {
        webhook: a.webhook,
        seq,
        event: a.event,
        kind: event.kind,
        attempt: a.attempt,
        at,
        status: a.status,
        error: a.error.map(|e| {
            if e.len() > ERROR_MAX_BYTES {
                windflow_protocol::run::capped_text(e.as_bytes(), ERROR_MAX_BYTES).0
            } else {
                e
            }
        }),
        outcome: a.outcome,
    };
    p.put_as(delivery_key(a.webhook, seq), &delivery)?;
    if seq > DELIVERY_LOG_MAX {
        p.del(delivery_key(a.webhook, seq - DELIVERY_LOG_MAX));
    }
    if a.outcome != DeliveryOutcome::Retrying {
        hook.delivered_upto = a.event;
        p.put_as(webhook_key(a.webhook), &hook)?;
    }
    Ok(Ok(Applied::Delivery(delivery)))
}

/// Records an event, if any webhook may want it.
fn record(p: &mut Pending<'_>, mut event: Event) -> Result<(), StoreError> {
    if u64_of(p.get(key::WEBHOOK_COUNT)?) == 0 {
        return Ok(());
    }
    event.seq = p.next(key::NEXT_EVENT)?;
    p.put_as(key::id(key::EVENT, event.seq), &event)?;
    if event.seq > EVENT_LOG_MAX {
        p.del(key::id(key::EVENT, event.seq - EVENT_LOG_MAX));
    }
    Ok(())
}

/// A run ended: `job.succeeded`, `job.failed` or `job.timed_out`.
pub(crate) fn run_ended(p: &mut Pending<'_>, run: &Run, at: Timestamp) -> Result<(), StoreError> {
    let kind = match run.status {
        RunStatus::Succeeded => EventKind::JobSucceeded,
        RunStatus::Failed => EventKind::JobFailed,
        RunStatus::TimedOut => EventKind::JobTimedOut,
        RunStatus::Pending | RunStatus::Running => return Ok(()),
    };
    record(
        p,
        Event {
            seq: 0,
            kind,
            namespace: run.namespace.clone(),
            at,
            job: Some(run.job),
            run: Some(run.id),
            schedule: None,
            due: None,
            runs: Vec::new(),
            exit_code: run.exit_code,
            error: run.error.clone(),
        },
    )
}

/// A schedule fired (and launched its targets).
pub(crate) fn schedule_fired(
    p: &mut Pending<'_>,
    s: &Schedule,
    fire: &ScheduleFire,
) -> Result<(), StoreError> {
    record(
        p,
        Event {
            seq: 0,
            kind: EventKind::ScheduleFired,
            namespace: s.spec.namespace.clone(),
            at: fire.at,
            job: None,
            run: None,
            schedule: Some(s.id),
            due: Some(fire.due),
            runs: fire.launches.iter().filter_map(|l| l.run).collect(),
            exit_code: None,
            error: None,
        },
    )
}
