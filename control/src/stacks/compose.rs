//! A compose file's supported keys, read into typed services: short and long syntaxes,
//! values interpolated ([`super::interpolate`]), each bad value an error naming its path.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::{
    ContainerHealthcheck, DependencyCondition, HumanDuration, MountKind, PortMapping, PortProtocol,
    RestartMode, RestartPolicy,
};

use super::interpolate::{Interpolated, Vars, interpolate};
use super::keys::key_text;
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
struct Reader<'a> {
    input: &'a Input<'a>,
}

fn invalid(path: &str, message: impl Into<String>) -> StackError {
    StackError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Reader<'_> {
    fn vars(&self) -> Vars<'_> {
        Vars {
            values: self.input.variables,
            secret: self.input.secret_variables,
        }
    }

    /// A scalar's text, interpolated, with the secret variables it used.
    fn scalar(&self, v: &Value, path: &str) -> Result<Interpolated, StackError> {
        let raw = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(path, "must be a string")),
        };
        interpolate(&raw, self.vars()).map_err(|e| invalid(path, e))
    }

    /// A scalar's text, which must not use a secret variable.
    fn text(&self, v: &Value, path: &str) -> Result<String, StackError> {
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

    fn number(&self, v: &Value, path: &str) -> Result<u64, StackError> {
        let t = self.text(v, path)?;
        t.trim()
            .parse()
            .map_err(|_| invalid(path, format!("must be a whole number, not `{t}`")))
    }

    fn duration(&self, v: &Value, path: &str) -> Result<HumanDuration, StackError> {
        let t = self.text(v, path)?;
        t.parse().map_err(|e| invalid(path, format!("{e}")))
    }

    /// A string (split as a shell would) or a list of strings.
    fn words(&self, v: &Value, path: &str) -> Result<Vec<String>, StackError> {
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
    fn pairs(&self, v: &Value, path: &str) -> Result<Vec<(String, Option<Value>)>, StackError> {
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

    fn ports(&self, v: &Value, path: &str) -> Result<Vec<PortMapping>, StackError> {
        let items = v
            .as_sequence()
            .ok_or_else(|| invalid(path, "must be a list"))?;
        let mut out: Vec<PortMapping> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let mut port = match item {
                Value::Mapping(m) => self.long_port(m, &p)?,
                other => short_port(&self.text(other, &p)?).map_err(|e| invalid(&p, e))?,
            };
            if port.label.is_empty() {
                port.label = match port.protocol {
                    PortProtocol::Tcp => port.container_port.to_string(),
                    PortProtocol::Udp => format!("{}-udp", port.container_port),
                };
            }
            if out.iter().any(|o| o.label == port.label) {
                return Err(invalid(
                    &p,
                    format!("port `{}` is listed twice", port.label),
                ));
            }
            out.push(port);
        }
        Ok(out)
    }

    fn long_port(&self, m: &Mapping, path: &str) -> Result<PortMapping, StackError> {
        let at = |k: &str| format!("{path}.{k}");
        let target = m
            .get("target")
            .ok_or_else(|| invalid(&at("target"), "is required"))?;
        let container_port = port_number(&self.text(target, &at("target"))?)
            .map_err(|e| invalid(&at("target"), e))?;
        let host_port = m
            .get("published")
            .map(|v| {
                self.text(v, &at("published"))
                    .and_then(|t| port_number(&t).map_err(|e| invalid(&at("published"), e)))
            })
            .transpose()?;
        let protocol = match m.get("protocol") {
            None => PortProtocol::Tcp,
            Some(v) => protocol(&self.text(v, &at("protocol"))?)
                .map_err(|e| invalid(&at("protocol"), e))?,
        };
        if let Some(v) = m.get("mode") {
            let mode = self.text(v, &at("mode"))?;
            if mode != "host" && mode != "ingress" {
                return Err(invalid(
                    &at("mode"),
                    format!("must be host or ingress, not `{mode}`"),
                ));
            }
        }
        let host_ip = m
            .get("host_ip")
            .map(|v| self.text(v, &at("host_ip")))
            .transpose()?;
        if let Some(ip) = &host_ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(invalid(
                &at("host_ip"),
                format!("`{ip}` is not an IP address"),
            ));
        }
        let label = m
            .get("name")
            .map(|v| self.text(v, &at("name")))
            .transpose()?
            .unwrap_or_default();
        if !label.is_empty()
            && (label.len() > 64
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)))
        {
            return Err(invalid(
                &at("name"),
                "must be 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        Ok(PortMapping {
            label,
            container_port,
            host_port,
            protocol,
            host_ip,
        })
    }

    fn volumes(
        &self,
        v: &Value,
        path: &str,
        named: &BTreeSet<String>,
    ) -> Result<Vec<Volume>, StackError> {
        let items = v
            .as_sequence()
            .ok_or_else(|| invalid(path, "must be a list"))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let (kind, source, target, read_only) = match item {
                Value::Mapping(m) => {
                    let field = |k: &str| -> Result<Option<String>, StackError> {
                        m.get(k)
                            .map(|v| self.text(v, &format!("{p}.{k}")))
                            .transpose()
                    };
                    let kind = match field("type")?.as_deref() {
                        Some("bind") => Some(MountKind::Bind),
                        Some("volume") => Some(MountKind::Volume),
                        None => None,
                        Some(other) => {
                            return Err(invalid(
                                &format!("{p}.type"),
                                format!("must be bind or volume, not `{other}`"),
                            ));
                        }
                    };
                    let source = field("source")?.ok_or_else(|| {
                        invalid(
                            &format!("{p}.source"),
                            "is required (anonymous volumes are not supported: name one)",
                        )
                    })?;
                    let target = field("target")?
                        .ok_or_else(|| invalid(&format!("{p}.target"), "is required"))?;
                    let read_only = match m.get("read_only") {
                        None => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return Err(invalid(
                                &format!("{p}.read_only"),
                                "must be true or false",
                            ));
                        }
                    };
                    (kind, source, target, read_only)
                }
                other => {
                    let t = self.text(other, &p)?;
                    let parts: Vec<&str> = t.split(':').collect();
                    let (source, target, mode) = match parts.as_slice() {
                        [_] => {
                            return Err(invalid(
                                &p,
                                format!(
                                    "`{t}` is an anonymous volume, which is not supported: name one (`data:{t}`) and declare it under `volumes`"
                                ),
                            ));
                        }
                        [s, t] => (*s, *t, None),
                        [s, t, m] => (*s, *t, Some(*m)),
                        _ => {
                            return Err(invalid(&p, format!("`{t}` is not SOURCE:TARGET[:ro|rw]")));
                        }
                    };
                    let read_only = match mode {
                        None | Some("rw") => false,
                        Some("ro") => true,
                        Some(m) => {
                            return Err(invalid(
                                &p,
                                format!("mode `{m}` is not supported (ro or rw)"),
                            ));
                        }
                    };
                    (None, source.to_owned(), target.to_owned(), read_only)
                }
            };
            let path_like =
                source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
            let kind = kind.unwrap_or(if path_like {
                MountKind::Bind
            } else {
                MountKind::Volume
            });
            let source = match kind {
                MountKind::Bind => self.host_path(&source, &p)?,
                MountKind::Volume => {
                    if !named.contains(&source) {
                        return Err(invalid(
                            &p,
                            format!(
                                "volume `{source}` is not declared under the top-level `volumes`"
                            ),
                        ));
                    }
                    source
                }
            };
            if !target.starts_with('/') {
                return Err(invalid(
                    &p,
                    format!("the target `{target}` must be an absolute path"),
                ));
            }
            out.push(Volume {
                kind,
                source,
                target,
                read_only,
            });
        }
        Ok(out)
    }

    /// A bind's host path, absolute: a relative one is the compose file's directory's.
    fn host_path(&self, source: &str, path: &str) -> Result<String, StackError> {
        if source.starts_with('/') {
            return Ok(source.to_owned());
        }
        if source.starts_with('~') {
            return Err(invalid(
                path,
                format!("`{source}`: `~` is not expanded; give an absolute path"),
            ));
        }
        let base = self.input.base_dir.ok_or_else(|| {
            invalid(path, format!("`{source}` is relative, and no directory of the compose file was given; give an absolute path"))
        })?;
        let rel = source.trim_start_matches("./");
        let joined = if rel == "." || rel.is_empty() {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("{}/{rel}", base.trim_end_matches('/'))
        };
        Ok(joined)
    }

    fn depends_on(
        &self,
        v: &Value,
        path: &str,
    ) -> Result<Vec<(String, DependencyCondition)>, StackError> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    Ok((
                        self.text(d, &format!("{path}[{i}]"))?,
                        DependencyCondition::Started,
                    ))
                })
                .collect(),
            Value::Mapping(m) => m
                .iter()
                .map(|(name, d)| {
                    let name = key_text(name);
                    let p = format!("{path}.{name}.condition");
                    let condition = match d.get("condition") {
                        None => DependencyCondition::Started,
                        Some(c) => match self.text(c, &p)?.as_str() {
                            "service_started" => DependencyCondition::Started,
                            "service_healthy" => DependencyCondition::Healthy,
                            other => {
                                return Err(invalid(
                                    &p,
                                    format!(
                                        "must be service_started or service_healthy, not `{other}`"
                                    ),
                                ));
                            }
                        },
                    };
                    Ok((name, condition))
                })
                .collect(),
            _ => Err(invalid(path, "must be a list of services or a mapping")),
        }
    }

    fn healthcheck(&self, v: &Value, path: &str) -> Result<ContainerHealthcheck, StackError> {
        let m = v
            .as_mapping()
            .ok_or_else(|| invalid(path, "must be a mapping"))?;
        let at = |k: &str| format!("{path}.{k}");
        let disabled = match m.get("disable") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid(&at("disable"), "must be true or false")),
        };
        let test = if disabled {
            vec!["NONE".to_owned()]
        } else {
            match m.get("test") {
                None => return Err(invalid(&at("test"), "is required (or `disable: true`)")),
                Some(Value::Sequence(items)) => {
                    let words: Vec<String> = items
                        .iter()
                        .enumerate()
                        .map(|(i, w)| self.text(w, &format!("{path}.test[{i}]")))
                        .collect::<Result<_, _>>()?;
                    match words.first().map(String::as_str) {
                        Some("NONE") if words.len() == 1 => words,
                        Some("CMD") if words.len() >= 2 => words,
                        Some("CMD-SHELL") if words.len() >= 2 => {
                            vec!["CMD-SHELL".to_owned(), words[1..].join(" ")]
                        }
                        _ => {
                            return Err(invalid(
                                &at("test"),
                                "a list starts with CMD (then the program and its arguments), CMD-SHELL (then a command) or is [NONE]",
                            ));
                        }
                    }
                }
                Some(other) => vec!["CMD-SHELL".to_owned(), self.text(other, &at("test"))?],
            }
        };
        let duration = |k: &str| m.get(k).map(|v| self.duration(v, &at(k))).transpose();
        let retries = m
            .get("retries")
            .map(|v| {
                self.number(v, &at("retries")).and_then(|n| {
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n <= 1000)
                        .ok_or_else(|| invalid(&at("retries"), "must be at most 1000"))
                })
            })
            .transpose()?;
        Ok(ContainerHealthcheck {
            test,
            interval: duration("interval")?,
            timeout: duration("timeout")?,
            start_period: duration("start_period")?,
            retries,
        })
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

/// The `env_file` entries: a path, a list of paths, or long forms with `required`.
fn env_files(m: &Mapping, path: &str) -> Result<Vec<(String, bool)>, StackError> {
    let p = format!("{path}.env_file");
    match m.get("env_file") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![(s.clone(), true)]),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok((s.clone(), true)),
                Value::Mapping(e) => {
                    let file = e
                        .get("path")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(&format!("{p}[{i}].path"), "is required"))?;
                    let required = match e.get("required") {
                        None => true,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return Err(invalid(
                                &format!("{p}[{i}].required"),
                                "must be true or false",
                            ));
                        }
                    };
                    Ok((file.to_owned(), required))
                }
                _ => Err(invalid(&format!("{p}[{i}]"), "must be a path")),
            })
            .collect(),
        Some(_) => Err(invalid(&p, "must be a path or a list of paths")),
    }
}

/// The paths of every `env_file` of a compose text, for the CLI to read and send.
pub fn env_file_paths(doc: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Some(services) = doc.get("services").and_then(Value::as_mapping) {
        for s in services.values() {
            if let Some(m) = s.as_mapping()
                && let Ok(files) = env_files(m, "")
            {
                out.extend(files.into_iter().map(|(f, _)| f));
            }
        }
    }
    out.into_iter().collect()
}

/// The `environment` entries without a value (`- KEY`, `KEY:`): taken from where the
/// file is deployed from, like interpolated variables.
pub fn passthrough_names(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        return out;
    };
    for s in services.values() {
        match s.get("environment") {
            Some(Value::Mapping(m)) => out.extend(
                m.iter()
                    .filter(|(_, v)| v.is_null())
                    .map(|(k, _)| key_text(k)),
            ),
            Some(Value::Sequence(items)) => out.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.contains('='))
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    out
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped, quotes around a value taken off.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not KEY=VALUE", n + 1))?;
        let k = k.trim();
        if !valid_env_key(k) {
            return Err(format!(
                "line {}: `{k}` is not a valid variable name",
                n + 1
            ));
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn port_number(t: &str) -> Result<u16, String> {
    if t.contains('-') {
        return Err(format!("`{t}`: port ranges are not supported"));
    }
    t.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{t}` is not a port (1 to 65535)"))
}

fn protocol(t: &str) -> Result<PortProtocol, String> {
    match t {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        other => Err(format!("must be tcp or udp, not `{other}`")),
    }
}

/// `"80"`, `"8080:80"`, `"127.0.0.1:8080:80"`, `"[::1]:8080:80"`, any with `/udp`.
pub fn short_port(t: &str) -> Result<PortMapping, String> {
    let (rest, proto) = match t.rsplit_once('/') {
        Some((r, p)) => (r, protocol(p)?),
        None => (t, PortProtocol::Tcp),
    };
    let (host_ip, rest) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6
                .split_once("]:")
                .ok_or_else(|| format!("`{t}` is not [IP]:HOST:CONTAINER"))?;
            (Some(ip.to_owned()), after)
        }
        None => match rest.matches(':').count() {
            2 => {
                let (ip, after) = rest.split_once(':').unwrap_or_default();
                (Some(ip.to_owned()), after)
            }
            _ => (None, rest),
        },
    };
    if let Some(ip) = &host_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("`{ip}` is not an IP address"));
    }
    let (host_port, container_port) = match rest.split_once(':') {
        Some((h, c)) => (
            if h.is_empty() {
                None
            } else {
                Some(port_number(h)?)
            },
            port_number(c)?,
        ),
        None => (None, port_number(rest)?),
    };
    Ok(PortMapping {
        label: String::new(),
        container_port,
        host_port,
        protocol: proto,
        host_ip,
    })
}

/// compose's `restart` as a node's restart policy: `no` (never restarted: the
/// allocation fails and the scheduler replaces it), `always` and `unless-stopped`
/// (restarted without end, waiting out a window after 5 quick exits), `on-failure[:N]`
/// (N restarts, 3 by default, within an hour, then failed). A service's task is restarted
/// whatever its exit code.
pub fn restart_policy(t: &str, path: &str) -> Result<RestartPolicy, StackError> {
    let secs = HumanDuration::from_secs;
    Ok(match t {
        // `false`: an unquoted `no` read as YAML 1.1 would have it.
        "no" | "false" => RestartPolicy {
            attempts: 0,
            interval: secs(60),
            delay: secs(1),
            mode: RestartMode::Fail,
        },
        "always" | "unless-stopped" => RestartPolicy {
            attempts: 5,
            interval: secs(5 * 60),
            delay: secs(1),
            mode: RestartMode::Delay,
        },
        other => {
            let attempts = match other.strip_prefix("on-failure") {
                Some("") => 3,
                Some(n) => n
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| invalid(path, format!("`{other}` is not on-failure[:N]")))?,
                None => {
                    return Err(invalid(
                        path,
                        format!(
                            "must be no, always, on-failure[:N] or unless-stopped, not `{other}`"
                        ),
                    ));
                }
            };
            RestartPolicy {
                attempts,
                interval: secs(3600),
                delay: secs(1),
                mode: RestartMode::Fail,
            }
        }
    })
}

/// `512M`, `1g`, `1.5GB`, `268435456` (bytes) → MiB.
fn memory(t: &str) -> Result<u64, String> {
    let s = t.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, factor) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1.0 / 1024.0),
        Some('m') => (&s[..s.len() - 1], 1.0),
        Some('g') => (&s[..s.len() - 1], 1024.0),
        _ => (s, 1.0 / (1024.0 * 1024.0)),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("`{t}` is not a memory size such as 512M or 1G"))?;
    let mb = (n * factor).ceil();
    if mb > 16.0 * 1024.0 * 1024.0 {
        return Err(format!("`{t}` is too large"));
    }
    Ok((mb as u64).max(4))
}

/// Splits a command string as a POSIX shell would split words: quotes and backslashes,
/// no expansions.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("an unclosed `'`".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("an unclosed `\"`".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("an unclosed `\"`".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}
