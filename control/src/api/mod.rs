//! The REST API: `/v1/...` behind a bearer token, plus `/healthz`, `/readyz`, `/metrics`
//! and the UI. [`app`] builds the whole router, so tests drive it with `oneshot`.

pub mod access;
mod alloc_logs;
mod allocations;
mod audit;
mod backup;
mod batch;
mod body;
mod cluster;
mod contexts;
mod deployments;
#[cfg(test)]
mod deployments_tests;
mod docker;
mod error;
mod export;
mod faults;
pub mod hardening;
mod health;
mod import;
mod import_check;
mod job_body;
mod jobs;
mod join_tokens;
mod log_level;
pub mod namespaces;
mod nodes;
mod page;
mod pipelines;
mod placement;
mod policies;
mod rollout_spec;
mod runs;
mod schedules;
mod secrets;
mod session;
mod stacks;
#[cfg(test)]
mod stacks_tests;
mod templates;
mod tokens;
mod ui;
mod users;
mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tracing::Instrument;
use windflow_raft::RaftNode;

pub use error::ApiError;
pub use placement::operator as placement_operator;

use self::access::{ADMIN, Access, CLUSTER_READ, READ, RouteDecl, Routes, WRITE};
use crate::auth::LoginLimiter;
use crate::gateway::{RunOutputs, Sessions};
use crate::metrics::Metrics;
use crate::rate_limit::TokenLimiter;

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
    /// Seals secret values before they are proposed; rotates the cluster key.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Every `/v1` route and who may call it; [`app`] fills it in.
    pub routes: access::Table,
    pub login_limiter: Arc<LoginLimiter>,
    /// Each token's request budget, taken by `access::guard` after authentication.
    pub token_limiter: Arc<TokenLimiter>,
    /// The cluster CA certificate (PEM), served to CLIs that pin it at login.
    pub ca_pem: Arc<str>,
    /// Whether the API is served over TLS: its own origin is then `https://`, and answers
    /// carry `Strict-Transport-Security`.
    pub https: bool,
}

/// An admin of the request's namespace (or of the cluster).
const NS_ADMIN: Access = Access::Role(windflow_protocol::Role::Admin);

/// The `/v1` routes, each with who may call it and its audit action.
fn v1_routes(fault_injection: bool) -> Routes {
    use Method as M;
    let mut r = Routes::new("/v1");
    if fault_injection {
        r = r.route(M::PUT, "/debug/faults", ADMIN, "faults.set", faults::set);
    }
    r.route(M::POST, "/login", Access::Public, "login", session::login)
        .route(
            M::GET,
            "/cluster/ca",
            Access::Public,
            "cluster.ca",
            cluster::ca,
        )
        .route(
            M::POST,
            "/logout",
            Access::Authenticated,
            "logout",
            session::logout,
        )
        .route(
            M::GET,
            "/whoami",
            Access::Authenticated,
            "whoami",
            session::whoami,
        )
        .route(M::GET, "/jobs", READ, "jobs.list", jobs::list)
        .route(M::POST, "/jobs", WRITE, "jobs.create", jobs::create)
        .route(M::GET, "/jobs/{id}", READ, "jobs.show", jobs::show)
        .route(M::DELETE, "/jobs/{id}", WRITE, "jobs.delete", jobs::delete)
        .route(M::POST, "/jobs/{id}/run", WRITE, "jobs.run", jobs::run)
        .route(M::GET, "/stacks", READ, "stacks.list", stacks::list)
        .route(M::POST, "/stacks", WRITE, "stacks.deploy", stacks::deploy)
        .route(M::GET, "/stacks/{name}", READ, "stacks.show", stacks::show)
        .route(
            M::DELETE,
            "/stacks/{name}",
            WRITE,
            "stacks.remove",
            stacks::remove,
        )
        .route(
            M::GET,
            "/templates",
            READ,
            "templates.list",
            templates::list,
        )
        .route(
            M::GET,
            "/templates/{name}",
            READ,
            "templates.show",
            templates::show,
        )
        .route(
            M::POST,
            "/templates/{name}/deploy",
            WRITE,
            "templates.deploy",
            templates::deploy,
        )
        // Job versions, scaling and deployments (issue 6, rolling updates).
        .route(
            M::PUT,
            "/jobs/{id}",
            WRITE,
            "jobs.update",
            deployments::update,
        )
        .route(
            M::POST,
            "/jobs/{id}/scale",
            WRITE,
            "jobs.scale",
            deployments::scale,
        )
        .route(
            M::GET,
            "/jobs/{id}/versions",
            READ,
            "jobs.versions",
            deployments::versions,
        )
        .route(
            M::GET,
            "/deployments",
            READ,
            "deployments.list",
            deployments::list,
        )
        .route(
            M::GET,
            "/deployments/{id}",
            READ,
            "deployments.show",
            deployments::show,
        )
        .route(
            M::POST,
            "/deployments/{id}/fail",
            WRITE,
            "deployments.fail",
            deployments::fail,
        )
        .route(
            M::POST,
            "/deployments/{id}/promote",
            WRITE,
            "deployments.promote",
            deployments::promote,
        )
        .route(
            M::GET,
            "/jobs/{id}/runs",
            READ,
            "runs.list",
            runs::list_for_job,
        )
        .route(
            M::GET,
            "/jobs/{id}/evaluations",
            READ,
            "evaluations.list",
            allocations::evaluations,
        )
        .route(
            M::GET,
            "/allocations",
            READ,
            "allocations.list",
            allocations::list,
        )
        .route(
            M::GET,
            "/allocations/{id}",
            READ,
            "allocations.show",
            allocations::show,
        )
        // Logs and stats, asked of the allocation's agent (issue 6).
        .route(
            M::GET,
            "/allocations/{id}/logs",
            READ,
            "allocations.logs",
            alloc_logs::logs,
        )
        .route(
            M::GET,
            "/allocations/{id}/stats",
            READ,
            "allocations.stats",
            alloc_logs::stats,
        )
        .route(M::GET, "/runs/{id}", READ, "runs.show", runs::show)
        .route(
            M::GET,
            "/runs/{id}/output",
            READ,
            "runs.output",
            runs::output,
        )
        .route(
            M::GET,
            "/contexts/{id}",
            READ,
            "contexts.show",
            contexts::show,
        )
        // Pipelines, contexts, job copies and run retention (issue 7).
        .route(M::POST, "/jobs/{id}/copy", WRITE, "jobs.copy", batch::copy)
        .route(M::GET, "/contexts", READ, "contexts.list", contexts::list)
        .route(
            M::POST,
            "/contexts/{id}/reset",
            WRITE,
            "contexts.reset",
            contexts::reset,
        )
        .route(
            M::GET,
            "/pipelines",
            READ,
            "pipelines.list",
            pipelines::list,
        )
        .route(
            M::POST,
            "/pipelines",
            WRITE,
            "pipelines.create",
            pipelines::create,
        )
        .route(
            M::GET,
            "/pipelines/{id}",
            READ,
            "pipelines.show",
            pipelines::show,
        )
        .route(
            M::DELETE,
            "/pipelines/{id}",
            WRITE,
            "pipelines.delete",
            pipelines::delete,
        )
        .route(
            M::POST,
            "/pipelines/{id}/run",
            WRITE,
            "pipelines.run",
            pipelines::run,
        )
        .route(
            M::GET,
            "/pipelines/{id}/runs",
            READ,
            "pipeline_runs.list",
            pipelines::runs,
        )
        .route(
            M::GET,
            "/pipeline-runs/{id}",
            READ,
            "pipeline_runs.show",
            pipelines::show_run,
        )
        .route(
            M::POST,
            "/pipeline-runs/{id}/retry",
            WRITE,
            "pipeline_runs.retry",
            pipelines::retry,
        )
        .route(
            M::GET,
            "/run-retention",
            CLUSTER_READ,
            "run_retention.show",
            batch::show_retention,
        )
        .route(
            M::PUT,
            "/run-retention",
            ADMIN,
            "run_retention.set",
            batch::set_retention,
        )
        .route(
            M::GET,
            "/namespaces",
            READ,
            "namespaces.list",
            namespaces::list,
        )
        .route(
            M::POST,
            "/namespaces",
            ADMIN,
            "namespaces.create",
            namespaces::create,
        )
        .route(
            M::GET,
            "/namespaces/{name}",
            READ,
            "namespaces.show",
            namespaces::show,
        )
        .route(
            M::DELETE,
            "/namespaces/{name}",
            ADMIN,
            "namespaces.delete",
            namespaces::delete,
        )
        .route(M::GET, "/nodes", CLUSTER_READ, "nodes.list", nodes::list)
        .route(
            M::GET,
            "/nodes/{id}",
            CLUSTER_READ,
            "nodes.show",
            nodes::show,
        )
        .route(
            M::POST,
            "/nodes/{id}/drain",
            ADMIN,
            "nodes.drain",
            nodes::drain,
        )
        .route(
            M::DELETE,
            "/nodes/{id}/drain",
            ADMIN,
            "nodes.drain_cancel",
            nodes::cancel_drain,
        )
        .route(
            M::PUT,
            "/nodes/{id}/eligibility",
            ADMIN,
            "nodes.eligibility",
            nodes::eligibility,
        )
        .route(
            M::POST,
            "/nodes/{id}/revoke",
            ADMIN,
            "nodes.revoke",
            nodes::revoke,
        )
        .route(
            M::GET,
            "/agent/tokens",
            ADMIN,
            "agent_tokens.list",
            join_tokens::list_agent,
        )
        .route(
            M::POST,
            "/agent/tokens",
            ADMIN,
            "agent_tokens.create",
            join_tokens::create_agent,
        )
        .route(
            M::DELETE,
            "/agent/tokens/{id}",
            ADMIN,
            "agent_tokens.revoke",
            join_tokens::revoke_agent,
        )
        .route(M::GET, "/users", ADMIN, "users.list", users::list)
        .route(M::POST, "/users", ADMIN, "users.create", users::create)
        .route(M::GET, "/users/{name}", ADMIN, "users.show", users::show)
        .route(
            M::DELETE,
            "/users/{name}",
            ADMIN,
            "users.delete",
            users::delete,
        )
        // Anyone may change their own password; the handler refuses others' to non-admins.
        .route(
            M::PUT,
            "/users/{name}/password",
            Access::Authenticated,
            "users.passwd",
            users::set_password,
        )
        .route(M::GET, "/tokens", ADMIN, "tokens.list", tokens::list)
        .route(M::POST, "/tokens", ADMIN, "tokens.create", tokens::create)
        .route(
            M::DELETE,
            "/tokens/{id}",
            ADMIN,
            "tokens.revoke",
            tokens::revoke,
        )
        .route(
            M::POST,
            "/tokens/{id}/rotate",
            ADMIN,
            "tokens.rotate",
            tokens::rotate,
        )
        .route(M::GET, "/audit", ADMIN, "audit.list", audit::list)
        .route(
            M::POST,
            "/secrets/rotate",
            ADMIN,
            "secrets.rotate",
            secrets::rotate,
        )
        .route(
            M::POST,
            "/secrets/drop-old-keys",
            ADMIN,
            "secrets.drop_old_keys",
            secrets::drop_old_keys,
        )
        .route(
            M::GET,
            "/agent/log-level",
            ADMIN,
            "log_level.show",
            log_level::show,
        )
        .route(
            M::PUT,
            "/agent/log-level",
            ADMIN,
            "log_level.set",
            log_level::set,
        )
        .route(
            M::GET,
            "/cluster/members",
            CLUSTER_READ,
            "cluster.members",
            cluster::members,
        )
        .route(
            M::POST,
            "/cluster/members",
            ADMIN,
            "cluster.join",
            cluster::join,
        )
        .route(
            M::DELETE,
            "/cluster/members/{name}",
            ADMIN,
            "cluster.remove",
            cluster::remove,
        )
        .route(
            M::GET,
            "/cluster/tokens",
            ADMIN,
            "cluster_tokens.list",
            join_tokens::list,
        )
        .route(
            M::POST,
            "/cluster/tokens",
            ADMIN,
            "cluster_tokens.create",
            join_tokens::create,
        )
        .route(
            M::DELETE,
            "/cluster/tokens/{id}",
            ADMIN,
            "cluster_tokens.revoke",
            join_tokens::revoke,
        )
        .route(
            M::GET,
            "/cluster/snapshot",
            ADMIN,
            "cluster.snapshot",
            backup::save,
        )
        // Schedules and webhooks (issue 7).
        .route(
            M::GET,
            "/schedules",
            READ,
            "schedules.list",
            schedules::list,
        )
        .route(
            M::POST,
            "/schedules",
            WRITE,
            "schedules.create",
            schedules::create,
        )
        .route(
            M::GET,
            "/schedules/{id}",
            READ,
            "schedules.show",
            schedules::show,
        )
        .route(
            M::DELETE,
            "/schedules/{id}",
            WRITE,
            "schedules.delete",
            schedules::delete,
        )
        .route(
            M::POST,
            "/schedules/{id}/enable",
            WRITE,
            "schedules.enable",
            schedules::enable,
        )
        .route(
            M::POST,
            "/schedules/{id}/disable",
            WRITE,
            "schedules.disable",
            schedules::disable,
        )
        .route(
            M::GET,
            "/schedules/{id}/next",
            READ,
            "schedules.next",
            schedules::next,
        )
        .route(
            M::GET,
            "/schedules/{id}/fires",
            READ,
            "schedules.fires",
            schedules::fires,
        )
        // A webhook makes the servers POST to a URL of its creator's choosing: admins only.
        .route(M::GET, "/webhooks", READ, "webhooks.list", webhooks::list)
        .route(
            M::POST,
            "/webhooks",
            NS_ADMIN,
            "webhooks.create",
            webhooks::create,
        )
        .route(
            M::GET,
            "/webhooks/{id}",
            READ,
            "webhooks.show",
            webhooks::show,
        )
        .route(
            M::DELETE,
            "/webhooks/{id}",
            NS_ADMIN,
            "webhooks.delete",
            webhooks::delete,
        )
        .route(
            M::GET,
            "/webhooks/{id}/deliveries",
            READ,
            "webhooks.deliveries",
            webhooks::deliveries,
        )
        // Export and import (issue 7): everything a caller may see, as one file.
        .route(M::GET, "/export", READ, "export.show", export::export)
        .route_with_body_limit(
            M::POST,
            "/import",
            WRITE,
            "import.apply",
            import::import,
            import::MAX_IMPORT_BYTES,
        )
        .route_with_body_limit(
            M::POST,
            "/cluster/restore",
            ADMIN,
            "cluster.restore",
            backup::restore,
            backup::MAX_BACKUP_BYTES,
        )
}

/// Every `/v1` route a server serves, with its permission (the table `guard` enforces).
pub fn route_table(fault_injection: bool) -> Vec<RouteDecl> {
    v1_routes(fault_injection).finish().1.all()
}

/// The whole HTTP surface of a server.
pub fn app(mut state: AppState) -> Router {
    let (v1, table) = v1_routes(state.fault_injection).finish();
    state.routes = Arc::new(table);
    let v1 = v1
        .route_layer(middleware::from_fn_with_state(state.clone(), access::guard))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            hardening::body_limit,
        ))
        .layer(DefaultBodyLimit::max(hardening::DEFAULT_BODY_LIMIT));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .fallback(error::no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            hardening::harden,
        ))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// The ID of one request, as answered in `x-request-id` and kept in the audit log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Tells request IDs of different server processes apart.
static PROCESS_TAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::auth::random_hex(4).unwrap_or_else(|_| format!("{:08x}", std::process::id()))
});

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// One span per request, carrying a request ID that is also returned as `x-request-id`.
async fn trace_request(mut req: Request, next: Next) -> Response {
    let id = format!(
        "{}-{}",
        *PROCESS_TAG,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("http", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
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

#[cfg(test)]
mod nodes_tests;
#[cfg(test)]
mod secrets_tests;
#[cfg(test)]
mod tests;
