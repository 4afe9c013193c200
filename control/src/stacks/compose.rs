//! A compose file's supported keys, read into typed services: short and long syntaxes,
//! values interpolated ([`super::interpolate`]), each bad value an error naming its path.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::{
    ContainerHealthcheck, DependencyCondition, HumanDuration, MountKind, PortMapping, RestartPolicy,
};

use super::interpolate::{Interpolated, Vars, interpolate};
use super::keys::key_text;
use super::syntax::{
    env_files, memory, parse_env_file, restart_policy, split_words, valid_env_key,
};
use super::{Input, StackError};

/// The most services a stack holds.
pub const MAX_SERVICES: usize = 64;
/// The most replicas of one service.
pub const MAX_REPLICAS: u32 = 1_000;

/// A compose file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    /// Top-level named volumes.
    pub volumes: BTreeSet<String>,
}

/// One compose service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Plain env vars: `env_file`s first, `environment` over them.
    pub env: BTreeMap<String, String>,
    /// Env vars whose values use a secret variable: stored sealed.
    pub secret_env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<Volume>,
    pub depends_on: Vec<(String, DependencyCondition)>,
    pub healthcheck: Option<ContainerHealthcheck>,
    pub replicas: u32,
    pub restart: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    pub memory_mb: Option<u64>,
    pub cpu_mhz: Option<u64>,
}

/// A mount as the file says it: a host path (made absolute) or a named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub kind: MountKind,
    /// The host path, or the volume's name in the file.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Reads values under their paths.
pub(super) struct Reader<'a> {
    pub(super) input: &'a Input<'a>,
}

pub(super) fn invalid(path: &str, message: impl Into<String>) -> StackError {
    StackError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Reader<'_> {
    pub(super) fn vars(&self) -> Vars<'_> {
        Vars {
            values: self.input.variables,
            secret: self.input.secret_variables,
        }
    }

    /// A scalar's text, interpolated, with the secret variables it used.
    pub(super) fn scalar(&self, v: &Value, path: &str) -> Result<Interpolated, StackError> {
        let raw = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(path, "must be a string")),
        };
        interpolate(&raw, self.vars()).map_err(|e| invalid(path, e))
    }

    /// A scalar's text, which must not use a secret variable.
    pub(super) fn text(&self, v: &Value, path: &str) -> Result<String, StackError> {
        let i = self.scalar(v, path)?;
        if let Some(name) = i.secrets.iter().next() {
            return Err(invalid(
                path,
                format!(
                    "uses the secret variable `{name}`; secret variables may only be used in `environment` values"
                ),
            ));
        }
        Ok(i.text)
    }

    pub(super) fn number(&self, v: &Value, path: &str) -> Result<u64, StackError> {
        let t = self.text(v, path)?;
        t.trim()
            .parse()
            .map_err(|_| invalid(path, format!("must be a whole number, not `{t}`")))
    }

    pub(super) fn duration(&self, v: &Value, path: &str) -> Result<HumanDuration, StackError> {
        let t = self.text(v, path)?;
        t.parse().map_err(|e| invalid(path, format!("{e}")))
    }

    /// A string (split as a shell would) or a list of strings.
    pub(super) fn words(&self, v: &Value, path: &str) -> Result<Vec<String>, StackError> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, w)| self.text(w, &format!("{path}[{i}]")))
                .collect(),
            other => {
                let t = self.text(other, path)?;
                split_words(&t).map_err(|e| invalid(path, e))
            }
        }
    }

    /// A mapping of strings, or a list of `KEY=VALUE` (`KEY` alone: `None`).
    pub(super) fn pairs(
        &self,
        v: &Value,
        path: &str,
    ) -> Result<Vec<(String, Option<Value>)>, StackError> {
        match v {
            Value::Mapping(m) => Ok(m
                .iter()
                .map(|(k, v)| (key_text(k), (!v.is_null()).then(|| v.clone())))
                .collect()),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    let Value::String(s) = item else {
                        return Err(invalid(&p, "must be a `KEY=VALUE` string"));
                    };
                    Ok(match s.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(Value::String(v.to_owned()))),
                        None => (s.clone(), None),
                    })
                })
                .collect(),
            _ => Err(invalid(path, "must be a mapping or a list")),
        }
    }
}

/// Reads a compose document (keys already checked by [`super::keys`]).
pub(super) fn read(doc: &Value, input: &Input<'_>) -> Result<Compose, StackError> {
    let r = Reader { input };
    let top = doc
        .as_mapping()
        .ok_or_else(|| invalid("(top)", "a compose file is a mapping with `services`"))?;
    let mut volumes = BTreeSet::new();
    if let Some(v) = top.get("volumes") {
        let m = v
            .as_mapping()
            .ok_or_else(|| invalid("volumes", "must be a mapping of volume names"))?;
        for (name, _) in m {
            let name = key_text(name);
            check_volume_name(&name, &format!("volumes.{name}"))?;
            volumes.insert(name);
        }
    }
    let services = top
        .get("services")
        .and_then(Value::as_mapping)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("services", "is required: a mapping of at least one service"))?;
    if services.len() > MAX_SERVICES {
        return Err(invalid("services", format!("at most {MAX_SERVICES}")));
    }
    let mut out = BTreeMap::new();
    for (name, v) in services {
        let name = key_text(name);
        let path = format!("services.{name}");
        check_service_name(&name, &path)?;
        let m = v
            .as_mapping()
            .ok_or_else(|| invalid(&path, "must be a mapping"))?;
        out.insert(name, r.service(m, &path, &volumes)?);
    }
    check_dependencies(&out)?;
    Ok(Compose {
        services: out,
        volumes,
    })
}

fn check_service_name(name: &str, path: &str) -> Result<(), StackError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            "a service name is 1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        ))
    }
}

fn check_volume_name(name: &str, path: &str) -> Result<(), StackError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            "a volume name is 1 to 64 letters, digits, `-`, `_` and `.`, starting with a letter or digit",
        ))
    }
}

impl Reader<'_> {
    fn service(
        &self,
        m: &Mapping,
        path: &str,
        volumes: &BTreeSet<String>,
    ) -> Result<Service, StackError> {
        let at = |k: &str| format!("{path}.{k}");
        let image = m
            .get("image")
            .map(|v| self.text(v, &at("image")))
            .transpose()?
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| invalid(&at("image"), "is required (`build` is not supported)"))?;
        if image.chars().any(char::is_whitespace) {
            return Err(invalid(
                &at("image"),
                format!("`{image}` is not an image name"),
            ));
        }
        let command = m
            .get("command")
            .map(|v| self.words(v, &at("command")))
            .transpose()?;
        let entrypoint = m
            .get("entrypoint")
            .map(|v| self.words(v, &at("entrypoint")))
            .transpose()?;
        let (env, secret_env) = self.environment(m, path)?;
        let ports = match m.get("ports") {
            None => Vec::new(),
            Some(v) => self.ports(v, &at("ports"))?,
        };
        let mounts = match m.get("volumes") {
            None => Vec::new(),
            Some(v) => self.volumes(v, &at("volumes"), volumes)?,
        };
        let depends_on = match m.get("depends_on") {
            None => Vec::new(),
            Some(v) => self.depends_on(v, &at("depends_on"))?,
        };
        let healthcheck = m
            .get("healthcheck")
            .map(|v| self.healthcheck(v, &at("healthcheck")))
            .transpose()?;
        let restart = match m.get("restart") {
            None => restart_policy("no", &at("restart"))?,
            Some(v) => restart_policy(&self.text(v, &at("restart"))?, &at("restart"))?,
        };
        let mut labels = BTreeMap::new();
        if let Some(v) = m.get("labels") {
            for (k, v) in self.pairs(v, &at("labels"))? {
                let p = format!("{path}.labels.{k}");
                if k.starts_with("windflow.") || k.starts_with("com.docker.compose.") {
                    return Err(invalid(
                        &p,
                        "`windflow.` and `com.docker.compose.` labels are set by windflow",
                    ));
                }
                let value = v
                    .map(|v| self.text(&v, &p))
                    .transpose()?
                    .unwrap_or_default();
                labels.insert(k, value);
            }
        }
        let (mut replicas, mut memory_mb, mut cpu_mhz) = (1, None, None);
        if let Some(d) = m.get("deploy") {
            let d = d
                .as_mapping()
                .ok_or_else(|| invalid(&at("deploy"), "must be a mapping"))?;
            if let Some(v) = d.get("replicas") {
                let p = at("deploy.replicas");
                replicas = u32::try_from(self.number(v, &p)?)
                    .ok()
                    .filter(|n| *n <= MAX_REPLICAS)
                    .ok_or_else(|| invalid(&p, format!("must be 0 to {MAX_REPLICAS}")))?;
            }
            let limits = d
                .get("resources")
                .and_then(|r| r.get("limits"))
                .and_then(Value::as_mapping);
            if let Some(l) = limits {
                if let Some(v) = l.get("memory") {
                    let p = at("deploy.resources.limits.memory");
                    memory_mb = Some(memory(&self.text(v, &p)?).map_err(|e| invalid(&p, e))?);
                }
                if let Some(v) = l.get("cpus") {
                    let p = at("deploy.resources.limits.cpus");
                    let t = self.text(v, &p)?;
                    let cpus: f64 = t
                        .trim()
                        .parse()
                        .ok()
                        .filter(|c: &f64| c.is_finite() && *c > 0.0 && *c <= 1024.0)
                        .ok_or_else(|| {
                            invalid(
                                &p,
                                format!("must be a number of CPUs such as 0.5, not `{t}`"),
                            )
                        })?;
                    // One CPU counts as 1000 MHz.
                    cpu_mhz = Some((cpus * 1000.0).round().max(1.0) as u64);
                }
            }
        }
        Ok(Service {
            image,
            command,
            entrypoint,
            env,
            secret_env,
            ports,
            volumes: mounts,
            depends_on,
            healthcheck,
            replicas,
            restart,
            labels,
            memory_mb,
            cpu_mhz,
        })
    }

    /// `env_file`s (sent inline by the CLI, by their path as written) and then
    /// `environment`, whose entries win.
    #[allow(clippy::type_complexity)]
    fn environment(
        &self,
        m: &Mapping,
        path: &str,
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), StackError> {
        let mut env = BTreeMap::new();
        let mut secret = BTreeMap::new();
        for (i, (file, required)) in env_files(m, path)?.into_iter().enumerate() {
            let p = format!("{path}.env_file[{i}]");
            match self.input.env_files.get(&file) {
                Some(text) => {
                    for (k, v) in
                        parse_env_file(text).map_err(|e| invalid(&p, format!("{file}: {e}")))?
                    {
                        env.insert(k, v);
                    }
                }
                None if required => {
                    return Err(invalid(
                        &p,
                        format!(
                            "`{file}` was not sent with the file (the CLI reads it next to the compose file)"
                        ),
                    ));
                }
                None => {}
            }
        }
        if let Some(v) = m.get("environment") {
            for (k, v) in self.pairs(v, &format!("{path}.environment"))? {
                let p = format!("{path}.environment.{k}");
                if !valid_env_key(&k) {
                    return Err(invalid(&p, "is not a valid variable name"));
                }
                let value = match v {
                    Some(v) => self.scalar(&v, &p)?,
                    // `KEY` alone: the variable's value where the file was deployed from.
                    None => match self.input.variables.get(&k) {
                        Some(val) => Interpolated {
                            text: val.clone(),
                            secrets: self
                                .input
                                .secret_variables
                                .contains(&k)
                                .then(|| k.clone())
                                .into_iter()
                                .collect(),
                        },
                        None => continue,
                    },
                };
                if value.secrets.is_empty() {
                    secret.remove(&k);
                    env.insert(k, value.text);
                } else {
                    env.remove(&k);
                    secret.insert(k, value.text);
                }
            }
        }
        Ok((env, secret))
    }
}

/// Every `depends_on` names another service, `service_healthy` one with a health check,
/// and there is no cycle.
fn check_dependencies(services: &BTreeMap<String, Service>) -> Result<(), StackError> {
    for (name, s) in services {
        for (dep, condition) in &s.depends_on {
            let path = format!("services.{name}.depends_on.{dep}");
            let Some(d) = services.get(dep) else {
                return Err(invalid(
                    &path,
                    format!("`{dep}` is not a service of this file"),
                ));
            };
            if dep == name {
                return Err(invalid(&path, "a service cannot depend on itself"));
            }
            if d.replicas == 0 {
                return Err(invalid(
                    &path,
                    format!("`{dep}` has 0 replicas: nothing would ever start"),
                ));
            }
            let checked = d
                .healthcheck
                .as_ref()
                .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
            if *condition == DependencyCondition::Healthy && !checked {
                return Err(invalid(
                    &path,
                    format!("service_healthy needs a `healthcheck` on `{dep}`"),
                ));
            }
        }
    }
    // Depth-first, marking services in progress.
    fn visit<'a>(
        name: &'a str,
        services: &'a BTreeMap<String, Service>,
        state: &mut BTreeMap<&'a str, bool>,
        trail: &mut Vec<&'a str>,
    ) -> Result<(), StackError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                trail.push(name);
                let from = trail.iter().position(|n| *n == name).unwrap_or(0);
                return Err(invalid(
                    "depends_on",
                    format!(
                        "services depend on each other in a cycle: {}",
                        trail[from..].join(" → ")
                    ),
                ));
            }
            None => {}
        }
        state.insert(name, false);
        trail.push(name);
        if let Some(s) = services.get(name) {
            for (dep, _) in &s.depends_on {
                visit(dep, services, state, trail)?;
            }
        }
        trail.pop();
        state.insert(name, true);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for name in services.keys() {
        visit(name, services, &mut state, &mut Vec::new())?;
    }
    Ok(())
}
