//! Who is calling. Every `/v1` route passes through [`require_token`]; users, roles and
//! namespaces will grow from here (the [`Caller`] it leaves in the request).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::{ApiError, AppState};

/// The prefix of every Windflow API token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "wf_";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_name: String,
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

/// Rejects a request without a valid `Authorization: Bearer` token with 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
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
    req.extensions_mut().insert(Caller {
        token_name: record.name,
    });
    Ok(next.run(req).await)
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
}
