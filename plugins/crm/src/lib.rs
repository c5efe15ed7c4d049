//! The CRM support desk: customers (with a support tier) and their contacts; cases from
//! email, phone and chat with a timeline of everything (messages in and out, notes, calls,
//! every field change); replies that leave through an outbox with proper threading headers;
//! and SLAs per tier and priority in each team's business hours, paused while a case waits
//! on the customer. Written against the public SDK only.
//!
//! - `model.rs`: the vocabulary and the rules on fields (pure);
//! - `sla.rs`: policies and a case's clocks (pure, on the SDK's business hours);
//! - `mail.rs`: parsing raw mail, threading ids, automatic-mail detection (pure);
//! - `people.rs`: customers and contacts;
//! - `cases.rs`: cases, the timeline, replies, notes, followers and the outbox;
//! - `inbound.rs`: email in;
//! - `macros.rs`: canned replies that may also set fields;
//! - `public.rs`: the web form and satisfaction ratings (no sign-in);
//! - `escalation.rs`: cases escalated into the IT helpdesk (`keel:helpdesk/tickets`);
//! - `desk.rs`: teams and their hours, SLA policies, the SLA check;
//! - `reports.rs`: first-response and resolution times per team, agent and tier.

pub mod cases;
pub mod desk;
pub mod escalation;
pub mod inbound;
pub mod macros;
pub mod mail;
pub mod model;
pub mod people;
pub mod public;
pub mod reports;
pub mod search;
pub mod sla;

use keel_sdk::{Error, Event, ImportBatch, Job, Plugin, Router, RowProblem, export_plugin};
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_PAGE: u32 = 25;
const MAX_PAGE: u32 = 100;

/// The host's clock, ms.
pub fn now_ms() -> u64 {
    keel_sdk::services::now_ms()
}

fn invalid(e: model::FieldError) -> Error {
    Error::invalid("invalid-field", e.to_string()).at_field(e.field)
}

/// Keeps an explicit `null` as `Some(Value::Null)`, unlike `Option`'s default.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

struct Crm;

impl Plugin for Crm {
    fn router() -> Router {
        Router::new()
            .post("/customers", people::create_customer)
            .get("/customers", people::list_customers)
            .get("/customers/{id}", people::get_customer)
            .patch("/customers/{id}", people::update_customer)
            .post("/customers/{id}/merge", people::merge_customer)
            .post("/contacts", people::create_contact)
            .get("/contacts", people::list_contacts)
            .get("/contacts/{id}", people::get_contact)
            .patch("/contacts/{id}", people::update_contact)
            .post("/contacts/{id}/merge", people::merge_contact)
            .post("/cases", cases::create)
            .get("/cases", cases::list)
            .get("/cases/{number}", cases::get)
            .patch("/cases/{number}", cases::update)
            .get("/cases/{number}/timeline", cases::timeline)
            .post("/cases/{number}/replies", cases::reply)
            .post("/cases/{number}/notes", cases::note)
            .post("/cases/{number}/escalate", escalation::escalate)
            .post("/cases/{number}/macros/{id}", macros::apply)
            .get("/macros", macros::list)
            .post("/macros", macros::create)
            .delete("/macros/{id}", macros::delete)
            .put("/cases/{number}/followers/{user}", cases::follow)
            .delete("/cases/{number}/followers/{user}", cases::unfollow)
            .post("/inbound/email", inbound::email)
            .get("/outbox", cases::outbox)
            .post("/outbox/{id}/sent", cases::sent)
            .get("/teams", desk::list_teams)
            .put("/teams/{slug}", desk::put_team)
            .get("/sla-policies", desk::list_policies)
            .put("/sla-policies/{tier}/{priority}", desk::put_policy)
            .get("/reports/sla", reports::sla)
            .get("/search", search::search)
            .get("/search/messages", search::messages)
            .post("/forms/case", public::web_form)
            .get("/ratings/{token}", public::get_rating)
            .post("/ratings/{token}", public::rate)
    }

    fn run_job(job: &Job) -> Result<(), Error> {
        match job.name.as_str() {
            "sla-check" => desk::check_sla(),
            "replan-sla" => desk::replan_sla(job),
            "merge" => people::merge_task(job),
            other => Err(Error::invalid("unknown-job", format!("the CRM has no job `{other}`"))),
        }
    }

    fn on_event(event: &Event) -> Result<(), Error> {
        match event.topic.as_str() {
            "helpdesk.ticket.resolved" => escalation::ticket_resolved(event),
            other => Err(Error::invalid("unknown-event", format!("the CRM does not handle `{other}`"))),
        }
    }

    fn import_rows(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
        match batch.name.as_str() {
            "customers" => people::import_customers(batch),
            "contacts" => people::import_contacts(batch),
            other => Err(Error::invalid("unknown-import", format!("the CRM has no import `{other}`"))),
        }
    }
}

export_plugin!(Crm);
