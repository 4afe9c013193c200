//! Passwords: argon2id hashes in PHC form, made by the proposer (the salt is random) and
//! checked by whichever server takes a login.

use std::sync::OnceLock;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use ring::rand::{SecureRandom, SystemRandom};

/// The shortest password a user may set.
pub const MIN_LEN: usize = 8;
/// The longest: hashing is costly enough without megabyte passwords.
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_LEN} characters")]
    TooShort,
    #[error("must be at most {MAX_LEN} bytes")]
    TooLong,
    #[error("no system randomness for a salt")]
    NoRandomness,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Checks a new password against the rules, naming the problem.
pub fn validate(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// An argon2id hash of `password` with a fresh random salt, in PHC string form.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::NoRandomness)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `phc`. A malformed stored hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends the time of one verification for a user that does not exist, so that the
/// answer's timing does not tell which user names are taken.
pub fn verify_nobody(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash("not a real password").ok()) {
        let _ = verify(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsf", &h));
        assert!(!verify("correct horse", "not a phc string"));
        assert_ne!(h, hash("correct horse").unwrap(), "salts must differ");
    }

    #[test]
    fn rules_name_the_problem() {
        assert!(matches!(validate("short"), Err(PasswordError::TooShort)));
        assert!(matches!(
            validate(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::TooLong)
        ));
        assert!(validate("long enough").is_ok());
    }
}
