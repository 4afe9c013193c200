//! `$$(NAME)` in a command: the current value of a context, put in by the server when it
//! sends the run to its agent. NAME is a context ID (`CJ3`, `CP2`), a job ID (`J3`) or a
//! job's name, looked up in the run's namespace; a context of another namespace is as
//! missing as one that does not exist. A reference to a missing or empty context fails
//! the run before it starts, naming it.
//!
//! The value goes into the command text as it is (the shell sees it), like a template.
//! Only `$$(` followed by a name (letters, digits, `-`, `_`, `.`) and `)` is a reference,
//! so shell text such as `$$((1 + 2))` is left alone.

use windflow_protocol::{ContextId, DriverConfig, JobId, Namespace, TaskSpec};
use windflow_raft::{StateReader, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("`$$({0})`: no context `{0}` in namespace `{1}`")]
    Missing(String, Namespace),
    #[error("`$$({name})`: context {id} is empty (its source has not run yet, or it was reset)")]
    Empty { name: String, id: ContextId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The references in `command`, in order: (byte range of `$$(NAME)`, NAME).
fn references(command: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = command[from..].find("$$(").map(|i| i + from) {
        let name_start = at + 3;
        let name_len = command[name_start..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            .count();
        let end = name_start + name_len;
        if name_len > 0 && command.as_bytes().get(end) == Some(&b')') {
            out.push((at..end + 1, &command[name_start..end]));
            from = end + 1;
        } else {
            from = name_start;
        }
    }
    out
}

/// Whether the command uses any reference (most do not: no reads then).
pub fn has_references(command: &str) -> bool {
    !references(command).is_empty()
}

/// `command` with each reference replaced by its context's current value.
pub fn resolve(reader: &StateReader, ns: &Namespace, command: &str) -> Result<String, RefError> {
    let refs = references(command);
    if refs.is_empty() {
        return Ok(command.to_owned());
    }
    let mut out = String::with_capacity(command.len());
    let mut last = 0;
    for (range, name) in refs {
        out.push_str(&command[last..range.start]);
        out.push_str(&value(reader, ns, name)?);
        last = range.end;
    }
    out.push_str(&command[last..]);
    Ok(out)
}

/// The task with its command's references resolved (the task itself when it has none).
pub fn resolve_task(
    reader: &StateReader,
    ns: &Namespace,
    task: &TaskSpec,
) -> Result<TaskSpec, RefError> {
    let mut task = task.clone();
    match &mut task.driver {
        DriverConfig::Exec(exec) => {
            if has_references(&exec.command) {
                exec.command = resolve(reader, ns, &exec.command)?;
            }
        }
        // A container's command and arguments take references as an exec command does.
        DriverConfig::Docker(docker) => {
            for text in docker.command.iter_mut().chain(docker.args.iter_mut()) {
                if has_references(text) {
                    *text = resolve(reader, ns, text)?;
                }
            }
        }
    }
    Ok(task)
}

fn value(reader: &StateReader, ns: &Namespace, name: &str) -> Result<String, RefError> {
    let missing = || RefError::Missing(name.to_owned(), ns.clone());
    let id = if let Ok(cid) = name.parse::<ContextId>() {
        cid
    } else if let Ok(job) = name.parse::<JobId>() {
        ContextId::of_job(job)
    } else {
        match reader.job_by_name(ns, name)? {
            Some(j) => ContextId::of_job(j.id),
            None => return Err(missing()),
        }
    };
    let home = match id {
        ContextId::Job(j) => reader.job(j)?.map(|j| j.spec.namespace),
        ContextId::Pipeline(p) => reader.pipeline(p)?.map(|p| p.spec.namespace),
    };
    if home.as_ref() != Some(ns) {
        return Err(missing());
    }
    let ctx = reader.context(id)?.ok_or_else(missing)?;
    if ctx.is_empty() {
        return Err(RefError::Empty {
            name: name.to_owned(),
            id,
        });
    }
    Ok(ctx.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_references_count() {
        let refs: Vec<&str> = references("echo $$(B) $$(J3)-$$(CP2) $$((1+2)) $$( x) $$(a.b_c-d")
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(refs, ["B", "J3", "CP2"]);
        let (range, _) = &references("x $$(B)!")[0];
        assert_eq!(&"x $$(B)!"[range.clone()], "$$(B)");
        assert!(!has_references("echo $$ $(date) $$((1))"));
    }
}
