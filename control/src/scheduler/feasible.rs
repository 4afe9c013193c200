//! Which nodes can take a task group: the drivers its tasks need, its constraints on node
//! attributes, and free resources. Each refusal says why, for `windflow job show`.

use std::fmt;

use windflow_protocol::{
    Constraint, Dimension, DriverKind, Eligibility, Node, NodeStatus, Operator, Resources,
    TaskGroup,
};

/// Why a node cannot take a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filtered {
    /// Its certificate was revoked: its agent can no longer connect.
    Revoked,
    /// Its agent missed its heartbeats for the grace period.
    Down,
    /// Its agent has not connected yet.
    Initializing,
    /// A drain is moving its work away.
    Draining,
    /// Marked ineligible (`windflow node eligibility NODE off`, or a finished drain).
    Ineligible,
    MissingDriver(DriverKind),
    /// The constraint, as the user wrote it.
    Constraint(String),
    Exhausted(Dimension),
}

impl fmt::Display for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filtered::Revoked => f.write_str("revoked"),
            Filtered::Down => f.write_str("down"),
            Filtered::Initializing => f.write_str("initializing (its agent has not connected)"),
            Filtered::Draining => f.write_str("draining"),
            Filtered::Ineligible => f.write_str("ineligible"),
            Filtered::MissingDriver(d) => write!(f, "driver {} missing", d.as_str()),
            Filtered::Constraint(c) => write!(f, "constraint `{c}` not met"),
            Filtered::Exhausted(d) => write!(f, "{d} exhausted"),
        }
    }
}

/// A group's constraints, with their regular expressions compiled once per plan.
pub struct Checks {
    drivers: Vec<DriverKind>,
    constraints: Vec<(Constraint, Matcher)>,
    pub ask: Resources,
}

enum Matcher {
    Plain,
    Regex(regex::Regex),
    Version(Vec<(Cmp, Vec<u64>)>),
    Set(Vec<String>),
}

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Checks {
    /// Compiles a group's checks; a malformed constraint is an error naming it.
    pub fn of(group: &TaskGroup) -> Result<Checks, String> {
        let mut drivers: Vec<DriverKind> = group.tasks.iter().map(|t| t.driver.kind()).collect();
        drivers.sort();
        drivers.dedup();
        let constraints = group
            .constraints
            .iter()
            .map(|c| Ok((c.clone(), Matcher::of(c)?)))
            .collect::<Result<_, String>>()?;
        Ok(Checks {
            drivers,
            constraints,
            ask: group.resources(),
        })
    }

    /// Whether `node`, with `free` resources left, can take one instance of the group.
    pub fn check(&self, node: &Node, free: &Resources) -> Result<(), Filtered> {
        if let Some(why) = unschedulable(node) {
            return Err(why);
        }
        if let Some(d) = self.drivers.iter().find(|d| !node.drivers.contains(d)) {
            return Err(Filtered::MissingDriver(*d));
        }
        for (c, m) in &self.constraints {
            if !m.holds(c, attribute(node, &c.attribute)) {
                return Err(Filtered::Constraint(show(c)));
            }
        }
        self.ask
            .exceeds(free)
            .map_or(Ok(()), |d| Err(Filtered::Exhausted(d)))
    }
}

/// Why no new work may go to the node at all, whatever it asks: revoked, draining,
/// ineligible, down or not connected yet.
pub fn unschedulable(node: &Node) -> Option<Filtered> {
    if node.revoked_at.is_some() {
        Some(Filtered::Revoked)
    } else if node.drain.is_some() {
        Some(Filtered::Draining)
    } else if node.eligibility == Eligibility::Ineligible {
        Some(Filtered::Ineligible)
    } else {
        match node.status {
            NodeStatus::Ready => None,
            NodeStatus::Down => Some(Filtered::Down),
            NodeStatus::Initializing => Some(Filtered::Initializing),
        }
    }
}

fn show(c: &Constraint) -> String {
    let op = match c.operator {
        Operator::Equal => "=",
        Operator::NotEqual => "!=",
        Operator::Regex => "regex",
        Operator::Version => "version",
        Operator::SetContains => "set_contains",
    };
    format!("{} {op} {}", c.attribute, c.value)
}

/// A node's attribute by name: `hostname`, `label.<key>` (from its join token), or a
/// fingerprinted one (`os`, `arch`…).
fn attribute<'n>(node: &'n Node, name: &str) -> Option<&'n str> {
    if let Some(label) = name.strip_prefix("label.") {
        return node.labels.get(label).map(String::as_str);
    }
    match name {
        "hostname" | "node.name" => Some(node.name.as_str()),
        _ => node.attributes.get(name).map(String::as_str),
    }
}

impl Matcher {
    fn of(c: &Constraint) -> Result<Matcher, String> {
        Ok(match c.operator {
            Operator::Equal | Operator::NotEqual => Matcher::Plain,
            Operator::Regex => Matcher::Regex(
                regex::Regex::new(&c.value)
                    .map_err(|e| format!("constraint on `{}`: bad regex: {e}", c.attribute))?,
            ),
            Operator::Version => Matcher::Version(
                parse_requirement(&c.value)
                    .ok_or_else(|| format!("constraint on `{}`: `{}` is not a version requirement such as `>= 1.2, < 2`", c.attribute, c.value))?,
            ),
            Operator::SetContains => {
                Matcher::Set(c.value.split(',').map(|s| s.trim().to_owned()).collect())
            }
        })
    }

    /// A missing attribute satisfies only `!=`.
    fn holds(&self, c: &Constraint, value: Option<&str>) -> bool {
        match (self, value) {
            (Matcher::Plain, v) if c.operator == Operator::NotEqual => v != Some(&c.value),
            (_, None) => false,
            (Matcher::Plain, Some(v)) => v == c.value,
            (Matcher::Regex(r), Some(v)) => r.is_match(v),
            (Matcher::Version(req), Some(v)) => parse_version(v)
                .is_some_and(|v| req.iter().all(|(cmp, want)| compare(&v, *cmp, want))),
            (Matcher::Set(set), Some(v)) => set.iter().any(|s| s == v),
        }
    }
}

/// `1.2.3`, `v28.2.2`, `6.1.0-13-amd64`: the leading dotted numbers.
fn parse_version(s: &str) -> Option<Vec<u64>> {
    let s = s.trim().trim_start_matches('v');
    let core = s
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let parts: Vec<u64> = core
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then_some(parts)
}

/// `>= 1.2, < 2`: comparisons joined by commas, all of which must hold.
fn parse_requirement(s: &str) -> Option<Vec<(Cmp, Vec<u64>)>> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            let (cmp, rest) = [
                (">=", Cmp::Ge),
                ("<=", Cmp::Le),
                ("!=", Cmp::Ne),
                ("=", Cmp::Eq),
                (">", Cmp::Gt),
                ("<", Cmp::Lt),
            ]
            .into_iter()
            .find_map(|(p, c)| part.strip_prefix(p).map(|r| (c, r)))
            .unwrap_or((Cmp::Eq, part));
            Some((cmp, parse_version(rest)?))
        })
        .collect()
}

fn compare(have: &[u64], cmp: Cmp, want: &[u64]) -> bool {
    // Missing components count as 0: `1.2` = `1.2.0`.
    let len = have.len().max(want.len());
    let at = |v: &[u64], i| v.get(i).copied().unwrap_or(0);
    let order = (0..len)
        .map(|i| at(have, i).cmp(&at(want, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal);
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq => order == Equal,
        Cmp::Ne => order != Equal,
        Cmp::Lt => order == Less,
        Cmp::Le => order != Greater,
        Cmp::Gt => order == Greater,
        Cmp::Ge => order != Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use windflow_protocol::{NodeId, TaskSpec, Timestamp};

    fn node(attrs: &[(&str, &str)]) -> Node {
        Node {
            id: NodeId(1),
            name: "host-a".into(),
            drivers: vec![DriverKind::Exec],
            registered_at: Timestamp(0),
            last_seen_at: None,
            agent_version: None,
            resources: Resources {
                cpu_mhz: 4000,
                memory_mb: 8192,
                disk_mb: 0,
            },
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            labels: BTreeMap::from([("zone".to_owned(), "eu-1".to_owned())]),
            revoked_at: None,
            status: NodeStatus::Ready,
            eligibility: Default::default(),
            drain: None,
        }
    }

    fn group(constraints: &[(&str, Operator, &str)]) -> TaskGroup {
        TaskGroup {
            name: "g".into(),
            count: 1,
            tasks: vec![TaskSpec::exec("t", "true")],
            constraints: constraints
                .iter()
                .map(|(a, o, v)| Constraint {
                    attribute: a.to_string(),
                    operator: *o,
                    value: v.to_string(),
                })
                .collect(),
            placement: Default::default(),
            restart: Default::default(),
            reschedule: Default::default(),
            update: Default::default(),
            checks: Vec::new(),
        }
    }

    fn check(constraints: &[(&str, Operator, &str)], n: &Node) -> Result<(), Filtered> {
        Checks::of(&group(constraints))
            .unwrap()
            .check(n, &n.resources)
    }

    #[test]
    fn each_operator_matches_what_it_says() {
        use Operator::*;
        let n = node(&[
            ("os", "linux"),
            ("kernel", "6.1.0-13-amd64"),
            ("arch", "x86_64"),
        ]);
        assert!(check(&[("os", Equal, "linux")], &n).is_ok());
        assert!(check(&[("os", Equal, "windows")], &n).is_err());
        assert!(check(&[("os", NotEqual, "windows")], &n).is_ok());
        assert!(
            check(&[("zone", NotEqual, "eu")], &n).is_ok(),
            "missing satisfies !="
        );
        assert!(check(&[("zone", Equal, "eu")], &n).is_err());
        assert!(check(&[("hostname", Regex, "^host-[a-c]$")], &n).is_ok());
        assert!(check(&[("arch", Regex, "^arm")], &n).is_err());
        assert!(check(&[("kernel", Version, ">= 5.10, < 7")], &n).is_ok());
        assert!(check(&[("kernel", Version, ">= 6.2")], &n).is_err());
        assert!(check(&[("arch", SetContains, "aarch64, x86_64")], &n).is_ok());
        assert!(check(&[("arch", SetContains, "aarch64,riscv64")], &n).is_err());
        assert!(check(&[("label.zone", Equal, "eu-1")], &n).is_ok());
        assert!(check(&[("label.zone", Regex, "^us-")], &n).is_err());
        let mut revoked = n.clone();
        revoked.revoked_at = Some(Timestamp(1));
        assert_eq!(check(&[], &revoked), Err(Filtered::Revoked));
        let mut down = n.clone();
        down.status = NodeStatus::Down;
        assert_eq!(check(&[], &down), Err(Filtered::Down));
        let mut new = n.clone();
        new.status = NodeStatus::Initializing;
        assert_eq!(check(&[], &new), Err(Filtered::Initializing));
        let mut off = n.clone();
        off.eligibility = Eligibility::Ineligible;
        assert_eq!(check(&[], &off), Err(Filtered::Ineligible));
        off.drain = Some(windflow_protocol::DrainStrategy {
            started_at: Timestamp(1),
            deadline: None,
        });
        assert_eq!(check(&[], &off), Err(Filtered::Draining));
        assert_eq!(
            check(&[("os", Equal, "linux"), ("arch", Equal, "arm")], &n),
            Err(Filtered::Constraint("arch = arm".into()))
        );
    }

    #[test]
    fn malformed_constraints_are_named() {
        let bad = Checks::of(&group(&[("kernel", Operator::Version, "newest")]));
        assert!(bad.err().unwrap().contains("kernel"));
        let bad = Checks::of(&group(&[("os", Operator::Regex, "(")]));
        assert!(bad.err().unwrap().contains("regex"));
    }

    #[test]
    fn resources_and_drivers_filter_too() {
        let n = node(&[]);
        let checks = Checks::of(&group(&[])).unwrap();
        let tight = Resources {
            cpu_mhz: 4000,
            memory_mb: 10,
            disk_mb: 0,
        };
        assert_eq!(
            checks.check(&n, &tight),
            Err(Filtered::Exhausted(Dimension::Memory))
        );
        let mut no_exec = n.clone();
        no_exec.drivers.clear();
        assert_eq!(
            checks.check(&no_exec, &n.resources),
            Err(Filtered::MissingDriver(DriverKind::Exec))
        );
    }

    #[test]
    fn versions_compare_by_component() {
        let v = |s| parse_version(s).unwrap();
        assert!(compare(&v("1.10"), Cmp::Gt, &v("1.9")));
        assert!(compare(&v("1.2"), Cmp::Eq, &v("1.2.0")));
        assert!(compare(&v("v28.2.2"), Cmp::Ge, &v("28")));
        assert!(parse_version("abc").is_none());
    }
}
