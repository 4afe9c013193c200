//! Request bodies read field by field, so every error names the field and the problem,
//! and fields the endpoint does not know are refused rather than silently dropped.

use std::collections::BTreeMap;

use axum::body::Bytes;
use serde_json::{Map, Value};

use super::ApiError;

/// A JSON object body, consumed one field at a time.
pub struct Fields {
    map: Map<String, Value>,
    /// Where this object sits in the body (`resources.`, `constraints[1].`), for errors.
    prefix: String,
}

impl Fields {
    pub fn parse(bytes: &Bytes) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        })?;
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                prefix: String::new(),
            }),
            _ => Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            )),
        }
    }

    /// Like [`Fields::parse`], with an empty body read as `{}`.
    pub fn parse_or_empty(bytes: &Bytes) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields {
                map: Map::new(),
                prefix: String::new(),
            });
        }
        Self::parse(bytes)
    }

    /// A duration such as `30d` or `1h30m`, more than 0 and at most `max`.
    pub fn optional_duration(
        &mut self,
        name: &str,
        max: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, ApiError> {
        let Some(text) = self.optional_str(name)? else {
            return Ok(None);
        };
        let d = text
            .parse::<windflow_protocol::HumanDuration>()
            .map_err(|e| ApiError::invalid_field(&self.path(name), e))?
            .as_std();
        if d.is_zero() || d > max {
            return Err(ApiError::invalid_field(
                &self.path(name),
                format!(
                    "must be more than 0 and at most {}",
                    windflow_protocol::HumanDuration(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    /// A field's full name in the body, as errors give it.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn optional_u64(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid_field(
                    &self.path(name),
                    format!("must be a whole number, not {n}"),
                )
            }),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be a number, not {}", kind(&other)),
            )),
        }
    }

    /// A nested object, read field by field like its parent.
    pub fn optional_object(&mut self, name: &str) -> Result<Option<Fields>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields {
                map,
                prefix: format!("{}.", self.path(name)),
            })),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be an object, not {}", kind(&other)),
            )),
        }
    }

    /// An array of objects, each read field by field.
    pub fn optional_object_list(&mut self, name: &str) -> Result<Vec<Fields>, ApiError> {
        match self.take(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => Ok(Fields {
                        map,
                        prefix: format!("{}[{i}].", self.path(name)),
                    }),
                    other => Err(ApiError::invalid_field(
                        &format!("{}[{i}]", self.path(name)),
                        format!("must be an object, not {}", kind(&other)),
                    )),
                })
                .collect(),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be an array of objects, not {}", kind(&other)),
            )),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    pub fn required_str(&mut self, name: &str) -> Result<String, ApiError> {
        self.optional_str(name)?
            .ok_or_else(|| ApiError::invalid_field(&self.path(name), "is required"))
    }

    pub fn optional_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be a string, not {}", kind(&other)),
            )),
        }
    }

    pub fn optional_u32(&mut self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        &self.path(name),
                        format!("must be a whole number from 0 to {}, not {n}", u32::MAX),
                    )
                }),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be a number, not {}", kind(&other)),
            )),
        }
    }

    pub fn optional_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(ApiError::invalid_field(
                &self.path(name),
                format!("must be true or false, not {}", kind(&other)),
            )),
        }
    }

    /// A duration such as `15s` or `1h30m`, which may be 0.
    pub fn optional_any_duration(
        &mut self,
        name: &str,
    ) -> Result<Option<windflow_protocol::HumanDuration>, ApiError> {
        let path = self.path(name);
        self.optional_str(name)?
            .map(|s| {
                s.parse::<windflow_protocol::HumanDuration>()
                    .map_err(|e| ApiError::invalid_field(&path, e))
            })
            .transpose()
    }

    pub fn optional_string_map(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        match self.take(name) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(ApiError::invalid_field(
                        &format!("{}.{k}", self.path(name)),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect(),
            Some(other) => Err(ApiError::invalid_field(
                name,
                format!("must be an object of strings, not {}", kind(&other)),
            )),
        }
    }

    /// An array of strings; absent is empty.
    pub fn optional_string_list(&mut self, name: &str) -> Result<Vec<String>, ApiError> {
        if self.map.get(name).is_none_or(|v| v.is_null()) {
            return Ok(Vec::new());
        }
        self.required_string_list(name)
    }

    pub fn required_string_list(&mut self, name: &str) -> Result<Vec<String>, ApiError> {
        match self.take(name) {
            None => Err(ApiError::invalid_field(&self.path(name), "is required")),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(ApiError::invalid_field(
                        &format!("{}[{i}]", self.path(name)),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect(),
            Some(other) => Err(ApiError::invalid_field(
                name,
                format!("must be an array of strings, not {}", kind(&other)),
            )),
        }
    }

    /// Refuses what is left: fields this endpoint does not take.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.map.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self
            .map
            .keys()
            .map(|k| format!("`{}`", self.path(k)))
            .collect();
        Err(ApiError::bad_request(
            "unknown_field",
            format!("unknown field(s) {}", names.join(", ")),
        ))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
