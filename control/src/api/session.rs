//! `/v1/login`, `/v1/logout`, `/v1/whoami`: a user's password buys a session token.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use windflow_protocol::{AuditOutcome, Namespace, Role, Timestamp, TokenId, TokenKind, UserView};
use windflow_raft::{Applied, Command, NewToken};

use super::access::Pending;
use super::body::Fields;
use super::{ApiError, AppState};
use crate::auth::{self, Caller};
use crate::password;

/// How long a session lasts unless the login asks for less or more.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest login body read.
const MAX_LOGIN_BODY: usize = 16 * 1024;

#[derive(Debug, Serialize)]
pub struct Session {
    /// The session token's secret: shown this once.
    pub token: String,
    pub id: TokenId,
    pub user: String,
    pub role: Role,
    pub expires_at: Timestamp,
}

/// `POST /v1/login` with `{"user", "password", "ttl"?}`. Every attempt is audited; too
/// many failures for a user or from an address in a row are refused with 429 for a while.
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    let audit = Pending::of(&req, "login");
    let source = audit.source().to_owned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_LOGIN_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::bad_request(
                "invalid_body",
                format!("the login body must be at most {MAX_LOGIN_BODY} bytes"),
            );
            audit.record_as(&state, None, None, AuditOutcome::Failed, e.status);
            return e.into_response();
        }
    };
    let (user, password, ttl) = match login_fields(&body) {
        Ok(f) => f,
        Err(e) => {
            audit.record_as(&state, None, None, AuditOutcome::Failed, e.status);
            return e.into_response();
        }
    };
    if let Err(wait) = state.login_limiter.check(&user, &source) {
        let secs = wait.as_secs().max(1);
        audit.record_as(
            &state,
            Some(user),
            None,
            AuditOutcome::Denied,
            StatusCode::TOO_MANY_REQUESTS,
        );
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed logins; try again in {secs} s"),
        )
        .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }
    let record = match state.raft.reader().user_by_name(&user) {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let checked = tokio::task::spawn_blocking(move || match &record {
        Some(r) => password::verify(&password, &r.password_hash).then(|| r.view.clone()),
        None => {
            password::verify_nobody(&password);
            None
        }
    })
    .await;
    let Ok(Some(view)) = checked else {
        state.login_limiter.failed(&user, &source);
        audit.record_as(
            &state,
            Some(user),
            None,
            AuditOutcome::Denied,
            StatusCode::UNAUTHORIZED,
        );
        return ApiError::unauthorized("wrong user name or password").into_response();
    };
    state.login_limiter.succeeded(&user);
    match open_session(&state, &view, ttl).await {
        Ok(session) => {
            audit.record_as(
                &state,
                Some(user),
                Some(session.id),
                AuditOutcome::Success,
                StatusCode::CREATED,
            );
            (StatusCode::CREATED, Json(session)).into_response()
        }
        Err(e) => {
            audit.record_as(&state, Some(user), None, AuditOutcome::Failed, e.status);
            e.into_response()
        }
    }
}

fn login_fields(body: &Bytes) -> Result<(String, String, Duration), ApiError> {
    let mut f = Fields::parse(body)?;
    let user = f.required_str("user")?;
    let password = f.required_str("password")?;
    let ttl = f
        .optional_duration("ttl", MAX_SESSION_TTL)?
        .unwrap_or(SESSION_TTL);
    f.finish()?;
    Ok((user, password, ttl))
}

/// A session token for `user`, with the user's role in the user's namespace.
async fn open_session(
    state: &AppState,
    user: &UserView,
    ttl: Duration,
) -> Result<Session, ApiError> {
    let (role, namespace) = (user.role, user.namespace.clone());
    let user = user.name.as_str();
    let secret = auth::generate_token()
        .map_err(|_| ApiError::internal("no system randomness for a session token"))?;
    let now = Timestamp::now();
    let expires_at = Timestamp(now.0.saturating_add(ttl.as_millis() as u64));
    let applied = state
        .raft
        .write(Command::CreateToken(NewToken {
            name: format!("login {user}"),
            kind: TokenKind::Session,
            role,
            user: Some(user.to_owned()),
            namespace,
            hash: auth::token_hash(&secret),
            prefix: auth::shown_prefix(&secret),
            expires_at: Some(expires_at),
            at: now,
        }))
        .await?;
    let Applied::Token(view) = applied else {
        return Err(ApiError::internal(format!(
            "opening a session was answered with {applied:?}"
        )));
    };
    Ok(Session {
        token: secret,
        id: view.id,
        user: user.to_owned(),
        role: view.role,
        expires_at,
    })
}

/// `POST /v1/logout`: revokes the token the request carries.
pub async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<windflow_protocol::TokenView>, ApiError> {
    let applied = state
        .raft
        .write(Command::RevokeToken {
            id: caller.token,
            at: Timestamp::now(),
        })
        .await?;
    match applied {
        Applied::Token(view) => Ok(Json(view)),
        other => Err(ApiError::internal(format!(
            "logging out was answered with {other:?}"
        ))),
    }
}

#[derive(Debug, Serialize)]
pub struct WhoAmI {
    pub user: Option<String>,
    pub role: Role,
    /// The namespace the token is bound to; `None` for the whole cluster.
    pub namespace: Option<Namespace>,
    pub token: TokenId,
    pub token_name: String,
}

/// `GET /v1/whoami`: who the request's token says it is.
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.user,
        role: caller.role,
        namespace: caller.namespace,
        token: caller.token,
        token_name: caller.token_name,
    })
}
