//! The parts of a job's body that say where and how many: type, count, resources,
//! constraints and placement, each checked with an error that names the field.

use windflow_protocol::{Constraint, JobType, Operator, Placement, Resources, TaskGroup};

use super::ApiError;
use super::body::Fields;
use crate::scheduler::feasible::Checks;

/// The most instances a service job may ask for.
pub const MAX_COUNT: u32 = 10_000;
const MAX_CONSTRAINTS: usize = 32;

/// Where and how many, as a job's body asks.
pub struct Shape {
    pub job_type: JobType,
    pub count: u32,
    pub resources: Resources,
    pub constraints: Vec<Constraint>,
    pub placement: Placement,
}

pub fn parse(f: &mut Fields) -> Result<Shape, ApiError> {
    let job_type = match f.optional_str("type")?.as_deref() {
        None | Some("batch") => JobType::Batch,
        Some("service") => JobType::Service,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "type",
                format!("must be batch or service, not `{other}`"),
            ));
        }
    };
    let count = f.optional_u32("count")?.unwrap_or(1);
    match job_type {
        JobType::Batch if count != 1 => {
            return Err(ApiError::invalid_field(
                "count",
                "only service jobs take a count; a batch job runs once per `run`",
            ));
        }
        JobType::Service if !(1..=MAX_COUNT).contains(&count) => {
            return Err(ApiError::invalid_field(
                "count",
                format!("must be 1 to {MAX_COUNT}"),
            ));
        }
        _ => {}
    }
    let resources = match f.optional_object("resources")? {
        None => Resources::TASK_DEFAULT,
        Some(mut r) => {
            let d = Resources::TASK_DEFAULT;
            let resources = Resources {
                cpu_mhz: bounded(&mut r, "cpu_mhz", 1, 1_000_000)?.unwrap_or(d.cpu_mhz),
                memory_mb: bounded(&mut r, "memory_mb", 1, 16 << 20)?.unwrap_or(d.memory_mb),
                disk_mb: bounded(&mut r, "disk_mb", 0, 1 << 30)?.unwrap_or(d.disk_mb),
            };
            r.finish()?;
            resources
        }
    };
    let items = f.optional_object_list("constraints")?;
    if items.len() > MAX_CONSTRAINTS {
        return Err(ApiError::invalid_field(
            "constraints",
            format!("at most {MAX_CONSTRAINTS}"),
        ));
    }
    let mut constraints = Vec::with_capacity(items.len());
    for (i, mut c) in items.into_iter().enumerate() {
        let attribute = c.required_str("attribute")?;
        let operator = operator(&c.required_str("operator")?)
            .map_err(|e| ApiError::invalid_field(&format!("constraints[{i}].operator"), e))?;
        let value = c.required_str("value")?;
        c.finish()?;
        if attribute.is_empty() || attribute.len() > 128 || value.len() > 1024 {
            return Err(ApiError::invalid_field(
                &format!("constraints[{i}]"),
                "attribute must be 1 to 128 bytes and value at most 1024",
            ));
        }
        let constraint = Constraint {
            attribute,
            operator,
            value,
        };
        // The scheduler's own compilation, so what is accepted here is what it can use.
        Checks::of(&TaskGroup {
            name: String::new(),
            count: 1,
            tasks: Vec::new(),
            constraints: vec![constraint.clone()],
            placement: Placement::default(),
            restart: Default::default(),
            reschedule: Default::default(),
            update: Default::default(),
            checks: Vec::new(),
        })
        .map_err(|e| ApiError::invalid_field(&format!("constraints[{i}]"), e))?;
        constraints.push(constraint);
    }
    let placement = match f.optional_str("placement")?.as_deref() {
        None | Some("binpack") => Placement::Binpack,
        Some("spread") => Placement::Spread,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "placement",
                format!("must be binpack or spread, not `{other}`"),
            ));
        }
    };
    Ok(Shape {
        job_type,
        count,
        resources,
        constraints,
        placement,
    })
}

fn bounded(f: &mut Fields, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    let v = f.optional_u64(name)?;
    if let Some(v) = v
        && !(min..=max).contains(&v)
    {
        return Err(ApiError::invalid_field(
            &format!("resources.{name}"),
            format!("must be {min} to {max}, not {v}"),
        ));
    }
    Ok(v)
}

/// `=`, `!=`, `regex`, `version` or `set_contains`.
pub fn operator(s: &str) -> Result<Operator, String> {
    Ok(match s {
        "=" | "==" => Operator::Equal,
        "!=" => Operator::NotEqual,
        "regex" => Operator::Regex,
        "version" => Operator::Version,
        "set_contains" => Operator::SetContains,
        other => {
            return Err(format!(
                "`{other}` is not an operator (=, !=, regex, version, set_contains)"
            ));
        }
    })
}
