//! Time as the servers replicate it: stamped by the proposer, never read inside `apply`.
//!
//! Both types are numbers on the wire (bincode) and text for people (JSON):
//! a [`Timestamp`] is RFC 3339 in UTC, a [`HumanDuration`] is `1h30m`, `10s`, `250ms`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The wall clock now. Call it when proposing, never inside `apply`.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn saturating_since(&self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

// Days since 1970-01-01 to a civil date, after Howard Hinnant's published algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = (self.0 / 1000) as i64;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60,
            self.0 % 1000
        )
    }
}

/// Why a text is not a timestamp or a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeParseError(pub String);

impl fmt::Display for TimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeParseError {}

impl Timestamp {
    /// Parses an RFC 3339 date and time with `Z` or a `±HH:MM` offset
    /// (`2026-12-01T02:00:00+01:00`), as the instant it names.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeParseError> {
        let err = || {
            TimeParseError(format!(
                "`{s}` is not an RFC 3339 date and time like 2026-12-01T02:00:00+01:00"
            ))
        };
        if s.ends_with('Z') || s.ends_with('z') {
            return format!("{}Z", &s[..s.len() - 1]).parse().map_err(|_| err());
        }
        let split = s.len().checked_sub(6).ok_or_else(err)?;
        let (local, offset) = (s.get(..split).ok_or_else(err)?, &s[split..]);
        let sign: i64 = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(err()),
        };
        let (h, m) = offset[1..].split_once(':').ok_or_else(err)?;
        let (h, m): (i64, i64) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
        if h > 23 || m > 59 {
            return Err(err());
        }
        let at: Timestamp = format!("{local}Z").parse().map_err(|_| err())?;
        let utc = at.0 as i64 - sign * (h * 3600 + m * 60) * 1000;
        u64::try_from(utc).map(Timestamp).map_err(|_| err())
    }
}

impl FromStr for Timestamp {
    type Err = TimeParseError;

    /// Parses the UTC form this type prints: `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            TimeParseError(format!(
                "`{s}` is not a UTC timestamp like 2026-01-31T12:00:00Z"
            ))
        };
        let body = s.strip_suffix('Z').ok_or_else(err)?;
        let (date, time) = body.split_once('T').ok_or_else(err)?;
        let mut dp = date.splitn(3, '-');
        let num = |it: &mut std::str::SplitN<'_, char>| -> Result<i64, TimeParseError> {
            it.next().and_then(|p| p.parse().ok()).ok_or_else(err)
        };
        let (y, mo, d) = (num(&mut dp)?, num(&mut dp)?, num(&mut dp)?);
        let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
        let mut tp = hms.splitn(3, ':');
        let (h, mi, sec) = (num(&mut tp)?, num(&mut tp)?, num(&mut tp)?);
        if !(1..=12).contains(&mo)
            || !(1..=31).contains(&d)
            || h > 23
            || mi > 59
            || sec > 60
            || y < 1970
        {
            return Err(err());
        }
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let ms: u64 = format!("{frac:0<3}")[..3].parse().map_err(|_| err())?;
        let days = days_from_civil(y, mo as u32, d as u32);
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
        Ok(Timestamp(secs as u64 * 1000 + ms))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?
                .parse()
                .map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(d).map(Timestamp)
        }
    }
}

/// A span of time written the way people write it: `90s`, `10m`, `1h30m`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    pub fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let (h, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for HumanDuration {
    type Err = TimeParseError;

    /// Accepts one or more `<number><unit>` pairs with units `ms`, `s`, `m`, `h`, `d`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| {
            TimeParseError(format!(
                "`{s}` is not a duration ({why}); write e.g. 30s, 10m, 1h30m, 500ms"
            ))
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            total = total.checked_add(part).ok_or_else(|| err("too long"))?;
            rest = &rest[unit_len..];
        }
        Ok(HumanDuration(total))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0.as_millis() as u64)
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?
                .parse()
                .map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(d).map(HumanDuration::from_millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_and_parse_as_rfc3339_utc() {
        let t = Timestamp(1_795_253_515_123);
        let text = t.to_string();
        assert_eq!(text, "2026-11-21T09:31:55.123Z");
        assert_eq!(text.parse::<Timestamp>().unwrap(), t);
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            "2000-02-29T00:00:00Z".parse::<Timestamp>().unwrap().0,
            951_782_400_000
        );
        assert!("2026-13-01T00:00:00Z".parse::<Timestamp>().is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn durations_parse_like_people_write_them() {
        let d = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(d("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(d("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(HumanDuration::from_secs(5400).to_string(), "1h30m");
        for bad in ["", "30", "s", "10x", "-5s", "1.5s"] {
            assert!(d(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn rfc3339_offsets_name_the_same_instant() {
        let utc = Timestamp::parse_rfc3339("2026-12-01T01:00:00Z").unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339("2026-12-01T02:00:00+01:00").unwrap(),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-30T20:30:00-04:30").unwrap(),
            utc
        );
        for bad in [
            "2026-12-01T02:00:00",
            "2026-12-01T02:00:00+1",
            "soon",
            "+01:00",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
