//! `POST /v1/import` (`?dry_run=true`): applies an export file (see [`super::export`]),
//! all or nothing.
//!
//! Every entry is checked first, with the parser of its create endpoint, and so are the
//! references between entries and to what the cluster holds; every problem found is
//! answered at once, each naming its entry (`jobs[3] "backup": field `timeout`: …`), and
//! nothing changes. Then the whole file goes through raft as one `Command::Import`, whose
//! apply checks again and writes every entry in one log entry, or none. What exists by
//! name is updated (a job through a new version), what is the same is left alone, and
//! nothing the file lacks is deleted. A dry run answers what apply would do, from this
//! server's state after a linearizable read, and changes nothing.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::export::{
    EntryAction, EntryKind, FORMAT_VERSION, ImportOutcome, MAX_IMPORT_ENTRIES,
};
use windflow_protocol::{Namespace, Role, Timestamp};
use windflow_raft::{Applied, Command, ImportSet, ImportWebhook, WriteError};

use super::export::ExportFile;
use super::import_check::{Checked, JobIn, WebhookIn, check};
use super::namespaces::NsScope;
use super::{ApiError, AppState};
use crate::auth::Caller;

/// The largest import file taken, in bytes.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

/// The answer: what was done (or would be) per entry.
#[derive(Debug, Serialize)]
pub struct ImportAnswer {
    pub dry_run: bool,
    #[serde(flatten)]
    pub outcome: ImportOutcome,
    /// The secrets generated for webhooks this import created, shown this once.
    pub webhook_secrets: Vec<NewSecret>,
}

/// A created webhook's generated HMAC secret.
#[derive(Debug, Serialize)]
pub struct NewSecret {
    pub webhook: String,
    pub namespace: Namespace,
    pub id: String,
    pub secret: String,
}

/// `POST /v1/import`
pub async fn import(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<ImportAnswer>, ApiError> {
    let dry_run = match q.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`dry_run` must be true or false, not `{other}`"),
            ));
        }
    };
    let file = read_file(&body)?;
    if !file.webhooks.is_empty() && caller.role < Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the file holds webhooks, which only an admin may create or change",
        ));
    }
    // Checked against what the cluster holds now, everywhere.
    state.raft.linearizable().await?;
    let checked = check(&file, &scope, state.raft.reader())?;
    let (set, shown) = seal(&state, checked).await?;
    let cmd = Command::Import(Box::new(set));
    let applied = if dry_run {
        state
            .raft
            .reader()
            .preview(cmd)?
            .map_err(|e| ApiError::from(WriteError::Rejected(e)))?
    } else {
        state.raft.write(cmd).await?
    };
    let Applied::Imported(outcome) = applied else {
        return Err(super::jobs::unexpected(applied));
    };
    tracing::info!(
        dry_run,
        created = outcome.count(EntryAction::Create),
        updated = outcome.count(EntryAction::Update),
        unchanged = outcome.count(EntryAction::Unchanged),
        "import"
    );
    let webhook_secrets = if dry_run {
        Vec::new()
    } else {
        outcome
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Webhook && e.action == EntryAction::Create)
            .filter_map(|e| {
                let secret = shown.get(&(e.namespace.clone(), e.name.clone()))?;
                Some(NewSecret {
                    webhook: e.name.clone(),
                    namespace: e.namespace.clone(),
                    id: e.id.clone(),
                    secret: secret.clone(),
                })
            })
            .collect()
    };
    Ok(Json(ImportAnswer {
        dry_run,
        outcome,
        webhook_secrets,
    }))
}

/// The file as YAML (JSON is YAML too).
fn read_file(body: &Bytes) -> Result<ExportFile, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_file", why);
    let text =
        std::str::from_utf8(body).map_err(|e| bad(format!("the file is not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Err(bad("the file is empty".into()));
    }
    let file: ExportFile = serde_yaml_ng::from_str(text)
        .map_err(|e| bad(format!("the file is not an export file: {e}")))?;
    if file.version != FORMAT_VERSION {
        return Err(bad(format!(
            "field `version`: this server reads version {FORMAT_VERSION}, not {}",
            file.version
        )));
    }
    let entries = file.jobs.len() + file.pipelines.len() + file.schedules.len();
    if entries + file.webhooks.len() > MAX_IMPORT_ENTRIES {
        return Err(bad(format!(
            "the file holds more than {MAX_IMPORT_ENTRIES} entries; split it"
        )));
    }
    Ok(file)
}

/// Seals the file's secret values (an equal value keeps its stored sealed form, so the
/// same file twice changes nothing) and new webhooks' secrets; answers the command's set
/// and the generated webhook secrets to show, by (namespace, name).
async fn seal(
    state: &AppState,
    checked: Checked,
) -> Result<(ImportSet, HashMap<(Namespace, String), String>), ApiError> {
    let reader = state.raft.reader();
    let mut jobs = Vec::with_capacity(checked.jobs.len());
    for JobIn {
        mut spec,
        secrets,
        kept,
    } in checked.jobs
    {
        let current = reader.job_by_name(&spec.namespace, &spec.name)?;
        let mut sealed: BTreeMap<String, windflow_protocol::Sealed> = match &current {
            Some(job) => super::deployments::seal_reusing(state, &secrets, &job.spec).await?,
            None => secrets
                .iter()
                .map(|(name, value)| {
                    state
                        .secrets
                        .seal_env(name, value)
                        .map(|s| (name.clone(), s))
                })
                .collect::<Result<_, _>>()
                .map_err(super::secrets::seal_error)?,
        };
        if let Some(stored) = current
            .as_ref()
            .and_then(|j| j.spec.tasks().next())
            .map(|t| &t.secret_env)
        {
            for name in kept {
                if let Some(s) = stored.get(&name) {
                    sealed.insert(name, s.clone());
                }
            }
        }
        for task in spec.groups.iter_mut().flat_map(|g| g.tasks.iter_mut()) {
            task.secret_env.clone_from(&sealed);
        }
        jobs.push(spec);
    }
    let mut shown = HashMap::new();
    let mut webhooks = Vec::with_capacity(checked.webhooks.len());
    for WebhookIn { spec, secret } in checked.webhooks {
        let place = crate::webhooks::secret_place(&spec.namespace, &spec.name);
        let current = reader.webhook_by_name(&spec.namespace, &spec.name)?;
        let seal = |value: &str| {
            state
                .secrets
                .seal_at(&place, value)
                .map_err(super::secrets::seal_error)
        };
        let sealed = match (current, secret) {
            (Some(w), Some(given)) => match state.secrets.open_at(&place, &w.secret).await {
                Ok(opened) if opened == given => None,
                _ => Some(seal(&given)?),
            },
            // An existing webhook keeps its own secret.
            (Some(_), None) => None,
            (None, Some(given)) => Some(seal(&given)?),
            (None, None) => {
                let fresh = super::webhooks::new_secret()?;
                let sealed = seal(&fresh)?;
                shown.insert((spec.namespace.clone(), spec.name.clone()), fresh);
                Some(sealed)
            }
        };
        webhooks.push(ImportWebhook {
            spec,
            secret: sealed,
        });
    }
    Ok((
        ImportSet {
            jobs,
            pipelines: checked.pipelines,
            schedules: checked.schedules,
            webhooks,
            at: Timestamp::now(),
        },
        shown,
    ))
}
