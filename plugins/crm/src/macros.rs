//! Macros: canned replies that may also set fields, applied to a case in one step ("Ask for
//! the order number": reply, set waiting on the customer, tag `needs-info`). A body may use
//! `{{contact.name}}`, `{{case.number}}`, `{{case.subject}}` and `{{agent}}`.

use crate::cases::{self, CASES, CasePatch};
use crate::model::{self, Priority, Status};
use crate::people;
use crate::{desk, invalid, now_ms};
use keel_sdk::{Collection, Error, Request, Response, Sequence};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const MACROS: Collection<Macro> = Collection::new("macros");
const MACRO_IDS: Sequence = Sequence::new("macro");
const PLACEHOLDERS: [&str; 4] = ["contact.name", "case.number", "case.subject", "agent"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Macro {
    pub id: u64,
    pub name: String,
    /// The reply it sends, if any.
    pub body: Option<String>,
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    /// `me`: whoever applies it.
    pub assignee: Option<String>,
    pub team: Option<String>,
    pub add_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MacroInput {
    name: String,
    body: Option<String>,
    status: Option<String>,
    priority: Option<String>,
    assignee: Option<String>,
    team: Option<String>,
    #[serde(default)]
    add_tags: Vec<String>,
}

/// Checks that `body` only uses known placeholders.
fn check_placeholders(body: &str) -> Result<(), Error> {
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::invalid("invalid-field", "`body` has a `{{` without its `}}`").at_field("body"))?;
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(Error::invalid(
                "invalid-field",
                format!("`body` uses `{{{{{name}}}}}`; the placeholders are {}", PLACEHOLDERS.join(", ")),
            )
            .at_field("body"));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

pub fn create(req: &Request) -> Result<Response, Error> {
    let input: MacroInput = req.json()?;
    let body = input.body.map(|b| model::required_text("body", &b, model::BODY_MAX)).transpose().map_err(invalid)?;
    if let Some(body) = &body {
        check_placeholders(body)?;
    }
    let m = Macro {
        id: MACRO_IDS.next()?,
        name: model::required_line("name", &input.name, model::NAME_MAX).map_err(invalid)?,
        body,
        status: input.status.as_deref().map(Status::parse).transpose().map_err(invalid)?,
        priority: input.priority.as_deref().map(Priority::parse).transpose().map_err(invalid)?,
        assignee: input
            .assignee
            .map(|a| model::required_line("assignee", &a, model::NAME_MAX))
            .transpose()
            .map_err(invalid)?,
        team: input.team.as_deref().map(desk::existing_team).transpose()?,
        add_tags: model::tags(&input.add_tags).map_err(invalid)?,
    };
    if m.body.is_none()
        && m.status.is_none()
        && m.priority.is_none()
        && m.assignee.is_none()
        && m.team.is_none()
        && m.add_tags.is_empty()
    {
        return Err(Error::invalid("empty-macro", "a macro sends a reply or sets a field"));
    }
    MACROS.insert(&model::record_key(m.id), &m)?;
    Response::json(201, &m)
}

pub fn list(_req: &Request) -> Result<Response, Error> {
    let page = MACROS.query().limit(100).fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|m| m.value).collect();
    Response::json(200, &json!({ "items": items }))
}

pub fn delete(req: &Request) -> Result<Response, Error> {
    let id = macro_id(req)?;
    if !MACROS.delete(&model::record_key(id), None)? {
        return Err(Error::not_found("macro-not-found", format!("there is no macro {id}")));
    }
    Ok(Response::no_content())
}

fn macro_id(req: &Request) -> Result<u64, Error> {
    let segment = req.param("id")?;
    model::parse_number(segment)
        .ok_or_else(|| Error::bad_request("invalid-id", format!("`{segment}` is not a macro id")))
}

/// The body with its placeholders filled in.
fn render(body: &str, case: &cases::Case, contact_name: &str, agent: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        match after[..end].trim() {
            "contact.name" => out.push_str(contact_name),
            "case.number" => out.push_str(&case.number.to_string()),
            "case.subject" => out.push_str(&case.subject),
            "agent" => out.push_str(agent),
            other => out.push_str(&format!("{{{{{other}}}}}")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Applies macro `{id}` to case `{number}`: its reply (if any) goes out, then its fields are
/// set, each change on the timeline as if made by hand, all in one step.
pub fn apply(req: &Request) -> Result<Response, Error> {
    let m = MACROS
        .get(&model::record_key(macro_id(req)?))?
        .ok_or_else(|| Error::not_found("macro-not-found", "there is no such macro"))?
        .value;
    let mut stored = cases::load(cases::number_param(req)?)?;
    let sla_before = stored.value.sla.clone();
    let case = &mut stored.value;
    if case.status == Status::Closed {
        return Err(Error::conflict("case-closed", format!("case {} is closed", case.number)));
    }
    let by = req.caller.user_id.clone();
    let now = now_ms();
    let mut status = m.status;
    if let Some(body) = &m.body {
        let contact = people::load_contact(case.contact)?.value;
        let text = render(body, case, &contact.name, &by);
        // The reply carries the macro's status (waiting on the customer is then allowed).
        cases::send_reply(case, text, status.take(), &by, &req.caller.tenant, now)?;
    }
    let mut tags = case.tags.clone();
    for t in &m.add_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let patch = CasePatch {
        priority: m.priority.map(|p| p.as_str().to_owned()),
        status: status.map(|s| s.as_str().to_owned()),
        assignee: m.assignee.as_ref().map(|a| Value::String(if a == "me" { by.clone() } else { a.clone() })),
        team: m.team.as_ref().map(|t| Value::String(t.clone())),
        tags: (!m.add_tags.is_empty()).then_some(tags),
        ..CasePatch::default()
    };
    cases::apply(case, patch, &by, now)?;
    desk::settle(case, &sla_before)?;
    let version = CASES.update(&stored.key, &stored.value, stored.version)?;
    cases::view(&stored.value, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_and_filled() {
        assert!(check_placeholders("Hi {{contact.name}}, case {{ case.number }}").is_ok());
        assert!(check_placeholders("Hi {{contact.email}}").is_err());
        assert!(check_placeholders("Hi {{contact.name").is_err());
        assert!(check_placeholders("plain").is_ok());
    }
}
