//! Webhooks: subscriptions to run events, delivered as signed HTTP POSTs, and the log of
//! each delivery attempt.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, RunId, ScheduleId, WebhookId};
use crate::namespace::Namespace;
use crate::secret::Sealed;
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.timed_out")]
    JobTimedOut,
    #[serde(rename = "pipeline.succeeded")]
    PipelineSucceeded,
    #[serde(rename = "pipeline.failed")]
    PipelineFailed,
    #[serde(rename = "pipeline.timed_out")]
    PipelineTimedOut,
    #[serde(rename = "schedule.fired")]
    ScheduleFired,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::JobSucceeded,
        EventKind::JobFailed,
        EventKind::JobTimedOut,
        EventKind::PipelineSucceeded,
        EventKind::PipelineFailed,
        EventKind::PipelineTimedOut,
        EventKind::ScheduleFired,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::JobSucceeded => "job.succeeded",
            EventKind::JobFailed => "job.failed",
            EventKind::JobTimedOut => "job.timed_out",
            EventKind::PipelineSucceeded => "pipeline.succeeded",
            EventKind::PipelineFailed => "pipeline.failed",
            EventKind::PipelineTimedOut => "pipeline.timed_out",
            EventKind::ScheduleFired => "schedule.fired",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event, recorded through raft by the command that caused it; numbered in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the cluster's event sequence, from 1.
    pub seq: u64,
    pub kind: EventKind,
    pub namespace: Namespace,
    pub at: Timestamp,
    pub job: Option<JobId>,
    pub run: Option<RunId>,
    pub schedule: Option<ScheduleId>,
    /// A schedule fire's due time.
    pub due: Option<Timestamp>,
    /// The runs a schedule fire started.
    #[serde(default)]
    pub runs: Vec<RunId>,
    /// A run's exit code, or why it failed.
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// How many events the cluster keeps for delivery; a webhook further behind than this
/// loses the oldest.
pub const EVENT_LOG_MAX: u64 = 10_000;

/// How many delivery attempts a webhook keeps in its log.
pub const DELIVERY_LOG_MAX: u64 = 200;

/// What a webhook is, as created. The secret is sealed apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSpec {
    pub name: String,
    #[serde(default)]
    pub namespace: Namespace,
    /// `http://` or `https://`.
    pub url: String,
    pub events: Vec<EventKind>,
}

/// A webhook: its spec and its sealed HMAC secret (JSON shows a redacted marker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub spec: WebhookSpec,
    pub secret: Sealed,
    pub created_at: Timestamp,
    /// Events up to this sequence number are done (delivered or given up), or came
    /// before the webhook.
    pub delivered_upto: u64,
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; another attempt follows after a backoff.
    Retrying,
    /// It failed and was the last attempt.
    GaveUp,
}

/// One delivery attempt of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub webhook: WebhookId,
    /// Its number in the webhook's log, from 1.
    pub seq: u64,
    pub event: u64,
    pub kind: EventKind,
    /// 1 for the first try.
    pub attempt: u32,
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub outcome: DeliveryOutcome,
}
