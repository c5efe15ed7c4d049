//! Typed indexes: what a manifest declares, how a value is written into the index so that
//! the order of the index text is the order of the values, and which index a query runs on.
//!
//! Every index entry is one row `(index name, value text, document key)`. A single-field
//! index is named after its field; a compound index `["item", "at"]` is named `item+at` and
//! its value is the components' texts joined so that ordering compares them in turn. Queries
//! name fields, never index rows: [`CollectionIndexes::plan`] turns their conditions into one
//! driving range over an index plus checks of the rest, which is what the stores execute.

use super::search::SearchFields;
use super::{Comparison, Drive, Predicate};
use std::collections::BTreeMap;

/// The type of an indexed field: how its values are checked, compared and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IndexType {
    /// What a bare field name declares: strings as they are, numbers and booleans in their
    /// JSON form, compared as text (so `"10" < "9"`). Other values are not indexed.
    Text,
    /// JSON strings, compared by Unicode code point. Any other value is refused.
    String,
    /// JSON integers from -2^63 to 2^63-1, compared as numbers.
    Integer,
    /// Exact decimal numbers, compared as numbers: a JSON number, or a JSON string holding
    /// one (`"1234.50"`, to keep money exact). At most 38 significant digits.
    Decimal,
    /// Calendar dates, `YYYY-MM-DD` (years 0001-9999).
    Date,
    /// Instants, RFC 3339 with an offset (`2026-07-01T09:30:00+02:00`), compared as instants
    /// whatever offset each was written with.
    Datetime,
    /// `true` or `false`; `false` orders first.
    Boolean,
}

impl IndexType {
    pub fn name(self) -> &'static str {
        match self {
            IndexType::Text => "text",
            IndexType::String => "string",
            IndexType::Integer => "integer",
            IndexType::Decimal => "decimal",
            IndexType::Date => "date",
            IndexType::Datetime => "datetime",
            IndexType::Boolean => "boolean",
        }
    }

    /// The index text of a stored value: `Ok(None)` for null (not indexed), an error for a
    /// value of the wrong type.
    pub fn encode(self, value: &serde_json::Value) -> Result<Option<String>, String> {
        use serde_json::Value;
        if value.is_null() {
            return Ok(None);
        }
        let wrong = || format!("is declared `{}`; {} is not {}", self.name(), short(value), self.expected());
        match (self, value) {
            (IndexType::Text, Value::String(s)) => Ok(Some(s.clone())),
            (IndexType::Text, Value::Number(n)) => Ok(Some(n.to_string())),
            (IndexType::Text, Value::Bool(b)) => Ok(Some(b.to_string())),
            // Arrays and objects were never indexed under a bare name; they still are not.
            (IndexType::Text, _) => Ok(None),
            (IndexType::String, Value::String(s)) => Ok(Some(s.clone())),
            (IndexType::Integer, Value::Number(n)) => n.as_i64().map(|i| Some(encode_integer(i))).ok_or_else(wrong),
            (IndexType::Decimal, Value::Number(n)) => encode_decimal(&n.to_string()).map(Some).ok_or_else(wrong),
            (IndexType::Decimal, Value::String(s)) => encode_decimal(s).map(Some).ok_or_else(wrong),
            (IndexType::Date, Value::String(s)) => encode_date(s).map(Some).ok_or_else(wrong),
            (IndexType::Datetime, Value::String(s)) => encode_datetime(s).map(Some).ok_or_else(wrong),
            (IndexType::Boolean, Value::Bool(b)) => Ok(Some(b.to_string())),
            _ => Err(wrong()),
        }
    }

    /// The index text of a value given in a query, in its text form (`42`, `12.50`,
    /// `2026-07-01`, `true`).
    pub fn encode_text(self, text: &str) -> Result<String, String> {
        let wrong = || format!("is declared `{}`; {text:?} is not {}", self.name(), self.expected());
        match self {
            IndexType::Text | IndexType::String => Ok(text.to_owned()),
            IndexType::Integer => text.parse::<i64>().map(encode_integer).map_err(|_| wrong()),
            IndexType::Decimal => encode_decimal(text).ok_or_else(wrong),
            IndexType::Date => encode_date(text).ok_or_else(wrong),
            IndexType::Datetime => encode_datetime(text).ok_or_else(wrong),
            IndexType::Boolean => match text {
                "true" | "false" => Ok(text.to_owned()),
                _ => Err(wrong()),
            },
        }
    }

    fn expected(self) -> &'static str {
        match self {
            IndexType::Text => "a string, number or boolean",
            IndexType::String => "a string",
            IndexType::Integer => "an integer from -2^63 to 2^63-1",
            IndexType::Decimal => "a decimal number (at most 38 significant digits)",
            IndexType::Date => "a date (YYYY-MM-DD)",
            IndexType::Datetime => "an RFC 3339 date-time with an offset (2026-07-01T09:30:00Z)",
            IndexType::Boolean => "true or false",
        }
    }
}

fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Integers as 20 digits of `value + 2^63`: text order is numeric order.
fn encode_integer(value: i64) -> String {
    format!("{:020}", i128::from(value) - i128::from(i64::MIN))
}

/// Decimals as text whose order is numeric order, however they were written (`1.50`,
/// `1.5`, `15e-1` are one value). The value is normalised to `0.DIGITS x 10^EXP` with no
/// leading or trailing zeros in DIGITS; then
/// - zero is `2`;
/// - a positive value is `3`, EXP + 50000 in five digits, then DIGITS: a larger exponent
///   is a larger number, and for equal exponents the digit strings compare as fractions do;
/// - a negative value is `1`, 50000 - EXP in five digits, each digit as 9 minus it, then `~`
///   (above every digit), which reverses both comparisons.
fn encode_decimal(text: &str) -> Option<String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
        || exponent.unsigned_abs() > 10_000
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let leading = digits.bytes().take_while(|&b| b == b'0').count();
    let significant = digits[leading..].trim_end_matches('0');
    if significant.is_empty() {
        return Some("2".into());
    }
    if significant.len() > 38 {
        return None;
    }
    // 0.SIGNIFICANT x 10^exp: the point sits after `whole`, minus the leading zeros.
    let exp = whole.len() as i32 - leading as i32 + exponent;
    if exp.unsigned_abs() > 20_000 {
        return None;
    }
    Some(if negative {
        let flipped: String = significant.bytes().map(|b| char::from(b'9' - (b - b'0'))).collect();
        format!("1{:05}{flipped}~", 50_000 - exp)
    } else {
        format!("3{:05}{significant}", 50_000 + exp)
    })
}

fn encode_date(text: &str) -> Option<String> {
    // Exactly YYYY-MM-DD: jiff also accepts forms whose text would not sort as dates.
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped || text.starts_with("0000") {
        return None;
    }
    text.parse::<jiff::civil::Date>().ok().map(|_| text.to_owned())
}

/// Instants as UTC `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`: fixed width, so text order is time order.
fn encode_datetime(text: &str) -> Option<String> {
    let b = text.as_bytes();
    // RFC 3339 needs the `T` (or space) and an offset; jiff is more lenient than that.
    let has_offset = text.ends_with(['Z', 'z']) || (b.len() > 6 && matches!(b[b.len() - 6], b'+' | b'-'));
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || !has_offset {
        return None;
    }
    let instant: jiff::Timestamp = text.parse().ok()?;
    let utc = instant.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if utc.year() < 1 {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.subsec_nanosecond()
    ))
}

/// Joins the components of a compound index value. Component texts have `\0` and `\x01`
/// escaped to `\x01\x02` and `\x01\x03`, and are separated by `\x01\x01`, below any escaped
/// or plain character: a shorter component orders before a longer one it begins, as a
/// single field's text does, and no component can run into the next.
pub fn join_components<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push_str(COMPONENT_SEPARATOR);
        }
        for c in part.chars() {
            match c {
                '\0' => out.push_str("\x01\x02"),
                '\x01' => out.push_str("\x01\x03"),
                c => out.push(c),
            }
        }
    }
    out
}

const COMPONENT_SEPARATOR: &str = "\x01\x01";

/// The least text greater than every text that begins with `prefix` (`None`: there is none).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            char::MAX => None,
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The indexes of one collection, as its manifest declares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionIndexes {
    /// Indexed fields and their types.
    pub fields: BTreeMap<String, IndexType>,
    /// Compound indexes, each a list of two or more indexed fields.
    pub compound: Vec<Vec<String>>,
    /// The fields of its full-text index, if it has one.
    pub search: Option<SearchFields>,
}

/// The name under which the full-text index appears among a collection's indexes when an
/// upgrade compares them (`$` never occurs in a field name).
pub const SEARCH_INDEX: &str = "$search";

/// A condition of a query, as a plugin gives it: a field, a comparison, the value as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: String,
    pub op: Comparison,
    pub value: String,
}

/// Why a query cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("field `{field}` is not an indexed field of collection `{collection}`")]
    NotIndexed { collection: String, field: String },
    #[error("field `{field}` {reason}")]
    BadValue { field: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// How a query runs: one range of one index drives it, in that index's order; the other
/// conditions are checked per document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `None`: the collection's documents in key order drive the scan.
    pub drive: Option<Drive>,
    pub residual: Vec<Predicate>,
}

impl CollectionIndexes {
    /// Every index by name, with what defines its entries (the types of its fields).
    pub fn definitions(&self) -> BTreeMap<String, Vec<IndexType>> {
        let mut out: BTreeMap<String, Vec<IndexType>> =
            self.fields.iter().map(|(f, t)| (f.clone(), vec![*t])).collect();
        for fields in &self.compound {
            let types = fields.iter().filter_map(|f| self.fields.get(f).copied()).collect();
            out.insert(Self::compound_name(fields), types);
        }
        out
    }

    /// The definitions as one text, equal for equal definitions: what a commit checks its
    /// entries were computed from.
    pub fn signature(&self) -> String {
        let mut definitions: BTreeMap<String, Vec<&str>> = self
            .definitions()
            .into_iter()
            .map(|(name, types)| (name, types.iter().map(|t| t.name()).collect()))
            .collect();
        // Paths only: weights act when a search runs, not on what is stored.
        if let Some(search) = &self.search {
            definitions.insert(SEARCH_INDEX.to_owned(), search.paths());
        }
        serde_json::to_string(&definitions).unwrap_or_default()
    }

    /// What changes from `self` to `next`: entries to drop (indexes gone) and indexes to
    /// build anew (added, or retyped).
    pub fn changes_to(&self, next: &CollectionIndexes) -> (Vec<String>, std::collections::BTreeSet<String>) {
        let (old, new) = (self.definitions(), next.definitions());
        let drop: Vec<String> = old.keys().filter(|name| !new.contains_key(*name)).cloned().collect();
        let mut drop = drop;
        let mut rebuild: std::collections::BTreeSet<String> =
            new.iter().filter(|(name, def)| old.get(*name) != Some(def)).map(|(name, _)| name.clone()).collect();
        let paths = |s: &Option<SearchFields>| s.as_ref().map(|s| s.paths().join("\n"));
        match (paths(&self.search), paths(&next.search)) {
            (Some(_), None) => drop.push(SEARCH_INDEX.to_owned()),
            (old, Some(new)) if old.as_ref() != Some(&new) => {
                rebuild.insert(SEARCH_INDEX.to_owned());
            }
            _ => {}
        }
        (drop, rebuild)
    }

    /// The index name of a compound index.
    pub fn compound_name(fields: &[String]) -> String {
        fields.join("+")
    }

    /// Every index entry of a document: `(index name, value text)`, or the first field whose
    /// value is of the wrong type (named, with the reason).
    pub fn entries(&self, body: &serde_json::Value) -> Result<Vec<(String, String)>, (String, String)> {
        let mut single = BTreeMap::new();
        for (field, ty) in &self.fields {
            let Some(value) = body.get(field) else { continue };
            if let Some(text) = ty.encode(value).map_err(|reason| (field.clone(), reason))? {
                single.insert(field.as_str(), text);
            }
        }
        let mut out: Vec<(String, String)> = single.iter().map(|(f, v)| ((*f).to_owned(), v.clone())).collect();
        for fields in &self.compound {
            let parts: Option<Vec<&str>> = fields.iter().map(|f| single.get(f.as_str()).map(String::as_str)).collect();
            if let Some(parts) = parts {
                out.push((Self::compound_name(fields), join_components(parts)));
            }
        }
        Ok(out)
    }

    /// Chooses the index a query runs on.
    ///
    /// - Ordered by a field: a compound index whose leading fields all have equality
    ///   conditions and whose last field is the order field, else the order field's own
    ///   index (its range conditions bound the scan);
    /// - ordered by key: the index of a field with an equality condition, else the
    ///   collection itself.
    ///
    /// Conditions the driving range does not cover are checked per document, each one a
    /// lookup by key.
    pub fn plan(&self, collection: &str, conditions: &[Condition], order_by: Option<&str>) -> Result<Plan, PlanError> {
        let ty = |field: &str| {
            self.fields
                .get(field)
                .copied()
                .ok_or_else(|| PlanError::NotIndexed { collection: collection.to_owned(), field: field.to_owned() })
        };
        let encoded = self.predicates(collection, conditions)?;
        if let Some(order) = order_by {
            ty(order)?;
        }
        let eq_value =
            |field: &str| encoded.iter().find(|p| p.index == field && p.op == Comparison::Eq).map(|p| p.value.clone());
        // Which conditions the driving range covers, by position.
        let mut covered = vec![false; encoded.len()];
        let drive = match order_by {
            Some(order) => {
                let compound = self.compound.iter().find(|fields| {
                    fields.last().is_some_and(|last| last == order)
                        && fields[..fields.len() - 1].iter().all(|f| eq_value(f).is_some())
                });
                let (index, prefix) = match compound {
                    Some(fields) => {
                        let leading = &fields[..fields.len() - 1];
                        // Only the equality whose value drives is covered: a second one on the
                        // same field (`item = a AND item = b`) stays a check, so it can fail.
                        for field in leading {
                            if let Some(i) = encoded.iter().position(|p| p.op == Comparison::Eq && &p.index == field) {
                                covered[i] = true;
                            }
                        }
                        let parts: Vec<String> = leading.iter().map(|f| eq_value(f).expect("checked above")).collect();
                        (Self::compound_name(fields), Some(join_components(parts.iter().map(String::as_str))))
                    }
                    None => (order.to_owned(), None),
                };
                let mut drive = Drive::whole(index);
                if let Some(prefix) = &prefix {
                    drive = drive.within_prefix(&format!("{prefix}{COMPONENT_SEPARATOR}"));
                }
                for (i, p) in encoded.iter().enumerate() {
                    if p.index != order || covered[i] || p.op == Comparison::Ne {
                        continue;
                    }
                    // The leading components are already joined; the order field's value is one more.
                    let value = match &prefix {
                        Some(prefix) => format!("{prefix}{COMPONENT_SEPARATOR}{}", join_components([p.value.as_str()])),
                        None => p.value.clone(),
                    };
                    drive = drive.narrowed(p.op, &value);
                    covered[i] = true;
                }
                Some(drive)
            }
            None => match encoded.iter().position(|p| p.op == Comparison::Eq) {
                Some(i) => {
                    covered[i] = true;
                    Some(Drive::whole(encoded[i].index.clone()).narrowed(Comparison::Eq, &encoded[i].value))
                }
                None => None,
            },
        };
        let residual = encoded.into_iter().zip(covered).filter_map(|(p, covered)| (!covered).then_some(p)).collect();
        Ok(Plan { drive, residual })
    }

    /// The conditions with their values in index text, each checked against its field's type.
    pub fn predicates(&self, collection: &str, conditions: &[Condition]) -> Result<Vec<Predicate>, PlanError> {
        let mut encoded = Vec::with_capacity(conditions.len());
        for c in conditions {
            let t = self
                .fields
                .get(&c.field)
                .copied()
                .ok_or_else(|| PlanError::NotIndexed { collection: collection.to_owned(), field: c.field.clone() })?;
            if c.op == Comparison::Prefix && !matches!(t, IndexType::Text | IndexType::String) {
                return Err(PlanError::BadValue {
                    field: c.field.clone(),
                    reason: format!("is declared `{}`; only text and string fields take a prefix", t.name()),
                });
            }
            let value =
                t.encode_text(&c.value).map_err(|reason| PlanError::BadValue { field: c.field.clone(), reason })?;
            encoded.push(Predicate { index: c.field.clone(), op: c.op, value });
        }
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sorted_by_encoding(ty: IndexType, values: &[serde_json::Value]) -> Vec<serde_json::Value> {
        let mut pairs: Vec<(String, serde_json::Value)> =
            values.iter().map(|v| (ty.encode(v).unwrap().unwrap(), v.clone())).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn integers_order_as_numbers_not_as_text() {
        let order = sorted_by_encoding(
            IndexType::Integer,
            &[json!(10), json!(-1), json!(9), json!(i64::MIN), json!(0), json!(i64::MAX), json!(-10)],
        );
        assert_eq!(order, [json!(i64::MIN), json!(-10), json!(-1), json!(0), json!(9), json!(10), json!(i64::MAX)]);
        // As text, "10" sorts before "9": the reason the legacy `text` type cannot do ranges.
        assert!(IndexType::Text.encode(&json!(10)).unwrap() < IndexType::Text.encode(&json!(9)).unwrap());
        assert!(IndexType::Integer.encode(&json!(1.5)).is_err());
        assert!(IndexType::Integer.encode(&json!(u64::MAX)).is_err());
        assert!(IndexType::Integer.encode(&json!("7")).is_err());
    }

    #[test]
    fn decimals_order_as_numbers_however_they_are_written() {
        let d = |s: &str| encode_decimal(s).unwrap_or_else(|| panic!("{s} should encode"));
        // One value, four spellings.
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("15e-1"), d("1.5"));
        assert_eq!(d("0001.5000"), d("+1.5"));
        assert_eq!(d("0"), d("-0.000"));
        // Worked order: -1000 < -2.5 < -2.25 < -0.001 < 0 < 0.001 < 0.1 < 0.12 < 0.123 < 2 < 10 < 1e21.
        let ascending = ["-1000", "-2.5", "-2.25", "-0.001", "0", "0.001", "0.1", "0.12", "0.123", "2", "10", "1e21"];
        for pair in ascending.windows(2) {
            assert!(d(pair[0]) < d(pair[1]), "{} should sort before {}", pair[0], pair[1]);
        }
        // Money given as a JSON string stays exact: 0.1 + 0.2 style rounding cannot creep in.
        assert_eq!(IndexType::Decimal.encode(&json!("1234.50")).unwrap(), Some(d("1234.5")));
        assert!(d("12345678901234567890.123456789") < d("12345678901234567890.12345679"));
        for bad in ["", ".", "1.2.3", "1,5", "abc", "1e", "--1", "1e99999", &"9".repeat(39)] {
            assert!(encode_decimal(bad).is_none(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn datetimes_order_as_instants_whatever_their_offset() {
        let t = |s: &str| IndexType::Datetime.encode_text(s).unwrap();
        // 09:30 in Paris (summer) is 07:30 UTC: before 08:00 UTC, though its text is later.
        assert!(t("2026-07-01T09:30:00+02:00") < t("2026-07-01T08:00:00Z"));
        assert_eq!(t("2026-07-01T09:30:00+02:00"), t("2026-07-01T07:30:00Z"));
        assert_eq!(t("2026-07-01T07:30:00.5Z"), "2026-07-01T07:30:00.500000000Z");
        assert!(t("2026-07-01T07:30:00Z") < t("2026-07-01T07:30:00.000000001Z"));
        for bad in ["2026-07-01", "2026-07-01T07:30:00", "yesterday", "2026-13-01T00:00:00Z", "0000-01-01T00:00:00Z"] {
            assert!(IndexType::Datetime.encode_text(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn dates_are_exactly_calendar_dates() {
        assert_eq!(IndexType::Date.encode_text("2026-02-28").unwrap(), "2026-02-28");
        for bad in ["2026-02-29", "2026-2-28", "26-02-28", "2026-02-28T00:00:00Z", "0000-01-01", "20260228"] {
            assert!(IndexType::Date.encode_text(bad).is_err(), "{bad:?} should be refused");
        }
        // A date field holding a number is a mistake the writer hears about, field named.
        let err = IndexType::Date.encode(&json!(20260228)).unwrap_err();
        assert!(err.contains("`date`") && err.contains("20260228"), "{err}");
    }

    #[test]
    fn compound_values_compare_component_by_component() {
        let j = |a: &str, b: &str| join_components([a, b]);
        // "a" then anything sorts before "a\0" then anything, and before "ab".
        assert!(j("a", "zzz") < j("a\0", ""));
        assert!(j("a\0", "zzz") < j("a\x01", ""));
        assert!(j("a\x01", "zzz") < j("ab", ""));
        assert!(j("a", "1") < j("a", "2"));
        // No component can forge a separator.
        assert_ne!(j("a\x01\x01b", "c"), j("a", "b\x01\x01c"));
    }

    #[test]
    fn prefix_end_is_the_least_text_past_the_prefix() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end(&format!("a{}", char::MAX)).as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }

    fn movements() -> CollectionIndexes {
        CollectionIndexes {
            fields: BTreeMap::from([
                ("item".into(), IndexType::String),
                ("at".into(), IndexType::Datetime),
                ("qty".into(), IndexType::Decimal),
                ("status".into(), IndexType::Text),
            ]),
            compound: vec![vec!["item".into(), "at".into()]],
            search: None,
        }
    }

    fn cond(field: &str, op: Comparison, value: &str) -> Condition {
        Condition { field: field.into(), op, value: value.into() }
    }

    #[test]
    fn a_compound_index_drives_equality_then_order() {
        let at = "2026-07-01T00:00:00Z";
        let plan = movements()
            .plan(
                "movements",
                &[
                    cond("item", Comparison::Eq, "bolt"),
                    cond("at", Comparison::Gt, at),
                    cond("status", Comparison::Ne, "void"),
                ],
                Some("at"),
            )
            .unwrap();
        let drive = plan.drive.unwrap();
        assert_eq!(drive.index, "item+at");
        let after = join_components(["bolt", IndexType::Datetime.encode_text(at).unwrap().as_str()]);
        assert_eq!(drive.lower, Some((after, false)), "the range starts after T within item `bolt`");
        assert_eq!(drive.upper, Some((format!("bolt{}", "\x01\x02"), false)), "and ends with item `bolt`");
        assert_eq!(plan.residual, [Predicate { index: "status".into(), op: Comparison::Ne, value: "void".into() }]);
    }

    #[test]
    fn a_second_equality_on_a_compound_field_is_still_checked() {
        let plan = movements()
            .plan("movements", &[cond("item", Comparison::Eq, "bolt"), cond("item", Comparison::Eq, "nut")], Some("at"))
            .unwrap();
        assert_eq!(plan.drive.unwrap().index, "item+at");
        assert_eq!(plan.residual, [Predicate { index: "item".into(), op: Comparison::Eq, value: "nut".into() }]);
    }

    #[test]
    fn without_a_fitting_compound_the_order_field_drives_and_the_rest_is_checked() {
        let plan = movements()
            .plan(
                "movements",
                &[cond("qty", Comparison::Ge, "10"), cond("status", Comparison::Eq, "open")],
                Some("qty"),
            )
            .unwrap();
        let drive = plan.drive.unwrap();
        assert_eq!((drive.index.as_str(), drive.lower.unwrap().1, drive.upper), ("qty", true, None));
        assert_eq!(plan.residual.len(), 1);
        // Ordered by key, an equality drives; with none, the collection does.
        let plan = movements()
            .plan("movements", &[cond("qty", Comparison::Lt, "5"), cond("status", Comparison::Eq, "open")], None)
            .unwrap();
        assert_eq!(plan.drive.unwrap().index, "status");
        let plan = movements().plan("movements", &[cond("qty", Comparison::Lt, "5")], None).unwrap();
        assert!(plan.drive.is_none());
        assert_eq!(plan.residual.len(), 1);
    }

    #[test]
    fn bad_queries_name_the_field() {
        let m = movements();
        let err = m.plan("movements", &[cond("colour", Comparison::Eq, "red")], None).unwrap_err();
        assert!(matches!(err, PlanError::NotIndexed { ref field, .. } if field == "colour"));
        let err = m.plan("movements", &[cond("at", Comparison::Lt, "last tuesday")], None).unwrap_err();
        assert!(matches!(err, PlanError::BadValue { ref field, .. } if field == "at"), "{err}");
        let err = m.plan("movements", &[cond("qty", Comparison::Prefix, "1")], None).unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
        assert!(m.plan("movements", &[], Some("colour")).is_err());
    }

    #[test]
    fn entries_cover_single_and_compound_indexes_and_refuse_wrong_types() {
        let m = movements();
        let entries = m.entries(&json!({"item": "bolt", "at": "2026-07-01T02:00:00+02:00", "qty": "2.50"})).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["at", "item", "qty", "item+at"]);
        // Without `at` there is no compound entry; null is as good as absent.
        let entries = m.entries(&json!({"item": "bolt", "at": null})).unwrap();
        assert_eq!(entries, [("item".to_string(), "bolt".to_string())]);
        let (field, reason) = m.entries(&json!({"item": "bolt", "at": "soon"})).unwrap_err();
        assert_eq!(field, "at");
        assert!(reason.contains("RFC 3339"), "{reason}");
    }
}
