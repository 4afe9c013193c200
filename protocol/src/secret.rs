//! Secret values at rest: what a sealed (encrypted) value looks like in the replicated state,
//! and the messages servers use to hand each other the cluster key ring.
//!
//! The crypto lives in the server (`control/src/secrets/`); this crate only carries the
//! shapes, so jobs, apps, templates and webhooks can all hold a [`Sealed`] value.
//!
//! A [`Sealed`] value never shows up in JSON: its human-readable form is a redacted marker
//! (`{"redacted": true, "key": "K1a2b3c4d"}`), so an API view cannot leak a ciphertext by
//! forgetting to redact it. Bincode (raft log, state, agent protocol) carries it whole.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::IdParseError;
use crate::time::Timestamp;

/// The ALPN on which servers hand each other the key ring (servers' certificates only).
pub const ALPN_KEYS: &[u8] = b"windflow-keys/1";

/// The bytes of an AEAD nonce (96 bits, for both AES-256-GCM and ChaCha20-Poly1305).
pub const NONCE_LEN: usize = 12;

/// Which key of the cluster key ring sealed a value: random, so two servers rotating at
/// once cannot mint the same ID for different keys. Shown as `K` and 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K{:08x}", self.0)
    }
}

impl FromStr for KeyId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError {
            kind: "key",
            input: s.to_owned(),
        };
        let hex = s.strip_prefix('K').ok_or_else(err)?;
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u32::from_str_radix(hex, 16).map(KeyId).map_err(|_| err())
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u32(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u32::deserialize(d).map(KeyId)
        }
    }
}

/// A value encrypted under key `key` of the cluster key ring, with a random nonce chosen by
/// the proposer. The AEAD's associated data binds it to where it belongs (the env var's
/// name), so a ciphertext moved to another place does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key: KeyId,
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext and authentication tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// What JSON gives back for a sealed value: the key ID and nothing to open.
    pub fn redacted(key: KeyId) -> Self {
        Sealed {
            key,
            nonce: [0; NONCE_LEN],
            ciphertext: Vec::new(),
        }
    }

    /// Whether this is only a marker read from JSON (nothing to open).
    pub fn is_redacted(&self) -> bool {
        self.ciphertext.is_empty()
    }
}

/// The whole value, for bincode.
#[derive(Serialize, Deserialize)]
struct SealedWire {
    key: KeyId,
    nonce: [u8; NONCE_LEN],
    #[serde(with = "crate::codec::bytes")]
    ciphertext: Vec<u8>,
}

/// The marker, for JSON.
#[derive(Serialize, Deserialize)]
struct Redacted {
    redacted: bool,
    key: KeyId,
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            Redacted {
                redacted: true,
                key: self.key,
            }
            .serialize(s)
        } else {
            SealedWire {
                key: self.key,
                nonce: self.nonce,
                ciphertext: self.ciphertext.clone(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Redacted::deserialize(d).map(|r| Sealed::redacted(r.key))
        } else {
            SealedWire::deserialize(d).map(|w| Sealed {
                key: w.key,
                nonce: w.nonce,
                ciphertext: w.ciphertext,
            })
        }
    }
}

/// One key of the ring, as it crosses the servers' mTLS link. Never logged: its `Debug`
/// leaves the key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub id: KeyId,
    pub created_at: Timestamp,
    /// 256 bits.
    #[serde(with = "crate::codec::bytes")]
    pub secret: Vec<u8>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The cluster key ring: every key still needed to open values, and the one new values are
/// sealed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRingMaterial {
    pub current: KeyId,
    pub keys: Vec<KeyMaterial>,
}

/// Server → server on ALPN [`ALPN_KEYS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRequest {
    /// Send me your key ring (a server that has none, or lacks a key).
    Fetch,
    /// Add these keys to yours and take `current` as current if it is newer (rotation).
    Install(KeyRingMaterial),
    /// Drop these keys (no stored value uses them any more); a current key is kept.
    Retire(Vec<KeyId>),
}

/// The answer to a [`KeyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyResponse {
    Ring(KeyRingMaterial),
    /// This server has no key ring yet.
    NoRing,
    /// The keys were kept; the current key is now this one.
    Installed {
        current: KeyId,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bincode_roundtrip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        let frame = crate::codec::encode(v).unwrap();
        crate::codec::decode_frame(&frame).unwrap().0
    }

    #[test]
    fn key_ids_show_and_parse_back() {
        let id = KeyId(0x1a2b_3c4d);
        assert_eq!(id.to_string(), "K1a2b3c4d");
        assert_eq!("K1a2b3c4d".parse::<KeyId>().unwrap(), id);
        assert!("K1a2b".parse::<KeyId>().is_err());
        assert!("J12".parse::<KeyId>().is_err());
    }

    #[test]
    fn bincode_carries_the_whole_sealed_value() {
        let sealed = Sealed {
            key: KeyId(7),
            nonce: [3; NONCE_LEN],
            ciphertext: vec![1, 2, 3, 4],
        };
        assert_eq!(bincode_roundtrip(&sealed), sealed);
    }

    #[test]
    fn json_shows_only_a_redacted_marker() {
        let sealed = Sealed {
            key: KeyId(7),
            nonce: [3; NONCE_LEN],
            ciphertext: vec![0xde, 0xad, 0xbe, 0xef],
        };
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"redacted": true, "key": "K00000007"})
        );
        let back: Sealed = serde_json::from_value(json).unwrap();
        assert!(back.is_redacted());
        assert_eq!(back.key, KeyId(7));
    }

    #[test]
    fn key_material_debug_hides_the_key() {
        let k = KeyMaterial {
            id: KeyId(1),
            created_at: Timestamp(5),
            secret: vec![0xab; 32],
        };
        let shown = format!("{k:?}");
        assert!(
            shown.contains("redacted") && !shown.contains("171"),
            "{shown}"
        );
        assert_eq!(bincode_roundtrip(&k), k);
    }
}
