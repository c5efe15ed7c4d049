//! Joining and leaving payroll with HR's events: a hire is enrolled from the tenant's
//! default pay structure (`hr.employee.hired`), a termination marks the final pay
//! (`hr.employee.terminated`). Hires the structure cannot pay (it has no default pay, or
//! there is no structure) wait under `/enrolments?state=needs-pay` until their pay is
//! recorded.

use crate::calc::{Assigned, Pay};
use crate::{COMPENSATION, Compensation, Schedule, check_pay, record_compensation, valid_code, valid_date};
use keel_sdk::services::now_ms;
use keel_sdk::{Collection, Error, Event, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const HIRED: &str = "hr.employee.hired";
const TERMINATED: &str = "hr.employee.terminated";
const PROCESSED: &str = "processed_events";

/// What a new hire is paid until payroll records their own pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Structure {
    pub currency: String,
    #[serde(default = "crate::monthly")]
    pub schedule: Schedule,
    #[serde(default)]
    pub components: Vec<Assigned>,
    /// A default pay (a grade's salary). Without it a hire waits for their own.
    #[serde(default)]
    pub pay: Option<Pay>,
}

const STRUCTURE: Collection<Structure> = Collection::new("settings");
const STRUCTURE_KEY: &str = "structure";

/// What HR's events said last. Whether someone who joined has pay is read from their pay
/// history when shown (`needs-pay` or `enrolled`), so recording pay never touches this
/// document and never races the event that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrolState {
    Joined,
    /// HR reported their last day.
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub employee: String,
    pub name: String,
    pub hire_date: String,
    pub state: EnrolState,
    pub final_day: Option<String>,
    pub updated_at: u64,
}

const ENROLMENTS: Collection<Enrolment> = Collection::new("enrolments");

pub fn put_structure(req: &Request) -> Result<Response, Error> {
    let structure: Structure = req.json()?;
    check_pay(&structure.currency, structure.pay, &structure.components)?;
    STRUCTURE.upsert(STRUCTURE_KEY, &structure)?;
    Response::json(200, &structure)
}

pub fn get_structure(_req: &Request) -> Result<Response, Error> {
    let found = STRUCTURE
        .get(STRUCTURE_KEY)?
        .ok_or_else(|| Error::not_found("no-structure", "no default pay structure is set; PUT /structure"))?;
    Response::json(200, &found.value)
}

fn shown_state(e: &Enrolment, paid: bool) -> &'static str {
    match (e.state, paid) {
        (EnrolState::Left, _) => "left",
        (EnrolState::Joined, true) => "enrolled",
        (EnrolState::Joined, false) => "needs-pay",
    }
}

/// `GET /enrolments?state=needs-pay`: who joined or left through HR's events; `needs-pay`
/// and `enrolled` are those who joined, without and with pay recorded. (A page filtered by
/// them may be short while `next` is set.)
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 200)?;
    let wanted = req.query("state");
    let mut query = ENROLMENTS.query().cursor(paging.cursor.as_deref()).limit(paging.limit);
    match wanted {
        None => {}
        Some("needs-pay" | "enrolled") => query = query.eq("state", "joined"),
        Some("left") => query = query.eq("state", "left"),
        Some(_) => {
            return Err(Error::invalid("invalid-state", "`state` is needs-pay, enrolled or left").at_field("state"));
        }
    }
    let page = query.fetch()?;
    let ids: Vec<&str> = page.items.iter().map(|e| e.value.employee.as_str()).collect();
    let pay = COMPENSATION.get_many(&ids)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .zip(pay)
        .filter_map(|(e, pay)| {
            let e = &e.value;
            let state = shown_state(e, pay.is_some_and(|p| !p.value.entries.is_empty()));
            wanted.is_none_or(|w| w == state).then(|| {
                json!({ "employee": e.employee, "name": e.name, "hire_date": e.hire_date, "state": state,
                        "final_day": e.final_day, "updated_at": e.updated_at })
            })
        })
        .collect();
    Response::page(&items, page.next.as_deref())
}

/// The employee an HR event is about: their id as HR gives it, their name, and a date.
struct Person {
    id: String,
    name: String,
}

fn person(payload: &Value) -> Result<Person, Error> {
    let e = &payload["employee"];
    let id = match &e["number"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(Error::invalid("bad-event", "the event names no employee number")),
    };
    if !valid_code(&id) {
        return Err(Error::invalid("bad-event", format!("employee id `{id}` cannot key pay records")));
    }
    let name = e["name"].as_str().or(e["legal_name"].as_str()).unwrap_or_default().chars().take(200).collect();
    Ok(Person { id, name })
}

fn date(payload: &Value, field: &str) -> Result<String, Error> {
    let text = payload[field].as_str().unwrap_or_default();
    if !valid_date(text) {
        return Err(Error::invalid("bad-event", format!("`{field}` is not a date: `{text}`")));
    }
    Ok(text.to_owned())
}

pub fn on_event(event: &Event) -> Result<(), Error> {
    if event.topic != HIRED && event.topic != TERMINATED {
        return Err(Error::invalid("unknown-event", format!("payroll does not handle `{}`", event.topic)));
    }
    // Delivered at least once: the second delivery changes nothing.
    if !keel_sdk::first_time(PROCESSED, &event.id)? {
        return Ok(());
    }
    let payload: Value = event.payload()?;
    let who = person(&payload)?;
    let stored = ENROLMENTS.get(&who.id)?;
    // Pay recorded by payroll 0.1 and not migrated yet is this person's history too.
    crate::fold_legacy(&who.id)?;
    let history = COMPENSATION.get(&who.id)?;
    let now = now_ms();
    if event.topic == TERMINATED {
        let last_day = date(&payload, "last_day")?;
        // Delivered after a rehire (deliveries keep no order): that leaving is over.
        if stored.as_ref().is_some_and(|s| s.value.state == EnrolState::Joined && s.value.hire_date > last_day) {
            return Ok(());
        }
        // Kept even before any pay is recorded: pay recorded later still ends then.
        let mut pay = history.as_ref().map(|h| h.value.clone()).unwrap_or_default();
        pay.final_day = Some(last_day.clone());
        match &history {
            Some(h) => COMPENSATION.update(&who.id, &pay, h.version)?,
            None => COMPENSATION.insert(&who.id, &pay)?,
        };
        let mut e = stored.as_ref().map(|s| s.value.clone()).unwrap_or(Enrolment {
            employee: who.id.clone(),
            name: who.name.clone(),
            hire_date: String::new(),
            state: EnrolState::Left,
            final_day: None,
            updated_at: now,
        });
        e.state = EnrolState::Left;
        e.final_day = Some(last_day);
        e.updated_at = now;
        match stored {
            Some(s) => ENROLMENTS.update(&who.id, &e, s.version)?,
            None => ENROLMENTS.insert(&who.id, &e)?,
        };
        return Ok(());
    }
    let hire_date = date(&payload["employee"], "hire_date")?;
    // A rehire is paid again: the earlier final day no longer ends their pay.
    if let Some(h) = &history
        && h.value.final_day.is_some()
    {
        let mut pay = h.value.clone();
        pay.final_day = None;
        COMPENSATION.update(&who.id, &pay, h.version)?;
    }
    let has_pay = history.as_ref().is_some_and(|h| h.value.on(&hire_date).is_some());
    if let Some(s) = STRUCTURE.get(STRUCTURE_KEY)?
        && !has_pay
        && let Some(pay) = s.value.pay
    {
        let structure = s.value;
        record_compensation(Compensation {
            employee: who.id.clone(),
            effective: hire_date.clone(),
            pay,
            currency: structure.currency,
            schedule: structure.schedule,
            components: structure.components,
            set_by: format!("event {HIRED}"),
            recorded_at: now,
        })?;
    }
    let e = Enrolment {
        employee: who.id.clone(),
        name: who.name,
        hire_date,
        state: EnrolState::Joined,
        final_day: None,
        updated_at: now,
    };
    match stored {
        Some(s) => ENROLMENTS.update(&who.id, &e, s.version)?,
        None => ENROLMENTS.insert(&who.id, &e)?,
    };
    Ok(())
}
