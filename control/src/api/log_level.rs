//! `/v1/agent/log-level`: this server's console log level, changed without a restart.

use axum::Json;
use axum::body::Bytes;
use serde::Serialize;

use super::ApiError;
use super::body::Fields;
use crate::logging::{self, Level};

#[derive(Debug, Serialize)]
pub struct LogLevel {
    pub level: Option<Level>,
}

/// `GET /v1/agent/log-level`: the level last set through the API or the flags.
pub async fn show() -> Json<LogLevel> {
    Json(LogLevel {
        level: logging::current_level(),
    })
}

/// `PUT /v1/agent/log-level` with `{"level": "debug|info|warn|error"}`.
pub async fn set(body: Bytes) -> Result<Json<LogLevel>, ApiError> {
    let mut f = Fields::parse(&body)?;
    let text = f.required_str("level")?;
    f.finish()?;
    let level: Level = text
        .parse()
        .map_err(|e: String| ApiError::invalid_field("level", e))?;
    logging::set_level(level).map_err(ApiError::internal)?;
    tracing::warn!(%level, "log level changed through the API");
    Ok(Json(LogLevel { level: Some(level) }))
}
