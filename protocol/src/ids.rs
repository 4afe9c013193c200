//! Typed identifiers. Each kind has its own prefix (`J12`, `R7`, `N3`, `CJ12`), is shown
//! and parsed in that form everywhere (JSON, CLI, logs), and is a number inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not an ID of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdParseError {
    pub kind: &'static str,
    pub input: String,
}

impl fmt::Display for IdParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a valid {} ID", self.input, self.kind)
    }
}

impl std::error::Error for IdParseError {}

fn parse_prefixed(input: &str, prefix: &str, kind: &'static str) -> Result<u64, IdParseError> {
    let err = || IdParseError {
        kind,
        input: input.to_owned(),
    };
    let digits = input.strip_prefix(prefix).ok_or_else(err)?;
    // Leading zeros or signs would give two spellings of one ID.
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    digits.parse().map_err(|_| err())
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_prefixed(s, $prefix, $kind).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_u64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    u64::deserialize(d).map($name)
                }
            }
        }
    };
}

prefixed_id!(
    /// A job: `J<n>`.
    JobId, "J", "job"
);
prefixed_id!(
    /// One run of a job: `R<n>`.
    RunId, "R", "run"
);
prefixed_id!(
    /// A registered agent host: `N<n>`.
    NodeId, "N", "node"
);

prefixed_id!(
    /// A join token, for servers or agents: `JT<n>`.
    JoinTokenId, "JT", "join token"
);

prefixed_id!(
    /// A user: `U<n>`.
    UserId, "U", "user"
);

prefixed_id!(
    /// An API token (a named one, or the session of a `windflow login`): `T<n>`.
    TokenId, "T", "token"
);

prefixed_id!(
    /// One entry of the audit log: `A<n>`.
    AuditId, "A", "audit entry"
);

prefixed_id!(
    /// One placed instance of a task group: `AL<n>`.
    AllocId, "AL", "allocation"
);

prefixed_id!(
    /// An evaluation, a reason for the scheduler to look at a job: `EV<n>`.
    EvalId, "EV", "evaluation"
);

prefixed_id!(
    /// A pipeline, a named DAG of jobs: `P<n>`.
    PipelineId, "P", "pipeline"
);

prefixed_id!(
    /// One run of a pipeline: `PR<n>`.
    PipelineRunId, "PR", "pipeline run"
);

prefixed_id!(
    /// A schedule, a cron expression pointing at jobs and pipelines: `S<n>`.
    ScheduleId, "S", "schedule"
);

prefixed_id!(
    /// A webhook subscription to run events: `W<n>`.
    WebhookId, "W", "webhook"
);

prefixed_id!(
    /// One rollout of a new service job version: `D<n>`.
    DeploymentId, "D", "deployment"
);

impl NodeId {
    /// The name an agent's certificate carries for this node.
    pub fn certificate_name(&self) -> String {
        format!("node-{self}")
    }

    /// The node a certificate name (`node-N3`) stands for.
    pub fn from_certificate_name(name: &str) -> Result<Self, IdParseError> {
        name.strip_prefix("node-")
            .ok_or_else(|| IdParseError {
                kind: "node certificate name",
                input: name.to_owned(),
            })?
            .parse()
    }
}

/// A context: the captured output of a job (`CJ<n>`, numbered like its job) or of a
/// pipeline (`CP<n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ContextId {
    Job(JobId),
    Pipeline(PipelineId),
}

impl ContextId {
    /// The context a job writes to.
    pub fn of_job(job: JobId) -> Self {
        ContextId::Job(job)
    }

    /// The context a pipeline writes to.
    pub fn of_pipeline(pipeline: PipelineId) -> Self {
        ContextId::Pipeline(pipeline)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextId::Job(j) => write!(f, "CJ{}", j.0),
            ContextId::Pipeline(p) => write!(f, "CP{}", p.0),
        }
    }
}

impl FromStr for ContextId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("CJ") {
            parse_prefixed(s, "CJ", "context").map(|n| ContextId::Job(JobId(n)))
        } else {
            parse_prefixed(s, "CP", "context").map(|n| ContextId::Pipeline(PipelineId(n)))
        }
    }
}

impl From<ContextId> for String {
    fn from(id: ContextId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for ContextId {
    type Error = IdParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        assert_eq!("J12".parse::<JobId>().unwrap(), JobId(12));
        assert_eq!(JobId(12).to_string(), "J12");
        assert_eq!(
            "CJ4".parse::<ContextId>().unwrap(),
            ContextId::Job(JobId(4))
        );
        assert_eq!("CP9".parse::<ContextId>().unwrap().to_string(), "CP9");
        assert_eq!(NodeId::from_certificate_name("node-N3").unwrap(), NodeId(3));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "J",
            "J01",
            "J-1",
            "j1",
            "R1",
            "J1x",
            "J99999999999999999999999",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad} parsed");
        }
        assert!("C1".parse::<ContextId>().is_err());
        assert!(NodeId::from_certificate_name("server.windflow").is_err());
    }

    #[test]
    fn ids_are_strings_in_json() {
        assert_eq!(serde_json::to_string(&RunId(5)).unwrap(), "\"R5\"");
        let id: ContextId = serde_json::from_str("\"CJ5\"").unwrap();
        assert_eq!(id, ContextId::Job(JobId(5)));
    }
}
