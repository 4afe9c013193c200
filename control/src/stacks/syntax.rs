//! compose's short text forms, read without a file: ports (`"127.0.0.1:8080:80/udp"`),
//! `restart`, memory sizes, shell-split commands, env files and their paths.

use std::collections::BTreeSet;

use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::{HumanDuration, PortMapping, PortProtocol, RestartMode, RestartPolicy};

use super::StackError;
use super::compose::invalid;
use super::keys::key_text;

/// The `env_file` entries: a path, a list of paths, or long forms with `required`.
pub(super) fn env_files(m: &Mapping, path: &str) -> Result<Vec<(String, bool)>, StackError> {
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

pub(super) fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn port_number(t: &str) -> Result<u16, String> {
    if t.contains('-') {
        return Err(format!("`{t}`: port ranges are not supported"));
    }
    t.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{t}` is not a port (1 to 65535)"))
}

pub(super) fn protocol(t: &str) -> Result<PortProtocol, String> {
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
pub(super) fn memory(t: &str) -> Result<u64, String> {
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
