//! `/v1/namespaces`, and [`NsScope`]: which namespaces one request may see.
//!
//! A caller bound to a namespace sees that one only; anything else is answered as if it
//! did not exist (404, never 403), so names in other namespaces do not leak. A cluster-wide
//! caller sees every namespace, or the one it names with `?namespace=`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, Uri};
use std::collections::HashMap;
use windflow_protocol::{Job, Namespace, NamespaceInfo, Timestamp};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::{ApiError, AppState};
use crate::auth::Caller;

/// The namespaces a request may see; put on every namespaced route's request by
/// `access::guard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsScope {
    /// A cluster-wide caller that named no namespace.
    All,
    One(Namespace),
}

impl NsScope {
    /// The scope of a request: the caller's binding, narrowed by `?namespace=`.
    pub(crate) fn of_request(
        state: &AppState,
        caller: &Caller,
        uri: &Uri,
    ) -> Result<Self, ApiError> {
        let asked = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?
            .0
            .remove("namespace")
            .map(|n| {
                Namespace::parse(&n).map_err(|e| {
                    ApiError::bad_request("invalid_query", format!("`namespace`: {e}"))
                })
            })
            .transpose()?;
        match (&caller.namespace, asked) {
            (Some(bound), None) => Ok(NsScope::One(bound.clone())),
            (Some(bound), Some(asked)) if *bound == asked => Ok(NsScope::One(asked)),
            (Some(_), Some(asked)) => Err(missing(&asked)),
            (None, Some(asked)) => match state.raft.reader().namespace(&asked)? {
                Some(_) => Ok(NsScope::One(asked)),
                None => Err(missing(&asked)),
            },
            (None, None) => Ok(NsScope::All),
        }
    }

    pub fn admits(&self, ns: &Namespace) -> bool {
        match self {
            NsScope::All => true,
            NsScope::One(one) => one == ns,
        }
    }

    /// Where names are looked up and new work goes when the request names no namespace.
    pub fn home(&self) -> Namespace {
        match self {
            NsScope::All => Namespace::default(),
            NsScope::One(ns) => ns.clone(),
        }
    }

    /// The namespace a body's optional `namespace` field asks for, if this scope admits it.
    pub(crate) fn target(&self, asked: Option<Namespace>) -> Result<Namespace, ApiError> {
        match asked {
            None => Ok(self.home()),
            Some(ns) if self.admits(&ns) => Ok(ns),
            Some(ns) => Err(missing(&ns)),
        }
    }

    /// A job by ID (`J12`) or by name in [`NsScope::home`]; one this scope does not admit
    /// is not found.
    pub(crate) fn job(&self, reader: &StateReader, key: &str) -> Result<Job, ApiError> {
        let found = match key.parse() {
            Ok(id) => reader.job(id)?,
            Err(_) => reader.job_by_name(&self.home(), key)?,
        };
        found
            .filter(|j| self.admits(&j.spec.namespace))
            .ok_or_else(|| ApiError::not_found("job", key))
    }
}

fn missing(ns: &Namespace) -> ApiError {
    ApiError::not_found("namespace", ns.as_str())
}

/// An optional `namespace` field of a body.
pub(crate) fn optional_field(f: &mut Fields, field: &str) -> Result<Option<Namespace>, ApiError> {
    f.optional_str(field)?
        .map(|n| Namespace::parse(&n).map_err(|e| ApiError::invalid_field(field, e)))
        .transpose()
}

fn info_of(applied: Applied) -> Result<NamespaceInfo, ApiError> {
    match applied {
        Applied::Namespace(info) => Ok(info),
        other => Err(super::jobs::unexpected(other)),
    }
}

/// A namespace's listing: what it is and how much it holds.
#[derive(Debug, serde::Serialize)]
pub struct NamespaceSummary {
    #[serde(flatten)]
    pub info: NamespaceInfo,
    pub jobs: u64,
}

fn summary(reader: &StateReader, info: NamespaceInfo) -> Result<NamespaceSummary, ApiError> {
    let jobs = reader.namespace_job_count(&info.name)?;
    Ok(NamespaceSummary { info, jobs })
}

/// `GET /v1/namespaces`: those the caller may see.
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
) -> Result<Json<Vec<NamespaceSummary>>, ApiError> {
    let reader = state.raft.reader();
    reader
        .namespaces()?
        .into_iter()
        .filter(|n| scope.admits(&n.name))
        .map(|n| summary(reader, n))
        .collect::<Result<_, _>>()
        .map(Json)
}

/// `GET /v1/namespaces/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(name): Path<String>,
) -> Result<Json<NamespaceSummary>, ApiError> {
    let reader = state.raft.reader();
    let ns = Namespace::parse(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    let info = reader
        .namespace(&ns)?
        .filter(|n| scope.admits(&n.name))
        .ok_or_else(|| missing(&ns))?;
    Ok(Json(summary(reader, info)?))
}

/// `POST /v1/namespaces` with `{"name", "description"?}`.
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<NamespaceInfo>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    let description = f.optional_str("description")?.unwrap_or_default();
    f.finish()?;
    let name = Namespace::parse(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    if description.len() > 1024 {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 1024 bytes",
        ));
    }
    let applied = state
        .raft
        .write(Command::CreateNamespace {
            name,
            description,
            at: Timestamp::now(),
        })
        .await?;
    let info = info_of(applied)?;
    tracing::info!(namespace = %info.name, "namespace created");
    Ok((StatusCode::CREATED, Json(info)))
}

/// `DELETE /v1/namespaces/{name}`: refused while it holds jobs.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<NamespaceInfo>, ApiError> {
    let name = Namespace::parse(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    let info = info_of(state.raft.write(Command::DeleteNamespace { name }).await?)?;
    tracing::info!(namespace = %info.name, "namespace deleted");
    Ok(Json(info))
}
