//! `/v1/users`: people who log in with a password. Passwords are hashed (argon2id) here,
//! on the proposing server, and never leave it in clear.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use windflow_protocol::{Role, Timestamp, UserView};
use windflow_raft::{Applied, Command};

use super::body::Fields;
use super::{ApiError, AppState, namespaces};
use crate::auth::Caller;
use crate::password;

/// A user or token name: 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
pub(crate) fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("`{name}` must be 1 to 64 letters, digits, `-`, `_`, `.` or `@`"),
        ))
    }
}

pub(crate) fn parse_role(field: &str, text: &str) -> Result<Role, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::invalid_field(field, e))
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    password::validate(&password).map_err(|e| ApiError::invalid_field("password", e))?;
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| ApiError::internal(format!("hashing the password: {e}")))?
        .map_err(|e| ApiError::internal(format!("hashing the password: {e}")))
}

fn user_of(applied: Applied, what: &str) -> Result<UserView, ApiError> {
    match applied {
        Applied::User(u) => Ok(u),
        other => Err(ApiError::internal(format!(
            "{what} was answered with {other:?}"
        ))),
    }
}

/// `POST /v1/users` with `{"name", "password", "role", "namespace"?}`: without a
/// namespace the role holds in the whole cluster.
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    let password = f.required_str("password")?;
    let role = parse_role("role", &f.required_str("role")?)?;
    let namespace = namespaces::optional_field(&mut f, "namespace")?;
    f.finish()?;
    validate_name("name", &name)?;
    let password_hash = hash_password(password).await?;
    let applied = state
        .raft
        .write(Command::CreateUser {
            name,
            role,
            namespace,
            password_hash,
            at: Timestamp::now(),
        })
        .await?;
    let user = user_of(applied, "creating a user")?;
    tracing::info!(user = %user.name, role = %user.role, "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

/// `GET /v1/users`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.raft.reader().users()?;
    Ok(Json(users.into_iter().map(|u| u.view).collect()))
}

/// `GET /v1/users/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    state
        .raft
        .reader()
        .user_by_name(&name)?
        .map(|u| Json(u.view))
        .ok_or_else(|| ApiError::not_found("user", &name))
}

/// `DELETE /v1/users/{name}`: the user goes and its tokens stop working. The last admin
/// cannot be deleted: nobody could manage the cluster afterwards.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let users = state.raft.reader().users()?;
    let Some(user) = users.iter().find(|u| u.view.name == name) else {
        return Err(ApiError::not_found("user", &name));
    };
    let admins = users.iter().filter(|u| u.view.role == Role::Admin).count();
    if user.view.role == Role::Admin && admins == 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin",
            format!("`{name}` is the last admin user; make another admin first"),
        ));
    }
    let applied = state
        .raft
        .write(Command::DeleteUser {
            name,
            at: Timestamp::now(),
        })
        .await?;
    let user = user_of(applied, "deleting a user")?;
    tracing::info!(user = %user.name, "user deleted");
    Ok(Json(user))
}

/// `PUT /v1/users/{name}/password` with `{"password"}`: an admin sets anyone's, a user
/// their own.
pub async fn set_password(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<UserView>, ApiError> {
    // A namespace's admin is no admin of the cluster's users.
    let cluster_admin = caller.role == Role::Admin && caller.namespace.is_none();
    if !cluster_admin && caller.user.as_deref() != Some(name.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a cluster-wide admin may set another user's password",
        ));
    }
    let mut f = Fields::parse(&body)?;
    let password = f.required_str("password")?;
    f.finish()?;
    if state.raft.reader().user_by_name(&name)?.is_none() {
        return Err(ApiError::not_found("user", &name));
    }
    let password_hash = hash_password(password).await?;
    let applied = state
        .raft
        .write(Command::SetUserPassword {
            name,
            password_hash,
            at: Timestamp::now(),
        })
        .await?;
    Ok(Json(user_of(applied, "setting a password")?))
}
