//! The `docker` object of a job's body: a docker task's image, command, ports, mounts and
//! labels, each checked with an error that names the field.

use std::collections::BTreeSet;

use windflow_protocol::{DockerConfig, Mount, MountKind, PortMapping, PortProtocol};

use super::ApiError;
use super::body::Fields;

const MAX_PORTS: usize = 32;
const MAX_MOUNTS: usize = 32;
const MAX_LABELS: usize = 64;
const MAX_TEXT: usize = 4096;

/// Reads `docker` from a job's body (required for `"driver": "docker"`).
pub fn parse(body: &mut Fields) -> Result<DockerConfig, ApiError> {
    let Some(mut f) = body.optional_object("docker")? else {
        return Err(ApiError::invalid_field(
            "docker",
            "is required for a docker task: {\"image\": …}",
        ));
    };
    let image = f.required_str("image")?;
    if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid_field(
            &f.path("image"),
            "must be an image reference such as `busybox:latest` (no spaces, at most 512 bytes)",
        ));
    }
    let command = f.optional_str("command")?;
    if command.as_ref().is_some_and(|c| c.trim().is_empty()) {
        return Err(ApiError::invalid_field(
            &f.path("command"),
            "must not be empty (leave it out to run the image's own)",
        ));
    }
    let args = f.optional_string_list("args")?;
    // Absent or empty: the image's own entrypoint.
    let entrypoint = Some(f.optional_string_list("entrypoint")?).filter(|e| !e.is_empty());
    for (name, text) in command.iter().map(|c| ("command".to_owned(), c)).chain(
        args.iter()
            .enumerate()
            .map(|(i, a)| (format!("args[{i}]"), a)),
    ) {
        if text.len() > MAX_TEXT || text.contains('\0') {
            return Err(ApiError::invalid_field(
                &f.path(&name),
                format!("must be at most {MAX_TEXT} bytes, without NUL"),
            ));
        }
    }
    let workdir = f.optional_str("workdir")?;
    if let Some(dir) = &workdir
        && !dir.starts_with('/')
    {
        return Err(ApiError::invalid_field(
            &f.path("workdir"),
            format!("must be an absolute path in the container, not `{dir}`"),
        ));
    }
    let ports = ports(&mut f)?;
    let mounts = mounts(&mut f)?;
    let labels = f.optional_string_map("labels")?;
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid_field(
            &f.path("labels"),
            format!("at most {MAX_LABELS}"),
        ));
    }
    if let Some(k) = labels.keys().find(|k| k.starts_with("windflow.")) {
        return Err(ApiError::invalid_field(
            &f.path(&format!("labels.{k}")),
            "`windflow.` labels are the agent's own",
        ));
    }
    f.finish()?;
    Ok(DockerConfig {
        image,
        command,
        args,
        entrypoint,
        workdir,
        ports,
        mounts,
        labels,
        network: None,
        aliases: Vec::new(),
        healthcheck: None,
        depends_on: Vec::new(),
    })
}

fn port_number(f: &mut Fields, name: &str) -> Result<Option<u16>, ApiError> {
    match f.optional_u32(name)? {
        None => Ok(None),
        Some(n) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_field(&f.path(name), "must be 1 to 65535")),
    }
}

fn ports(f: &mut Fields) -> Result<Vec<PortMapping>, ApiError> {
    let items = f.optional_object_list("ports")?;
    if items.len() > MAX_PORTS {
        return Err(ApiError::invalid_field(
            &f.path("ports"),
            format!("at most {MAX_PORTS}"),
        ));
    }
    let mut labels = BTreeSet::new();
    let mut ports = Vec::with_capacity(items.len());
    for mut p in items {
        let container_port = port_number(&mut p, "container_port")?
            .ok_or_else(|| ApiError::invalid_field(&p.path("container_port"), "is required"))?;
        let host_port = port_number(&mut p, "host_port")?;
        let protocol = match p.optional_str("protocol")?.as_deref() {
            None | Some("tcp") => PortProtocol::Tcp,
            Some("udp") => PortProtocol::Udp,
            Some(other) => {
                return Err(ApiError::invalid_field(
                    &p.path("protocol"),
                    format!("must be tcp or udp, not `{other}`"),
                ));
            }
        };
        let label = p
            .optional_str("label")?
            .unwrap_or_else(|| container_port.to_string());
        if label.is_empty()
            || label.len() > 64
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(ApiError::invalid_field(
                &p.path("label"),
                "must be 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        if !labels.insert(label.clone()) {
            return Err(ApiError::invalid_field(
                &p.path("label"),
                format!("`{label}` is already another port's"),
            ));
        }
        p.finish()?;
        ports.push(PortMapping {
            label,
            container_port,
            host_port,
            protocol,
            host_ip: None,
        });
    }
    Ok(ports)
}

fn mounts(f: &mut Fields) -> Result<Vec<Mount>, ApiError> {
    let items = f.optional_object_list("mounts")?;
    if items.len() > MAX_MOUNTS {
        return Err(ApiError::invalid_field(
            &f.path("mounts"),
            format!("at most {MAX_MOUNTS}"),
        ));
    }
    let mut mounts = Vec::with_capacity(items.len());
    for mut m in items {
        let kind = match m.required_str("type")?.as_str() {
            "bind" => MountKind::Bind,
            "volume" => MountKind::Volume,
            other => {
                return Err(ApiError::invalid_field(
                    &m.path("type"),
                    format!("must be bind or volume, not `{other}`"),
                ));
            }
        };
        let source = m.required_str("source")?;
        let source_ok = match kind {
            MountKind::Bind => source.starts_with('/'),
            MountKind::Volume => {
                !source.is_empty()
                    && source.len() <= 128
                    && source
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            }
        };
        if !source_ok {
            return Err(ApiError::invalid_field(
                &m.path("source"),
                match kind {
                    MountKind::Bind => format!("must be an absolute host path, not `{source}`"),
                    MountKind::Volume => format!(
                        "must be a volume name (letters, digits, `-`, `_`, `.`), not `{source}`"
                    ),
                },
            ));
        }
        let target = m.required_str("target")?;
        if !target.starts_with('/') || target == "/" {
            return Err(ApiError::invalid_field(
                &m.path("target"),
                format!("must be an absolute path in the container other than `/`, not `{target}`"),
            ));
        }
        let read_only = m.optional_bool("read_only")?.unwrap_or(false);
        m.finish()?;
        mounts.push(Mount {
            kind,
            source,
            target,
            read_only,
        });
    }
    Ok(mounts)
}
