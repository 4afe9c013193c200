//! Join tokens in the state machine: issued, spent one use at a time, revoked. Servers
//! keep only the SHA-256 of a token's secret, indexed to its record.

use std::collections::BTreeMap;

use windflow_protocol::enroll::JoinKind;
use windflow_protocol::{JoinTokenId, Timestamp};

use crate::StoreError;
use crate::command::{Applied, ApplyError, JoinTokenRecord, JoinTokenRefusal, Response};
use crate::state::{Pending, id_of, key};

/// `Command::CreateJoinToken`.
pub(crate) fn create(
    p: &mut Pending<'_>,
    kind: JoinKind,
    hash: Vec<u8>,
    expires_at: Option<Timestamp>,
    uses: Option<u32>,
    labels: BTreeMap<String, String>,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let hash_key = key::named(key::JOIN_TOKEN_HASH, &hash);
    if p.get(&hash_key)?.is_some() {
        // 256 random bits never collide; a retried proposal does.
        return Ok(Err(ApplyError::NameTaken {
            kind: "join token".into(),
            name: "with this secret".into(),
        }));
    }
    let id = JoinTokenId(p.next(key::NEXT_JOIN_TOKEN)?);
    let record = JoinTokenRecord {
        id,
        kind,
        created_at: at,
        expires_at,
        uses_allowed: uses,
        uses: 0,
        last_used_by: None,
        revoked_at: None,
        labels,
    };
    p.put(hash_key, id.0.to_be_bytes().to_vec());
    p.put_as(key::id(key::JOIN_TOKEN, id.0), &record)?;
    Ok(Ok(Applied::JoinToken(record)))
}

/// `Command::UseJoinToken`.
pub(crate) fn spend(
    p: &mut Pending<'_>,
    kind: JoinKind,
    hash: Vec<u8>,
    by: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    Ok(spend_record(p, kind, &hash, by, at)?.map(Applied::JoinToken))
}

/// Spends one use of a token and answers its record, or why it cannot be used.
pub(crate) fn spend_record(
    p: &mut Pending<'_>,
    kind: JoinKind,
    hash: &[u8],
    by: String,
    at: Timestamp,
) -> Result<Result<JoinTokenRecord, ApplyError>, StoreError> {
    let refused = |why| Ok(Err(ApplyError::JoinTokenRefused(why)));
    let Some(id) = id_of(p.get(&key::named(key::JOIN_TOKEN_HASH, hash))?).map(JoinTokenId) else {
        return refused(JoinTokenRefusal::Unknown);
    };
    let record_key = key::id(key::JOIN_TOKEN, id.0);
    let Some(mut record) = p.get_as::<JoinTokenRecord>(&record_key, "join token")? else {
        return refused(JoinTokenRefusal::Unknown);
    };
    if record.revoked_at.is_some() {
        return refused(JoinTokenRefusal::Revoked(id));
    }
    if let Some(expired_at) = record.expires_at.filter(|e| at >= *e) {
        return refused(JoinTokenRefusal::Expired { id, expired_at });
    }
    if let Some(uses) = record.uses_allowed.filter(|u| record.uses >= *u) {
        return refused(JoinTokenRefusal::UsedUp { id, uses });
    }
    if record.kind != kind {
        return refused(JoinTokenRefusal::WrongKind {
            id,
            is: record.kind,
            wanted: kind,
        });
    }
    record.uses += 1;
    record.last_used_by = Some(by);
    p.put_as(record_key, &record)?;
    Ok(Ok(record))
}

/// `Command::RevokeJoinToken`.
pub(crate) fn revoke(
    p: &mut Pending<'_>,
    id: JoinTokenId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let record_key = key::id(key::JOIN_TOKEN, id.0);
    let Some(mut record) = p.get_as::<JoinTokenRecord>(&record_key, "join token")? else {
        return Ok(Err(ApplyError::not_found("join token", id)));
    };
    record.revoked_at.get_or_insert(at);
    p.put_as(record_key, &record)?;
    Ok(Ok(Applied::JoinToken(record)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply_tests::{apply, store};
    use crate::command::Command;
    use crate::reader::StateReader;

    fn create(
        reader: &StateReader,
        hash: &[u8],
        uses: Option<u32>,
        expires: Option<u64>,
    ) -> JoinTokenId {
        match apply(
            reader,
            Command::CreateJoinToken {
                kind: JoinKind::Server,
                hash: hash.to_vec(),
                expires_at: expires.map(Timestamp),
                uses,
                labels: Default::default(),
                at: Timestamp(10),
            },
        ) {
            Ok(Applied::JoinToken(t)) => t.id,
            other => panic!("{other:?}"),
        }
    }

    fn spend(reader: &StateReader, kind: JoinKind, hash: &[u8], at: u64) -> Response {
        apply(
            reader,
            Command::UseJoinToken {
                kind,
                hash: hash.to_vec(),
                by: "s4".into(),
                at: Timestamp(at),
            },
        )
    }

    fn refusal(r: Response) -> JoinTokenRefusal {
        match r {
            Err(ApplyError::JoinTokenRefused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_single_use_token_serves_once() {
        let (_d, reader) = store();
        let id = create(&reader, b"h1", Some(1), None);
        assert_eq!(id, JoinTokenId(1));
        match spend(&reader, JoinKind::Server, b"h1", 20) {
            Ok(Applied::JoinToken(t)) => {
                assert_eq!(t.uses, 1);
                assert_eq!(t.last_used_by.as_deref(), Some("s4"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            refusal(spend(&reader, JoinKind::Server, b"h1", 21)),
            JoinTokenRefusal::UsedUp { id, uses: 1 }
        );
        assert_eq!(reader.join_tokens().unwrap()[0].uses, 1);
    }

    #[test]
    fn unknown_expired_revoked_and_wrong_kind_tokens_are_refused() {
        let (_d, reader) = store();
        assert_eq!(
            refusal(spend(&reader, JoinKind::Server, b"nope", 20)),
            JoinTokenRefusal::Unknown
        );
        let expiring = create(&reader, b"h1", None, Some(100));
        assert!(spend(&reader, JoinKind::Server, b"h1", 99).is_ok());
        assert_eq!(
            refusal(spend(&reader, JoinKind::Server, b"h1", 100)),
            JoinTokenRefusal::Expired {
                id: expiring,
                expired_at: Timestamp(100)
            }
        );
        let other = create(&reader, b"h2", None, None);
        assert_eq!(
            refusal(spend(&reader, JoinKind::Agent, b"h2", 20)),
            JoinTokenRefusal::WrongKind {
                id: other,
                is: JoinKind::Server,
                wanted: JoinKind::Agent
            }
        );
        assert!(
            apply(
                &reader,
                Command::RevokeJoinToken {
                    id: other,
                    at: Timestamp(30)
                }
            )
            .is_ok()
        );
        assert_eq!(
            refusal(spend(&reader, JoinKind::Server, b"h2", 31)),
            JoinTokenRefusal::Revoked(other)
        );
        assert!(matches!(
            apply(
                &reader,
                Command::RevokeJoinToken {
                    id: JoinTokenId(9),
                    at: Timestamp(30)
                }
            ),
            Err(ApplyError::NotFound { .. })
        ));
    }
}
