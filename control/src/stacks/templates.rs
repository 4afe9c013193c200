//! The built-in template catalog: compose files compiled into the binary
//! (`control/templates/*.yml`), each with its metadata under the top-level extension key
//! `x-template`: a description and its variables (default, description, and whether the
//! value is a password generated at deploy time).
//!
//! Rendering checks the `--set` keys (an unknown one is refused by name), fills defaults,
//! and generates the missing passwords from the system's secure randomness (`ring`).
//! Generated values are secret variables: they may appear only in `environment` values,
//! which become the tasks' sealed `secret_env`.

use std::collections::{BTreeMap, BTreeSet};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The catalog: name and compose text.
const CATALOG: &[(&str, &str)] = &[
    ("postgres", include_str!("../../templates/postgres.yml")),
    ("redis", include_str!("../../templates/redis.yml")),
    ("mysql", include_str!("../../templates/mysql.yml")),
    ("wordpress", include_str!("../../templates/wordpress.yml")),
    ("nginx", include_str!("../../templates/nginx.yml")),
    ("monitoring", include_str!("../../templates/monitoring.yml")),
    ("minio", include_str!("../../templates/minio.yml")),
];

/// How long a generated password is, in characters.
pub const GENERATED_LEN: usize = 24;
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// A template of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub variables: Vec<Variable>,
    /// The compose file (its `x-template` part included).
    pub compose: String,
}

/// One variable a template takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variable {
    #[serde(skip_deserializing)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub default: Option<String>,
    /// A password made at deploy time (unless `--set`), stored sealed and shown once.
    #[serde(default)]
    pub generated: bool,
}

#[derive(Deserialize)]
struct Meta {
    description: String,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "x-template")]
    meta: Meta,
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("no template `{0}`; see `windflow template list`")]
    Unknown(String),
    #[error("template {template} has no variable {}: it takes {}", .unknown.join(", "), .known.join(", "))]
    UnknownVariables {
        template: String,
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error("template {template}: variable {name} has no default; give it with --set {name}=VALUE")]
    Missing { template: String, name: String },
    #[error("template {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("no system randomness to generate a password")]
    Random,
}

/// A template's variables resolved for a deploy. Its `Debug` shows no value.
#[derive(Clone)]
pub struct Rendered {
    pub variables: BTreeMap<String, String>,
    /// The generated (or given) passwords' names: secret variables.
    pub secret: BTreeSet<String>,
    /// The passwords generated now, to show once.
    pub generated: BTreeMap<String, String>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// Every template, in catalog order.
pub fn all() -> Result<Vec<Template>, TemplateError> {
    CATALOG.iter().map(|(n, t)| load(n, t)).collect()
}

/// The template `name`.
pub fn get(name: &str) -> Result<Template, TemplateError> {
    let (n, t) = CATALOG
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
    load(n, t)
}

fn load(name: &str, text: &str) -> Result<Template, TemplateError> {
    let doc: Doc = serde_yaml_ng::from_str(text)
        .map_err(|e| TemplateError::Malformed(name.to_owned(), e.to_string()))?;
    Ok(Template {
        name: name.to_owned(),
        description: doc.meta.description,
        variables: doc
            .meta
            .variables
            .into_iter()
            .map(|(n, mut v)| {
                v.name = n;
                v
            })
            .collect(),
        compose: text.to_owned(),
    })
}

impl Template {
    /// The variables for a deploy with `sets`: unknown keys refused (all named), defaults
    /// filled, passwords not given generated.
    pub fn render(&self, sets: &BTreeMap<String, String>) -> Result<Rendered, TemplateError> {
        let unknown: Vec<String> = sets
            .keys()
            .filter(|k| !self.variables.iter().any(|v| &v.name == *k))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(TemplateError::UnknownVariables {
                template: self.name.clone(),
                unknown,
                known: self.variables.iter().map(|v| v.name.clone()).collect(),
            });
        }
        let mut out = Rendered {
            variables: BTreeMap::new(),
            secret: BTreeSet::new(),
            generated: BTreeMap::new(),
        };
        for v in &self.variables {
            let value = match (sets.get(&v.name), &v.default, v.generated) {
                (Some(given), _, _) => given.clone(),
                (None, _, true) => {
                    let p = password()?;
                    out.generated.insert(v.name.clone(), p.clone());
                    p
                }
                (None, Some(d), false) => d.clone(),
                (None, None, false) => {
                    return Err(TemplateError::Missing {
                        template: self.name.clone(),
                        name: v.name.clone(),
                    });
                }
            };
            if v.generated {
                out.secret.insert(v.name.clone());
            }
            out.variables.insert(v.name.clone(), value);
        }
        Ok(out)
    }
}

/// A random password of [`GENERATED_LEN`] letters and digits (no look-alikes), by
/// rejection sampling so every character is equally likely.
pub fn password() -> Result<String, TemplateError> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(GENERATED_LEN);
    let limit = 256 - 256 % ALPHABET.len();
    while out.len() < GENERATED_LEN {
        let mut buf = [0u8; 32];
        rng.fill(&mut buf).map_err(|_| TemplateError::Random)?;
        for b in buf {
            if (b as usize) < limit && out.len() < GENERATED_LEN {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}
