//! The REST API: `/v1/...` behind a bearer token, plus `/healthz`, `/readyz`, `/metrics`
//! and the UI. [`app`] builds the whole router, so tests drive it with `oneshot`.

mod backup;
mod body;
mod cluster;
mod contexts;
mod error;
mod faults;
mod health;
mod jobs;
mod join_tokens;
mod nodes;
mod runs;
mod ui;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use tracing::Instrument;
use windflow_protocol::Job;
use windflow_raft::{RaftNode, StateReader};

pub use error::ApiError;

use crate::auth;
use crate::gateway::{RunOutputs, Sessions};
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub raft: RaftNode,
    pub sessions: Sessions,
    pub outputs: RunOutputs,
    pub metrics: Arc<Metrics>,
    /// Names of the servers this one knows, by raft ID.
    pub server_names: Arc<BTreeMap<windflow_raft::ServerId, String>>,
    /// Whether `PUT /v1/debug/faults` exists (`windflow server --fault-injection`).
    pub fault_injection: bool,
    /// The cluster CA's SHA-256 fingerprint, which join tokens carry.
    pub ca_fingerprint: Arc<str>,
}

/// The whole HTTP surface of a server.
pub fn app(state: AppState) -> Router {
    let mut v1 = Router::new();
    if state.fault_injection {
        v1 = v1.route("/debug/faults", put(faults::set));
    }
    let v1 = v1
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/{id}", get(jobs::show).delete(jobs::delete))
        .route("/jobs/{id}/run", post(jobs::run))
        .route("/jobs/{id}/runs", get(runs::list_for_job))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/output", get(runs::output))
        .route("/contexts/{id}", get(contexts::show))
        .route("/nodes", get(nodes::list))
        .route(
            "/cluster/members",
            get(cluster::members).post(cluster::join),
        )
        .route("/cluster/members/{name}", delete(cluster::remove))
        .route(
            "/cluster/tokens",
            get(join_tokens::list).post(join_tokens::create),
        )
        .route("/cluster/tokens/{id}", delete(join_tokens::revoke))
        .route("/cluster/snapshot", get(backup::save))
        .route(
            "/cluster/restore",
            post(backup::restore).layer(DefaultBodyLimit::max(backup::MAX_BACKUP_BYTES)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .fallback(error::no_route)
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// One span per request, carrying a request ID that is also returned as `x-request-id`.
async fn trace_request(req: Request, next: Next) -> Response {
    let id = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("http", request_id = id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Query parameters of a read: `?consistent=true` asks raft for a linearizable read first.
pub(crate) async fn read_barrier(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    match query.get("consistent").map(String::as_str) {
        None | Some("false") => Ok(()),
        Some("true") | Some("") => Ok(state.raft.linearizable().await?),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("`consistent` must be true or false, not `{other}`"),
        )),
    }
}

/// A job by ID (`J12`) or by its unique name.
pub(crate) fn resolve_job(reader: &StateReader, key: &str) -> Result<Job, ApiError> {
    let found = match key.parse() {
        Ok(id) => reader.job(id)?,
        Err(_) => reader.job_by_name(key)?,
    };
    found.ok_or_else(|| ApiError::not_found("job", key))
}

#[cfg(test)]
mod tests;
