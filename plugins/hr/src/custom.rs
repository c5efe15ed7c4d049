//! Custom fields: what a tenant records about its people beyond HR's own fields (a T-shirt
//! size, a badge number, an emergency contact), each with a type, checked on every write.
//! Pure rules, tested natively.

use crate::employee::{Date, Invalid};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a custom field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldType {
    /// Up to 1,000 characters.
    Text,
    /// A finite number.
    Number,
    /// `YYYY-MM-DD`.
    Date,
    Boolean,
    /// One of the field's `choices`.
    Choice,
}

/// A field the tenant defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// A hire must give it, and no change may clear it.
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Shown only to HR and the employee themself.
    pub private: bool,
}

pub const TEXT_MAX: usize = 1000;
pub const MAX_FIELDS: usize = 50;

/// Field names: 1-64 of a-z, 0-9 and '_', starting with a letter.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn invalid(reason: String) -> Invalid {
    Invalid { field: "custom", code: "invalid-custom-field", reason }
}

/// `value` as stored for a field of `def`, or why it does not fit.
pub fn check(name: &str, def: &FieldDef, value: &Value) -> Result<Value, Invalid> {
    let wrong = |what: &str| invalid(format!("`{name}` is {what}"));
    match def.kind {
        FieldType::Text => match value.as_str().map(str::trim) {
            Some(t) if !t.is_empty() && t.chars().count() <= TEXT_MAX && !t.chars().any(char::is_control) => {
                Ok(Value::String(t.to_owned()))
            }
            _ => Err(wrong(&format!("text of 1-{TEXT_MAX} characters without control characters"))),
        },
        FieldType::Number => match value.as_f64() {
            Some(n) if n.is_finite() => Ok(value.clone()),
            _ => Err(wrong("a number")),
        },
        FieldType::Date => match value.as_str().and_then(Date::parse) {
            Some(d) => Ok(Value::String(d.to_string())),
            None => Err(wrong("a date (YYYY-MM-DD)")),
        },
        FieldType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err(wrong("true or false")),
        },
        FieldType::Choice => match value.as_str() {
            Some(c) if def.choices.iter().any(|x| x == c) => Ok(value.clone()),
            _ => Err(wrong(&format!("one of {}", def.choices.join(", ")))),
        },
    }
}

/// Applies `changes` to `current` (a `null` clears a field), checking every value against
/// `defs`. `hire` also requires every required field to be present; otherwise a change may
/// not clear one (records older than a new required field keep going without it).
pub fn apply(
    defs: &BTreeMap<String, FieldDef>,
    current: &BTreeMap<String, Value>,
    changes: &BTreeMap<String, Value>,
    hire: bool,
) -> Result<BTreeMap<String, Value>, (String, Invalid)> {
    let mut out = current.clone();
    for (name, value) in changes {
        let Some(def) = defs.get(name) else {
            return Err((
                name.clone(),
                Invalid { field: "custom", code: "unknown-custom-field", reason: format!("no custom field `{name}`") },
            ));
        };
        if value.is_null() {
            if def.required {
                return Err((
                    name.clone(),
                    Invalid { field: "custom", code: "required", reason: format!("`{name}` is required") },
                ));
            }
            out.remove(name);
        } else {
            out.insert(name.clone(), check(name, def, value).map_err(|e| (name.clone(), e))?);
        }
    }
    if hire && let Some((name, _)) = defs.iter().find(|(name, def)| def.required && !out.contains_key(*name)) {
        return Err((
            name.clone(),
            Invalid { field: "custom", code: "required", reason: format!("`{name}` is required") },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> BTreeMap<String, FieldDef> {
        let def = |kind, required, choices: &[&str], private| FieldDef {
            label: "x".into(),
            kind,
            required,
            choices: choices.iter().map(|c| c.to_string()).collect(),
            private,
        };
        BTreeMap::from([
            ("badge".to_owned(), def(FieldType::Number, true, &[], false)),
            ("shirt".to_owned(), def(FieldType::Choice, false, &["s", "m", "l"], false)),
            ("birthday".to_owned(), def(FieldType::Date, false, &[], true)),
            ("remote".to_owned(), def(FieldType::Boolean, false, &[], false)),
            ("note".to_owned(), def(FieldType::Text, false, &[], false)),
        ])
    }

    fn changes(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_are_checked_against_their_field_and_required_ones_kept() {
        let none = BTreeMap::new();
        let hired =
            apply(&defs(), &none, &changes(json!({ "badge": 42, "shirt": "m", "note": "  hi " })), true).unwrap();
        assert_eq!(serde_json::to_value(&hired).unwrap(), json!({ "badge": 42, "shirt": "m", "note": "hi" }));
        let code = |c: Value, hire: bool| apply(&defs(), &hired, &changes(c), hire).unwrap_err();
        assert_eq!(code(json!({ "shirt": "xxl" }), false).1.code, "invalid-custom-field");
        assert_eq!(code(json!({ "birthday": "2026-02-30" }), false).1.code, "invalid-custom-field");
        assert_eq!(code(json!({ "remote": "yes" }), false).1.code, "invalid-custom-field");
        assert_eq!(code(json!({ "note": "" }), false).1.code, "invalid-custom-field");
        assert_eq!(code(json!({ "badge": "42" }), false).0, "badge");
        assert_eq!(code(json!({ "colour": "red" }), false).1.code, "unknown-custom-field");
        assert_eq!(code(json!({ "badge": null }), false).1.code, "required", "a required field is not cleared");
        // A hire must give every required field.
        let missing = apply(&defs(), &none, &changes(json!({ "shirt": "s" })), true).unwrap_err();
        assert_eq!((missing.0.as_str(), missing.1.code), ("badge", "required"));
        // A change to a record without a newer required field goes through.
        assert!(apply(&defs(), &none, &changes(json!({ "shirt": "s" })), false).is_ok());
        // null clears an optional field.
        let cleared = apply(&defs(), &hired, &changes(json!({ "shirt": null })), false).unwrap();
        assert!(!cleared.contains_key("shirt"));
        assert!(valid_name("t_shirt2") && !valid_name("2fa") && !valid_name("T") && !valid_name(""));
    }
}
