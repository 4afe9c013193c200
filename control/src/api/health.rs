//! Liveness, readiness and metrics: no token needed, so probes and Prometheus can reach them.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: this server knows a raft leader, so it can take writes.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let leader = state.raft.metrics().borrow().current_leader;
    match leader {
        Some(_) => (StatusCode::OK, "ready"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader"),
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let body = state
        .metrics
        .render()
        .map_err(|_| ApiError::internal("encoding metrics failed"))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}
