//! Users, API tokens and the audit log in the state machine. Tokens are found by the
//! SHA-256 of their secret; users by name; audit entries by ascending ID.

use windflow_protocol::{
    AuditEntry, AuditId, Namespace, Role, Timestamp, TokenId, TokenKind, TokenView, UserId,
    UserView,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, NewToken, Response, TokenRecord, UserRecord};
use crate::state::{Pending, id_of, key};

fn id_at(p: &Pending<'_>, index: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(id_of(p.get(index)?))
}

fn user_by_name(p: &Pending<'_>, name: &str) -> Result<Option<UserRecord>, StoreError> {
    match id_at(p, &key::named(key::USER_NAME, name.as_bytes()))? {
        Some(id) => p.get_as(&key::id(key::USER, id), "user"),
        None => Ok(None),
    }
}

fn user_token_key(user: &str, id: TokenId) -> Vec<u8> {
    [key::USER_TOKEN, user.as_bytes(), b"/", &id.0.to_be_bytes()].concat()
}

/// `Command::CreateToken`.
pub(crate) fn create_token(p: &mut Pending<'_>, t: NewToken) -> Result<Response, StoreError> {
    let hash_key = key::named(key::TOKEN_HASH, &t.hash);
    if p.get(&hash_key)?.is_some() {
        // 256 random bits never collide; a retried proposal does.
        return Ok(Err(ApplyError::NameTaken {
            kind: "token".into(),
            name: "with this secret".into(),
        }));
    }
    let name_key = key::named(key::TOKEN_NAME, t.name.as_bytes());
    if t.kind == TokenKind::Api && p.get(&name_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "token".into(),
            name: t.name,
        }));
    }
    if let Some(ns) = &t.namespace
        && let Err(e) = crate::namespaces::require(p, ns)?
    {
        return Ok(Err(e));
    }
    if let Some(user) = &t.user {
        let Some(record) = user_by_name(p, user)? else {
            return Ok(Err(ApplyError::not_found("user", user)));
        };
        if t.role > record.view.role {
            return Ok(Err(ApplyError::Refused(format!(
                "a token for user `{user}` cannot have role {}: the user is a {}",
                t.role, record.view.role
            ))));
        }
        if let Some(bound) = &record.view.namespace
            && t.namespace.as_ref() != Some(bound)
        {
            return Ok(Err(ApplyError::Refused(format!(
                "a token for user `{user}` must be bound to namespace `{bound}`, as the user is"
            ))));
        }
    }
    let id = TokenId(p.next(key::NEXT_TOKEN)?);
    let view = TokenView {
        id,
        name: t.name,
        kind: t.kind,
        role: t.role,
        user: t.user,
        namespace: t.namespace,
        prefix: t.prefix,
        created_at: t.at,
        expires_at: t.expires_at,
        revoked_at: None,
        rotated_at: None,
    };
    if view.kind == TokenKind::Api {
        p.put(name_key, id.0.to_be_bytes().to_vec());
    }
    if let Some(user) = &view.user {
        p.put(user_token_key(user, id), Vec::new());
    }
    p.put(hash_key, id.0.to_be_bytes().to_vec());
    p.put_as(
        key::id(key::TOKEN, id.0),
        &TokenRecord {
            view: view.clone(),
            hash: t.hash,
        },
    )?;
    Ok(Ok(Applied::Token(view)))
}

fn token(p: &Pending<'_>, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
    p.get_as(&key::id(key::TOKEN, id.0), "token")
}

/// `Command::RevokeToken`. Revoking twice keeps the first time.
pub(crate) fn revoke_token(
    p: &mut Pending<'_>,
    id: TokenId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut record) = token(p, id)? else {
        return Ok(Err(ApplyError::not_found("token", id)));
    };
    record.view.revoked_at.get_or_insert(at);
    let view = record.view.clone();
    p.put_as(key::id(key::TOKEN, id.0), &record)?;
    Ok(Ok(Applied::Token(view)))
}

/// `Command::RotateToken`: the old hash leaves the index in the same batch, so the old
/// secret stops working at the same log index the new one starts.
pub(crate) fn rotate_token(
    p: &mut Pending<'_>,
    id: TokenId,
    hash: Vec<u8>,
    prefix: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut record) = token(p, id)? else {
        return Ok(Err(ApplyError::not_found("token", id)));
    };
    if record.view.revoked_at.is_some() {
        return Ok(Err(ApplyError::Refused(format!(
            "token {id} is revoked; create a new one"
        ))));
    }
    let new_key = key::named(key::TOKEN_HASH, &hash);
    if p.get(&new_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "token".into(),
            name: "with this secret".into(),
        }));
    }
    p.del(key::named(key::TOKEN_HASH, &record.hash));
    p.put(new_key, id.0.to_be_bytes().to_vec());
    record.hash = hash;
    record.view.prefix = prefix;
    record.view.rotated_at = Some(at);
    let view = record.view.clone();
    p.put_as(key::id(key::TOKEN, id.0), &record)?;
    Ok(Ok(Applied::Token(view)))
}

/// `Command::CreateUser`.
pub(crate) fn create_user(
    p: &mut Pending<'_>,
    name: String,
    role: Role,
    namespace: Option<Namespace>,
    password_hash: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    if let Some(ns) = &namespace
        && let Err(e) = crate::namespaces::require(p, ns)?
    {
        return Ok(Err(e));
    }
    let name_key = key::named(key::USER_NAME, name.as_bytes());
    if p.get(&name_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "user".into(),
            name,
        }));
    }
    let id = UserId(p.next(key::NEXT_USER)?);
    let view = UserView {
        id,
        name,
        role,
        namespace,
        created_at: at,
        password_changed_at: at,
    };
    p.put(name_key, id.0.to_be_bytes().to_vec());
    p.put_as(
        key::id(key::USER, id.0),
        &UserRecord {
            view: view.clone(),
            password_hash,
        },
    )?;
    Ok(Ok(Applied::User(view)))
}

/// `Command::SetUserPassword`.
pub(crate) fn set_password(
    p: &mut Pending<'_>,
    name: String,
    password_hash: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut record) = user_by_name(p, &name)? else {
        return Ok(Err(ApplyError::not_found("user", name)));
    };
    record.password_hash = password_hash;
    record.view.password_changed_at = at;
    let view = record.view.clone();
    p.put_as(key::id(key::USER, view.id.0), &record)?;
    Ok(Ok(Applied::User(view)))
}

/// `Command::DeleteUser`: the user goes, and every token acting for it is revoked.
pub(crate) fn delete_user(
    p: &mut Pending<'_>,
    name: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(record) = user_by_name(p, &name)? else {
        return Ok(Err(ApplyError::not_found("user", name)));
    };
    let prefix = [key::USER_TOKEN, name.as_bytes(), b"/"].concat();
    // DeleteUser is never batched, so no write of this command's batch is missed here.
    let mut ids = Vec::new();
    for entry in p.tree().scan_prefix(&prefix) {
        let (k, _) = entry?;
        if let Ok(b) = <[u8; 8]>::try_from(&k[prefix.len()..]) {
            ids.push(TokenId(u64::from_be_bytes(b)));
        }
        p.del(k.to_vec());
    }
    for id in ids {
        if let Err(e) = revoke_token(p, id, at)? {
            tracing::warn!(%id, error = %e, "a token of a deleted user could not be revoked");
        }
    }
    p.del(key::named(key::USER_NAME, name.as_bytes()));
    p.del(key::id(key::USER, record.view.id.0));
    Ok(Ok(Applied::User(record.view)))
}

/// `Command::RecordAudit`.
pub(crate) fn record_audit(
    p: &mut Pending<'_>,
    mut entry: AuditEntry,
) -> Result<Response, StoreError> {
    entry.id = AuditId(p.next(key::NEXT_AUDIT)?);
    p.put_as(key::id(key::AUDIT, entry.id.0), &entry)?;
    Ok(Ok(Applied::Audit(entry.id)))
}

/// `Command::PruneAudit`: drops entries from the oldest on while they are older than
/// `before`. Entries are stamped by their proposers, so a later ID can carry an earlier
/// time by a clock's skew; stopping at the first newer entry keeps prune cheap and such an
/// entry waits for the next prune.
pub(crate) fn prune_audit(p: &mut Pending<'_>, before: Timestamp) -> Result<Response, StoreError> {
    let mut old = Vec::new();
    for entry in p.tree().scan_prefix(key::AUDIT) {
        let (k, v) = entry?;
        let e: AuditEntry = crate::decode(&v, "audit entry")?;
        if e.at >= before {
            break;
        }
        old.push(k.to_vec());
    }
    let n = old.len() as u64;
    for k in old {
        p.del(k);
    }
    Ok(Ok(Applied::Pruned(n)))
}
