//! Compose stacks: a docker-compose file → one service job ([`convert`]), and the
//! built-in template catalog ([`templates`]).
//!
//! - `keys.rs`: which keys are supported; every other one is listed in one error;
//! - `interpolate.rs`: `${VAR}`, `${VAR:-default}` and the rest of compose's forms;
//! - `compose.rs`: a file's services read and checked (`parts.rs`: ports, volumes,
//!   `depends_on`, healthcheck; `syntax.rs`: the short text forms);
//! - `convert.rs`: services → task groups of docker tasks on one node and network;
//! - `templates.rs`: the catalog (compose files with variables, compiled in).

pub mod compose;
pub mod convert;
pub mod interpolate;
mod keys;
mod parts;
pub mod syntax;
pub mod templates;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use compose::Compose;
pub use convert::{StackJob, is_stack, pinned_node, to_job};

/// The largest compose text accepted, in bytes.
pub const MAX_COMPOSE_LEN: usize = 256 * 1024;

/// What a compose file is read with.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    /// Interpolation's values (the CLI's environment, for the variables the file uses;
    /// a template's variables).
    pub variables: &'a BTreeMap<String, String>,
    /// Which of `variables` are secret (a template's generated passwords).
    pub secret_variables: &'a BTreeSet<String>,
    /// `env_file` contents by the path the file names them with.
    pub env_files: &'a BTreeMap<String, String>,
    /// The compose file's directory, for relative bind paths.
    pub base_dir: Option<&'a str>,
}

/// Why a compose file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    #[error("the compose file is not valid YAML: {0}")]
    Yaml(String),
    /// Every key not supported, with its path.
    #[error("unsupported compose keys: {}", .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("`{path}`: {message}")]
    Invalid { path: String, message: String },
}

/// Reads a compose file: YAML (merge keys applied), its keys checked, its values read.
pub fn parse(input: &Input<'_>) -> Result<Compose, StackError> {
    if input.text.len() > MAX_COMPOSE_LEN {
        return Err(StackError::Invalid {
            path: "compose".into(),
            message: format!("must be at most {MAX_COMPOSE_LEN} bytes"),
        });
    }
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(input.text).map_err(|e| StackError::Yaml(e.to_string()))?;
    doc.apply_merge()
        .map_err(|e| StackError::Yaml(e.to_string()))?;
    let unsupported = keys::unsupported(&doc);
    if !unsupported.is_empty() {
        return Err(StackError::Unsupported(unsupported));
    }
    compose::read(&doc, input)
}

/// The `env_file` paths and interpolated variable names of a compose text: what the CLI
/// reads from its disk and environment to send along.
pub fn needs(text: &str) -> Result<(Vec<String>, BTreeSet<String>), StackError> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| StackError::Yaml(e.to_string()))?;
    let mut names = interpolate::referenced(text);
    names.extend(syntax::passthrough_names(&doc));
    Ok((syntax::env_file_paths(&doc), names))
}
