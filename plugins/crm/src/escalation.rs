//! Escalation into IT: an agent files an IT helpdesk ticket for a case caused by an internal
//! fault, through the helpdesk's typed interface (`keel:helpdesk/tickets`). The link shows on
//! both sides (the ticket's `link` is `crm:case:{n}`, the case lists its tickets), and when
//! the IT ticket is resolved the helpdesk's event puts that on the case's timeline. With no
//! helpdesk enabled the escalation answers `503 department-unavailable` and the case is
//! unchanged.

use crate::cases::{self, CASES};
use crate::model::{self, EntryKind, Status, case_key};
use crate::{invalid, now_ms};
use keel_helpdesk::tickets::{self, NewTicket};
use keel_sdk::{Error, Event, Request, Response};
use serde::Deserialize;
use serde_json::json;

/// Ids of events already handled.
const PROCESSED_EVENTS: &str = "processed_events";
/// The IT ticket's events name the case this way.
const LINK_PREFIX: &str = "crm:case:";
/// IT tickets a case may be escalated into.
const MAX_ESCALATIONS: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateInput {
    /// Defaults to the case's subject.
    title: Option<String>,
    /// What IT should know; defaults to the case's description.
    description: Option<String>,
    /// `P1` to `P4`; the helpdesk's default otherwise.
    priority: Option<String>,
    category: Option<String>,
}

pub fn escalate(req: &Request) -> Result<Response, Error> {
    let input: EscalateInput = req.json()?;
    let mut stored = cases::load(cases::number_param(req)?)?;
    let case = &mut stored.value;
    if case.status == Status::Closed {
        return Err(Error::conflict("case-closed", format!("case {} is closed", case.number)));
    }
    if case.escalations.len() >= MAX_ESCALATIONS {
        return Err(Error::conflict(
            "too-many-escalations",
            format!("case {} has {MAX_ESCALATIONS} IT tickets", case.number),
        ));
    }
    let title = match input.title {
        Some(t) => model::required_line("title", &t, 200).map_err(invalid)?,
        None => case.subject.chars().take(200).collect(),
    };
    let description = format!(
        "Escalated from support case #{} by {}.\n\n{}",
        case.number,
        req.caller.user_id,
        input.description.unwrap_or_else(|| case.description.clone())
    );
    // The helpdesk's own errors (a bad priority: 422) and its absence (503) pass through,
    // and nothing here is written before the ticket exists.
    let ticket = tickets::open_ticket(&NewTicket {
        title,
        description: description.chars().take(20_000).collect(),
        priority: input.priority,
        category: input.category,
        link: format!("{LINK_PREFIX}{}", case.number),
        requester: req.caller.user_id.clone(),
    })?;
    case.escalations.push(ticket.number);
    let entry = cases::append(
        case,
        EntryKind::Escalation,
        &req.caller.user_id,
        format!("Escalated to IT ticket #{} ({}, {})", ticket.number, ticket.priority, ticket.title),
        None,
        None,
        now_ms(),
    )?;
    CASES.update(&stored.key, &stored.value, stored.version)?;
    Response::json(
        201,
        &json!({ "ticket": { "number": ticket.number, "status": ticket.status, "priority": ticket.priority,
                             "title": ticket.title, "link": ticket.link },
                 "entry": entry }),
    )
}

#[derive(Deserialize)]
struct Resolved {
    number: u64,
    link: Option<String>,
}

/// `helpdesk.ticket.resolved`: if the ticket was filed for one of our cases, its timeline
/// says so (once, however often the event is delivered).
pub fn ticket_resolved(event: &Event) -> Result<(), Error> {
    let payload: Resolved = event.payload()?;
    let Some(number) = payload.link.as_deref().and_then(|l| l.strip_prefix(LINK_PREFIX)).and_then(model::parse_number)
    else {
        return Ok(());
    };
    if !keel_sdk::first_time(PROCESSED_EVENTS, &event.id)? {
        return Ok(());
    }
    let Some(mut stored) = CASES.get(&case_key(number))? else { return Ok(()) };
    if !stored.value.escalations.contains(&payload.number) {
        return Ok(());
    }
    let body = format!("IT ticket #{} was resolved", payload.number);
    cases::append(&mut stored.value, EntryKind::Escalation, "helpdesk", body, None, None, now_ms())?;
    CASES.update(&stored.key, &stored.value, stored.version)?;
    Ok(())
}
