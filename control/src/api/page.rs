//! What every list endpoint takes and gives: `?limit=&cursor=` pages and the `?name=`
//! filter. A page is a JSON array like the whole list; when more follows, the
//! `X-Windflow-Next-Cursor` header holds the ID to pass as the next `cursor`.
//! Without `limit`, a list answers everything from `cursor` on.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use windflow_raft::page::{Page, PageRequest};

use super::ApiError;

/// The largest `limit` a page may ask for.
pub const LIMIT_MAX: usize = 10_000;

/// The response header naming where the next page starts.
pub const NEXT_CURSOR: &str = "x-windflow-next-cursor";

/// `?limit=` and `?cursor=`, checked.
pub fn page_request<I>(q: &HashMap<String, String>) -> Result<PageRequest<I>, ApiError>
where
    I: FromStr,
    I::Err: Display,
{
    let limit = match q.get("limit") {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIMIT_MAX).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::invalid_field(
                    "limit",
                    format_args!("`{text}` is not a whole number from 1 to {LIMIT_MAX}"),
                ));
            }
        },
    };
    let from = match q.get("cursor") {
        None => None,
        Some(text) => Some(
            text.parse::<I>()
                .map_err(|e| ApiError::invalid_field("cursor", format_args!("`{text}`: {e}")))?,
        ),
    };
    Ok(PageRequest { from, limit })
}

/// `?name=`: keeps the entries whose name contains it, ignoring case.
#[derive(Debug, Clone, Default)]
pub struct NameFilter(Option<String>);

impl NameFilter {
    pub fn of(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        match q.get("name") {
            None => Ok(NameFilter(None)),
            Some(n) if n.is_empty() => Err(ApiError::invalid_field("name", "is empty")),
            Some(n) => Ok(NameFilter(Some(n.to_lowercase()))),
        }
    }

    pub fn admits(&self, name: &str) -> bool {
        match &self.0 {
            None => true,
            // Names are ASCII (`validate_name_of`), so this allocates nothing per entry.
            Some(part) => name
                .as_bytes()
                .windows(part.len())
                .any(|w| w.eq_ignore_ascii_case(part.as_bytes())),
        }
    }
}

/// `?status=`, one of `allowed` (the status enum's snake-case names).
pub fn status_filter<S: DeserializeOwned>(
    q: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<Option<S>, ApiError> {
    let Some(text) = q.get("status") else {
        return Ok(None);
    };
    serde_json::from_value(serde_json::Value::String(text.clone()))
        .map(Some)
        .map_err(|_| {
            ApiError::invalid_field(
                "status",
                format_args!("`{text}` is not one of {}", allowed.join(", ")),
            )
        })
}

/// `?status=` of a list filtered by the status of each entry's newest run: one of
/// `allowed`, or `never` (`Some(None)`) for entries that have not run.
pub fn newest_run_status_filter<S: DeserializeOwned>(
    q: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<Option<Option<S>>, ApiError> {
    match q.get("status").map(String::as_str) {
        None => Ok(None),
        Some("never") => Ok(Some(None)),
        Some(_) => status_filter(q, allowed).map(Some),
    }
}

/// A page as a response: the items as a JSON array, and the next cursor as a header.
#[derive(Debug)]
pub struct Paged<T, I>(pub Page<T, I>);

impl<T: Serialize, I: Display> IntoResponse for Paged<T, I> {
    fn into_response(self) -> Response {
        let next = self.0.next.map(|id| id.to_string());
        let mut response = Json(self.0.items).into_response();
        if let Some(value) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert(NEXT_CURSOR, value);
        }
        response
    }
}

impl<T, I> Paged<T, I> {
    /// The same page with its items changed into what the API shows of them.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U, I> {
        Paged(Page {
            items: self.0.items.into_iter().map(f).collect(),
            next: self.0.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_protocol::{JobId, RunStatus};

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn limit_and_cursor_are_checked_and_named() {
        let ok: PageRequest<JobId> =
            page_request(&q(&[("limit", "50"), ("cursor", "J7")])).unwrap();
        assert_eq!(ok.limit, Some(50));
        assert_eq!(ok.from, Some(JobId(7)));
        for bad in ["0", "-1", "ten", "10001"] {
            let e = page_request::<JobId>(&q(&[("limit", bad)])).unwrap_err();
            assert!(e.message.contains("`limit`"), "{}", e.message);
        }
        let e = page_request::<JobId>(&q(&[("cursor", "P3")])).unwrap_err();
        assert!(e.message.contains("`cursor`"), "{}", e.message);
    }

    #[test]
    fn name_filter_matches_a_part_ignoring_case() {
        let f = NameFilter::of(&q(&[("name", "Back")])).unwrap();
        assert!(f.admits("nightly-backup"));
        assert!(f.admits("BACK"));
        assert!(!f.admits("bac"));
        assert!(NameFilter::default().admits("anything"));
        assert!(NameFilter::of(&q(&[("name", "")])).is_err());
    }

    #[test]
    fn status_filter_names_the_allowed_values() {
        let s: Option<RunStatus> = status_filter(&q(&[("status", "timed_out")]), &[]).unwrap();
        assert_eq!(s, Some(RunStatus::TimedOut));
        let e = status_filter::<RunStatus>(&q(&[("status", "done")]), &["pending", "running"])
            .unwrap_err();
        assert!(e.message.contains("pending, running"), "{}", e.message);
    }
}
