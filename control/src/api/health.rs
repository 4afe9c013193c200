//! Liveness, readiness and metrics: no token needed, so probes and Prometheus can reach them.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// A leader that has not heard from a quorum for this long cannot commit.
const QUORUM_ACK_MAX_AGE_MS: u64 = 3_000;

/// `GET /readyz`: this server can take writes: it leads with a quorum that answered within
/// the last few seconds, or it follows a leader it knows.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let m = state.raft.metrics().borrow().clone();
    let leading = m.current_leader == Some(state.raft.id());
    match (leading, m.current_leader, m.millis_since_quorum_ack) {
        (true, _, Some(age)) if age <= QUORUM_ACK_MAX_AGE_MS => (StatusCode::OK, "ready"),
        (true, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "leader without a quorum"),
        (false, Some(_), _) => (StatusCode::OK, "ready"),
        (false, None, _) => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader"),
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
