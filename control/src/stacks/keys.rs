//! Which compose keys are understood. Every other key, anywhere, is collected with its
//! path (`services.web.build`) so that one error lists them all; none is ignored. Keys
//! starting `x-` are compose's extension fields, which compose itself ignores by design
//! (they hold YAML anchors), and are accepted.

use serde_yaml_ng::{Mapping, Value};

const TOP: &[&str] = &["name", "version", "services", "volumes"];
const SERVICE: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "deploy",
    "restart",
    "labels",
];
const PORT: &[&str] = &["target", "published", "host_ip", "protocol", "mode", "name"];
const VOLUME: &[&str] = &["type", "source", "target", "read_only"];
const DEPENDENCY: &[&str] = &["condition"];
const HEALTHCHECK: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "start_period",
    "retries",
    "disable",
];
const DEPLOY: &[&str] = &["replicas", "resources"];
const RESOURCES: &[&str] = &["limits"];
const LIMITS: &[&str] = &["memory", "cpus"];
const ENV_FILE: &[&str] = &["path", "required"];
const NAMED_VOLUME: &[&str] = &[];

/// The path of every key of `doc` this translator does not support, in file order.
pub fn unsupported(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(top) = doc.as_mapping() else {
        return out;
    };
    check(top, "", TOP, &mut out);
    if let Some(services) = top.get("services").and_then(Value::as_mapping) {
        for (name, service) in services {
            let path = format!("services.{}", key_text(name));
            let Some(service) = service.as_mapping() else {
                continue;
            };
            check(service, &path, SERVICE, &mut out);
            each_map_item(service, "ports", &path, PORT, &mut out);
            each_map_item(service, "volumes", &path, VOLUME, &mut out);
            each_map_item(service, "env_file", &path, ENV_FILE, &mut out);
            if let Some(deps) = service.get("depends_on").and_then(Value::as_mapping) {
                for (dep, v) in deps {
                    if let Some(m) = v.as_mapping() {
                        let p = format!("{path}.depends_on.{}", key_text(dep));
                        check(m, &p, DEPENDENCY, &mut out);
                    }
                }
            }
            if let Some(h) = service.get("healthcheck").and_then(Value::as_mapping) {
                check(h, &format!("{path}.healthcheck"), HEALTHCHECK, &mut out);
            }
            if let Some(d) = service.get("deploy").and_then(Value::as_mapping) {
                let p = format!("{path}.deploy");
                check(d, &p, DEPLOY, &mut out);
                if let Some(r) = d.get("resources").and_then(Value::as_mapping) {
                    let p = format!("{p}.resources");
                    check(r, &p, RESOURCES, &mut out);
                    if let Some(l) = r.get("limits").and_then(Value::as_mapping) {
                        check(l, &format!("{p}.limits"), LIMITS, &mut out);
                    }
                }
            }
        }
    }
    if let Some(volumes) = top.get("volumes").and_then(Value::as_mapping) {
        for (name, v) in volumes {
            if let Some(m) = v.as_mapping() {
                let p = format!("volumes.{}", key_text(name));
                check(m, &p, NAMED_VOLUME, &mut out);
            }
        }
    }
    out
}

/// A mapping key as text, for paths.
pub fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_owned(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check(map: &Mapping, path: &str, known: &[&str], out: &mut Vec<String>) {
    for k in map.keys() {
        let k = key_text(k);
        if !known.contains(&k.as_str()) && !k.starts_with("x-") {
            out.push(join(path, &k));
        }
    }
}

/// The long-form (mapping) items of the list at `service.key`.
fn each_map_item(service: &Mapping, key: &str, path: &str, known: &[&str], out: &mut Vec<String>) {
    if let Some(items) = service.get(key).and_then(Value::as_sequence) {
        for (i, item) in items.iter().enumerate() {
            if let Some(m) = item.as_mapping() {
                check(m, &format!("{path}.{key}[{i}]"), known, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_is_listed_with_its_path() {
        let doc: Value = serde_yaml_ng::from_str(
            r#"
version: "3.8"
networks: {}
x-common: &c {}
services:
  web:
    image: nginx
    build: .
    x-note: fine
    ports:
      - target: 80
        published: 8080
        app_protocol: http
    deploy:
      replicas: 2
      placement: {}
      resources:
        limits: {memory: 64M, pids: 5}
  db:
    image: postgres
    networks: [back]
    healthcheck: {test: "true", start_interval: 1s}
    depends_on:
      web: {condition: service_started, restart: true}
volumes:
  data: {driver: local}
"#,
        )
        .unwrap();
        assert_eq!(
            unsupported(&doc),
            [
                "networks",
                "services.web.build",
                "services.web.ports[0].app_protocol",
                "services.web.deploy.placement",
                "services.web.deploy.resources.limits.pids",
                "services.db.networks",
                "services.db.depends_on.web.restart",
                "services.db.healthcheck.start_interval",
                "volumes.data.driver",
            ]
        );
    }
}
