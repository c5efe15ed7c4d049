//! Route contracts: the JSON Schemas a manifest gives a route's path parameters, query, body
//! and answer, checked by the host before the plugin runs, and published in OpenAPI.
//!
//! The host checks a documented subset of JSON Schema 2020-12 (the dialect of OpenAPI 3.1).
//! A keyword outside it is refused at install rather than ignored, so a schema never promises
//! a check the host does not make:
//!
//! - validation: `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`,
//!   `minProperties`, `maxProperties`, `items`, `minItems`, `maxItems`, `uniqueItems`,
//!   `minLength`, `maxLength`, `pattern` (Rust `regex` syntax: no look-around or
//!   back-references), `format` (`date`, `date-time`, `email`, `uuid`), `minimum`, `maximum`,
//!   `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`, `allOf`, `anyOf`, `oneOf`, `not`,
//!   and `$ref` to a named schema of the manifest (`#/schemas/<Name>`);
//! - annotations: `title`, `description`, `default`, `examples`, `readOnly`, `writeOnly`,
//!   `deprecated`, `$comment`.
//!
//! Checking is bounded: work grows with the body's size, never exponentially with the
//! schema (a step budget), so a plugin's schema cannot make the host spin.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Where a manifest's named schemas are referenced from: `#/schemas/<Name>`.
pub const REF_PREFIX: &str = "#/schemas/";
/// Most schema nodes one manifest may declare (named schemas and route schemas together).
const MAX_NODES: usize = 5_000;
/// Most violations a refusal lists.
const MAX_VIOLATIONS: usize = 20;

const VALIDATION_KEYWORDS: [&str; 27] = [
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "$ref",
    "nullable",
];
const ANNOTATIONS: [&str; 8] =
    ["title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated", "$comment"];
const FORMATS: [&str; 4] = ["date", "date-time", "email", "uuid"];

/// A JSON type as `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

impl JsonType {
    fn parse(name: &str) -> Option<JsonType> {
        Some(match name {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "string" => JsonType::String,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::String => "string",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (JsonType::Null, Value::Null) => true,
            (JsonType::Boolean, Value::Bool(_)) => true,
            (JsonType::Object, Value::Object(_)) => true,
            (JsonType::Array, Value::Array(_)) => true,
            (JsonType::Number, Value::Number(_)) => true,
            (JsonType::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            (JsonType::String, Value::String(_)) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Date,
    DateTime,
    Email,
    Uuid,
}

/// One compiled schema.
#[derive(Debug, Clone)]
enum Node {
    /// `true` (anything) or `false` (nothing).
    Always(bool),
    Rules(Box<Rules>),
}

#[derive(Debug, Clone, Default)]
struct Rules {
    reference: Option<String>,
    types: Option<Vec<JsonType>>,
    choices: Option<Vec<Value>>,
    constant: Option<Value>,
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    additional: Option<Node>,
    min_properties: Option<usize>,
    max_properties: Option<usize>,
    items: Option<Node>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    unique_items: bool,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<regex::Regex>,
    format: Option<Format>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<f64>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Node>,
}

/// A named schema, or one a route declares inline, after checking.
#[derive(Debug, Clone)]
pub struct Schema {
    node: Node,
    /// The manifest's named schemas, which `$ref`s point into.
    named: Arc<Named>,
}

#[derive(Debug, Default)]
struct Named {
    schemas: BTreeMap<String, Node>,
}

/// What the host checks of a route's requests, and what it answers.
#[derive(Debug, Clone, Default)]
pub struct RouteContract {
    pub params: Option<Schema>,
    pub query: Option<Schema>,
    pub input: Option<Schema>,
    pub output: Option<Schema>,
}

/// A value that breaks a schema: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The field at fault, as the SDK names fields: `title`, `lines[2].qty`; empty for the
    /// value as a whole.
    pub field: String,
    pub message: String,
}

/// Checks and compiles schemas of one manifest.
pub struct Compiler {
    named: Arc<Named>,
    nodes: usize,
}

impl Compiler {
    /// Compiles the manifest's named schemas (`[schemas]`); `$ref`s among them must resolve
    /// and may not loop without descending into the value.
    pub fn new(named: &BTreeMap<String, Value>) -> Result<Compiler, (String, String)> {
        let mut compiler = Compiler { named: Arc::new(Named::default()), nodes: 0 };
        for name in named.keys() {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err((
                    format!("schemas.{name}"),
                    "schema names are 1-64 letters, digits and '_', starting with a letter".into(),
                ));
            }
        }
        let mut compiled = BTreeMap::new();
        for (name, value) in named {
            let at = format!("schemas.{name}");
            let node = compiler.compile(value, &at, named)?;
            compiled.insert(name.clone(), node);
        }
        for name in named.keys() {
            let mut seen = BTreeSet::new();
            if loops(name, &compiled, &mut seen) {
                return Err((
                    format!("schemas.{name}"),
                    "refers to itself without descending into a property or item".into(),
                ));
            }
        }
        compiler.named = Arc::new(Named { schemas: compiled });
        Ok(compiler)
    }

    /// Compiles one schema a route declares (`at` names it in errors).
    pub fn schema(
        &mut self,
        value: &Value,
        at: &str,
        named: &BTreeMap<String, Value>,
    ) -> Result<Schema, (String, String)> {
        let node = self.compile(value, at, named)?;
        Ok(Schema { node, named: self.named.clone() })
    }

    fn compile(&mut self, value: &Value, at: &str, named: &BTreeMap<String, Value>) -> Result<Node, (String, String)> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err((at.to_owned(), format!("the manifest's schemas have more than {MAX_NODES} nodes")));
        }
        let fail = |reason: String| Err((at.to_owned(), reason));
        let object = match value {
            Value::Bool(b) => return Ok(Node::Always(*b)),
            Value::Object(object) => object,
            _ => return fail("a schema is a table (or true/false)".into()),
        };
        let mut rules = Rules::default();
        for (keyword, v) in object {
            let here = format!("{at}.{keyword}");
            let bad = |reason: &str| Err((here.clone(), reason.to_owned()));
            match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "$ref" => {
                    let Some(name) = v.as_str().and_then(|r| r.strip_prefix(REF_PREFIX)) else {
                        return bad("`$ref` is `#/schemas/<Name>`, a schema of this manifest's [schemas]");
                    };
                    if !named.contains_key(name) {
                        return bad(&format!("no schema `{name}` under [schemas]"));
                    }
                    rules.reference = Some(name.to_owned());
                }
                "type" => {
                    let names: Vec<&Value> = match v {
                        Value::Array(list) => list.iter().collect(),
                        single => vec![single],
                    };
                    let mut types = Vec::new();
                    for name in names {
                        match name.as_str().and_then(JsonType::parse) {
                            Some(t) if !types.contains(&t) => types.push(t),
                            _ => {
                                return bad(
                                    "`type` is one or a list of null, boolean, object, array, number, integer, string",
                                );
                            }
                        }
                    }
                    if types.is_empty() {
                        return bad("`type` lists no type");
                    }
                    rules.types = Some(types);
                }
                "nullable" => return bad("`nullable` is OpenAPI 3.0; write `type = [\"string\", \"null\"]`"),
                "enum" => match v {
                    Value::Array(list) if !list.is_empty() => rules.choices = Some(list.clone()),
                    _ => return bad("`enum` is a non-empty list"),
                },
                "const" => rules.constant = Some(v.clone()),
                "properties" => {
                    let Value::Object(properties) = v else { return bad("`properties` is a table of schemas") };
                    for (name, schema) in properties {
                        let node = self.compile(schema, &format!("{here}.{name}"), named)?;
                        rules.properties.insert(name.clone(), node);
                    }
                }
                "required" => {
                    let names: Option<Vec<String>> =
                        v.as_array().map(|l| l.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect());
                    match names {
                        Some(names) if names.len() == v.as_array().map_or(0, Vec::len) => rules.required = names,
                        _ => return bad("`required` is a list of property names"),
                    }
                }
                "additionalProperties" => rules.additional = Some(self.compile(v, &here, named)?),
                "items" => {
                    if v.is_array() {
                        return bad("`items` is one schema (tuple forms are `prefixItems`, which is not supported)");
                    }
                    rules.items = Some(self.compile(v, &here, named)?)
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                        return bad("a non-empty list of schemas");
                    };
                    let mut nodes = Vec::new();
                    for (i, schema) in list.iter().enumerate() {
                        nodes.push(self.compile(schema, &format!("{here}[{i}]"), named)?);
                    }
                    match keyword.as_str() {
                        "allOf" => rules.all_of = nodes,
                        "anyOf" => rules.any_of = nodes,
                        _ => rules.one_of = nodes,
                    }
                }
                "not" => rules.not = Some(self.compile(v, &here, named)?),
                "minProperties" | "maxProperties" | "minItems" | "maxItems" | "minLength" | "maxLength" => {
                    let Some(n) = v.as_u64().map(|n| n as usize) else { return bad("a whole number, 0 or more") };
                    match keyword.as_str() {
                        "minProperties" => rules.min_properties = Some(n),
                        "maxProperties" => rules.max_properties = Some(n),
                        "minItems" => rules.min_items = Some(n),
                        "maxItems" => rules.max_items = Some(n),
                        "minLength" => rules.min_length = Some(n),
                        _ => rules.max_length = Some(n),
                    }
                }
                "uniqueItems" => match v {
                    Value::Bool(b) => rules.unique_items = *b,
                    _ => return bad("`uniqueItems` is true or false"),
                },
                "pattern" => {
                    let Some(text) = v.as_str() else { return bad("`pattern` is a regular expression") };
                    match regex::RegexBuilder::new(text).size_limit(1 << 20).build() {
                        Ok(re) => rules.pattern = Some(re),
                        Err(e) => return bad(&format!("not a regular expression the host can run: {e}")),
                    }
                }
                "format" => {
                    rules.format = Some(match v.as_str() {
                        Some("date") => Format::Date,
                        Some("date-time") => Format::DateTime,
                        Some("email") => Format::Email,
                        Some("uuid") => Format::Uuid,
                        _ => return bad(&format!("`format` is one of {}", FORMATS.join(", "))),
                    })
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
                    let Some(n) = v.as_f64() else { return bad("a number") };
                    match keyword.as_str() {
                        "minimum" => rules.minimum = Some(n),
                        "maximum" => rules.maximum = Some(n),
                        "exclusiveMinimum" => rules.exclusive_minimum = Some(n),
                        "exclusiveMaximum" => rules.exclusive_maximum = Some(n),
                        _ if n > 0.0 => rules.multiple_of = Some(n),
                        _ => return bad("`multipleOf` is greater than 0"),
                    }
                }
                other => {
                    debug_assert!(!VALIDATION_KEYWORDS.contains(&other));
                    return bad(&format!(
                        "`{other}` is not a keyword the host checks (see the plugin guide's list); remove it or write it as `description`"
                    ));
                }
            }
        }
        for name in &rules.required {
            let allowed = rules.properties.contains_key(name) || !matches!(rules.additional, Some(Node::Always(false)));
            if !allowed {
                return Err((format!("{at}.required"), format!("`{name}` is required but not an allowed property")));
            }
        }
        Ok(Node::Rules(Box::new(rules)))
    }
}

/// Whether `name` reaches itself through `$ref`s and combinators without descending.
fn loops(name: &str, named: &BTreeMap<String, Node>, seen: &mut BTreeSet<String>) -> bool {
    if !seen.insert(name.to_owned()) {
        return true;
    }
    let found = named.get(name).is_some_and(|node| shallow_refs(node).iter().any(|r| loops(r, named, seen)));
    seen.remove(name);
    found
}

fn shallow_refs(node: &Node) -> Vec<&str> {
    let Node::Rules(rules) = node else { return Vec::new() };
    let mut refs: Vec<&str> = rules.reference.as_deref().into_iter().collect();
    for n in rules.all_of.iter().chain(&rules.any_of).chain(&rules.one_of).chain(&rules.not) {
        refs.extend(shallow_refs(n));
    }
    refs
}

/// How much checking a value may take: steps per byte of the request, plus a floor.
struct Budget(u64);

impl Budget {
    fn for_size(bytes: usize) -> Budget {
        Budget(10_000 + 64 * bytes as u64)
    }
}

const OVER_BUDGET: &str = "checking this value against the route's schema takes too long";

impl Schema {
    /// Every way `value` breaks the schema (at most 20), or none. `size` is the request's
    /// size in bytes, which bounds the work.
    pub fn check(&self, value: &Value, size: usize) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut budget = Budget::for_size(size);
        let mut path = String::new();
        if !self.visit(&self.node, value, &mut path, &mut out, &mut budget) && out.is_empty() {
            out.push(Violation { field: String::new(), message: "does not match the schema".into() });
        }
        if budget.0 == 0 {
            out = vec![Violation { field: String::new(), message: OVER_BUDGET.into() }];
        }
        out.truncate(MAX_VIOLATIONS);
        out
    }

    /// Whether `value` matches; violations are pushed to `out`.
    fn visit(
        &self,
        node: &Node,
        value: &Value,
        path: &mut String,
        out: &mut Vec<Violation>,
        budget: &mut Budget,
    ) -> bool {
        if budget.0 == 0 {
            return false;
        }
        budget.0 -= 1;
        let rules = match node {
            Node::Always(true) => return true,
            Node::Always(false) => {
                push(out, path, "is not allowed here".into());
                return false;
            }
            Node::Rules(rules) => rules,
        };
        let mut ok = true;
        macro_rules! fail {
            ($out:expr, $message:expr) => {{
                ok = false;
                push($out, path, $message);
            }};
        }
        if let Some(name) = &rules.reference {
            let target = self.named.schemas.get(name).expect("references are resolved at compile time");
            if !self.visit(target, value, path, out, budget) {
                return false;
            }
        }
        if let Some(types) = &rules.types
            && !types.iter().any(|t| t.admits(value))
        {
            let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
            push(out, path, format!("must be {}", one_of_words(&names)));
            return false;
        }
        if let Some(choices) = &rules.choices
            && !choices.iter().any(|c| same(c, value))
        {
            let shown: Vec<String> = choices.iter().take(10).map(|c| c.to_string()).collect();
            fail!(out, format!("must be one of {}", shown.join(", ")));
        }
        if let Some(constant) = &rules.constant
            && !same(constant, value)
        {
            fail!(out, format!("must be {constant}"));
        }
        match value {
            Value::String(s) => {
                let length = s.chars().count();
                if let Some(min) = rules.min_length
                    && length < min
                {
                    fail!(out, format!("must be at least {min} characters long"));
                }
                if let Some(max) = rules.max_length
                    && length > max
                {
                    fail!(out, format!("must be at most {max} characters long"));
                }
                if let Some(re) = &rules.pattern {
                    budget.0 = budget.0.saturating_sub(s.len() as u64);
                    if !re.is_match(s) {
                        // The common "not blank" rule, said the way people say it.
                        if re.as_str() == r"\S" {
                            fail!(out, "must not be blank".to_owned());
                        } else {
                            fail!(out, format!("must match the pattern `{}`", re.as_str()));
                        }
                    }
                }
                if let Some(format) = rules.format
                    && !format_holds(format, s)
                {
                    let what = match format {
                        Format::Date => "a date (YYYY-MM-DD)",
                        Format::DateTime => "a date and time with an offset (RFC 3339)",
                        Format::Email => "an email address",
                        Format::Uuid => "a UUID",
                    };
                    fail!(out, format!("must be {what}"));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if rules.minimum.is_some_and(|m| x < m) {
                    fail!(out, format!("must be at least {}", show(rules.minimum)));
                }
                if rules.maximum.is_some_and(|m| x > m) {
                    fail!(out, format!("must be at most {}", show(rules.maximum)));
                }
                if rules.exclusive_minimum.is_some_and(|m| x <= m) {
                    fail!(out, format!("must be greater than {}", show(rules.exclusive_minimum)));
                }
                if rules.exclusive_maximum.is_some_and(|m| x >= m) {
                    fail!(out, format!("must be less than {}", show(rules.exclusive_maximum)));
                }
                if let Some(step) = rules.multiple_of {
                    let q = x / step;
                    if !q.is_finite() || (q - q.round()).abs() > 1e-9 {
                        fail!(out, format!("must be a multiple of {step}"));
                    }
                }
            }
            Value::Array(items) => {
                if rules.min_items.is_some_and(|m| items.len() < m) {
                    fail!(out, format!("must have at least {} items", rules.min_items.unwrap_or_default()));
                }
                if rules.max_items.is_some_and(|m| items.len() > m) {
                    fail!(out, format!("must have at most {} items", rules.max_items.unwrap_or_default()));
                }
                if rules.unique_items {
                    let mut seen = HashSet::new();
                    budget.0 = budget.0.saturating_sub(items.len() as u64);
                    if !items.iter().all(|item| seen.insert(item.to_string())) {
                        fail!(out, "must not repeat an item".into());
                    }
                }
                if let Some(schema) = &rules.items {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        if !self.visit(schema, item, path, out, budget) {
                            ok = false;
                        }
                        path.truncate(len);
                        if out.len() >= MAX_VIOLATIONS || budget.0 == 0 {
                            break;
                        }
                    }
                }
            }
            Value::Object(members) => {
                for name in &rules.required {
                    if !members.contains_key(name) {
                        ok = false;
                        let len = path.len();
                        descend(path, name);
                        push(out, path, "is required".into());
                        path.truncate(len);
                    }
                }
                if rules.min_properties.is_some_and(|m| members.len() < m) {
                    fail!(out, format!("must have at least {} members", rules.min_properties.unwrap_or_default()));
                }
                if rules.max_properties.is_some_and(|m| members.len() > m) {
                    fail!(out, format!("must have at most {} members", rules.max_properties.unwrap_or_default()));
                }
                for (name, member) in members {
                    let schema = match (rules.properties.get(name), &rules.additional) {
                        (Some(schema), _) => schema,
                        (None, Some(additional)) => additional,
                        (None, None) => continue,
                    };
                    let len = path.len();
                    descend(path, name);
                    let matched = match schema {
                        Node::Always(false) => {
                            push(out, path, "is not a field of this input".into());
                            false
                        }
                        schema => self.visit(schema, member, path, out, budget),
                    };
                    path.truncate(len);
                    ok &= matched;
                    if out.len() >= MAX_VIOLATIONS || budget.0 == 0 {
                        break;
                    }
                }
            }
            _ => {}
        }
        for schema in &rules.all_of {
            ok &= self.visit(schema, value, path, out, budget);
        }
        if !rules.any_of.is_empty() || !rules.one_of.is_empty() || rules.not.is_some() {
            // Branches are tried quietly: only the verdict is reported.
            let here = path.clone();
            let matches = |list: &[Node], budget: &mut Budget| {
                let mut quiet = Vec::new();
                list.iter()
                    .filter(|schema| {
                        quiet.clear();
                        self.visit(schema, value, &mut here.clone(), &mut quiet, budget)
                    })
                    .count()
            };
            if !rules.any_of.is_empty() && matches(&rules.any_of, budget) == 0 {
                ok = false;
                // `anyOf: [X, null]` (a nullable field): X's own reasons say more than the
                // verdict.
                let nullable = rules.any_of.len() == 2 && rules.any_of.iter().any(is_null_type);
                match rules.any_of.iter().find(|n| !is_null_type(n)) {
                    Some(other) if nullable => {
                        self.visit(other, value, path, out, budget);
                    }
                    _ => push(out, path, "matches none of the allowed shapes".into()),
                }
            }
            if !rules.one_of.is_empty() && matches(&rules.one_of, budget) != 1 {
                ok = false;
                push(out, path, "must match exactly one of the allowed shapes".into());
            }
            if let Some(not) = &rules.not
                && matches(std::slice::from_ref(not), budget) == 1
            {
                ok = false;
                push(out, path, "matches a shape that is not allowed".into());
            }
        }
        ok
    }

    /// The type a query or path parameter's text is read as: the schema's own single
    /// non-null type, through a `$ref`.
    fn scalar_type(&self, node: &Node) -> Option<JsonType> {
        let Node::Rules(rules) = node else { return None };
        if let Some(types) = &rules.types {
            return types.iter().copied().find(|t| *t != JsonType::Null);
        }
        rules.reference.as_ref().and_then(|name| self.scalar_type(self.named.schemas.get(name)?))
    }

    /// The schema of `name` when this is an object schema (query or path parameters).
    fn member(&self, name: &str) -> Option<&Node> {
        let Node::Rules(rules) = &self.node else { return None };
        rules.properties.get(name)
    }

    /// Reads query or path parameters (text) as the JSON value this object schema
    /// describes: numbers, booleans and repeated keys (arrays) by each property's type.
    /// Text that is not of its type stays text, so the check names it.
    pub fn read_parameters(&self, pairs: &[(String, String)]) -> Result<Value, Violation> {
        let mut object = Map::new();
        for (name, text) in pairs {
            let node = self.member(name);
            let ty = node.and_then(|n| self.scalar_type(n));
            let item_type = match (ty, node) {
                (Some(JsonType::Array), Some(Node::Rules(rules))) => {
                    Some(rules.items.as_ref().and_then(|i| self.scalar_type(i)).unwrap_or(JsonType::String))
                }
                _ => None,
            };
            match item_type {
                Some(item) => {
                    let entry = object.entry(name.clone()).or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = entry {
                        list.push(typed(text, Some(item)));
                    }
                }
                None if object.contains_key(name) => {
                    return Err(Violation { field: name.clone(), message: "is given more than once".into() });
                }
                None => {
                    object.insert(name.clone(), typed(text, ty));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// Whether a schema is exactly `{type: "null"}`.
fn is_null_type(node: &Node) -> bool {
    match node {
        Node::Rules(rules) => {
            rules.types.as_deref() == Some(&[JsonType::Null])
                && rules.reference.is_none()
                && rules.choices.is_none()
                && rules.all_of.is_empty()
        }
        Node::Always(_) => false,
    }
}

fn typed(text: &str, ty: Option<JsonType>) -> Value {
    let parsed = match ty {
        // Digits only (no `+`, no spaces): what a client generated from the schema sends.
        Some(JsonType::Integer) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            plain.then(|| text.parse::<i64>().ok().map(Value::from)).flatten()
        }
        Some(JsonType::Number) => {
            text.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(serde_json::Number::from_f64).map(|n| {
                // Integers stay integers, so `integer` and large values compare exactly.
                text.parse::<i64>().map(Value::from).unwrap_or(Value::Number(n))
            })
        }
        Some(JsonType::Boolean) => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

fn push(out: &mut Vec<Violation>, path: &str, message: String) {
    if out.len() < MAX_VIOLATIONS {
        out.push(Violation { field: path.to_owned(), message });
    }
}

fn descend(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn show(n: Option<f64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn one_of_words(names: &[&str]) -> String {
    match names {
        [one] => format!("a{} {one}", if one.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" }),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// JSON Schema equality: numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn format_holds(format: Format, s: &str) -> bool {
    match format {
        Format::Date => s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok(),
        Format::DateTime => {
            // RFC 3339: a full date, `T`, a time and an offset (`Z` or ±hh:mm).
            let shaped = s.len() >= 20 && s.as_bytes().get(10).is_some_and(|b| matches!(b, b'T' | b't'));
            shaped && s.parse::<jiff::Timestamp>().is_ok()
        }
        Format::Email => {
            let Some((local, domain)) = s.rsplit_once('@') else { return false };
            !local.is_empty()
                && local.len() <= 64
                && !domain.is_empty()
                && domain.len() <= 255
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        }
        Format::Uuid => {
            let b = s.as_bytes();
            b.len() == 36
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
        }
    }
}

/// Rewrites every number written with a zero fraction (`3.0`) that an integer holds
/// exactly as that integer; whether any was.
pub fn integral_floats_to_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 every integer is exact in a double.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(f as i64);
                true
            } else {
                false
            }
        }
        Value::Array(list) => list.iter_mut().fold(false, |any, v| integral_floats_to_integers(v) | any),
        Value::Object(map) => map.values_mut().fold(false, |any, v| integral_floats_to_integers(v) | any),
        _ => false,
    }
}

/// A schema as OpenAPI shows it: `#/schemas/<Name>` becomes
/// `#/components/schemas/<prefix><Name>`.
pub fn to_openapi(schema: &Value, prefix: &str) -> Value {
    match schema {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v.as_str().and_then(|r| r.strip_prefix(REF_PREFIX))) {
                        ("$ref", Some(name)) => Value::String(format!("#/components/schemas/{prefix}{name}")),
                        _ => to_openapi(v, prefix),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(|v| to_openapi(v, prefix)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(named: Value, schema: Value) -> Result<Schema, (String, String)> {
        let named: BTreeMap<String, Value> = serde_json::from_value(named).unwrap();
        let mut compiler = Compiler::new(&named)?;
        compiler.schema(&schema, "routes.input", &named)
    }

    fn fields(schema: &Schema, value: Value) -> Vec<(String, String)> {
        schema.check(&value, 100).into_iter().map(|v| (v.field, v.message)).collect()
    }

    #[test]
    fn an_object_is_checked_member_by_member_and_names_each_field_at_fault() {
        let schema = compile(
            json!({"Line": {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}}}),
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["title", "lines"],
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 5},
                    "priority": {"enum": ["P1", "P2"]},
                    "lines": {"type": "array", "items": {"$ref": "#/schemas/Line"}, "maxItems": 3},
                },
            }),
        )
        .unwrap();
        assert!(fields(&schema, json!({"title": "Fan", "lines": [{"qty": 2}]})).is_empty());
        assert_eq!(
            fields(
                &schema,
                json!({"title": "Too long", "priority": "P9", "lines": [{"qty": 2}, {"qty": 0}, {}], "x": 1})
            ),
            vec![
                ("lines[1].qty".to_owned(), "must be at least 1".to_owned()),
                ("lines[2].qty".to_owned(), "is required".to_owned()),
                ("priority".to_owned(), "must be one of \"P1\", \"P2\"".to_owned()),
                ("title".to_owned(), "must be at most 5 characters long".to_owned()),
                ("x".to_owned(), "is not a field of this input".to_owned()),
            ]
        );
        assert_eq!(fields(&schema, json!({"title": "A"})), vec![("lines".to_owned(), "is required".to_owned())]);
        assert_eq!(fields(&schema, json!([1])), vec![(String::new(), "must be an object".to_owned())]);
    }

    #[test]
    fn a_keyword_the_host_does_not_check_is_refused_not_ignored() {
        let refused = |schema: Value| compile(json!({}), schema).unwrap_err();
        assert_eq!(refused(json!({"type": "string", "maxLenght": 3})).0, "routes.input.maxLenght");
        assert_eq!(refused(json!({"type": "strin"})).0, "routes.input.type");
        assert_eq!(refused(json!({"format": "hostname"})).0, "routes.input.format");
        assert_eq!(refused(json!({"pattern": "(?=a)"})).0, "routes.input.pattern");
        assert_eq!(refused(json!({"$ref": "#/schemas/Missing"})).0, "routes.input.$ref");
        assert_eq!(refused(json!({"$ref": "https://example.com/schema.json"})).0, "routes.input.$ref");
        assert_eq!(refused(json!({"nullable": true})).0, "routes.input.nullable");
        assert_eq!(refused(json!({"items": [{"type": "string"}]})).0, "routes.input.items");
        let looping =
            compile(json!({"A": {"$ref": "#/schemas/B"}, "B": {"anyOf": [{"$ref": "#/schemas/A"}]}}), json!(true));
        assert_eq!(looping.unwrap_err().0, "schemas.A");
        // Recursion through a property descends into the value, so it ends.
        let tree = json!({"Node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/schemas/Node"}}}}});
        let schema = compile(tree, json!({"$ref": "#/schemas/Node"})).unwrap();
        assert!(fields(&schema, json!({"children": [{"children": []}]})).is_empty());
        assert_eq!(fields(&schema, json!({"children": [{"children": 1}]}))[0].0, "children[0].children");
    }

    #[test]
    fn formats_numbers_and_combinators_follow_json_schema() {
        let schema = |s: Value| compile(json!({}), s).unwrap();
        let date = schema(json!({"type": "string", "format": "date"}));
        assert!(fields(&date, json!("2026-02-28")).is_empty());
        assert_eq!(fields(&date, json!("2026-02-30")).len(), 1);
        let at = schema(json!({"type": "string", "format": "date-time"}));
        assert!(fields(&at, json!("2026-02-28T10:00:00+01:00")).is_empty());
        assert_eq!(fields(&at, json!("2026-02-28 10:00")).len(), 1);
        let email = schema(json!({"format": "email"}));
        assert!(fields(&email, json!("ada@example.com")).is_empty());
        assert_eq!(fields(&email, json!("ada at example")).len(), 1);
        let integer = schema(json!({"type": "integer", "exclusiveMinimum": 0, "multipleOf": 5}));
        assert!(fields(&integer, json!(10.0)).is_empty(), "10.0 is an integer in JSON Schema");
        assert_eq!(fields(&integer, json!(0)), vec![(String::new(), "must be greater than 0".to_owned())]);
        assert_eq!(fields(&integer, json!(7)), vec![(String::new(), "must be a multiple of 5".to_owned())]);
        assert_eq!(fields(&integer, json!(7.5)), vec![(String::new(), "must be an integer".to_owned())]);
        let nullable = schema(json!({"type": ["string", "null"], "maxLength": 2}));
        assert!(fields(&nullable, json!(null)).is_empty());
        assert_eq!(fields(&nullable, json!("abc")).len(), 1);
        let one = schema(json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}));
        assert!(fields(&one, json!(1.5)).is_empty());
        assert_eq!(fields(&one, json!(1)).len(), 1, "an integer is also a number: two branches match");
        let not = schema(json!({"not": {"const": "root"}}));
        assert_eq!(fields(&not, json!("root")).len(), 1);
        let unique = schema(json!({"uniqueItems": true}));
        assert_eq!(fields(&unique, json!([1, 2, 1])).len(), 1);
    }

    #[test]
    fn parameters_are_read_by_their_declared_types() {
        let schema = compile(
            json!({}),
            json!({"type": "object", "additionalProperties": false, "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "open": {"type": "boolean"},
                "status": {"type": "array", "items": {"enum": ["new", "open"]}},
                "q": {"type": "string"},
            }}),
        )
        .unwrap();
        let read = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            schema.read_parameters(&pairs)
        };
        let value =
            read(&[("limit", "10"), ("open", "true"), ("status", "new"), ("status", "open"), ("q", "7")]).unwrap();
        assert_eq!(value, json!({"limit": 10, "open": true, "status": ["new", "open"], "q": "7"}));
        assert!(fields(&schema, value).is_empty());
        let bad = read(&[("limit", "ten"), ("status", "closed"), ("x", "1")]).unwrap();
        assert_eq!(
            fields(&schema, bad),
            vec![
                ("limit".to_owned(), "must be an integer".to_owned()),
                ("status[0]".to_owned(), "must be one of \"new\", \"open\"".to_owned()),
                ("x".to_owned(), "is not a field of this input".to_owned()),
            ]
        );
        assert_eq!(read(&[("limit", "1"), ("limit", "2")]).unwrap_err().field, "limit");
        assert_eq!(
            read(&[("limit", "+5")]).unwrap(),
            json!({"limit": "+5"}),
            "text a number parser would bend stays text"
        );
    }

    #[test]
    fn checking_is_bounded_by_the_size_of_the_value() {
        // Each level tries two branches that both descend: 2^30 visits without a budget.
        let mut named = serde_json::Map::new();
        named.insert("S0".into(), json!({"type": "integer"}));
        for i in 1..=30 {
            let inner = json!({"type": "array", "items": {"$ref": format!("#/schemas/S{}", i - 1)}});
            named.insert(format!("S{i}"), json!({"anyOf": [{"type": "string"}, inner.clone(), inner]}));
        }
        let schema = compile(Value::Object(named), json!({"$ref": "#/schemas/S30"})).unwrap();
        let mut value = json!("x");
        for _ in 0..30 {
            value = json!([value]);
        }
        // The budget, not the schema, ends the check: one violation saying so.
        let violations = schema.check(&value, 61);
        assert_eq!(violations, vec![Violation { field: String::new(), message: OVER_BUDGET.into() }]);
        // Positive control: a shallow value of the same schema is judged on its merits.
        assert!(schema.check(&json!([[7]]), 5).iter().all(|v| v.message != OVER_BUDGET));
        assert!(schema.check(&json!("x"), 3).is_empty(), "a string matches the first branch");
    }

    #[test]
    fn integral_floats_become_integers_and_other_numbers_stay() {
        let mut value = json!({"version": 3.0, "lines": [{"qty": 2.0, "price": 2.5}], "big": 1e300, "n": 7});
        assert!(integral_floats_to_integers(&mut value));
        assert_eq!(value, json!({"version": 3, "lines": [{"qty": 2, "price": 2.5}], "big": 1e300, "n": 7}));
        assert!(value["version"].is_i64());
        assert!(!integral_floats_to_integers(&mut json!({"n": 7, "p": 0.5})));
    }

    #[test]
    fn named_references_become_openapi_component_references() {
        let schema = json!({"type": "array", "items": {"$ref": "#/schemas/Ticket"}});
        assert_eq!(
            to_openapi(&schema, "helpdesk."),
            json!({"type": "array", "items": {"$ref": "#/components/schemas/helpdesk.Ticket"}})
        );
    }
}
