//! A schedule's cron expression in its time zone, through the `croner` crate (fields read
//! as POSIX/Vixie cron) and `chrono-tz` (the IANA database).
//!
//! Accepted: 5 fields (minute hour day-of-month month day-of-week), 6 fields (seconds
//! first), or an alias: `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//! `@hourly`.
//!
//! Daylight saving time follows croner's documented rule (the Open Cron Pattern
//! Specification, as Vixie cron): in a spring-forward gap, a fixed-time expression
//! (`30 2 * * *`) fires once at the first valid time after the gap that day, and
//! wildcard/step fields (`*/15 * * * *`) simply have no occurrences in the gap; in a
//! fall-back overlap, a fixed-time expression fires once (at the first occurrence of the
//! wall time), and wildcard/step fields fire at every matching instant of both passes.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use windflow_protocol::Timestamp;

/// Why an expression or a zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("`{expr}` is not a cron expression: {why}")]
    Cron { expr: String, why: String },
    #[error("`{0}` is not an IANA time zone (such as `Europe/Paris` or `UTC`)")]
    Zone(String),
}

/// The aliases croner reads, and `@midnight`, which it does not.
const ALIASES: [(&str, &str); 7] = [
    ("@yearly", "@yearly"),
    ("@annually", "@annually"),
    ("@monthly", "@monthly"),
    ("@weekly", "@weekly"),
    ("@daily", "@daily"),
    ("@midnight", "@daily"),
    ("@hourly", "@hourly"),
];

/// How far back a fall-back change is looked for: more than any zone's DST shift.
const FALL_BACK_WINDOW_MS: u64 = 3 * 3600 * 1000;

/// The most occurrences walked to find one near a fall-back change (7 hours of seconds:
/// the window either side, and the repeated hour).
const MAX_ITERATION: usize = 7 * 3600;

fn offset_secs(dt: &DateTime<Tz>) -> i32 {
    use chrono::Offset;
    dt.offset().fix().local_minus_utc()
}

/// A parsed expression and its zone.
#[derive(Debug, Clone)]
pub struct CronExpr {
    cron: Cron,
    tz: Tz,
}

impl CronExpr {
    pub fn parse(expr: &str, zone: &str) -> Result<CronExpr, ExprError> {
        let tz: Tz = zone.parse().map_err(|_| ExprError::Zone(zone.to_owned()))?;
        let trimmed = expr.trim();
        let refuse = |why: String| ExprError::Cron {
            expr: expr.to_owned(),
            why,
        };
        let text = if trimmed.starts_with('@') {
            ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(trimmed))
                .map(|(_, croner)| *croner)
                .ok_or_else(|| {
                    refuse(
                        "the aliases are @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly"
                            .into(),
                    )
                })?
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 && fields != 6 {
                return Err(refuse(format!(
                    "it has {fields} field(s); give 5 (minute first) or 6 (second first)"
                )));
            }
            trimmed
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(CronExpr { cron, tz })
    }

    fn zoned(&self, t: Timestamp) -> Option<DateTime<Tz>> {
        // Whole seconds: croner's resolution, so "after 12:00:00.400" is 12:00:01.
        let secs = i64::try_from(t.0 / 1000).ok()?;
        Utc.timestamp_opt(secs, 0)
            .single()
            .map(|utc| utc.with_timezone(&self.tz))
    }

    fn stamp(dt: DateTime<Tz>) -> Option<Timestamp> {
        u64::try_from(dt.timestamp_millis()).ok().map(Timestamp)
    }

    /// The first due time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = self.zoned(t)?;
        // Within a few hours of clocks going back, a wildcard pattern's second pass through
        // the repeated hour is only found by croner's iterator (a search from a wall time
        // finds its first pass): iterate from before the change instead.
        let back = Timestamp(t.0.saturating_sub(FALL_BACK_WINDOW_MS));
        let ahead = Timestamp(t.0.saturating_add(FALL_BACK_WINDOW_MS));
        if let (Some(before), Some(after)) = (self.zoned(back), self.zoned(ahead))
            && offset_secs(&before) > offset_secs(&after)
        {
            return self
                .cron
                .iter_after(before)
                .take(MAX_ITERATION)
                .filter_map(Self::stamp)
                .find(|at| *at > t);
        }
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .and_then(Self::stamp)
    }

    /// The last due time at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let start = self.zoned(t)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .and_then(Self::stamp)
    }

    /// The next `count` due times after `t`.
    pub fn upcoming(&self, t: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(count);
        let mut at = t;
        while out.len() < count {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// `t` as wall time in the schedule's zone, for people.
    pub fn local(&self, t: Timestamp) -> String {
        self.zoned(t)
            .map(|dt| dt.format("%Y-%m-%d %H:%M:%S %Z (%:z)").to_string())
            .unwrap_or_else(|| t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC instant from its RFC 3339 text.
    pub(crate) fn ts(text: &str) -> Timestamp {
        let dt = DateTime::parse_from_rfc3339(text).unwrap();
        Timestamp(dt.timestamp_millis() as u64)
    }

    fn next_n(expr: &str, zone: &str, from: &str, n: usize) -> Vec<Timestamp> {
        CronExpr::parse(expr, zone).unwrap().upcoming(ts(from), n)
    }

    #[test]
    fn five_and_six_fields_and_aliases() {
        assert_eq!(
            next_n("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z", 2),
            [ts("2026-01-01T00:15:00Z"), ts("2026-01-01T00:30:00Z")]
        );
        assert_eq!(
            next_n("*/10 * * * * *", "UTC", "2026-01-01T00:00:05Z", 2),
            [ts("2026-01-01T00:00:10Z"), ts("2026-01-01T00:00:20Z")]
        );
        for alias in ["@daily", "@midnight", "@DAILY"] {
            assert_eq!(
                next_n(alias, "UTC", "2026-01-01T10:00:00Z", 1),
                [ts("2026-01-02T00:00:00Z")]
            );
        }
        assert_eq!(
            next_n("@hourly", "UTC", "2026-01-01T10:00:00Z", 1),
            [ts("2026-01-01T11:00:00Z")]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = CronExpr::parse("* * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("3 field(s)"), "{e}");
        let e = CronExpr::parse("* * * * * * *", "UTC")
            .unwrap_err()
            .to_string();
        assert!(e.contains("7 field(s)"), "{e}");
        assert!(CronExpr::parse("61 * * * *", "UTC").is_err());
        assert!(CronExpr::parse("@reboot", "UTC").is_err());
        let e = CronExpr::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e, ExprError::Zone("Mars/Olympus".into()));
    }

    #[test]
    fn fields_are_read_in_the_schedule_zone() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(
            next_n("0 9 * * *", "Europe/Paris", "2026-01-15T12:00:00Z", 1),
            [ts("2026-01-16T08:00:00Z")]
        );
        assert_eq!(
            next_n("0 9 * * *", "Europe/Paris", "2026-07-15T12:00:00Z", 1),
            [ts("2026-07-16T07:00:00Z")]
        );
        assert_eq!(
            next_n("0 9 * * *", "Asia/Tokyo", "2026-07-15T12:00:00Z", 1),
            [ts("2026-07-16T00:00:00Z")]
        );
    }

    #[test]
    fn spring_forward_gap_fires_a_fixed_time_once_right_after_the_gap() {
        // Europe/Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let fires = next_n("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z", 3);
        assert_eq!(
            fires,
            [
                // 02:30 does not exist that day: it fires at 03:00 CEST instead.
                ts("2026-03-29T01:00:00Z"),
                ts("2026-03-30T00:30:00Z"),
                ts("2026-03-31T00:30:00Z"),
            ]
        );
        // Wildcard minutes have no occurrence in the missing hour.
        let fires = next_n("0,30 * * * *", "Europe/Paris", "2026-03-29T00:00:00Z", 3);
        assert_eq!(
            fires,
            [
                ts("2026-03-29T00:30:00Z"), // 01:30 CET
                ts("2026-03-29T01:00:00Z"), // 03:00 CEST
                ts("2026-03-29T01:30:00Z"), // 03:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_overlap_fires_a_fixed_time_once_and_intervals_in_both_passes() {
        // Europe/Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC).
        let fires = next_n("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z", 2);
        assert_eq!(
            fires,
            [
                ts("2026-10-25T00:30:00Z"), // 02:30 CEST, the first pass only
                ts("2026-10-26T01:30:00Z"), // 02:30 CET the next day
            ]
        );
        let fires = next_n("30 * * * *", "Europe/Paris", "2026-10-25T00:00:00Z", 3);
        assert_eq!(
            fires,
            [
                ts("2026-10-25T00:30:00Z"), // 02:30 CEST
                ts("2026-10-25T01:30:00Z"), // 02:30 CET
                ts("2026-10-25T02:30:00Z"), // 03:30 CET
            ]
        );
    }

    #[test]
    fn the_last_due_time_at_or_before() {
        let e = CronExpr::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            e.last_at_or_before(ts("2026-01-01T10:59:00Z")),
            Some(ts("2026-01-01T10:00:00Z"))
        );
        assert_eq!(
            e.last_at_or_before(ts("2026-01-01T10:00:00Z")),
            Some(ts("2026-01-01T10:00:00Z"))
        );
    }
}
