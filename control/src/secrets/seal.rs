//! Sealing and opening one value with one key: ChaCha20-Poly1305 (ring), a random 96-bit
//! nonce per value, and the value's place (such as `env:DB_PASS`) as associated data, so a
//! ciphertext copied to another place does not open there.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use windflow_protocol::secret::NONCE_LEN;
use windflow_protocol::{KeyId, Sealed, Timestamp};

use super::SecretError;

/// The bytes of a key: 256 bits.
pub const KEY_LEN: usize = 32;

/// The associated data of a job's (or app's) secret env var `name`.
pub fn env_place(name: &str) -> String {
    format!("env:{name}")
}

/// One key of the ring. Its `Debug` leaves the key bytes out.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: KeyId,
    pub created_at: Timestamp,
    pub(super) bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A new random key with a random ID.
    pub fn generate(created_at: Timestamp) -> Result<Key, SecretError> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes).map_err(|_| SecretError::Random)?;
        let mut id = [0u8; 4];
        rng.fill(&mut id).map_err(|_| SecretError::Random)?;
        Ok(Key {
            id: KeyId(u32::from_be_bytes(id)),
            created_at,
            bytes,
        })
    }

    fn aead(&self) -> Result<LessSafeKey, SecretError> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| SecretError::BadKey(self.id))
    }

    /// Encrypts `plaintext` for `place` under this key, with a fresh random nonce.
    pub fn seal(&self, place: &str, plaintext: &[u8]) -> Result<Sealed, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut buf = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretError::Seal)?;
        Ok(Sealed {
            key: self.id,
            nonce,
            ciphertext: buf,
        })
    }

    /// Decrypts a value sealed under this key for `place`; fails if it was sealed for
    /// another place or under another key, or was changed.
    pub fn open(&self, place: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.key != self.id {
            return Err(SecretError::UnknownKey(sealed.key));
        }
        let mut buf = sealed.ciphertext.clone();
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(place.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretError::Open(place.to_owned()))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::generate(Timestamp(1)).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_back_and_hides_the_plaintext() {
        let k = key();
        let sealed = k.seal("env:DB_PASS", b"hunter2-hunter2").unwrap();
        assert_eq!(sealed.key, k.id);
        assert!(
            !sealed.ciphertext.windows(7).any(|w| w == b"hunter2"),
            "the ciphertext holds the plaintext"
        );
        assert_eq!(k.open("env:DB_PASS", &sealed).unwrap(), b"hunter2-hunter2");
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let k = key();
        let a = k.seal("env:X", b"same").unwrap();
        let b = k.seal("env:X", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_place_does_not_open() {
        let k = key();
        let sealed = k.seal(&env_place("DB_PASS"), b"v").unwrap();
        assert!(matches!(
            k.open(&env_place("OTHER"), &sealed),
            Err(SecretError::Open(_))
        ));
    }

    #[test]
    fn another_key_does_not_open() {
        let (a, mut b) = (key(), key());
        let sealed = a.seal("env:X", b"v").unwrap();
        assert!(matches!(
            b.open("env:X", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        // Even under the same ID, other key bytes fail authentication.
        b.id = a.id;
        assert!(matches!(
            b.open("env:X", &sealed),
            Err(SecretError::Open(_))
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let k = key();
        let sealed = k.seal("env:X", b"value").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 1;
            assert!(k.open("env:X", &bad).is_err(), "flipped byte {i} opened");
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 1;
        assert!(k.open("env:X", &bad).is_err());
        let mut cut = sealed;
        cut.ciphertext.truncate(3);
        assert!(k.open("env:X", &cut).is_err());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let mut k = key();
        k.bytes = [0xee; KEY_LEN];
        let shown = format!("{k:?}");
        assert!(!shown.contains("238") && !shown.contains("ee, "), "{shown}");
    }
}
