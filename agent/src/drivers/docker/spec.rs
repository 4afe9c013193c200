//! A docker task → the container to create: image, command, env, working dir, ports,
//! mounts, labels, and the task's resources as the engine's limits (memory as a hard
//! limit, CPU MHz as the container's CPU shares, as Nomad does).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding,
};
use windflow_protocol::{ContainerHealthcheck, DockerConfig, HumanDuration, MountKind, TaskSpec};

use super::{LABEL_AGENT, Owner};

/// The fewest CPU shares the engine accepts.
const MIN_CPU_SHARES: i64 = 2;

/// The engine's key for a container port (`80/tcp`).
pub(super) fn port_key(p: &windflow_protocol::PortMapping) -> String {
    format!("{}/{}", p.container_port, p.protocol.as_str())
}

/// The engine's name of a task's `network` on this agent: each agent has its own, so two
/// agents (or clusters) on one engine never share one.
pub(crate) fn network_name(agent: &str, network: &str) -> String {
    format!("windflow-{agent}-{network}")
}

/// The engine's form of a container health check (durations in nanoseconds).
fn health_config(h: &ContainerHealthcheck) -> HealthConfig {
    let nanos =
        |d: Option<HumanDuration>| d.map(|d| i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX));
    HealthConfig {
        test: Some(h.test.clone()),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        start_period: nanos(h.start_period),
        retries: h.retries.map(i64::from),
        ..Default::default()
    }
}

/// The container to create for `task` (its env as given: the caller adds its own).
pub(super) fn create_body(
    task: &TaskSpec,
    cfg: &DockerConfig,
    env: &BTreeMap<String, String>,
    owner: &Owner,
    agent: &str,
) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = cfg
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("windflow."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(owner.labels().into_iter().map(|(k, v)| (k.to_owned(), v)));
    labels.insert(LABEL_AGENT.to_owned(), agent.to_owned());
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &cfg.ports {
        bindings
            .entry(port_key(p))
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                // Empty: the engine picks a free port, which the agent reads back.
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }
    let mut exposed: Vec<String> = bindings.keys().cloned().collect();
    exposed.sort();
    let mounts = cfg
        .mounts
        .iter()
        .map(|m| Mount {
            typ: Some(match m.kind {
                MountKind::Bind => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
            }),
            source: Some(m.source.clone()),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let r = task.resources;
    let network = cfg.network.as_ref().map(|n| network_name(agent, n));
    let networking_config = network.as_ref().map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.clone(),
            EndpointSettings {
                aliases: (!cfg.aliases.is_empty()).then(|| cfg.aliases.clone()),
                ..Default::default()
            },
        )])),
    });
    ContainerCreateBody {
        image: Some(cfg.image.clone()),
        cmd: cfg.cmd(),
        entrypoint: cfg.entrypoint.clone(),
        working_dir: cfg.workdir.clone(),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: cfg.healthcheck.as_ref().map(health_config),
        networking_config,
        host_config: Some(HostConfig {
            network_mode: network,
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: Some(mounts),
            memory: i64::try_from(r.memory_mb.saturating_mul(1024 * 1024))
                .ok()
                .filter(|m| *m > 0),
            cpu_shares: Some(
                i64::try_from(r.cpu_mhz)
                    .unwrap_or(i64::MAX)
                    .max(MIN_CPU_SHARES),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_protocol::{
        DriverConfig, JobId, PortMapping, PortProtocol, Resources, RunId, TaskSpec,
    };

    fn task() -> (TaskSpec, DockerConfig) {
        let cfg = DockerConfig {
            image: "busybox:latest".into(),
            command: Some("httpd".into()),
            args: vec!["-f".into(), "-p".into(), "8080".into()],
            entrypoint: None,
            workdir: Some("/srv".into()),
            ports: vec![
                PortMapping {
                    label: "http".into(),
                    container_port: 8080,
                    host_port: None,
                    protocol: PortProtocol::Tcp,
                    host_ip: None,
                },
                PortMapping {
                    label: "dns".into(),
                    container_port: 53,
                    host_port: Some(5353),
                    protocol: PortProtocol::Udp,
                    host_ip: Some("127.0.0.1".into()),
                },
            ],
            mounts: vec![windflow_protocol::Mount {
                kind: MountKind::Volume,
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
            }],
            labels: BTreeMap::from([
                ("team".into(), "web".into()),
                ("windflow.alloc".into(), "forged".into()),
            ]),
            network: None,
            aliases: Vec::new(),
            healthcheck: None,
            depends_on: Vec::new(),
        };
        let mut t = TaskSpec::exec("web", "unused");
        t.driver = DriverConfig::Docker(Box::new(cfg.clone()));
        t.resources = Resources {
            cpu_mhz: 500,
            memory_mb: 128,
            disk_mb: 0,
        };
        (t, cfg)
    }

    #[test]
    fn a_task_becomes_its_container() {
        let (t, cfg) = task();
        let owner = Owner::Run {
            run: RunId(7),
            job: JobId(3),
            task: "web".into(),
            attempt: 2,
        };
        let env = BTreeMap::from([("K".to_owned(), "V".to_owned())]);
        let body = create_body(&t, &cfg, &env, &owner, "a1b2");
        assert_eq!(body.image.as_deref(), Some("busybox:latest"));
        assert_eq!(
            body.cmd,
            Some(vec![
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "8080".into()
            ])
        );
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.env, Some(vec!["K=V".to_owned()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels["team"], "web");
        // The agent's labels win over the task's, which may not set `windflow.*`.
        assert!(!labels.contains_key("windflow.alloc"));
        assert_eq!(labels["windflow.run"], "R7");
        assert_eq!(labels["windflow.job"], "J3");
        assert_eq!(labels["windflow.attempt"], "2");
        assert_eq!(labels["windflow.agent"], "a1b2");
        assert_eq!(
            body.exposed_ports,
            Some(vec!["53/udp".to_owned(), "8080/tcp".to_owned()])
        );
        let host = body.host_config.unwrap();
        let ports = host.port_bindings.unwrap();
        assert_eq!(
            ports["8080/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("")
        );
        assert_eq!(
            ports["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );
        assert_eq!(host.memory, Some(128 * 1024 * 1024));
        assert_eq!(host.cpu_shares, Some(500));
        let mount = &host.mounts.unwrap()[0];
        assert_eq!(mount.typ, Some(MountType::VOLUME));
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn a_stack_task_joins_its_network_under_its_alias_with_its_health_check() {
        let (mut t, mut cfg) = task();
        cfg.network = Some("default_shop".into());
        cfg.aliases = vec!["web".into()];
        cfg.healthcheck = Some(ContainerHealthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(HumanDuration::from_secs(2)),
            timeout: None,
            start_period: Some(HumanDuration::from_millis(500)),
            retries: Some(3),
        });
        t.driver = DriverConfig::Docker(Box::new(cfg.clone()));
        let owner = Owner::Alloc {
            alloc: windflow_protocol::AllocId(4),
            job: JobId(3),
            task: "web".into(),
        };
        let body = create_body(&t, &cfg, &BTreeMap::new(), &owner, "a1b2");
        let net = "windflow-a1b2-default_shop";
        assert_eq!(
            body.host_config.as_ref().unwrap().network_mode.as_deref(),
            Some(net)
        );
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints[net].aliases, Some(vec!["web".to_owned()]));
        let h = body.healthcheck.unwrap();
        assert_eq!(h.test, Some(vec!["CMD".to_owned(), "true".to_owned()]));
        assert_eq!(h.interval, Some(2_000_000_000));
        assert_eq!(h.timeout, None);
        assert_eq!(h.start_period, Some(500_000_000));
        assert_eq!(h.retries, Some(3));
        // The UDP port was asked on 127.0.0.1 only.
        let ports = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(
            ports["53/udp"].as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        // Without a network: the engine's default, no endpoint config.
        let (t, cfg) = task();
        let body = create_body(&t, &cfg, &BTreeMap::new(), &owner, "a1b2");
        assert!(body.networking_config.is_none());
        assert!(body.host_config.unwrap().network_mode.is_none());
    }
}
