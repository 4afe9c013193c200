//! The `X-Windflow-Signature` header: HMAC-SHA256 of the exact body bytes with the
//! webhook's secret, lowercase hex. A receiver recomputes it over the body it got and
//! compares in constant time.

use ring::hmac;

pub const SIGNATURE_HEADER: &str = "x-windflow-signature";

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    crate::auth::hex(hmac::sign(&key, body).as_ref())
}

/// Whether `signature` (hex) is `body`'s under `secret`, compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(tag) = unhex(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_verification() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = sign(b"s3cret", b"{\"a\":1}");
        assert!(verify(b"s3cret", b"{\"a\":1}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"s3cret", b"{\"a\":2}", &sig));
        assert!(!verify(b"s3cret", b"{\"a\":1}", "zz"));
    }
}
