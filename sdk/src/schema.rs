//! Route contracts from Rust types (feature `schema`; for native tests and tools, never the
//! component).
//!
//! A route's JSON Schemas live in `plugin.toml` (`input`, `output`, `[schemas]`; see the
//! plugin guide), because the host reads them before any plugin code runs. Written by hand
//! they can drift from the types the handlers read and answer. This module derives them from
//! those types with [`schemars`], in the subset of JSON Schema the host checks, so a test can
//! print them for the manifest and then fail whenever the two differ:
//!
//! ```
//! use keel_sdk::schema::Schemas;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct NewVisit {
//!     /// Who came.
//!     #[schemars(length(min = 1, max = 100))]
//!     visitor: String,
//!     badge: Option<u32>,
//! }
//!
//! let schemas = Schemas::new().input::<NewVisit>();
//! let toml = schemas.to_toml();
//! assert!(toml.contains("[schemas.NewVisit]"));
//! // In the plugin's tests: `schemas.check(include_str!("../plugin.toml")).unwrap()`.
//! let manifest = format!("id = \"visits\"\n\n{toml}");
//! assert_eq!(schemas.check(&manifest), Ok(()));
//! ```
//!
//! Add `schemars = "1"` to the plugin's dev-dependencies and derive
//! `#[cfg_attr(test, derive(schemars::JsonSchema))]` on the types, so the component does not
//! carry it. Rules the types cannot say (`#[schemars(regex(pattern = ...))]`, `length`,
//! `range` can say most) are written as schemars attributes next to the fields.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Formats the host checks; others are dropped (integer widths become ranges).
const CHECKED_FORMATS: [&str; 4] = ["date", "date-time", "email", "uuid"];

/// Named schemas derived from types, as `[schemas]` of a manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schemas {
    named: BTreeMap<String, Value>,
}

impl Schemas {
    /// No schemas yet.
    pub fn new() -> Schemas {
        Schemas::default()
    }

    /// Adds `T` as a request body or parameters read with serde (fields with defaults are
    /// optional), and every named type it refers to.
    pub fn input<T: JsonSchema>(self) -> Schemas {
        self.add::<T>(SchemaSettings::draft2020_12().for_deserialize())
    }

    /// Adds `T` as an answer written with serde (every field it always writes is
    /// required), and every named type it refers to.
    pub fn output<T: JsonSchema>(self) -> Schemas {
        self.add::<T>(SchemaSettings::draft2020_12().for_serialize())
    }

    fn add<T: JsonSchema>(mut self, settings: SchemaSettings) -> Schemas {
        let mut generator = settings
            .with(|s| {
                s.definitions_path = "/schemas".into();
                s.meta_schema = None;
            })
            .into_generator();
        let root = generator.subschema_for::<T>().to_value();
        let mut found: Vec<(String, Value)> = generator.take_definitions(true).into_iter().collect();
        if root.get("$ref").is_none() {
            found.push((T::schema_name().into_owned(), root));
        }
        for (name, schema) in found {
            let schema = subset(schema);
            match self.named.get(&name) {
                Some(existing) if *existing != schema => panic!(
                    "`{name}` is described two ways (as input and as output?): give one of them its own type or \
                     `#[schemars(rename = ...)]`"
                ),
                _ => {
                    self.named.insert(name, schema);
                }
            }
        }
        self
    }

    /// The schema named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.named.get(name)
    }

    /// The schemas as `[schemas.<Name>]` tables, to paste into `plugin.toml`.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for (name, schema) in &self.named {
            out.push_str(&format!("[schemas.{name}]\n"));
            if let Value::Object(members) = schema {
                for (key, value) in members {
                    out.push_str(&format!("{} = {}\n", toml_key(key), toml_value(value)));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Whether every schema here is in `manifest` (the text of `plugin.toml`) as derived;
    /// otherwise the differences, with the TOML to write instead.
    pub fn check(&self, manifest: &str) -> Result<(), String> {
        let parsed: toml::Table = manifest.parse().map_err(|e| format!("plugin.toml does not parse: {e}"))?;
        let declared = parsed.get("schemas").and_then(|s| s.as_table()).cloned().unwrap_or_default();
        let mut problems = Vec::new();
        for (name, derived) in &self.named {
            let written = declared.get(name).map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
            match written {
                None => problems.push(format!("[schemas.{name}] is missing")),
                Some(written) if written != *derived => {
                    problems.push(format!("[schemas.{name}] differs from the type"))
                }
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}; derived from the types:\n\n{}", problems.join("; "), self.to_toml()))
        }
    }
}

/// The host's subset: no `$schema`; integer widths as ranges; only checked formats.
fn subset(schema: Value) -> Value {
    match schema {
        Value::Object(members) => {
            let mut out = Map::new();
            let format = members.get("format").and_then(Value::as_str).map(str::to_owned);
            for (key, value) in members {
                match key.as_str() {
                    "$schema" => {}
                    "format" if !format.as_deref().is_some_and(|f| CHECKED_FORMATS.contains(&f)) => {}
                    _ => {
                        out.insert(key, subset(value));
                    }
                }
            }
            if let Some((min, max)) = format.as_deref().and_then(integer_range) {
                out.entry("minimum").or_insert(min);
                out.entry("maximum").or_insert(max);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(subset).collect()),
        other => other,
    }
}

fn integer_range(format: &str) -> Option<(Value, Value)> {
    Some(match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" => (i64::MIN.into(), i64::MAX.into()),
        "uint8" => (0.into(), u8::MAX.into()),
        "uint16" => (0.into(), u16::MAX.into()),
        "uint32" => (0.into(), u32::MAX.into()),
        "uint64" | "uint" => (0.into(), u64::MAX.into()),
        _ => return None,
    })
}

fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_owned()
    } else {
        toml_string(key)
    }
}

fn toml_string(text: &str) -> String {
    // A JSON string is a TOML basic string, escapes included.
    Value::String(text.to_owned()).to_string()
}

/// A JSON value as an inline TOML value (JSON `null` has no TOML form: it is written as the
/// string "null", which the check then reports as a difference).
fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => toml_string("null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml_string(s),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        Value::Object(members) => format!(
            "{{ {} }}",
            members.iter().map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, serde::Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        #[schemars(range(min = 1))]
        qty: u32,
        item: String,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        /// Who ordered.
        #[schemars(length(min = 1, max = 100))]
        buyer: String,
        lines: Vec<Line>,
        note: Option<String>,
        #[serde(default)]
        rush: bool,
    }

    #[test]
    fn types_become_named_schemas_in_the_hosts_subset() {
        let schemas = Schemas::new().input::<Order>();
        let order = schemas.get("Order").expect("Order is named");
        assert_eq!(order["additionalProperties"], json!(false));
        assert_eq!(order["required"], json!(["buyer", "lines"]));
        assert_eq!(order["properties"]["lines"]["items"]["$ref"], "#/schemas/Line");
        assert_eq!(order["properties"]["buyer"]["maxLength"], 100);
        assert_eq!(order["properties"]["note"]["type"], json!(["string", "null"]));
        let line = schemas.get("Line").expect("Line is named");
        assert!(line.get("$schema").is_none() && line["properties"]["qty"].get("format").is_none());
        assert_eq!(
            (line["properties"]["qty"]["minimum"].as_u64(), line["properties"]["qty"]["maximum"].as_u64()),
            (Some(1), Some(u32::MAX as u64))
        );
    }

    #[test]
    fn the_toml_round_trips_and_a_drifted_manifest_is_named() {
        let schemas = Schemas::new().input::<Order>();
        let manifest = format!("id = \"shop\"\n\n{}", schemas.to_toml());
        assert_eq!(schemas.check(&manifest), Ok(()));
        let drifted = manifest.replace("maxLength = 100", "maxLength = 200");
        let error = schemas.check(&drifted).unwrap_err();
        assert!(error.starts_with("[schemas.Order] differs from the type"), "{error}");
        let missing = schemas.check("id = \"shop\"\n").unwrap_err();
        assert!(missing.contains("[schemas.Line] is missing"), "{missing}");
    }
}
