//! API errors: `{"error":{"code":"…","message":"…"}}` with the matching HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use windflow_raft::{ApplyError, StoreError, WriteError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_field", format!("field `{field}`: {problem}"))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} `{id}` not found"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("reading state: {e}"))
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(rejected) => {
                let (status, code) = match &rejected {
                    ApplyError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                    ApplyError::NameTaken { .. } => (StatusCode::CONFLICT, "name_taken"),
                    ApplyError::InvalidTransition { .. } => (StatusCode::CONFLICT, "conflict"),
                    ApplyError::JoinTokenRefused(_) => {
                        (StatusCode::FORBIDDEN, "join_token_refused")
                    }
                    ApplyError::Refused(_) => (StatusCode::CONFLICT, "refused"),
                    ApplyError::NotBatchable { .. } => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                    }
                };
                ApiError::new(status, code, rejected.to_string())
            }
            // Writes are forwarded to the leader, so this means no leader is known now.
            not_leader @ WriteError::NotLeader { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                format!("{not_leader}; the cluster may be electing one, retry shortly"),
            ),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the replicated store could not take the write: {other}"),
            ),
        }
    }
}

pub(super) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for `{}`", uri.path()),
    )
}
