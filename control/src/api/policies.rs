//! A service job's `restart` (on the node) and `reschedule` (on the servers) policies, read
//! field by field with errors that name the field:
//!
//! - `"restart": {"attempts": 2, "interval": "30m", "delay": "15s", "mode": "fail"|"delay"}`
//! - `"reschedule": {"attempts": 3, "interval": "1h", "delay": "5s", "max_delay": "1m"}`, or
//!   `{"unlimited": true, "delay": "5s", "max_delay": "1m"}`
//!
//! Fields left out keep the defaults (`RestartPolicy::default`, `ReschedulePolicy::default`).

use std::time::Duration;

use windflow_protocol::{
    HumanDuration, JobType, RescheduleLimit, ReschedulePolicy, RestartMode, RestartPolicy,
};

use super::ApiError;
use super::body::Fields;

/// The most restart or reschedule attempts a policy may allow.
pub const MAX_ATTEMPTS: u32 = 1000;
/// The longest interval, delay or max delay a policy may give.
const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Both policies of a job's body; `None` when the body leaves one out.
pub struct Policies {
    pub restart: Option<RestartPolicy>,
    pub reschedule: Option<ReschedulePolicy>,
}

pub fn parse(f: &mut Fields, job_type: JobType) -> Result<Policies, ApiError> {
    let restart = f.optional_object("restart")?;
    let reschedule = f.optional_object("reschedule")?;
    if job_type != JobType::Service {
        for (given, name) in [
            (restart.is_some(), "restart"),
            (reschedule.is_some(), "reschedule"),
        ] {
            if given {
                return Err(ApiError::invalid_field(
                    name,
                    "only service jobs take one; a batch job's task retries with `max_retries`",
                ));
            }
        }
    }
    Ok(Policies {
        restart: restart.map(restart_policy).transpose()?,
        reschedule: reschedule.map(reschedule_policy).transpose()?,
    })
}

fn attempts(f: &mut Fields, name: &str, field: &str) -> Result<Option<u32>, ApiError> {
    let n = f.optional_u32(name)?;
    if n.is_some_and(|n| n > MAX_ATTEMPTS) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {MAX_ATTEMPTS}"),
        ));
    }
    Ok(n)
}

/// A span of time up to a week; `positive` refuses 0.
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

fn restart_policy(mut f: Fields) -> Result<RestartPolicy, ApiError> {
    let d = RestartPolicy::default();
    let attempts = attempts(&mut f, "attempts", "restart.attempts")?.unwrap_or(d.attempts);
    let interval = span(&mut f, "interval", "restart.interval", true)?.unwrap_or(d.interval);
    let delay = span(&mut f, "delay", "restart.delay", false)?.unwrap_or(d.delay);
    let mode = match f.optional_str("mode")?.as_deref() {
        None => d.mode,
        Some("fail") => RestartMode::Fail,
        Some("delay") => RestartMode::Delay,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "restart.mode",
                format!("must be fail or delay, not `{other}`"),
            ));
        }
    };
    f.finish()?;
    if delay.0 > interval.0 {
        return Err(ApiError::invalid_field(
            "restart.delay",
            format!("must be at most the interval ({interval}), not {delay}"),
        ));
    }
    Ok(RestartPolicy {
        attempts,
        interval,
        delay,
        mode,
    })
}

fn reschedule_policy(mut f: Fields) -> Result<ReschedulePolicy, ApiError> {
    let d = ReschedulePolicy::default();
    let unlimited = f.optional_bool("unlimited")?;
    let attempts = attempts(&mut f, "attempts", "reschedule.attempts")?;
    let interval = span(&mut f, "interval", "reschedule.interval", true)?;
    let delay = span(&mut f, "delay", "reschedule.delay", false)?.unwrap_or(d.delay);
    let max_delay = span(&mut f, "max_delay", "reschedule.max_delay", false)?;
    f.finish()?;
    let limit = match (unlimited, attempts) {
        (Some(true), Some(_)) => {
            return Err(ApiError::invalid_field(
                "reschedule.attempts",
                "is not taken with `unlimited: true`",
            ));
        }
        (Some(true), None) if interval.is_some() => {
            return Err(ApiError::invalid_field(
                "reschedule.interval",
                "is not taken with `unlimited: true`",
            ));
        }
        (Some(false), None) => {
            return Err(ApiError::invalid_field(
                "reschedule.attempts",
                "is required with `unlimited: false`",
            ));
        }
        (_, Some(attempts)) => RescheduleLimit::Attempts {
            attempts,
            interval: interval.unwrap_or(HumanDuration::from_secs(3600)),
        },
        (_, None) if interval.is_some() => {
            return Err(ApiError::invalid_field(
                "reschedule.interval",
                "goes with `attempts` (how many reschedules within it)",
            ));
        }
        (_, None) => RescheduleLimit::Unlimited,
    };
    // The doubling delay is capped at max_delay, which is at least the first delay.
    let max_delay = max_delay.unwrap_or(if delay.0 > d.max_delay.0 {
        delay
    } else {
        d.max_delay
    });
    if max_delay.0 < delay.0 {
        return Err(ApiError::invalid_field(
            "reschedule.max_delay",
            format!("must be at least the delay ({delay}), not {max_delay}"),
        ));
    }
    Ok(ReschedulePolicy {
        limit,
        delay,
        max_delay,
    })
}
