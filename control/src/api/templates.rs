//! `/v1/templates`: the built-in catalog of stack templates ([`crate::stacks::templates`]):
//! list, show (variables and compose text), deploy. A deploy's generated passwords are
//! sealed into the tasks' secret env before the job is proposed, and shown once, in its
//! answer.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::body::Fields;
use super::namespaces::{self, NsScope};
use super::stacks::{Deployed, Request, deploy_request};
use super::{ApiError, AppState};
use crate::stacks::templates::{self, Template, TemplateError, Variable};

/// A template as listed.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub description: String,
    pub variables: Vec<Variable>,
}

fn template_error(e: TemplateError) -> ApiError {
    match e {
        TemplateError::Unknown(name) => ApiError::not_found("template", &name),
        TemplateError::UnknownVariables { .. } => ApiError::invalid_field("set", e),
        TemplateError::Missing { .. } => ApiError::invalid_field("set", e),
        other => ApiError::internal(other.to_string()),
    }
}

/// `GET /v1/templates`
pub async fn list() -> Result<Json<Vec<Summary>>, ApiError> {
    let all = templates::all().map_err(template_error)?;
    Ok(Json(
        all.into_iter()
            .map(|t| Summary {
                name: t.name,
                description: t.description,
                variables: t.variables,
            })
            .collect(),
    ))
}

/// `GET /v1/templates/{name}`: its variables and compose text.
pub async fn show(Path(name): Path<String>) -> Result<Json<Template>, ApiError> {
    templates::get(&name).map(Json).map_err(template_error)
}

/// `POST /v1/templates/{name}/deploy` with `{"name"?: STACK, "set"?: {K: V}, "node"?,
/// "namespace"?}`: a new stack (named after the template unless `name` says otherwise).
pub async fn deploy(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(template): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let t = templates::get(&template).map_err(template_error)?;
    let mut f = Fields::parse_or_empty(&body)?;
    let name = f.optional_str("name")?.unwrap_or_else(|| t.name.clone());
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let sets = f.optional_string_map("set")?;
    let node = f.optional_str("node")?;
    f.finish()?;
    let rendered = t.render(&sets).map_err(template_error)?;
    let request = Request {
        name,
        namespace,
        compose: t.compose.clone(),
        variables: rendered.variables,
        secret_variables: rendered.secret,
        env_files: Default::default(),
        base_dir: None,
        node,
        only_new: true,
    };
    deploy_request(&state, request, rendered.generated).await
}
