//! `/v1/tokens`: named API tokens for scripts and CI. A secret is shown once, to the call
//! that made it (create or rotate); the servers keep its SHA-256 and first characters.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::{Timestamp, TokenId, TokenKind, TokenView};
use windflow_raft::{Applied, Command, NewToken};

use super::body::Fields;
use super::users::{parse_role, validate_name};
use super::{ApiError, AppState, namespaces};
use crate::auth::{self, Caller};

/// The longest a named token may live; unset means until revoked.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// A token with its secret: shown this once.
#[derive(Debug, Serialize)]
pub struct WithSecret {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

fn token_of(applied: Applied, what: &str) -> Result<TokenView, ApiError> {
    match applied {
        Applied::Token(t) => Ok(t),
        other => Err(ApiError::internal(format!(
            "{what} was answered with {other:?}"
        ))),
    }
}

fn new_secret() -> Result<String, ApiError> {
    auth::generate_token().map_err(|_| ApiError::internal("no system randomness for a token"))
}

/// `POST /v1/tokens` with `{"name", "role"?, "expires"?: "30d", "user"?, "namespace"?}`. The role
/// defaults to the caller's and may not exceed it; the token acts for `user` (default: the
/// caller's user), bound to `namespace` (default: the user's, else the whole cluster).
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    let role = match f.optional_str("role")? {
        Some(r) => parse_role("role", &r)?,
        None => caller.role,
    };
    let expires = f.optional_duration("expires", MAX_TOKEN_TTL)?;
    let user = f.optional_str("user")?.or(caller.user.clone());
    let asked = namespaces::optional_field(&mut f, "namespace")?;
    f.finish()?;
    // A token for a user bound to a namespace is bound to it too (apply refuses others).
    let user_namespace = match &user {
        Some(u) => state
            .raft
            .reader()
            .user_by_name(u)?
            .and_then(|r| r.view.namespace),
        None => None,
    };
    let namespace = asked.or(user_namespace).or(caller.namespace.clone());
    validate_name("name", &name)?;
    if role > caller.role {
        return Err(ApiError::invalid_field(
            "role",
            format!("cannot exceed the caller's own role ({})", caller.role),
        ));
    }
    let secret = new_secret()?;
    let now = Timestamp::now();
    let applied = state
        .raft
        .write(Command::CreateToken(NewToken {
            name,
            kind: TokenKind::Api,
            role,
            user,
            namespace,
            hash: auth::token_hash(&secret),
            prefix: auth::shown_prefix(&secret),
            expires_at: expires.map(|d| Timestamp(now.0.saturating_add(d.as_millis() as u64))),
            at: now,
        }))
        .await?;
    let view = token_of(applied, "creating a token")?;
    tracing::info!(id = %view.id, name = %view.name, role = %view.role, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(WithSecret {
            view,
            token: secret,
        }),
    ))
}

/// `GET /v1/tokens`: every token (sessions too), without secrets.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state.raft.reader().tokens()?;
    Ok(Json(tokens.into_iter().map(|t| t.view).collect()))
}

/// A token by ID (`T3`) or by name.
fn resolve(state: &AppState, key: &str) -> Result<TokenId, ApiError> {
    let reader = state.raft.reader();
    let found = match key.parse::<TokenId>() {
        Ok(id) => reader.token(id)?,
        Err(_) => reader.token_by_name(key)?,
    };
    found
        .map(|t| t.view.id)
        .ok_or_else(|| ApiError::not_found("token", key))
}

/// `DELETE /v1/tokens/{id}`: the token opens nothing from now on.
pub async fn revoke(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let id = resolve(&state, &key)?;
    let applied = state
        .raft
        .write(Command::RevokeToken {
            id,
            at: Timestamp::now(),
        })
        .await?;
    let view = token_of(applied, "revoking a token")?;
    tracing::info!(%id, "API token revoked");
    Ok(Json(view))
}

/// `POST /v1/tokens/{id}/rotate`: a new secret under the same name, role and expiry; the
/// old secret stops working at once.
pub async fn rotate(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<WithSecret>, ApiError> {
    let id = resolve(&state, &key)?;
    let secret = new_secret()?;
    let applied = state
        .raft
        .write(Command::RotateToken {
            id,
            hash: auth::token_hash(&secret),
            prefix: auth::shown_prefix(&secret),
            at: Timestamp::now(),
        })
        .await?;
    let view = token_of(applied, "rotating a token")?;
    tracing::info!(%id, "API token rotated");
    Ok(Json(WithSecret {
        view,
        token: secret,
    }))
}
