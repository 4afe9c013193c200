//! Webhook delivery on the leader. Events are recorded through raft by the commands that
//! cause them (`raft/src/webhooks.rs`); this loop POSTs each one a webhook subscribes to,
//! signed ([`sign`]), one event at a time per webhook and in order, retrying with
//! exponential backoff, and records every attempt through raft. A new leader starts
//! after the last event recorded as done, and resumes the attempt count from the
//! delivery log: at-least-once, nothing lost.

pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::{DeliveryOutcome, Event, Timestamp, Webhook, WebhookId};
use windflow_raft::{ApplyError, Command, RaftNode, StateReader, StoreError, WriteError};

use crate::secrets::Secrets;

/// Attempts per event, the first included.
pub const MAX_ATTEMPTS: u32 = 6;
/// The wait after the first failed attempt; it doubles up to [`MAX_RETRY_WAIT`].
pub const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// How long one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// Events read per look for a webhook's next one.
const SCAN_BATCH: usize = 256;

/// The associated data a webhook's secret is sealed with.
pub fn secret_place(namespace: &windflow_protocol::Namespace, name: &str) -> String {
    format!("webhook:{namespace}/{name}")
}

/// The wait before attempt `attempt + 1` after attempt `attempt` failed.
pub fn retry_wait(attempt: u32) -> Duration {
    FIRST_RETRY_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_WAIT)
}

/// The JSON body of a delivery: the webhook and the event.
#[derive(Serialize)]
pub struct Payload<'a> {
    pub webhook: WebhookId,
    #[serde(flatten)]
    pub event: &'a Event,
}

/// Where one webhook's delivery stands on this leader.
#[derive(Default)]
struct Progress {
    /// Events up to here were looked at (delivered, given up, or not subscribed to).
    scanned: u64,
    /// The event being delivered, the attempt to make next, and when.
    current: Option<(Event, u32, Instant)>,
    in_flight: bool,
}

/// What one attempt came to, for the loop.
struct Done {
    webhook: WebhookId,
    event: u64,
    /// `None`: recording it through raft failed (it is made again).
    recorded: Option<DeliveryOutcome>,
}

pub struct WebhookDelivery {
    raft: RaftNode,
    secrets: Arc<Secrets>,
    http: reqwest::Client,
}

impl WebhookDelivery {
    pub fn new(raft: RaftNode, secrets: Arc<Secrets>) -> anyhow::Result<Self> {
        windflow_certs::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookDelivery {
            raft,
            secrets,
            http,
        })
    }

    pub async fn run(self, stop: CancellationToken) {
        let reader = self.raft.reader().clone();
        let mut applied = reader.subscribe();
        let mut progress: HashMap<WebhookId, Progress> = HashMap::new();
        let mut attempts: JoinSet<Done> = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.pass(&reader, &mut progress, &mut attempts) {
                Ok(next) => {
                    backoff = Duration::from_millis(100);
                    next.map_or(IDLE_WAIT, |n| n.saturating_duration_since(Instant::now()))
                        .min(IDLE_WAIT)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading webhooks failed");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                changed = applied.changed() => if changed.is_err() { return },
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    if let Ok(done) = done {
                        settle(&mut progress, done);
                    }
                }
            }
        }
    }

    /// Starts the attempts that are due; answers when the next one will be.
    fn pass(
        &self,
        reader: &StateReader,
        progress: &mut HashMap<WebhookId, Progress>,
        attempts: &mut JoinSet<Done>,
    ) -> Result<Option<Instant>, StoreError> {
        let hooks = reader.webhooks()?;
        progress.retain(|id, _| hooks.iter().any(|h| h.id == *id));
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for hook in hooks {
            let p = progress.entry(hook.id).or_default();
            if p.in_flight {
                continue;
            }
            if hook.delivered_upto > p.scanned {
                p.scanned = hook.delivered_upto;
                if p.current.as_ref().is_some_and(|(e, ..)| e.seq <= p.scanned) {
                    p.current = None;
                }
            }
            if p.current.is_none() {
                p.current = next_event(reader, &hook, &mut p.scanned)?
                    .map(|(event, attempt)| (event, attempt, now));
            }
            let Some((event, attempt, when)) = &p.current else {
                continue;
            };
            if *when > now {
                next = Some(next.map_or(*when, |n| n.min(*when)));
                continue;
            }
            p.in_flight = true;
            let span =
                tracing::info_span!("webhook", webhook = %hook.id, event = event.seq, attempt);
            attempts.spawn(
                deliver(
                    self.raft.clone(),
                    self.secrets.clone(),
                    self.http.clone(),
                    hook,
                    event.clone(),
                    *attempt,
                )
                .instrument(span),
            );
        }
        Ok(next)
    }
}

/// The next event after `scanned` that `hook` subscribes to, and the attempt to make of
/// it (after those the delivery log already holds). Moves `scanned` past the events it
/// does not want.
fn next_event(
    reader: &StateReader,
    hook: &Webhook,
    scanned: &mut u64,
) -> Result<Option<(Event, u32)>, StoreError> {
    loop {
        let batch = reader.events_after(*scanned, SCAN_BATCH)?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(None);
        };
        if let Some(event) = batch
            .into_iter()
            .find(|e| hook.spec.events.contains(&e.kind) && e.namespace == hook.spec.namespace)
        {
            let made = reader
                .deliveries(hook.id, 1)?
                .first()
                .filter(|d| d.event == event.seq)
                .map_or(0, |d| d.attempt);
            *scanned = event.seq - 1;
            return Ok(Some((event, made + 1)));
        }
        *scanned = last;
    }
}

fn settle(progress: &mut HashMap<WebhookId, Progress>, done: Done) {
    let Some(p) = progress.get_mut(&done.webhook) else {
        return;
    };
    p.in_flight = false;
    let Some((event, attempt, when)) = p.current.as_mut() else {
        return;
    };
    if event.seq != done.event {
        return;
    }
    match done.recorded {
        Some(DeliveryOutcome::Retrying) => {
            *when = Instant::now() + retry_wait(*attempt);
            *attempt += 1;
        }
        Some(DeliveryOutcome::Delivered | DeliveryOutcome::GaveUp) => {
            p.scanned = done.event;
            p.current = None;
        }
        // Not recorded: made again shortly, under the same number.
        None => *when = Instant::now() + FIRST_RETRY_WAIT,
    }
}

/// One POST of `event` to `hook`, and its record through raft.
async fn deliver(
    raft: RaftNode,
    secrets: Arc<Secrets>,
    http: reqwest::Client,
    hook: Webhook,
    event: Event,
    attempt: u32,
) -> Done {
    let (status, error) = post(&secrets, &http, &hook, &event, attempt).await;
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    let outcome = if delivered {
        DeliveryOutcome::Delivered
    } else if attempt >= MAX_ATTEMPTS {
        DeliveryOutcome::GaveUp
    } else {
        DeliveryOutcome::Retrying
    };
    match outcome {
        DeliveryOutcome::Delivered => tracing::info!(status, "webhook delivered"),
        _ => tracing::warn!(
            status,
            error = error.as_deref(),
            ?outcome,
            "webhook delivery failed"
        ),
    }
    let recorded = match raft
        .write(Command::WebhookAttempt {
            webhook: hook.id,
            event: event.seq,
            attempt,
            status,
            error,
            outcome,
            at: Timestamp::now(),
        })
        .await
    {
        Ok(_) => Some(outcome),
        // Done already (another leader's attempt), or the webhook is gone.
        Err(WriteError::Rejected(ApplyError::Refused(_) | ApplyError::NotFound { .. })) => {
            Some(DeliveryOutcome::GaveUp)
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording a webhook attempt failed");
            None
        }
    };
    Done {
        webhook: hook.id,
        event: event.seq,
        recorded,
    }
}

/// The receiver's status, or why there is none.
async fn post(
    secrets: &Secrets,
    http: &reqwest::Client,
    hook: &Webhook,
    event: &Event,
    attempt: u32,
) -> (Option<u16>, Option<String>) {
    let secret = match secrets
        .open_at(
            &secret_place(&hook.spec.namespace, &hook.spec.name),
            &hook.secret,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return (None, Some(format!("cannot open the webhook's secret: {e}"))),
    };
    let body = match serde_json::to_vec(&Payload {
        webhook: hook.id,
        event,
    }) {
        Ok(b) => b,
        Err(e) => return (None, Some(format!("encoding the event: {e}"))),
    };
    let signature = sign::sign(secret.as_bytes(), &body);
    let answer = http
        .post(&hook.spec.url)
        .header("content-type", "application/json")
        .header(sign::SIGNATURE_HEADER, signature)
        .header("x-windflow-event", event.kind.as_str())
        .header("x-windflow-delivery", format!("{}-{}", hook.id, event.seq))
        .header("x-windflow-attempt", attempt.to_string())
        .body(body)
        .send()
        .await;
    match answer {
        Ok(res) => {
            let status = res.status();
            let error = (!status.is_success()).then(|| format!("the receiver answered {status}"));
            (Some(status.as_u16()), error)
        }
        Err(e) => (None, Some(format!("POST {}: {e}", hook.spec.url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_and_are_capped() {
        assert_eq!(retry_wait(1), Duration::from_secs(1));
        assert_eq!(retry_wait(2), Duration::from_secs(2));
        assert_eq!(retry_wait(3), Duration::from_secs(4));
        assert_eq!(retry_wait(30), MAX_RETRY_WAIT);
    }
}
