//! Export and import of jobs, pipelines, schedules and webhooks (`windflow export`,
//! `windflow import`).
//!
//! The file itself (YAML) holds each entry as the body its create endpoint takes, and
//! names what it refers to (a pipeline's steps, a schedule's targets) instead of cluster
//! IDs, so it can go into a fresh cluster. These are the typed forms the servers agree
//! on once a file is checked: the name-referencing pipeline and schedule that an import
//! carries through raft (apply resolves the names, in the same entry that creates the
//! jobs), and what an import did per entry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::namespace::Namespace;
use crate::pipeline::FailurePolicy;
use crate::schedule::{CatchUp, OverlapPolicy};

/// The version of the file format `export` writes and `import` reads.
pub const FORMAT_VERSION: u32 = 1;

/// The most entries (of all kinds together) one import may hold.
pub const MAX_IMPORT_ENTRIES: usize = 1000;

/// The kinds of entry a file holds, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Job,
    Pipeline,
    Schedule,
    Webhook,
}

impl EntryKind {
    pub const ALL: [EntryKind; 4] = [
        EntryKind::Job,
        EntryKind::Pipeline,
        EntryKind::Schedule,
        EntryKind::Webhook,
    ];

    /// The file's section of this kind (`jobs`, …), which errors name entries by.
    pub fn section(&self) -> &'static str {
        match self {
            EntryKind::Job => "jobs",
            EntryKind::Pipeline => "pipelines",
            EntryKind::Schedule => "schedules",
            EntryKind::Webhook => "webhooks",
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::Job => "job",
            EntryKind::Pipeline => "pipeline",
            EntryKind::Schedule => "schedule",
            EntryKind::Webhook => "webhook",
        }
    }
}

/// Where an entry is in its file: `jobs[3] "backup"`, as every error about it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    pub kind: EntryKind,
    /// Its position in its section, from 0.
    pub index: usize,
    /// Its name, when it has a readable one.
    pub name: Option<String>,
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind.section(), self.index)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// A pipeline whose steps name jobs of its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPipeline {
    pub name: String,
    pub namespace: Namespace,
    pub steps: Vec<NamedStep>,
    pub on_failure: FailurePolicy,
}

/// One step of a [`NamedPipeline`]: a job's name and the names of the steps it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedStep {
    pub job: String,
    pub depends_on: Vec<String>,
}

/// A schedule whose targets name jobs and pipelines of its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedSchedule {
    pub name: String,
    pub namespace: Namespace,
    pub cron: String,
    pub timezone: String,
    pub targets: Vec<NamedTarget>,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUp,
}

/// A schedule's target by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedTarget {
    Job(String),
    Pipeline(String),
}

impl fmt::Display for NamedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamedTarget::Job(j) => write!(f, "job `{j}`"),
            NamedTarget::Pipeline(p) => write!(f, "pipeline `{p}`"),
        }
    }
}

/// What an import does (or, dry, would do) with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryAction {
    /// Nothing of that name exists in its namespace: it is created.
    Create,
    /// One exists and differs: it is changed (a job through a new version).
    Update,
    /// One exists and is the same: nothing is written.
    Unchanged,
}

impl EntryAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryAction::Create => "create",
            EntryAction::Update => "update",
            EntryAction::Unchanged => "unchanged",
        }
    }
}

/// One entry's part of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryOutcome {
    pub kind: EntryKind,
    pub index: usize,
    pub name: String,
    pub namespace: Namespace,
    pub action: EntryAction,
    /// The object's ID (`J3`, `P1`, …) after the import.
    pub id: String,
    /// A job's version after the import. (Never skipped when empty: bincode, which
    /// carries this between servers, reads every field in order.)
    #[serde(default)]
    pub version: Option<u64>,
}

/// What an import did (or would do), entry by entry, in the file's order by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub entries: Vec<EntryOutcome>,
}

impl ImportOutcome {
    /// How many entries take `action`.
    pub fn count(&self, action: EntryAction) -> usize {
        self.entries.iter().filter(|e| e.action == action).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_goes_through_bincode() {
        let o = ImportOutcome {
            entries: vec![EntryOutcome {
                kind: EntryKind::Pipeline,
                index: 0,
                name: "p".into(),
                namespace: Namespace::default(),
                action: EntryAction::Create,
                id: "P1".into(),
                version: None,
            }],
        };
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&o, cfg).unwrap();
        let (back, _): (ImportOutcome, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn an_entry_is_named_by_section_index_and_name() {
        let r = EntryRef {
            kind: EntryKind::Job,
            index: 3,
            name: Some("backup".into()),
        };
        assert_eq!(r.to_string(), r#"jobs[3] "backup""#);
        let r = EntryRef {
            kind: EntryKind::Schedule,
            index: 0,
            name: None,
        };
        assert_eq!(r.to_string(), "schedules[0]");
    }
}
