//! Who is calling: the bearer token of a request, checked against the replicated token
//! table, becomes a [`Caller`]; [`LoginLimiter`] slows down password guessing. What a
//! caller may do is decided per route in `api::access`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};
use windflow_protocol::{Namespace, Role, Timestamp, TokenId};

use crate::api::{ApiError, AppState};

/// The prefix of every Windflow API token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "wf_";

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token: TokenId,
    pub token_name: String,
    /// The user the token acts for, if any.
    pub user: Option<String>,
    pub role: Role,
    /// The namespace the token is bound to; `None` for the whole cluster.
    pub namespace: Option<Namespace>,
}

/// A new random API token secret.
pub fn generate_token() -> Result<String, ring::error::Unspecified> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex(32)?))
}

/// `len` random bytes from the system, as lowercase hex.
pub fn random_hex(len: usize) -> Result<String, ring::error::Unspecified> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// What the store keeps of a token: its SHA-256, never the secret.
pub fn token_hash(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many characters of a secret a token list shows.
pub const SHOWN_PREFIX_LEN: usize = 8;

/// The first characters of a secret, to tell tokens apart without revealing them.
pub fn shown_prefix(secret: &str) -> String {
    secret.chars().take(SHOWN_PREFIX_LEN).collect()
}

/// The caller a request's `Authorization: Bearer` token stands for, or 401: a missing or
/// malformed header, an unknown token, a revoked or an expired one.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the `Authorization` header must be `Bearer <token>`")
        })?;
    let record = state
        .raft
        .reader()
        .token_by_hash(&token_hash(secret))?
        .ok_or_else(|| ApiError::unauthorized("the token is not valid"))?;
    let view = record.view;
    if view.revoked_at.is_some() {
        return Err(ApiError::unauthorized(format!(
            "token {} was revoked",
            view.id
        )));
    }
    if let Some(at) = view.expires_at.filter(|e| Timestamp::now() >= *e) {
        return Err(ApiError::unauthorized(format!(
            "token {} expired at {at}",
            view.id
        )));
    }
    Ok(Caller {
        token: view.id,
        token_name: view.name,
        user: view.user,
        role: view.role,
        namespace: view.namespace,
    })
}

/// Counts failed logins per user name and per source address; past `max_failures` within
/// `window` of the first failure, further attempts are refused until the window has passed,
/// right password or not. In memory on each server: a restart forgets, and an attacker
/// spreading guesses over several servers gets each server's allowance.
pub struct LoginLimiter {
    window: Duration,
    max_failures: u32,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(window: Duration, max_failures: u32) -> Self {
        LoginLimiter {
            window,
            max_failures,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, source: &str) -> [String; 2] {
        [format!("user:{user}"), format!("addr:{source}")]
    }

    /// `Err(wait)` when this user or address must wait before trying again.
    pub fn check(&self, user: &str, source: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, (first, _)| now.duration_since(*first) < self.window);
        let wait = Self::keys(user, source)
            .iter()
            .filter_map(|k| failures.get(k))
            .filter(|(_, n)| *n >= self.max_failures)
            .map(|(first, _)| self.window.saturating_sub(now.duration_since(*first)))
            .max();
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    pub fn failed(&self, user: &str, source: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in Self::keys(user, source) {
            failures.entry(k).or_insert((now, 0)).1 += 1;
        }
    }

    /// A right password clears the user's count (the address keeps its own).
    pub fn succeeded(&self, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn the_limiter_refuses_after_too_many_failures_until_the_window_passes() {
        let limiter = LoginLimiter::new(Duration::from_millis(200), 3);
        for _ in 0..3 {
            assert!(limiter.check("ann", "1.2.3.4").is_ok());
            limiter.failed("ann", "1.2.3.4");
        }
        assert!(limiter.check("ann", "1.2.3.4").is_err());
        // The user is limited from any address, and the address for any user.
        assert!(limiter.check("ann", "5.6.7.8").is_err());
        assert!(limiter.check("bob", "1.2.3.4").is_err());
        assert!(limiter.check("bob", "5.6.7.8").is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(limiter.check("ann", "1.2.3.4").is_ok());
    }
}
