//! `/v1/webhooks`: subscriptions to run events, POSTed signed by the leader (see
//! `crate::webhooks`), and each one's delivery log. The HMAC secret is sealed before it is
//! proposed and shown once, in the answer to its creation.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::webhook::DELIVERY_LOG_MAX;
use windflow_protocol::{Delivery, EventKind, Timestamp, Webhook, WebhookId, WebhookSpec};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::jobs::unexpected;
use super::namespaces::{self, NsScope};
use super::page::{NameFilter, Paged, page_request};
use super::{ApiError, AppState, read_barrier};

const MAX_URL_LEN: usize = 2048;
/// A given secret's bounds, in bytes.
const MIN_SECRET_LEN: usize = 16;
const MAX_SECRET_LEN: usize = 1024;

/// The answer to a creation: the webhook and its secret, shown this once.
#[derive(Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

/// `POST /v1/webhooks`: `{"name", "url", "events": ["job.succeeded", "job.failed",
/// "job.timed_out", "pipeline.succeeded", "pipeline.failed", "pipeline.timed_out",
/// "schedule.fired"], "secret"?, "namespace"?}`. Without a `secret`, one is generated.
pub async fn create(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    body: Bytes,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let (spec, secret) = parse_body(&body, &scope)?;
    let secret = match secret {
        Some(s) => s,
        None => new_secret()?,
    };
    let sealed = state
        .secrets
        .seal_at(
            &crate::webhooks::secret_place(&spec.namespace, &spec.name),
            &secret,
        )
        .map_err(super::secrets::seal_error)?;
    match state
        .raft
        .write(Command::CreateWebhook {
            spec,
            secret: sealed,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Webhook(webhook) => Ok((StatusCode::CREATED, Json(Created { webhook, secret }))),
        other => Err(unexpected(other)),
    }
}

/// The body's rules: the spec, and the secret it gives, if any (never echoed in an
/// error). Import checks its entries with this.
pub(crate) fn parse_body(
    body: &Bytes,
    scope: &NsScope,
) -> Result<(WebhookSpec, Option<String>), ApiError> {
    let mut f = Fields::parse(body)?;
    let name = f.required_str("name")?;
    validate_name(&name)?;
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let url = f.required_str("url")?;
    validate_url(&url)?;
    let names = f.required_string_list("events")?;
    if names.is_empty() {
        return Err(ApiError::invalid_field(
            "events",
            "must name at least one event",
        ));
    }
    let mut events = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let kind = EventKind::parse(n).ok_or_else(|| {
            let all: Vec<&str> = EventKind::ALL.iter().map(EventKind::as_str).collect();
            ApiError::invalid_field(
                &format!("events[{i}]"),
                format!("`{n}` is not an event; they are {}", all.join(", ")),
            )
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    // Never echoed in an error.
    let secret = match f.optional_str("secret")? {
        Some(s) if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.len()) => Some(s),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "secret",
                format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes"),
            ));
        }
        None => None,
    };
    f.finish()?;
    Ok((
        WebhookSpec {
            name,
            namespace,
            url,
            events,
        },
        secret,
    ))
}

/// A generated secret: 32 random bytes as hex.
pub(crate) fn new_secret() -> Result<String, ApiError> {
    crate::auth::random_hex(32)
        .map_err(|_| ApiError::internal("no system randomness for the webhook's secret"))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    super::jobs::validate_name_of::<WebhookId>(name, "webhook")
}

fn validate_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid_field(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid_field("url", format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid_field(
            "url",
            "must be an http:// or https:// URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid_field(
            "url",
            "must not carry credentials; the signature authenticates the sender",
        ));
    }
    Ok(())
}

fn find(reader: &StateReader, scope: &NsScope, key: &str) -> Result<Webhook, ApiError> {
    match key.parse::<WebhookId>() {
        Ok(id) => reader.webhook(id)?,
        Err(_) => reader.webhook_by_name(&scope.home(), key)?,
    }
    .filter(|w| scope.admits(&w.spec.namespace))
    .ok_or_else(|| ApiError::not_found("webhook", key))
}

/// `GET /v1/webhooks`
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<Webhook, WebhookId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let name = NameFilter::of(&q)?;
    let page = state.raft.reader().webhooks_page(req, &mut |w| {
        Ok(scope.admits(&w.spec.namespace) && name.admits(&w.spec.name))
    })?;
    Ok(Paged(page))
}

/// `GET /v1/webhooks/{id}` (ID or name)
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Webhook>, ApiError> {
    read_barrier(&state, &q).await?;
    find(state.raft.reader(), &scope, &id).map(Json)
}

/// `DELETE /v1/webhooks/{id}` answers with the webhook as it was.
pub async fn delete(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    let w = find(state.raft.reader(), &scope, &id)?;
    match state
        .raft
        .write(Command::DeleteWebhook {
            webhook: w.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Webhook(w) => Ok(Json(w)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/webhooks/{id}/deliveries?limit=` (50): attempts, newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    read_barrier(&state, &q).await?;
    let limit = match q.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=DELIVERY_LOG_MAX as usize).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "`limit` must be a whole number from 1 to {DELIVERY_LOG_MAX}, not `{v}`"
                    ),
                )
            })?,
    };
    let reader = state.raft.reader();
    let w = find(reader, &scope, &id)?;
    Ok(Json(reader.deliveries(w.id, limit)?))
}
