//! `windflow job create NAME --image IMG …`: the flags of a docker task, turned into the
//! `driver` and `docker` fields of the job's body.

use anyhow::Context as _;
use clap::Args;
use serde_json::{Map, Value, json};

/// A docker task's flags (given `--image`, the job runs a container instead of `--cmd`
/// under `sh -c`; `--cmd` is then the container's program and `--workdir` its directory).
#[derive(Debug, Args, Default)]
pub struct DockerArgs {
    /// Run the task as a container of this image (pulled when the node lacks it).
    #[arg(long)]
    pub image: Option<String>,
    /// An argument to the container's command (or its whole command without --cmd);
    /// repeat for more.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Replace the image's entrypoint; repeat for each word.
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Publish a container port: `[LABEL=][HOST:]CONTAINER[/udp]`, e.g. 8080 (a host port
    /// the engine picks), http=80:8080 (host port 80); repeat for more.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<String>,
    /// Mount `SOURCE:TARGET[:ro]`: a host path (starting with /) or a named volume.
    #[arg(long = "volume", value_name = "SOURCE:TARGET")]
    pub volumes: Vec<String>,
    /// A container label, KEY=VALUE; repeat for more.
    #[arg(long = "container-label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// `[LABEL=][HOST:]CONTAINER[/udp|/tcp]` as the API's port object.
fn port(spec: &str) -> anyhow::Result<Value> {
    let bad = || format!("--port `{spec}` must be [LABEL=][HOST:]CONTAINER[/udp]");
    let (label, rest) = match spec.split_once('=') {
        Some((l, r)) => (Some(l), r),
        None => (None, spec),
    };
    let (ports, protocol) = match rest.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (rest, None),
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (Some(h.parse::<u16>().with_context(bad)?), c),
        None => (None, ports),
    };
    let container: u16 = container.parse().with_context(bad)?;
    let mut p = Map::new();
    p.insert("container_port".into(), container.into());
    if let Some(h) = host {
        p.insert("host_port".into(), h.into());
    }
    if let Some(l) = label {
        p.insert("label".into(), l.into());
    }
    if let Some(proto) = protocol {
        p.insert("protocol".into(), proto.into());
    }
    Ok(p.into())
}

/// `SOURCE:TARGET[:ro]` as the API's mount object.
fn mount(spec: &str) -> anyhow::Result<Value> {
    let mut parts = spec.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        anyhow::bail!("--volume `{spec}` must be SOURCE:TARGET[:ro]");
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => anyhow::bail!("--volume `{spec}`: `{other}` must be ro or rw"),
    };
    let kind = if source.starts_with('/') {
        "bind"
    } else {
        "volume"
    };
    Ok(json!({"type": kind, "source": source, "target": target, "read_only": read_only}))
}

/// Puts a docker task into `body` when `--image` is given (with `cmd` and `workdir` as the
/// container's); otherwise refuses docker-only flags and leaves an exec task to the caller.
pub fn add_task(
    body: &mut Map<String, Value>,
    args: DockerArgs,
    cmd: Option<String>,
    workdir: Option<String>,
) -> anyhow::Result<()> {
    let Some(image) = args.image else {
        if !(args.args.is_empty()
            && args.entrypoint.is_empty()
            && args.ports.is_empty()
            && args.volumes.is_empty()
            && args.labels.is_empty())
        {
            anyhow::bail!(
                "--arg, --entrypoint, --port, --volume and --container-label need --image"
            );
        }
        let cmd = cmd.context("give --cmd (a command for sh -c) or --image (a container)")?;
        body.insert("command".into(), cmd.into());
        if let Some(w) = workdir {
            body.insert("workdir".into(), w.into());
        }
        return Ok(());
    };
    let mut d = Map::new();
    d.insert("image".into(), image.into());
    if let Some(c) = cmd {
        d.insert("command".into(), c.into());
    }
    if let Some(w) = workdir {
        d.insert("workdir".into(), w.into());
    }
    if !args.args.is_empty() {
        d.insert("args".into(), args.args.into());
    }
    if !args.entrypoint.is_empty() {
        d.insert("entrypoint".into(), args.entrypoint.into());
    }
    let ports = args
        .ports
        .iter()
        .map(|p| port(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !ports.is_empty() {
        d.insert("ports".into(), ports.into());
    }
    let mounts = args
        .volumes
        .iter()
        .map(|v| mount(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !mounts.is_empty() {
        d.insert("mounts".into(), mounts.into());
    }
    let mut labels = Map::new();
    for pair in args.labels {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--container-label `{pair}` must be KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.into());
    }
    if !labels.is_empty() {
        d.insert("labels".into(), labels.into());
    }
    body.insert("driver".into(), "docker".into());
    body.insert("docker".into(), d.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_volumes_read_as_the_api_takes_them() {
        assert_eq!(port("8080").unwrap(), json!({"container_port": 8080}));
        assert_eq!(
            port("http=80:8080/udp").unwrap(),
            json!({"container_port": 8080, "host_port": 80, "label": "http", "protocol": "udp"})
        );
        assert!(port("x:80").is_err());
        assert!(port("http=").is_err());
        assert_eq!(
            mount("/srv:/data:ro").unwrap(),
            json!({"type": "bind", "source": "/srv", "target": "/data", "read_only": true})
        );
        assert_eq!(mount("cache:/c").unwrap()["type"], "volume");
        assert!(mount("nocolon").is_err());
        assert!(mount("a:/b:rx").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        // Flags flattened into `job create` from several files must not collide.
        use clap::CommandFactory as _;
        super::super::Cli::command().debug_assert();
    }

    #[test]
    fn docker_flags_need_an_image() {
        let mut body = Map::new();
        let args = DockerArgs {
            ports: vec!["80".into()],
            ..Default::default()
        };
        assert!(add_task(&mut body, args, Some("ls".into()), None).is_err());
        let args = DockerArgs {
            image: Some("busybox".into()),
            args: vec!["-f".into()],
            ..Default::default()
        };
        add_task(&mut body, args, Some("httpd".into()), Some("/www".into())).unwrap();
        assert_eq!(body["driver"], "docker");
        assert_eq!(
            body["docker"],
            json!({"image": "busybox", "command": "httpd", "workdir": "/www", "args": ["-f"]})
        );
        assert!(!body.contains_key("command"));
    }
}
