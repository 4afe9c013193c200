//! A read compose file → one service job named after the stack: a task group per
//! compose service (`count` = replicas) holding one docker task of the service's name.
//!
//! Names resolve as in compose: every container of the stack joins one network of its
//! node (per agent, see the agent's docker driver) with its service name as an alias,
//! and all of a stack's groups are pinned to one node (a `node.name` constraint), so the
//! network is shared. `depends_on` is waited for by that node's agent before it creates
//! the dependent container (running, or healthy by the engine's check).

use std::collections::BTreeMap;

use windflow_protocol::{
    CheckKind, Constraint, Dependency, DockerConfig, DriverConfig, HealthCheck, HumanDuration,
    JobSpec, JobType, Mount, MountKind, Namespace, Operator, Resources, RetryPolicy, TaskGroup,
    TaskSpec,
};

use super::StackError;
use super::compose::Compose;

/// The label naming a container's stack, as docker compose sets it.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// The label naming a container's service in its stack.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
/// What a stack's service asks for when its file says nothing (compose sets no limit;
/// here the memory ask is also the container's hard limit).
pub const SERVICE_DEFAULT: Resources = Resources {
    cpu_mhz: 100,
    memory_mb: 256,
    disk_mb: 0,
};

/// A stack's job, and the plaintext secret env of each task (to seal before proposing).
#[derive(Debug)]
pub struct StackJob {
    pub spec: JobSpec,
    pub secret_env: BTreeMap<String, BTreeMap<String, String>>,
}

/// The logical network of a stack (the agent prefixes its own ID).
pub fn network_of(namespace: &Namespace, stack: &str) -> String {
    format!("{}_{stack}", namespace.as_str())
}

/// The engine's name of a stack's named volume, as compose names them (`<stack>_<vol>`),
/// prefixed with the namespace outside `default`.
pub fn volume_of(namespace: &Namespace, stack: &str, volume: &str) -> String {
    if namespace.is_default() {
        format!("{stack}_{volume}")
    } else {
        format!("{}_{stack}_{volume}", namespace.as_str())
    }
}

/// The job of stack `name`; `node` pins every group to that node's name.
pub fn to_job(
    name: &str,
    namespace: &Namespace,
    compose: &Compose,
    node: Option<&str>,
) -> Result<StackJob, StackError> {
    let mut groups = Vec::with_capacity(compose.services.len());
    let mut secret_env = BTreeMap::new();
    for (service, s) in &compose.services {
        if s.replicas > 1
            && let Some(i) = s.ports.iter().position(|p| p.host_port.is_some())
        {
            return Err(StackError::Invalid {
                path: format!("services.{service}.ports[{i}]"),
                message: format!(
                    "a fixed host port with {} replicas: a stack's replicas share one node; leave the host port out",
                    s.replicas
                ),
            });
        }
        let mut labels = s.labels.clone();
        labels.insert(LABEL_PROJECT.to_owned(), name.to_owned());
        labels.insert(LABEL_SERVICE.to_owned(), service.clone());
        let mounts = s
            .volumes
            .iter()
            .map(|v| Mount {
                kind: v.kind,
                source: match v.kind {
                    MountKind::Bind => v.source.clone(),
                    MountKind::Volume => volume_of(namespace, name, &v.source),
                },
                target: v.target.clone(),
                read_only: v.read_only,
            })
            .collect();
        let docker = DockerConfig {
            image: s.image.clone(),
            command: None,
            args: s.command.clone().unwrap_or_default(),
            entrypoint: s.entrypoint.clone(),
            workdir: None,
            ports: s.ports.clone(),
            mounts,
            labels,
            network: Some(network_of(namespace, name)),
            aliases: vec![service.clone()],
            healthcheck: s.healthcheck.clone(),
            depends_on: s
                .depends_on
                .iter()
                .map(|(task, condition)| Dependency {
                    task: task.clone(),
                    condition: *condition,
                })
                .collect(),
        };
        let checked = s
            .healthcheck
            .as_ref()
            .filter(|h| h.test.first().is_some_and(|t| t != "NONE"));
        let checks = checked
            .map(|h| {
                vec![HealthCheck {
                    name: "healthcheck".into(),
                    kind: CheckKind::Container {
                        task: service.clone(),
                    },
                    interval: HumanDuration::from_secs(1),
                    timeout: HumanDuration::from_secs(5),
                    grace: h.start_period.unwrap_or(HumanDuration::from_secs(0)),
                }]
            })
            .unwrap_or_default();
        let task = TaskSpec {
            name: service.clone(),
            driver: DriverConfig::Docker(Box::new(docker)),
            env: s.env.clone(),
            secret_env: BTreeMap::new(),
            timeout: None,
            retry: RetryPolicy::default(),
            resources: Resources {
                cpu_mhz: s.cpu_mhz.unwrap_or(SERVICE_DEFAULT.cpu_mhz),
                memory_mb: s.memory_mb.unwrap_or(SERVICE_DEFAULT.memory_mb),
                disk_mb: 0,
            },
        };
        if !s.secret_env.is_empty() {
            secret_env.insert(service.clone(), s.secret_env.clone());
        }
        groups.push(TaskGroup {
            name: service.clone(),
            count: s.replicas,
            tasks: vec![task],
            constraints: node
                .map(|n| Constraint {
                    attribute: "node.name".into(),
                    operator: Operator::Equal,
                    value: n.to_owned(),
                })
                .into_iter()
                .collect(),
            placement: Default::default(),
            restart: s.restart,
            reschedule: Default::default(),
            update: Default::default(),
            checks,
        });
    }
    Ok(StackJob {
        spec: JobSpec {
            name: name.to_owned(),
            namespace: namespace.clone(),
            job_type: JobType::Service,
            groups,
            target: Default::default(),
            retention: None,
        },
        secret_env,
    })
}

/// Whether a job is a stack's: a service job whose tasks all carry its name as their
/// project label.
pub fn is_stack(spec: &JobSpec) -> bool {
    spec.job_type == JobType::Service
        && !spec.groups.is_empty()
        && spec.tasks().all(|t| match &t.driver {
            DriverConfig::Docker(d) => d.labels.get(LABEL_PROJECT) == Some(&spec.name),
            DriverConfig::Exec(_) => false,
        })
}

/// The node a stack's groups are pinned to, if any.
pub fn pinned_node(spec: &JobSpec) -> Option<&str> {
    spec.groups
        .iter()
        .flat_map(|g| &g.constraints)
        .find(|c| c.attribute == "node.name" && c.operator == Operator::Equal)
        .map(|c| c.value.as_str())
}
