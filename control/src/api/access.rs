//! Who may call which route. Every `/v1` route is added through [`Routes`], which takes
//! its [`Access`] and audit action next to its handler, and [`guard`] is the one layer
//! that enforces them: it authenticates, authorizes, and records every mutating call in
//! the audit log. A route the table does not know is refused (fail closed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use serde::Serialize;
use windflow_protocol::{AuditEntry, AuditId, AuditOutcome, Role, Timestamp};

use super::namespaces::NsScope;
use super::{ApiError, AppState, RequestId};
use crate::auth::{self, Caller};
use crate::rate_limit::Limited;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// No token (the login itself).
    Public,
    /// Any valid token, whatever its role (logout, whoami; the handler may check more).
    Authenticated,
    /// A valid token with at least this role, for work inside a namespace: the handler
    /// sees only what the request's [`NsScope`] admits.
    Role(Role),
    /// A valid token with at least this role that is not bound to a namespace: the route
    /// reaches the whole cluster (nodes, users, tokens, the cluster itself).
    Cluster(Role),
}

pub const READ: Access = Access::Role(Role::Reader);
pub const WRITE: Access = Access::Role(Role::Writer);
pub const CLUSTER_READ: Access = Access::Cluster(Role::Reader);
pub const ADMIN: Access = Access::Cluster(Role::Admin);

/// One declared route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteDecl {
    #[serde(serialize_with = "method_name")]
    pub method: Method,
    /// The full path as axum matches it, such as `/v1/jobs/{id}`.
    pub path: String,
    pub access: Access,
    /// The name the audit log gives a call of it, such as `jobs.create`.
    pub action: &'static str,
    /// The largest request body it takes, in bytes.
    pub body_limit: usize,
}

fn method_name<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

impl RouteDecl {
    /// Mutating calls are audited; a public route (login) audits itself, knowing the user.
    fn audited(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD) && self.access != Access::Public
    }
}

/// Every declared route, by method and path.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<(Method, String), RouteDecl>,
}

impl RouteTable {
    pub fn find(&self, method: &Method, path: &str) -> Option<&RouteDecl> {
        self.routes.get(&(method.clone(), path.to_owned()))
    }

    /// All routes, sorted by path then method.
    pub fn all(&self) -> Vec<RouteDecl> {
        let mut all: Vec<RouteDecl> = self.routes.values().cloned().collect();
        all.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
        all
    }
}

/// Builds the `/v1` router and its [`RouteTable`] together, so a route cannot be added
/// without saying who may call it.
pub struct Routes {
    prefix: &'static str,
    router: Router<AppState>,
    table: RouteTable,
}

impl Routes {
    /// Routes that will be nested under `prefix` (`/v1`).
    pub fn new(prefix: &'static str) -> Self {
        Routes {
            prefix,
            router: Router::new(),
            table: RouteTable::default(),
        }
    }

    /// Adds `handler` for `method` on `path`, callable with `access`, audited as `action`.
    pub fn route<H, T>(
        self,
        method: Method,
        path: &str,
        access: Access,
        action: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.route_with(method, path, access, action, handler, |r| r)
    }

    /// [`Routes::route`] taking bodies up to `limit` bytes instead of
    /// [`DEFAULT_BODY_LIMIT`](super::hardening::DEFAULT_BODY_LIMIT) (a backup restore).
    pub fn route_with_body_limit<H, T>(
        self,
        method: Method,
        path: &str,
        access: Access,
        action: &'static str,
        handler: H,
        limit: usize,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, access, action, handler, limit, |r| {
            r.layer(DefaultBodyLimit::max(limit))
        })
    }

    /// [`Routes::route`] with per-route layers.
    pub fn route_with<H, T>(
        self,
        method: Method,
        path: &str,
        access: Access,
        action: &'static str,
        handler: H,
        layers: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let limit = super::hardening::DEFAULT_BODY_LIMIT;
        self.add(method, path, access, action, handler, limit, layers)
    }

    #[allow(clippy::too_many_arguments)]
    fn add<H, T>(
        mut self,
        method: Method,
        path: &str,
        access: Access,
        action: &'static str,
        handler: H,
        body_limit: usize,
        layers: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a method axum routes"));
        let full = format!("{}{path}", self.prefix);
        let decl = RouteDecl {
            method: method.clone(),
            path: full.clone(),
            access,
            action,
            body_limit,
        };
        let earlier = self.table.routes.insert((method.clone(), full), decl);
        assert!(earlier.is_none(), "{method} {path} is declared twice");
        self.router = self
            .router
            .route(path, layers(axum::routing::on(filter, handler)));
        self
    }

    pub fn finish(self) -> (Router<AppState>, RouteTable) {
        (self.router, self.table)
    }
}

/// The layer on every `/v1` route: authenticate, take the token's rate-limit permit,
/// authorize, run, audit.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let Some(decl) = state.routes.find(req.method(), &path).cloned() else {
        return ApiError::internal(format!(
            "{} {path} has no declared permission; refusing it",
            req.method()
        ))
        .into_response();
    };
    let audit = decl.audited().then(|| Pending::of(&req, decl.action));
    let caller = match decl.access {
        Access::Public => None,
        Access::Authenticated | Access::Role(_) | Access::Cluster(_) => {
            match auth::authenticate(&state, req.headers()) {
                Ok(c) => Some(c),
                Err(e) => {
                    if let Some(a) = audit {
                        a.record(&state, None, AuditOutcome::Denied, e.status);
                    }
                    return e.into_response();
                }
            }
        }
    };
    // After authentication and before anything else, refusals included: a token flooding
    // routes it may not call must not get an audit write per request either.
    if let Some(c) = &caller
        && let Err(limited) = state.token_limiter.check(c.token)
    {
        let e = rate_limited(c, limited);
        // A flood is audited once, when it starts, not once per refused request.
        if let Some(a) = audit.filter(|_| limited.first) {
            a.record(&state, caller.as_ref(), AuditOutcome::Denied, e.status);
        }
        let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut res = e.into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }
    let refused = match (decl.access, &caller) {
        (Access::Role(need) | Access::Cluster(need), Some(c)) if c.role < need => Some(format!(
            "{} {} needs the {need} role; this token has {}",
            decl.method,
            req.uri().path(),
            c.role
        )),
        (
            Access::Cluster(_),
            Some(Caller {
                namespace: Some(ns),
                ..
            }),
        ) => Some(format!(
            "{} {} reaches the whole cluster; this token is bound to namespace `{ns}`",
            decl.method,
            req.uri().path(),
        )),
        _ => None,
    };
    if let Some(message) = refused {
        let e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
        if let Some(a) = audit {
            a.record(&state, caller.as_ref(), AuditOutcome::Denied, e.status);
        }
        return e.into_response();
    }
    if let (Access::Role(_), Some(c)) = (decl.access, &caller) {
        match NsScope::of_request(&state, c, req.uri()) {
            Ok(scope) => {
                req.extensions_mut().insert(scope);
            }
            Err(e) => {
                if let Some(a) = audit {
                    a.record(&state, caller.as_ref(), AuditOutcome::Failed, e.status);
                }
                return e.into_response();
            }
        }
    }
    if let Some(c) = &caller {
        req.extensions_mut().insert(c.clone());
    }
    let res = next.run(req).await;
    if let Some(a) = audit {
        let outcome = match res.status() {
            s if s == StatusCode::FORBIDDEN => AuditOutcome::Denied,
            s if s.is_success() => AuditOutcome::Success,
            _ => AuditOutcome::Failed,
        };
        a.record(&state, caller.as_ref(), outcome, res.status());
    }
    res
}

fn rate_limited(caller: &Caller, limited: Limited) -> ApiError {
    tracing::info!(token = %caller.token, "request refused by the token's rate limit");
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "token {} is over its request rate; retry in {} ms",
            caller.token,
            limited.retry_after.as_millis().max(1)
        ),
    )
}

/// What an audit entry takes from the request, before the outcome is known.
pub(crate) struct Pending {
    source: String,
    resource: String,
    request_id: String,
    action: &'static str,
}

impl Pending {
    /// The client's address.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn of(req: &Request, action: &'static str) -> Self {
        Pending {
            source: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".into(), |c| c.0.ip().to_string()),
            resource: req.uri().path().to_owned(),
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map_or_else(String::new, |r| r.0.clone()),
            action,
        }
    }

    /// Proposes the entry through raft without holding up the answer, riding in the next
    /// write's entry (`write_lazily`). An entry that cannot be committed (no quorum) is
    /// logged here instead.
    pub(crate) fn record(
        self,
        state: &AppState,
        caller: Option<&Caller>,
        outcome: AuditOutcome,
        status: StatusCode,
    ) {
        self.record_as(
            state,
            caller.and_then(|c| c.user.clone()),
            caller.map(|c| c.token),
            outcome,
            status,
        )
    }

    pub(crate) fn record_as(
        self,
        state: &AppState,
        user: Option<String>,
        token: Option<windflow_protocol::TokenId>,
        outcome: AuditOutcome,
        status: StatusCode,
    ) {
        let entry = AuditEntry {
            id: AuditId(0),
            at: Timestamp::now(),
            user,
            token,
            source: self.source,
            action: self.action.into(),
            resource: self.resource,
            outcome,
            status: status.as_u16(),
            request_id: self.request_id,
        };
        let raft = state.raft.clone();
        tokio::spawn(async move {
            if let Err(e) = raft
                .write_lazily(windflow_raft::Command::RecordAudit(entry.clone()))
                .await
            {
                tracing::warn!(error = %e, ?entry, "an audit entry was not recorded");
            }
        });
    }
}

/// The shared route table, as [`AppState`] holds it.
pub type Table = Arc<RouteTable>;
