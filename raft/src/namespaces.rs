//! Namespaces in the state machine. `default` exists without being created; every other
//! namespace is created and deleted by command, and a namespace that still holds jobs
//! cannot be deleted.

use windflow_protocol::{Namespace, NamespaceInfo, Timestamp};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, key, u64_of};

/// The namespace, if it exists (`default` always does).
pub(crate) fn get(p: &Pending<'_>, name: &Namespace) -> Result<Option<NamespaceInfo>, StoreError> {
    if name.is_default() {
        return Ok(Some(NamespaceInfo::builtin_default()));
    }
    p.get_as(&key::namespace(name), "namespace")
}

/// `Ok(Err(NotFound))` unless the namespace exists.
pub(crate) fn require(
    p: &Pending<'_>,
    name: &Namespace,
) -> Result<Result<(), ApplyError>, StoreError> {
    Ok(match get(p, name)? {
        Some(_) => Ok(()),
        None => Err(ApplyError::not_found("namespace", name)),
    })
}

/// `Command::CreateNamespace`.
pub(crate) fn create(
    p: &mut Pending<'_>,
    name: Namespace,
    description: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    if get(p, &name)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "namespace".into(),
            name: name.to_string(),
        }));
    }
    let info = NamespaceInfo {
        name,
        description,
        created_at: at,
    };
    p.put_as(key::namespace(&info.name), &info)?;
    Ok(Ok(Applied::Namespace(info)))
}

/// `Command::DeleteNamespace`.
pub(crate) fn delete(p: &mut Pending<'_>, name: Namespace) -> Result<Response, StoreError> {
    if name.is_default() {
        return Ok(Err(ApplyError::Refused(
            "the default namespace cannot be deleted".into(),
        )));
    }
    let Some(info) = get(p, &name)? else {
        return Ok(Err(ApplyError::not_found("namespace", &name)));
    };
    let jobs = u64_of(p.get(&key::namespace_jobs(&name))?);
    if jobs > 0 {
        return Ok(Err(ApplyError::Refused(format!(
            "namespace `{name}` still holds {jobs} job(s); delete them first"
        ))));
    }
    p.del(key::namespace(&name));
    p.del(key::namespace_jobs(&name));
    Ok(Ok(Applied::Namespace(info)))
}
