//! Settings a plugin declares in its manifest and tenant admins set per tenant.
//!
//! A setting has a name, a type, a description and optionally a default; a plugin reads its
//! effective value (the tenant's, or the default) with `keel:platform/config.get`. Values
//! travel as JSON of their type over the admin API and are handed to plugins as text
//! (`"42"`, `"true"`). Secret settings are written, never read back: no default, no echo,
//! audited by name only.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;

/// At most this many settings per plugin, and this many bytes in one string value.
pub const MAX_SETTINGS: usize = 64;
pub const MAX_VALUE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SettingType {
    String,
    Integer,
    Boolean,
}

/// A setting's value as JSON and TOML write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SettingValue {
    Boolean(bool),
    Integer(i64),
    String(String),
}

/// One declared setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SettingSpec {
    /// 1-64 characters of a-z, 0-9 and '-', starting with a letter.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// What the setting changes, for the admin setting it.
    pub description: String,
    /// The value until a tenant sets one; none means `config.get` answers nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<SettingValue>,
    /// Written by admins, read only by the plugin: never shown, echoed or logged.
    #[serde(default)]
    pub secret: bool,
    /// For strings: the only values allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// For integers: the allowed range, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

impl SettingSpec {
    /// Checks `value` against the declaration; the text handed to the plugin, or why not.
    pub fn check(&self, value: &SettingValue) -> Result<String, String> {
        match (self.kind, value) {
            (SettingType::String, SettingValue::String(s)) => {
                if s.len() > MAX_VALUE_BYTES {
                    return Err(format!("is longer than {MAX_VALUE_BYTES} bytes"));
                }
                if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    return Err("contains control characters".into());
                }
                if !self.choices.is_empty() && !self.choices.contains(s) {
                    return Err(format!("must be one of {}", self.choices.join(", ")));
                }
                Ok(s.clone())
            }
            (SettingType::Integer, SettingValue::Integer(n)) => {
                if self.min.is_some_and(|min| *n < min) || self.max.is_some_and(|max| *n > max) {
                    let bound = |b: Option<i64>| b.map_or_else(|| "…".to_owned(), |b| b.to_string());
                    return Err(format!("must be in {}..={}", bound(self.min), bound(self.max)));
                }
                Ok(n.to_string())
            }
            (SettingType::Boolean, SettingValue::Boolean(b)) => Ok(b.to_string()),
            (kind, _) => Err(format!("must be {}", kind.with_article())),
        }
    }

    /// Whether stored text still fits the declaration (a newer version may have changed it).
    pub fn accepts_text(&self, text: &str) -> bool {
        let value = match self.kind {
            SettingType::String => SettingValue::String(text.to_owned()),
            SettingType::Integer => match text.parse() {
                Ok(n) => SettingValue::Integer(n),
                Err(_) => return false,
            },
            SettingType::Boolean => match text {
                "true" => SettingValue::Boolean(true),
                "false" => SettingValue::Boolean(false),
                _ => return false,
            },
        };
        self.check(&value).is_ok()
    }

    /// The stored text as JSON of the setting's type.
    pub fn to_json(&self, text: &str) -> serde_json::Value {
        match self.kind {
            SettingType::String => serde_json::Value::String(text.to_owned()),
            SettingType::Integer => text.parse::<i64>().map_or(serde_json::Value::Null, Into::into),
            SettingType::Boolean => serde_json::Value::Bool(text == "true"),
        }
    }
}

impl SettingType {
    /// "a string", "an integer", "a boolean": for error messages.
    pub fn with_article(self) -> &'static str {
        match self {
            SettingType::String => "a string",
            SettingType::Integer => "an integer",
            SettingType::Boolean => "a boolean",
        }
    }
}

/// Checks the `[[settings]]` of a manifest: (field, reason) of the first problem.
pub fn validate(settings: &[SettingSpec]) -> Result<(), (String, String)> {
    if settings.len() > MAX_SETTINGS {
        return Err(("settings".into(), format!("at most {MAX_SETTINGS} settings")));
    }
    let mut names = BTreeSet::new();
    for s in settings {
        let at = |what: &str| format!("settings.{}{what}", s.name);
        let mut chars = s.name.chars();
        let valid_name = matches!(chars.next(), Some('a'..='z'))
            && s.name.len() <= 64
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err((
                at(""),
                "setting names are 1-64 characters of a-z, 0-9 and '-', starting with a letter".into(),
            ));
        }
        if !names.insert(&s.name) {
            return Err((at(""), "declared twice".into()));
        }
        if s.description.trim().is_empty() || s.description.len() > 500 {
            return Err((at(".description"), "must be 1-500 characters".into()));
        }
        if s.secret && s.default.is_some() {
            return Err((at(".default"), "a secret has no default: anyone can read the manifest".into()));
        }
        if !s.choices.is_empty() {
            if s.kind != SettingType::String {
                return Err((at(".choices"), "only string settings have choices".into()));
            }
            let unique: BTreeSet<_> = s.choices.iter().collect();
            if unique.len() != s.choices.len() || s.choices.iter().any(|c| c.is_empty() || c.len() > 100) {
                return Err((at(".choices"), "choices are distinct, 1-100 characters each".into()));
            }
        }
        if s.min.is_some() || s.max.is_some() {
            if s.kind != SettingType::Integer {
                return Err((at(".min"), "only integer settings have a range".into()));
            }
            if let (Some(min), Some(max)) = (s.min, s.max)
                && min > max
            {
                return Err((at(".min"), "must not exceed max".into()));
            }
        }
        if let Some(default) = &s.default {
            s.check(default).map_err(|reason| (at(".default"), reason))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SettingType) -> SettingSpec {
        SettingSpec {
            name: "s".into(),
            kind,
            description: "d".into(),
            default: None,
            secret: false,
            choices: vec![],
            min: None,
            max: None,
        }
    }

    #[test]
    fn values_are_checked_against_type_choices_and_range() {
        let mut priority = spec(SettingType::String);
        priority.choices = vec!["P1".into(), "P2".into()];
        assert_eq!(priority.check(&SettingValue::String("P2".into())), Ok("P2".into()));
        assert_eq!(priority.check(&SettingValue::String("P9".into())), Err("must be one of P1, P2".into()));
        assert_eq!(priority.check(&SettingValue::Integer(1)), Err("must be a string".into()));
        let mut retries = spec(SettingType::Integer);
        (retries.min, retries.max) = (Some(0), Some(10));
        assert_eq!(retries.check(&SettingValue::Integer(10)), Ok("10".into()));
        assert_eq!(retries.check(&SettingValue::Integer(11)), Err("must be in 0..=10".into()));
        assert_eq!(retries.check(&SettingValue::Integer(-1)), Err("must be in 0..=10".into()));
        assert_eq!(spec(SettingType::Boolean).check(&SettingValue::Boolean(true)), Ok("true".into()));
        assert_eq!(
            spec(SettingType::Boolean).check(&SettingValue::String("yes".into())),
            Err("must be a boolean".into())
        );
        let long = SettingValue::String("x".repeat(MAX_VALUE_BYTES + 1));
        assert!(spec(SettingType::String).check(&long).is_err());
        assert!(spec(SettingType::String).check(&SettingValue::String("a\u{0}b".into())).is_err());
    }

    #[test]
    fn stored_text_is_reread_against_the_current_declaration() {
        let mut retries = spec(SettingType::Integer);
        retries.max = Some(5);
        assert!(retries.accepts_text("5"));
        assert!(!retries.accepts_text("6"), "a narrower range in a newer version");
        assert!(!retries.accepts_text("five"));
        assert!(spec(SettingType::Boolean).accepts_text("false"));
        assert!(!spec(SettingType::Boolean).accepts_text("1"));
    }

    #[test]
    fn declarations_are_validated() {
        let mut secret = spec(SettingType::String);
        secret.secret = true;
        secret.default = Some(SettingValue::String("hunter2".into()));
        assert_eq!(validate(&[secret]).unwrap_err().0, "settings.s.default");
        let mut bad_default = spec(SettingType::Integer);
        (bad_default.max, bad_default.default) = (Some(3), Some(SettingValue::Integer(4)));
        assert_eq!(validate(&[bad_default]).unwrap_err(), ("settings.s.default".into(), "must be in …..=3".into()));
        let mut choices_on_int = spec(SettingType::Integer);
        choices_on_int.choices = vec!["a".into()];
        assert_eq!(validate(&[choices_on_int]).unwrap_err().0, "settings.s.choices");
        assert_eq!(validate(&[spec(SettingType::String), spec(SettingType::String)]).unwrap_err().1, "declared twice");
        let mut bad_name = spec(SettingType::String);
        bad_name.name = "Bad_Name".into();
        assert!(validate(&[bad_name]).is_err());
    }
}
