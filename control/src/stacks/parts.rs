//! The long-and-short-form keys of a service: ports, volumes, `depends_on`, healthcheck.

use std::collections::BTreeSet;

use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::{
    ContainerHealthcheck, DependencyCondition, MountKind, PortMapping, PortProtocol,
};

use super::StackError;
use super::compose::{Reader, Volume, invalid};
use super::keys::key_text;
use super::syntax::{port_number, protocol, short_port};

impl Reader<'_> {
    pub(super) fn ports(&self, v: &Value, path: &str) -> Result<Vec<PortMapping>, StackError> {
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

    pub(super) fn volumes(
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

    pub(super) fn depends_on(
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

    pub(super) fn healthcheck(
        &self,
        v: &Value,
        path: &str,
    ) -> Result<ContainerHealthcheck, StackError> {
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
