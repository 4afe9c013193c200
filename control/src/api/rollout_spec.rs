//! A service job's `update` policy and health `checks`, read field by field with errors
//! that name the field:
//!
//! - `"update": {"max_parallel": 1, "min_healthy_time": "10s", "healthy_deadline": "5m",
//!   "progress_deadline": "10m", "auto_revert": false, "canary": 0}`
//! - `"checks": [{"name"?, "type": "http"|"tcp"|"command", "path"? (http), "port"? (http,
//!   tcp; the allocation's `WINDFLOW_PORT` when left out), "command"? (command),
//!   "interval"?: "10s", "timeout"?: "2s", "grace"?: "0s"}]`
//!
//! Fields left out keep the defaults (`UpdatePolicy::default`).

use std::time::Duration;

use windflow_protocol::{CheckKind, HealthCheck, HumanDuration, JobType, UpdatePolicy};

use super::ApiError;
use super::body::Fields;

/// The most checks a group may have.
pub const MAX_CHECKS: usize = 16;
/// The longest time any of these fields may give.
const MAX_SPAN: Duration = Duration::from_secs(24 * 3600);

/// What a job body says of rollouts and health.
pub struct Rollout {
    pub update: Option<UpdatePolicy>,
    pub checks: Vec<HealthCheck>,
}

pub fn parse(f: &mut Fields, job_type: JobType, count: u32) -> Result<Rollout, ApiError> {
    let update = f.optional_object("update")?;
    let checks = f.optional_object_list("checks")?;
    if job_type != JobType::Service {
        for (given, name) in [(update.is_some(), "update"), (!checks.is_empty(), "checks")] {
            if given {
                return Err(ApiError::invalid_field(
                    name,
                    "only service jobs take one; a batch job's next runs simply use the new spec",
                ));
            }
        }
    }
    if checks.len() > MAX_CHECKS {
        return Err(ApiError::invalid_field(
            "checks",
            format!("may hold at most {MAX_CHECKS} checks"),
        ));
    }
    let update = update.map(|u| update_policy(u, count)).transpose()?;
    let checks = checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| check(c, i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in checks.iter().enumerate() {
        if checks[..i].iter().any(|o| o.name == c.name) {
            return Err(ApiError::invalid_field(
                &format!("checks[{i}].name"),
                format!("`{}` names another check too", c.name),
            ));
        }
    }
    Ok(Rollout { update, checks })
}

/// A span of time up to a day; `positive` refuses 0.
fn span(
    f: &mut Fields,
    name: &str,
    field: &str,
    positive: bool,
) -> Result<Option<HumanDuration>, ApiError> {
    let d = f.optional_any_duration(name)?;
    if let Some(d) = d {
        if d.0 > MAX_SPAN {
            return Err(ApiError::invalid_field(
                field,
                format!("must be at most {}", HumanDuration(MAX_SPAN)),
            ));
        }
        if positive && d.0.is_zero() {
            return Err(ApiError::invalid_field(field, "must be longer than zero"));
        }
    }
    Ok(d)
}

fn update_policy(mut f: Fields, count: u32) -> Result<UpdatePolicy, ApiError> {
    let d = UpdatePolicy::default();
    let max_parallel = f.optional_u32("max_parallel")?.unwrap_or(d.max_parallel);
    if max_parallel == 0 {
        return Err(ApiError::invalid_field(
            "update.max_parallel",
            "must be at least 1",
        ));
    }
    let min_healthy_time = span(&mut f, "min_healthy_time", "update.min_healthy_time", false)?
        .unwrap_or(d.min_healthy_time);
    let healthy_deadline = span(&mut f, "healthy_deadline", "update.healthy_deadline", true)?
        .unwrap_or(d.healthy_deadline);
    let progress_deadline = span(
        &mut f,
        "progress_deadline",
        "update.progress_deadline",
        true,
    )?
    .unwrap_or(d.progress_deadline);
    let auto_revert = f.optional_bool("auto_revert")?.unwrap_or(d.auto_revert);
    let canary = f.optional_u32("canary")?.unwrap_or(d.canary);
    f.finish()?;
    if healthy_deadline.0 <= min_healthy_time.0 {
        return Err(ApiError::invalid_field(
            "update.healthy_deadline",
            format!(
                "must be longer than min_healthy_time ({min_healthy_time}), not {healthy_deadline}"
            ),
        ));
    }
    if progress_deadline.0 < healthy_deadline.0 {
        return Err(ApiError::invalid_field(
            "update.progress_deadline",
            format!(
                "must be at least healthy_deadline ({healthy_deadline}), not {progress_deadline}"
            ),
        ));
    }
    if canary > count {
        return Err(ApiError::invalid_field(
            "update.canary",
            format!("must be at most the count ({count}), not {canary}"),
        ));
    }
    Ok(UpdatePolicy {
        max_parallel,
        min_healthy_time,
        healthy_deadline,
        progress_deadline,
        auto_revert,
        canary,
    })
}

fn check(mut f: Fields, i: usize) -> Result<HealthCheck, ApiError> {
    let field = |name: &str| format!("checks[{i}].{name}");
    let kind = f.required_str("type")?;
    let port = |f: &mut Fields| -> Result<Option<u16>, ApiError> {
        match f.optional_u32("port")? {
            None => Ok(None),
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .map(Some)
                .ok_or_else(|| ApiError::invalid_field(&field("port"), "must be 1 to 65535")),
        }
    };
    let kind = match kind.as_str() {
        "http" => {
            let path = f.optional_str("path")?.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ApiError::invalid_field(
                    &field("path"),
                    "must start with `/` and hold no spaces or control characters",
                ));
            }
            CheckKind::Http {
                path,
                port: port(&mut f)?,
            }
        }
        "tcp" => CheckKind::Tcp {
            port: port(&mut f)?,
        },
        "command" => {
            let command = f.required_str("command")?;
            if command.trim().is_empty() {
                return Err(ApiError::invalid_field(
                    &field("command"),
                    "must not be empty",
                ));
            }
            CheckKind::Command { command }
        }
        other => {
            return Err(ApiError::invalid_field(
                &field("type"),
                format!("must be http, tcp or command, not `{other}`"),
            ));
        }
    };
    let name = f
        .optional_str("name")?
        .unwrap_or_else(|| format!("{}-{i}", kind_name(&kind)));
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::invalid_field(
            &field("name"),
            "must be 1 to 64 characters",
        ));
    }
    let interval =
        span(&mut f, "interval", &field("interval"), true)?.unwrap_or(HumanDuration::from_secs(10));
    let timeout =
        span(&mut f, "timeout", &field("timeout"), true)?.unwrap_or(HumanDuration::from_secs(2));
    let grace =
        span(&mut f, "grace", &field("grace"), false)?.unwrap_or(HumanDuration(Duration::ZERO));
    f.finish()?;
    if timeout.0 > interval.0 {
        return Err(ApiError::invalid_field(
            &field("timeout"),
            format!("must be at most the interval ({interval}), not {timeout}"),
        ));
    }
    Ok(HealthCheck {
        name,
        kind,
        interval,
        timeout,
        grace,
    })
}

fn kind_name(k: &CheckKind) -> &'static str {
    match k {
        CheckKind::Http { .. } => "http",
        CheckKind::Tcp { .. } => "tcp",
        CheckKind::Command { .. } => "command",
        CheckKind::Container { .. } => "container",
    }
}
