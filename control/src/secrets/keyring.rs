//! The cluster key ring: every key still needed to open stored values, and the current one
//! new values are sealed with. It lives in `DATA_DIR/keyring` (0600, replaced by a rename)
//! on every server and travels only over the servers' mTLS link: never through raft, never
//! into a log line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use windflow_protocol::secret::{KeyMaterial, KeyRingMaterial};
use windflow_protocol::{KeyId, Sealed, Timestamp};

use super::SecretError;
use super::seal::{KEY_LEN, Key};

/// The file a server keeps its key ring in, inside its data dir.
pub const KEYRING_FILE: &str = "keyring";
const HEADER: &str = "windflow-keyring v1";

/// Keys by ID, one of them current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    current: KeyId,
    keys: BTreeMap<KeyId, Key>,
}

impl KeyRing {
    /// A new ring of one random key (the server that initialises a cluster makes it).
    pub fn generate(now: Timestamp) -> Result<KeyRing, SecretError> {
        let key = Key::generate(now)?;
        Ok(KeyRing {
            current: key.id,
            keys: BTreeMap::from([(key.id, key)]),
        })
    }

    pub fn current(&self) -> KeyId {
        self.current
    }

    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
    }

    /// Seals `plaintext` for `place` under the current key.
    pub fn seal(&self, place: &str, plaintext: &[u8]) -> Result<Sealed, SecretError> {
        self.keys
            .get(&self.current)
            .ok_or(SecretError::UnknownKey(self.current))?
            .seal(place, plaintext)
    }

    /// Opens a value sealed for `place` under any key of the ring.
    pub fn open(&self, place: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.is_redacted() {
            return Err(SecretError::Redacted(place.to_owned()));
        }
        self.keys
            .get(&sealed.key)
            .ok_or(SecretError::UnknownKey(sealed.key))?
            .open(place, sealed)
    }

    /// This ring plus a new random key, which is not current yet (rotation first hands it
    /// to every server, then makes it current).
    pub fn with_new_key(&self, now: Timestamp) -> Result<(KeyRing, KeyId), SecretError> {
        let mut ring = self.clone();
        let key = loop {
            let key = Key::generate(now)?;
            if !ring.keys.contains_key(&key.id) {
                break key;
            }
        };
        let id = key.id;
        ring.keys.insert(id, key);
        Ok((ring, id))
    }

    /// Makes key `id` (which the ring holds) current.
    pub fn make_current(&mut self, id: KeyId) -> Result<(), SecretError> {
        if !self.keys.contains_key(&id) {
            return Err(SecretError::UnknownKey(id));
        }
        self.current = id;
        Ok(())
    }

    /// Drops keys `ids`, except the current one; returns whether any was dropped.
    pub fn retire(&mut self, ids: &[KeyId]) -> bool {
        let before = self.keys.len();
        self.keys
            .retain(|id, _| *id == self.current || !ids.contains(id));
        self.keys.len() != before
    }

    /// Adds the keys of `other` this ring lacks, and takes its current key when that is
    /// newer than this one's. Returns whether anything changed. A key ID this ring holds
    /// with other bytes is refused: it would make stored values unopenable.
    pub fn merge(&mut self, other: KeyRing) -> Result<bool, SecretError> {
        for (id, key) in &other.keys {
            if let Some(mine) = self.keys.get(id)
                && mine.bytes != key.bytes
            {
                return Err(SecretError::Conflict(*id));
            }
        }
        let mut changed = false;
        for (id, key) in other.keys {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.keys.entry(id) {
                slot.insert(key);
                changed = true;
            }
        }
        let rank = |ring: &KeyRing, id: KeyId| ring.keys.get(&id).map(|k| (k.created_at, id));
        if other.current != self.current && rank(self, other.current) > rank(self, self.current) {
            self.current = other.current;
            changed = true;
        }
        Ok(changed)
    }

    /// The ring as it crosses the servers' mTLS link.
    pub fn to_material(&self) -> KeyRingMaterial {
        KeyRingMaterial {
            current: self.current,
            keys: self
                .keys
                .values()
                .map(|k| KeyMaterial {
                    id: k.id,
                    created_at: k.created_at,
                    secret: k.bytes.to_vec(),
                })
                .collect(),
        }
    }

    pub fn from_material(m: KeyRingMaterial) -> Result<KeyRing, SecretError> {
        let mut keys = BTreeMap::new();
        for k in m.keys {
            let bytes: [u8; KEY_LEN] = k
                .secret
                .as_slice()
                .try_into()
                .map_err(|_| SecretError::BadKey(k.id))?;
            keys.insert(
                k.id,
                Key {
                    id: k.id,
                    created_at: k.created_at,
                    bytes,
                },
            );
        }
        if !keys.contains_key(&m.current) {
            return Err(SecretError::UnknownKey(m.current));
        }
        Ok(KeyRing {
            current: m.current,
            keys,
        })
    }

    /// Reads `DATA_DIR/keyring`; `None` when this server has none yet.
    pub fn load(data_dir: &Path) -> Result<Option<KeyRing>, SecretError> {
        let path = data_dir.join(KEYRING_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SecretError::file(&path, e)),
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|why| SecretError::file(&path, why))
    }

    fn parse(text: &str) -> Result<KeyRing, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("does not start with `{HEADER}`"));
        }
        let mut current = None;
        let mut keys = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = |s: &str| s.parse::<KeyId>().map_err(|e| e.to_string());
            match words.as_slice() {
                ["current", k] => current = Some(id(k)?),
                ["key", k, at, hex] => keys.push(KeyMaterial {
                    id: id(k)?,
                    created_at: Timestamp(at.parse().map_err(|_| "a bad key time")?),
                    secret: from_hex(hex).ok_or("a bad key")?,
                }),
                _ => return Err("a line that is neither `current` nor `key`".into()),
            }
        }
        let current = current.ok_or("no `current` line")?;
        Self::from_material(KeyRingMaterial { current, keys }).map_err(|e| e.to_string())
    }

    /// Writes `DATA_DIR/keyring`: a temporary file created 0600 in the same directory,
    /// flushed, then renamed over the old one, so a crash leaves the old ring or the new.
    pub fn save(&self, data_dir: &Path) -> Result<(), SecretError> {
        let path = data_dir.join(KEYRING_FILE);
        let mut text = format!("{HEADER}\ncurrent {}\n", self.current);
        for k in self.keys.values() {
            text.push_str(&format!(
                "key {} {} {}\n",
                k.id,
                k.created_at.0,
                crate::auth::hex(&k.bytes)
            ));
        }
        // tempfile creates the file with mode 0600.
        let mut tmp =
            tempfile::NamedTempFile::new_in(data_dir).map_err(|e| SecretError::file(&path, e))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| SecretError::file(&path, e))?;
        tmp.persist(&path)
            .map_err(|e| SecretError::file(&path, e.error))?;
        Ok(())
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_ring_survives_its_file_which_only_its_owner_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KeyRing::load(dir.path()).unwrap(), None);
        let (ring, _) = KeyRing::generate(Timestamp(1))
            .unwrap()
            .with_new_key(Timestamp(2))
            .unwrap();
        ring.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(KeyRing::load(dir.path()).unwrap(), Some(ring));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_ring() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(KEYRING_FILE),
            "windflow-keyring v1\nkey x\n",
        )
        .unwrap();
        assert!(KeyRing::load(dir.path()).is_err());
    }

    #[test]
    fn values_sealed_under_an_old_key_open_after_rotation() {
        let ring = KeyRing::generate(Timestamp(1)).unwrap();
        let old = ring.seal("env:A", b"v1").unwrap();
        let (mut ring, new) = ring.with_new_key(Timestamp(2)).unwrap();
        assert_ne!(
            ring.current(),
            new,
            "a new key is not current until made so"
        );
        ring.make_current(new).unwrap();
        let fresh = ring.seal("env:A", b"v2").unwrap();
        assert_eq!(fresh.key, new);
        assert_eq!(ring.open("env:A", &old).unwrap(), b"v1");
        assert_eq!(ring.open("env:A", &fresh).unwrap(), b"v2");
        assert!(matches!(
            ring.open("env:A", &Sealed::redacted(new)),
            Err(SecretError::Redacted(_))
        ));
    }

    #[test]
    fn merging_adds_keys_and_takes_the_newer_current() {
        let a = KeyRing::generate(Timestamp(1)).unwrap();
        let (mut b, new) = a.with_new_key(Timestamp(2)).unwrap();
        let mut a2 = a.clone();
        // Phase one of a rotation: the key arrives, the current stays.
        assert!(a2.merge(b.clone()).unwrap());
        assert_eq!(a2.current(), a.current());
        assert_eq!(a2.key_ids().len(), 2);
        // Phase two: the newer current is taken.
        b.make_current(new).unwrap();
        assert!(a2.merge(b.clone()).unwrap());
        assert_eq!(a2.current(), new);
        // An older current does not win back.
        assert!(!a2.merge(a.clone()).unwrap());
        assert_eq!(a2.current(), new);
    }

    #[test]
    fn retiring_drops_old_keys_but_never_the_current_one() {
        let ring = KeyRing::generate(Timestamp(1)).unwrap();
        let old = ring.current();
        let (mut ring, new) = ring.with_new_key(Timestamp(2)).unwrap();
        ring.make_current(new).unwrap();
        assert!(!ring.retire(&[new]));
        assert!(ring.retire(&[old, new]));
        assert_eq!(ring.key_ids(), vec![new]);
        assert!(matches!(
            ring.open("env:A", &Sealed::redacted(old)),
            Err(SecretError::Redacted(_))
        ));
    }

    #[test]
    fn a_key_id_with_other_bytes_is_refused() {
        let a = KeyRing::generate(Timestamp(1)).unwrap();
        let mut forged = a.to_material();
        forged.keys[0].secret = vec![7; KEY_LEN];
        let forged = KeyRing::from_material(forged).unwrap();
        let mut mine = a.clone();
        assert!(matches!(mine.merge(forged), Err(SecretError::Conflict(_))));
        assert_eq!(mine, a);
    }
}
