//! The HR department: employees with effective-dated history, managers, departments, the
//! org chart and headcount, and the `keel:hr/directory` other departments read. Written
//! against the public SDK and the `keel-hr` contract only.
//!
//! Every change to an employee is a history entry effective from a date; the record "as of"
//! a date is the last entry effective on or before it. The `employees` collection holds the
//! latest entry of each, for lookups by email, department and manager.

mod checklists;
pub mod custom;
pub mod employee;
mod import;
pub mod leave;
mod leave_routes;

use employee::{Date, Employee, Employment, Invalid, Status, Termination, WorkingPattern};
use keel_hr::provide::directory::{self as provide, Guest};
use keel_sdk::services::{has_permission, now_ms};
use keel_sdk::{
    Collection, Error, ImportBatch, Job, Plugin, Request, Response, Router, RowProblem, Sequence, Versioned,
    export_plugin, publish,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub(crate) const EMPLOYEES: Collection<Employee> = Collection::new("employees");
const HISTORY: Collection<Change> = Collection::new("history");
const DEPARTMENTS: Collection<Department> = Collection::new("departments");
const CUSTOM_FIELDS: Collection<custom::FieldDef> = Collection::new("custom_fields");
pub(crate) const EMPLOYEE_NUMBERS: Sequence = Sequence::new("employee");

/// Payload: the employee's view (number, names, email, title, department, manager,
/// employment, hire_date) and `rehire` (true when a former employee came back).
pub const HIRED: &str = "hr.employee.hired";
/// Payload: the employee's view and `effective` (the date the change applies from).
pub const UPDATED: &str = "hr.employee.updated";
/// Payload: the employee's view, `last_day` and `reason`.
pub const TERMINATED: &str = "hr.employee.terminated";

/// Hire, change, terminate and rehire; departments; history and past records.
pub(crate) const MANAGE: &str = "hr.manage";

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

struct Hr;

impl Plugin for Hr {
    fn router() -> Router {
        Router::new()
            .post("/employees", hire)
            .get("/employees", list_employees)
            .get("/employees/{number}", get_employee)
            .patch("/employees/{number}", update_employee)
            .post("/employees/{number}/terminate", terminate)
            .post("/employees/{number}/rehire", rehire)
            .get("/employees/{number}/history", history)
            .put("/departments/{id}", put_department)
            .get("/departments", list_departments)
            .get("/org-chart", org_chart)
            .get("/headcount", headcount)
            .get("/me", me)
            .put("/checklist-templates/{id}", checklists::put_template)
            .get("/checklist-templates", checklists::list_templates)
            .get("/employees/{number}/checklists", checklists::for_employee)
            .get("/checklists/overdue", checklists::overdue)
            .put("/checklists/{id}/items/{index}", checklists::tick)
            .put("/custom-fields/{name}", put_custom_field)
            .get("/custom-fields", list_custom_fields)
            .put("/leave-types/{id}", leave_routes::put_type)
            .get("/leave-types", leave_routes::list_types)
            .put("/holiday-calendars/{id}", leave_routes::put_calendar)
            .get("/holiday-calendars/{id}", leave_routes::get_calendar)
            .put("/employees/{number}/allocations/{type}/{year}", leave_routes::put_allocation)
            .get("/employees/{number}/balances", leave_routes::balances)
            .post("/leave-requests", leave_routes::request_leave)
            .get("/leave-requests", leave_routes::list_requests)
            .get("/leave-requests/{id}", leave_routes::get_request)
            .post("/leave-requests/{id}/approve", leave_routes::approve)
            .post("/leave-requests/{id}/reject", leave_routes::reject)
            .post("/leave-requests/{id}/cancel", leave_routes::cancel)
            .get("/leave-calendar", leave_routes::team_calendar)
            .post("/leave-accruals", leave_routes::start_accruals)
    }

    fn run_job(job: &Job) -> Result<(), Error> {
        leave_routes::run_job(job)
    }

    fn import_rows(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
        match batch.name.as_str() {
            "employees" => import::employees(batch),
            other => Err(Error::invalid("unknown-import", format!("HR has no import `{other}`"))),
        }
    }
}

export_plugin!(Hr);
keel_hr::export_directory!(Hr);

/// One effective-dated change of an employee's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    employee: u64,
    /// The record applies from this date on.
    effective: Date,
    /// hire, update, terminate or rehire.
    kind: String,
    /// Who recorded it, and when (ms since the epoch).
    by: String,
    at: u64,
    record: Employee,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Department {
    name: String,
    parent: Option<String>,
    /// The head's employee number.
    head: Option<u64>,
}

pub(crate) fn key(number: u64) -> String {
    format!("{number:010}")
}

pub(crate) fn today() -> Date {
    Date::from_ms(now_ms())
}

pub(crate) fn invalid(e: Invalid) -> Error {
    Error::invalid(e.code, e.reason).at_field(e.field)
}

pub(crate) fn number_param(req: &Request) -> Result<u64, Error> {
    let text = req.param("number")?;
    text.parse().map_err(|_| Error::not_found("employee-not-found", format!("no employee `{text}`")))
}

pub(crate) fn date_query(req: &Request, name: &'static str) -> Result<Option<Date>, Error> {
    match req.query(name) {
        None => Ok(None),
        Some(text) => Date::parse(text).map(Some).ok_or_else(|| {
            Error::invalid("invalid-date", format!("`{name}` is YYYY-MM-DD (got `{text}`)")).at_field(name)
        }),
    }
}

pub(crate) fn current(number: u64) -> Result<Versioned<Employee>, Error> {
    EMPLOYEES.get(&key(number))?.ok_or_else(|| Error::not_found("employee-not-found", format!("no employee {number}")))
}

/// The record of `number` as of `date`: the last change effective on or before it.
pub(crate) fn as_of(number: u64, date: Date) -> Result<Option<Change>, Error> {
    let page = HISTORY
        .query()
        .eq("employee", number)
        .le("effective", date)
        .order_by("effective")
        .descending()
        .limit(1)
        .fetch()?;
    Ok(page.items.into_iter().next().map(|c| c.value))
}

/// The latest change of `number`, whatever its date.
fn latest_change(number: u64) -> Result<Option<Change>, Error> {
    let page = HISTORY.query().eq("employee", number).order_by("effective").descending().limit(1).fetch()?;
    Ok(page.items.into_iter().next().map(|c| c.value))
}

/// Appends a change; `tag` makes its key unique (the request id, or the import line).
pub(crate) fn record_change(kind: &str, effective: Date, by: &str, record: &Employee, tag: &str) -> Result<(), Error> {
    let at = now_ms();
    let change = Change {
        employee: record.number,
        effective,
        kind: kind.to_owned(),
        by: by.to_owned(),
        at,
        record: record.clone(),
    };
    // Entries of one date keep the order they were recorded in (the key orders them).
    let key = format!("{}/{effective}/{at:013}/{tag}", key(record.number));
    HISTORY.insert(&key, &change)?;
    Ok(())
}

/// An employee as HR sees it on its own routes (`hr.manage`), as of a date: every field.
fn view(e: &Employee, on: Date) -> Value {
    view_as(e, on, &Default::default())
}

/// An employee as events show it to other departments: without private custom fields.
fn event_view(e: &Employee, on: Date) -> Result<Value, Error> {
    Ok(view_as(e, on, &private_fields()?))
}

/// An employee without the custom fields named in `hidden`.
fn view_as(e: &Employee, on: Date, hidden: &std::collections::BTreeSet<String>) -> Value {
    // Why someone left is HR's to know; the directory shows only that and when.
    let termination = e.termination.as_ref().map(|t| match has_permission(MANAGE) {
        true => json!({ "date": t.date, "reason": t.reason }),
        false => json!({ "date": t.date }),
    });
    let custom: serde_json::Map<String, Value> =
        e.custom.iter().filter(|(name, _)| !hidden.contains(*name)).map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({
        "number": e.number,
        "legal_name": e.legal_name,
        "preferred_name": e.preferred_name,
        "name": e.display_name(),
        "email": e.email,
        "title": e.title,
        "department": e.department,
        "manager": e.manager,
        "location": e.location,
        "employment": e.employment,
        "pattern": { "days": e.pattern.days, "hours_per_day": f64::from(e.pattern.minutes_per_day) / 60.0 },
        "hire_date": e.hire_date,
        "termination": termination,
        "user": e.user,
        "custom": custom,
        "status": e.status_on(on),
        "as_of": on,
    })
}

/// A working pattern as written: weekdays and hours per day (`7.5`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternInput {
    days: Vec<String>,
    hours_per_day: f64,
}

impl PatternInput {
    fn minutes(&self) -> Result<WorkingPattern, Error> {
        let minutes = self.hours_per_day * 60.0;
        if !minutes.is_finite() || (minutes - minutes.round()).abs() > 1e-6 || minutes <= 0.0 {
            return Err(Error::invalid(
                "invalid-hours",
                "hours per day are whole minutes, more than 0 (7.5 is 7 h 30 min)",
            )
            .at_field("pattern.hours_per_day"));
        }
        Ok(WorkingPattern { days: self.days.clone(), minutes_per_day: minutes.round() as u32 })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hire {
    legal_name: String,
    preferred_name: Option<String>,
    email: String,
    title: String,
    department: Option<String>,
    manager: Option<u64>,
    location: Option<String>,
    employment: Option<Employment>,
    pattern: Option<PatternInput>,
    hire_date: Date,
    /// The platform user who is this employee (for self-service).
    user: Option<String>,
    /// Values of the tenant's custom fields, by name.
    custom: Option<BTreeMap<String, Value>>,
}

/// The names of the tenant's private custom fields.
fn private_fields() -> Result<std::collections::BTreeSet<String>, Error> {
    Ok(custom_fields()?.into_iter().filter(|(_, d)| d.private).map(|(n, _)| n).collect())
}

/// The custom fields the caller may not see: private ones (a birthday, an emergency
/// contact) are HR's and the employee's own (`own`).
fn hidden_fields(own: bool) -> Result<std::collections::BTreeSet<String>, Error> {
    if own || has_permission(MANAGE) { Ok(Default::default()) } else { private_fields() }
}

fn custom_fields() -> Result<BTreeMap<String, custom::FieldDef>, Error> {
    let page = CUSTOM_FIELDS.query().limit(custom::MAX_FIELDS as u32).fetch()?;
    Ok(page.items.into_iter().map(|f| (f.key, f.value)).collect())
}

/// `changes` applied to a record's custom fields, checked; a refusal names `custom.<name>`.
fn apply_custom(
    current: &BTreeMap<String, Value>,
    changes: Option<BTreeMap<String, Value>>,
    hire: bool,
) -> Result<BTreeMap<String, Value>, Error> {
    let defs = custom_fields()?;
    let changes = changes.unwrap_or_default();
    if changes.is_empty() && !hire {
        return Ok(current.clone());
    }
    custom::apply(&defs, current, &changes, hire)
        .map_err(|(name, e)| Error::invalid(e.code, e.reason).at_field(format!("custom.{name}")))
}

/// The view of `e` on `on`, with `on-leave` for someone away all that day.
fn shown_on(e: &Employee, on: Date, hidden: &std::collections::BTreeSet<String>) -> Result<Value, Error> {
    let mut shown = view_as(e, on, hidden);
    if e.is_active_on(on) && leave_routes::away_on(e.number, on)? {
        shown["status"] = json!(Status::OnLeave);
    }
    Ok(shown)
}

fn optional_text(field: &'static str, value: Option<String>) -> Result<Option<String>, Error> {
    value.map(|v| employee::text(field, &v, employee::NAME_MAX)).transpose().map_err(invalid)
}

/// Checks what a record needs from the others: a unique email, an existing department, and a
/// manager who is employed on `on` and not below this employee.
/// Checks what a record needs from the others, where `before` is the record it replaces (none
/// for a hire): a unique email; a known department and a manager employed on `on` when they
/// are new (a manager who left since does not block an unrelated change); and no manager loop,
/// in the latest records nor in those in force on `on`.
pub(crate) fn check_relations(e: &Employee, before: Option<&Employee>, on: Date) -> Result<(), Error> {
    employee::check(e).map_err(invalid)?;
    let same_email = EMPLOYEES.query().eq("email", &e.email).limit(2).fetch()?;
    if let Some(other) = same_email.items.iter().find(|o| o.value.number != e.number) {
        return Err(Error::conflict(
            "email-taken",
            format!("{} is the work email of employee {}", e.email, other.value.number),
        )
        .at_field("email"));
    }
    if let Some(user) = &e.user
        && before.is_none_or(|b| b.user != e.user)
    {
        let linked = EMPLOYEES.query().eq("user", user).limit(2).fetch()?;
        if let Some(other) = linked.items.iter().find(|o| o.value.number != e.number) {
            return Err(Error::conflict(
                "user-taken",
                format!("user `{user}` is already employee {}", other.value.number),
            )
            .at_field("user"));
        }
    }
    if let Some(department) = &e.department
        && before.is_none_or(|b| b.department != e.department)
        && DEPARTMENTS.get(department)?.is_none()
    {
        return Err(
            Error::invalid("unknown-department", format!("no department `{department}`")).at_field("department")
        );
    }
    let Some(manager) = e.manager.filter(|_| before.is_none_or(|b| b.manager != e.manager)) else { return Ok(()) };
    if !EMPLOYEES.get(&key(manager))?.is_some_and(|b| b.value.is_active_on(on)) {
        return Err(Error::invalid("manager-not-employed", format!("employee {manager} is not employed on {on}"))
            .at_field("manager"));
    }
    // Someone not yet numbered (a hire) manages nobody, so cannot close a loop.
    if e.number == 0 {
        return Ok(());
    }
    let latest = |n: u64| EMPLOYEES.get(&key(n)).map(|m| m.and_then(|m| m.value.manager));
    let in_force = |n: u64| as_of(n, on).map(|c| c.and_then(|c| c.record.manager));
    for chain in
        [employee::manager_loop(e.number, manager, latest)?, employee::manager_loop(e.number, manager, in_force)?]
    {
        if let Err(chain) = chain {
            let named: Vec<String> = chain.iter().map(u64::to_string).collect();
            return Err(Error::conflict(
                "manager-cycle",
                format!("employee {} cannot report to {manager}: {}", e.number, named.join(" → ")),
            )
            .at_field("manager"));
        }
    }
    Ok(())
}

fn hire(req: &Request) -> Result<Response, Error> {
    let input: Hire = req.json()?;
    let employment = input.employment.unwrap_or(Employment::FullTime);
    let pattern = match &input.pattern {
        Some(p) => p.minutes()?,
        None => WorkingPattern::default(),
    };
    let mut record = Employee {
        number: 0,
        legal_name: employee::text("legal_name", &input.legal_name, employee::NAME_MAX).map_err(invalid)?,
        preferred_name: optional_text("preferred_name", input.preferred_name)?,
        email: employee::email(&input.email).map_err(invalid)?,
        title: employee::text("title", &input.title, employee::NAME_MAX).map_err(invalid)?,
        department: optional_text("department", input.department)?,
        manager: input.manager,
        location: optional_text("location", input.location)?,
        employment,
        pattern,
        hire_date: input.hire_date,
        termination: None,
        user: optional_text("user", input.user)?,
        custom: apply_custom(&BTreeMap::new(), input.custom, true)?,
    };
    check_relations(&record, None, record.hire_date)?;
    // Numbered once the record is known to be valid: a refused hire takes no number.
    record.number = EMPLOYEE_NUMBERS.next()?;
    EMPLOYEES.insert(&key(record.number), &record)?;
    record_change("hire", record.hire_date, &req.caller.user_id, &record, &req.request_id)?;
    checklists::start(&record, checklists::Occasion::Hire, record.hire_date)?;
    let shown = view(&record, today());
    publish(HIRED, &json!({ "employee": event_view(&record, today())?, "rehire": false }))?;
    Response::json(201, &shown)
}

fn list_employees(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let asked = date_query(req, "as_of")?;
    let on = asked.unwrap_or_else(today);
    let department = req.query("department");
    let mut query = EMPLOYEES.query().cursor(paging.cursor.as_deref()).limit(paging.limit);
    // Today's department is indexed; the department on another date is checked per record.
    if let (Some(d), None) = (department, asked) {
        query = query.eq("department", d);
    }
    let page = query.fetch()?;
    let hidden = hidden_fields(false)?;
    let mut items = Vec::with_capacity(page.items.len());
    for e in &page.items {
        // Each as of the date asked (people not hired by then are left out); without a date,
        // as of today, and people hired for later as they will start (`onboarding`).
        let record = match (as_of(e.value.number, on)?, asked) {
            (Some(change), _) => change.record,
            (None, None) => e.value.clone(),
            (None, Some(_)) => continue,
        };
        if asked.is_some() && department.is_some_and(|d| record.department.as_deref() != Some(d)) {
            continue;
        }
        items.push(shown_on(&record, on, &hidden)?);
    }
    Response::page(&items, page.next.as_deref())
}

fn get_employee(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    match date_query(req, "as_of")? {
        None => {
            let e = current(number)?;
            let on = today();
            // Changes effective later than today are recorded but not in force yet.
            let record = as_of(number, on)?.map(|c| c.record).unwrap_or(e.value);
            Ok(Response::json(200, &shown_on(&record, on, &hidden_fields(false)?)?)?.with_version(e.version))
        }
        Some(on) => {
            // A past record is history, which is HR's (the route itself needs only the directory).
            if !has_permission(MANAGE) {
                return Err(Error::forbidden("forbidden", format!("records as of a date need `{MANAGE}`")));
            }
            current(number)?;
            let change = as_of(number, on)?.ok_or_else(|| {
                Error::not_found("not-employed-yet", format!("employee {number} has no record on or before {on}"))
            })?;
            Response::json(200, &shown_on(&change.record, on, &hidden_fields(true)?)?)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    /// The date the change applies from (default today).
    effective: Option<Date>,
    legal_name: Option<String>,
    email: Option<String>,
    title: Option<String>,
    // Absent: no change; `null`: cleared (no department, reports to nobody).
    #[serde(default, deserialize_with = "present")]
    preferred_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    department: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    manager: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    location: Option<Option<String>>,
    employment: Option<Employment>,
    pattern: Option<PatternInput>,
    #[serde(default, deserialize_with = "present")]
    user: Option<Option<String>>,
    /// Custom field values to set; `null` clears one.
    custom: Option<BTreeMap<String, Value>>,
}

/// A field that is present, `null` included (an absent one stays `None` by `default`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Refuses a change effective before the employee's latest one: history is appended in
/// date order (a correction of the past is a new change with today's date).
fn check_effective(number: u64, effective: Date) -> Result<(), Error> {
    if let Some(last) = latest_change(number)?
        && effective < last.effective
    {
        return Err(Error::conflict(
            "effective-before-last-change",
            format!(
                "employee {number}'s latest change is effective {}; a change cannot apply from {effective}",
                last.effective
            ),
        )
        .at_field("effective"));
    }
    Ok(())
}

fn update_employee(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    let stored = current(number)?;
    if let Some(expected) = req.if_match()?
        && expected != stored.version
    {
        return Err(Error::conflict("version-mismatch", format!("employee {number} is at version {}", stored.version)));
    }
    let input: Update = req.json()?;
    let effective = input.effective.unwrap_or_else(today);
    check_effective(number, effective)?;
    let mut record = stored.value.clone();
    if record.status_on(effective) == Status::Terminated {
        return Err(Error::conflict("terminated", format!("employee {number} is not employed on {effective}")));
    }
    if let Some(v) = input.legal_name {
        record.legal_name = employee::text("legal_name", &v, employee::NAME_MAX).map_err(invalid)?;
    }
    if let Some(v) = input.preferred_name {
        record.preferred_name = optional_text("preferred_name", v)?;
    }
    if let Some(v) = input.email {
        record.email = employee::email(&v).map_err(invalid)?;
    }
    if let Some(v) = input.title {
        record.title = employee::text("title", &v, employee::NAME_MAX).map_err(invalid)?;
    }
    if let Some(v) = input.department {
        record.department = optional_text("department", v)?;
    }
    if let Some(v) = input.manager {
        record.manager = v;
    }
    if let Some(v) = input.location {
        record.location = optional_text("location", v)?;
    }
    if let Some(v) = input.employment {
        record.employment = v;
    }
    if let Some(p) = &input.pattern {
        record.pattern = p.minutes()?;
    }
    if let Some(v) = input.user {
        record.user = optional_text("user", v)?;
    }
    record.custom = apply_custom(&record.custom, input.custom, false)?;
    if record == stored.value {
        return Ok(Response::json(200, &view(&record, effective))?.with_version(stored.version));
    }
    check_relations(&record, Some(&stored.value), effective)?;
    let version = EMPLOYEES.update(&key(number), &record, stored.version)?;
    record_change("update", effective, &req.caller.user_id, &record, &req.request_id)?;
    // A new manager in force today decides the pending leave from now on.
    if record.manager != stored.value.manager && effective <= today() {
        leave_routes::repoint_pending(number, record.manager)?;
    }
    let shown = view(&record, effective);
    publish(UPDATED, &json!({ "employee": event_view(&record, effective)?, "effective": effective }))?;
    Ok(Response::json(200, &shown)?.with_version(version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Terminate {
    /// The last day employed.
    last_day: Date,
    reason: String,
}

fn terminate(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    let stored = current(number)?;
    let input: Terminate = req.json()?;
    let reason = employee::text("reason", &input.reason, employee::NAME_MAX).map_err(invalid)?;
    if let Some(t) = &stored.value.termination {
        return Err(Error::conflict(
            "already-terminated",
            format!("employee {number}'s last day is already {}", t.date),
        ));
    }
    check_effective(number, input.last_day)?;
    let mut record = stored.value.clone();
    record.termination = Some(Termination { date: input.last_day, reason: reason.clone() });
    employee::check(&record).map_err(invalid)?;
    let version = EMPLOYEES.update(&key(number), &record, stored.version)?;
    record_change("terminate", input.last_day, &req.caller.user_id, &record, &req.request_id)?;
    checklists::start(&record, checklists::Occasion::Termination, input.last_day)?;
    leave_routes::on_termination(&record, input.last_day, &req.caller.user_id)?;
    let shown = view(&record, today());
    publish(
        TERMINATED,
        &json!({ "employee": event_view(&record, today())?, "last_day": input.last_day, "reason": reason }),
    )?;
    Ok(Response::json(200, &shown)?.with_version(version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rehire {
    hire_date: Date,
    title: Option<String>,
    department: Option<String>,
    manager: Option<u64>,
}

fn rehire(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    let stored = current(number)?;
    let input: Rehire = req.json()?;
    let Some(t) = &stored.value.termination else {
        return Err(Error::conflict("not-terminated", format!("employee {number} is still employed")));
    };
    if input.hire_date <= t.date {
        return Err(Error::invalid(
            "rehire-before-last-day",
            format!("a rehire starts after the last day {} (got {})", t.date, input.hire_date),
        )
        .at_field("hire_date"));
    }
    let mut record = stored.value.clone();
    record.termination = None;
    record.hire_date = input.hire_date;
    if let Some(v) = input.title {
        record.title = employee::text("title", &v, employee::NAME_MAX).map_err(invalid)?;
    }
    if let Some(v) = input.department {
        record.department = optional_text("department", Some(v))?;
    }
    // A returning employee's old manager is not assumed.
    record.manager = input.manager;
    check_relations(&record, Some(&stored.value), input.hire_date)?;
    let version = EMPLOYEES.update(&key(number), &record, stored.version)?;
    record_change("rehire", input.hire_date, &req.caller.user_id, &record, &req.request_id)?;
    checklists::start(&record, checklists::Occasion::Hire, input.hire_date)?;
    leave_routes::repoint_pending(number, record.manager)?;
    let shown = view(&record, today());
    publish(HIRED, &json!({ "employee": event_view(&record, today())?, "rehire": true }))?;
    Ok(Response::json(200, &shown)?.with_version(version))
}

fn history(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    current(number)?;
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let page = HISTORY
        .query()
        .eq("employee", number)
        .order_by("effective")
        .cursor(paging.cursor.as_deref())
        .limit(paging.limit)
        .fetch()?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|c| {
            json!({ "effective": c.value.effective, "kind": c.value.kind, "by": c.value.by, "at": c.value.at,
                    "record": view(&c.value.record, c.value.effective) })
        })
        .collect();
    Response::page(&items, page.next.as_deref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepartmentInput {
    name: String,
    parent: Option<String>,
    head: Option<u64>,
}

fn put_department(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?.to_owned();
    if !(1..=64).contains(&id.len())
        || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(
            Error::invalid("invalid-department-id", "department ids are 1-64 of a-z, 0-9, '-' and '_'").at_field("id")
        );
    }
    let input: DepartmentInput = req.json()?;
    let name = employee::text("name", &input.name, employee::NAME_MAX).map_err(invalid)?;
    if let Some(parent) = &input.parent {
        // Walk up from the new parent: reaching this department would make a loop.
        let mut chain = vec![id.clone(), parent.clone()];
        let mut at = parent.clone();
        while at != id {
            let Some(d) = DEPARTMENTS.get(&at)? else {
                return Err(Error::invalid("unknown-department", format!("no department `{at}`")).at_field("parent"));
            };
            match d.value.parent {
                Some(up) if chain.len() < 1_000 => {
                    chain.push(up.clone());
                    at = up;
                }
                _ => break,
            }
        }
        if at == id {
            return Err(Error::conflict(
                "department-cycle",
                format!("`{id}` cannot be under `{parent}`: {}", chain.join(" → ")),
            )
            .at_field("parent"));
        }
    }
    if let Some(head) = input.head {
        current(head)
            .map_err(|_| Error::invalid("unknown-employee", format!("no employee {head}")).at_field("head"))?;
    }
    let department = Department { name, parent: input.parent, head: input.head };
    DEPARTMENTS.upsert(&id, &department)?;
    Response::json(
        200,
        &json!({ "id": id, "name": department.name, "parent": department.parent, "head": department.head }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldInput {
    label: String,
    #[serde(rename = "type")]
    kind: custom::FieldType,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    choices: Vec<String>,
    #[serde(default)]
    private: bool,
}

/// Defines (or redefines) a custom field. Its type is fixed once defined: values already
/// stored are of that type.
fn put_custom_field(req: &Request) -> Result<Response, Error> {
    let name = req.param("name")?.to_owned();
    if !custom::valid_name(&name) {
        return Err(Error::invalid(
            "invalid-field-name",
            "custom field names are 1-64 of a-z, 0-9 and '_', starting with a letter",
        )
        .at_field("name"));
    }
    let input: FieldInput = req.json()?;
    let label = employee::text("label", &input.label, employee::NAME_MAX).map_err(invalid)?;
    let mut choices = Vec::new();
    for c in &input.choices {
        let c = employee::text("choices", c, employee::NAME_MAX).map_err(invalid)?;
        if choices.contains(&c) {
            return Err(Error::invalid("duplicate-choice", format!("`{c}` is listed twice")).at_field("choices"));
        }
        choices.push(c);
    }
    if (input.kind == custom::FieldType::Choice) == choices.is_empty() {
        return Err(Error::invalid("invalid-choices", "a choice field lists its choices; other types have none")
            .at_field("choices"));
    }
    let def = custom::FieldDef { label, kind: input.kind, required: input.required, choices, private: input.private };
    match CUSTOM_FIELDS.get(&name)? {
        Some(old) if old.value.kind != def.kind => {
            return Err(Error::conflict(
                "field-type-change",
                format!("`{name}` holds {:?} values; define a new field for another type", old.value.kind),
            )
            .at_field("type"));
        }
        Some(old) => CUSTOM_FIELDS.update(&name, &def, old.version)?,
        None => {
            if custom_fields()?.len() >= custom::MAX_FIELDS {
                return Err(Error::conflict(
                    "too-many-custom-fields",
                    format!("a tenant has at most {} custom fields", custom::MAX_FIELDS),
                ));
            }
            CUSTOM_FIELDS.insert(&name, &def)?
        }
    };
    Response::json(200, &json!({ "name": name, "field": def }))
}

fn list_custom_fields(_req: &Request) -> Result<Response, Error> {
    let items: Vec<Value> =
        custom_fields()?.into_iter().map(|(name, def)| json!({ "name": name, "field": def })).collect();
    Response::json(200, &json!({ "items": items }))
}

pub(crate) fn department_exists(id: &str) -> Result<bool, Error> {
    Ok(DEPARTMENTS.get(id)?.is_some())
}

/// The head of department `id`, if it has one.
pub(crate) fn department_head(id: &str) -> Result<Option<u64>, Error> {
    Ok(DEPARTMENTS.get(id)?.and_then(|d| d.value.head))
}

/// The caller's own record (their user linked to an employee).
fn me(req: &Request) -> Result<Response, Error> {
    let own = leave_routes::me(req)?.ok_or_else(|| {
        Error::not_found("no-employee-record", "your user is not linked to an employee record; ask HR to link it")
    })?;
    let on = today();
    let record = as_of(own.number, on)?.map_or(own, |c| c.record);
    Response::json(200, &shown_on(&record, on, &hidden_fields(true)?)?)
}

fn list_departments(_req: &Request) -> Result<Response, Error> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = DEPARTMENTS.query().cursor(cursor.as_deref()).limit(1000).fetch()?;
        items.extend(
            page.items
                .into_iter()
                .map(|d| json!({ "id": d.key, "name": d.value.name, "parent": d.value.parent, "head": d.value.head })),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Response::json(200, &json!({ "items": items }))
}

/// Every employee's record as of `on`, for those with one then: one walk of the history in
/// key order (employee, then effective date, then recording time), keeping each employee's
/// last change in force on `on`. Pages of 1,000, not a query per employee.
fn everyone_as_of(on: Date) -> Result<Vec<Employee>, Error> {
    let mut people: Vec<Employee> = Vec::new();
    let mut cursor = None;
    loop {
        let page = HISTORY.query().cursor(cursor.as_deref()).limit(1000).fetch()?;
        for change in page.items.into_iter().map(|c| c.value).filter(|c| c.effective <= on) {
            match people.last_mut() {
                Some(last) if last.number == change.employee => *last = change.record,
                _ => people.push(change.record),
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(people),
        }
    }
}

fn org_chart(req: &Request) -> Result<Response, Error> {
    let on = date_query(req, "as_of")?.unwrap_or_else(today);
    let people: Vec<Employee> = everyone_as_of(on)?.into_iter().filter(|e| e.is_active_on(on)).collect();
    let employed: std::collections::BTreeSet<u64> = people.iter().map(|e| e.number).collect();
    let mut reports: BTreeMap<Option<u64>, Vec<&Employee>> = BTreeMap::new();
    for e in &people {
        // Someone whose manager is not employed that day heads a tree of their own.
        let manager = e.manager.filter(|m| employed.contains(m));
        reports.entry(manager).or_default().push(e);
    }
    type Reports<'a> = BTreeMap<Option<u64>, Vec<&'a Employee>>;
    fn node(e: &Employee, reports: &Reports<'_>, shown: &mut std::collections::BTreeSet<u64>) -> Value {
        shown.insert(e.number);
        let mut under = Vec::new();
        for x in reports.get(&Some(e.number)).into_iter().flatten() {
            if !shown.contains(&x.number) {
                under.push(node(x, reports, shown));
            }
        }
        json!({ "number": e.number, "name": e.display_name(), "title": e.title, "department": e.department,
                "reports": under })
    }
    let mut shown = std::collections::BTreeSet::new();
    let mut roots: Vec<Value> = Vec::new();
    for e in reports.get(&None).into_iter().flatten() {
        roots.push(node(e, &reports, &mut shown));
    }
    // Everyone is shown once: people in a loop of managers (refused when written, but
    // possible across dates) head a tree of their own rather than vanish.
    for e in &people {
        if !shown.contains(&e.number) {
            roots.push(node(e, &reports, &mut shown));
        }
    }
    Response::json(200, &json!({ "as_of": on, "employees": people.len(), "roots": roots }))
}

fn headcount(req: &Request) -> Result<Response, Error> {
    let on = date_query(req, "as_of")?.unwrap_or_else(today);
    let mut by_department: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut total = 0;
    for e in everyone_as_of(on)?.into_iter().filter(|e| e.is_active_on(on)) {
        let department = e.department.clone().unwrap_or_else(|| "(none)".into());
        *by_department.entry(department).or_default().entry(e.employment.name()).or_default() += 1;
        total += 1;
    }
    Response::json(200, &json!({ "as_of": on, "total": total, "by_department": by_department }))
}

/// `keel:hr/directory`, as other departments see it: people as of today.
impl Guest for Hr {
    fn get_employee(id: String) -> Result<provide::Employee, provide::Error> {
        let not_found = || Error::not_found("employee-not-found", format!("no employee `{id}`"));
        let number: u64 = id.parse().map_err(|_| not_found())?;
        let on = today();
        let stored = EMPLOYEES.get(&key(number))?.ok_or_else(not_found)?;
        let record = as_of(number, on)?.map(|c| c.record).unwrap_or(stored.value);
        Ok(directory_entry(&record, on))
    }

    fn list_employees(
        department: Option<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<provide::EmployeePage, provide::Error> {
        let mut query =
            EMPLOYEES.query().cursor(cursor.as_deref()).limit(if limit == 0 { 100 } else { limit.min(1000) });
        if let Some(d) = &department {
            query = query.eq("department", d);
        }
        let page = query.fetch()?;
        let on = today();
        let mut employees = Vec::with_capacity(page.items.len());
        for e in &page.items {
            // As of today: a change dated later is not in force yet.
            let record = as_of(e.value.number, on)?.map_or_else(|| e.value.clone(), |c| c.record);
            employees.push(directory_entry(&record, on));
        }
        Ok(provide::EmployeePage { employees, next: page.next })
    }

    fn employees_active(
        from: String,
        to: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<provide::EmployeePage, provide::Error> {
        let (from, to) = period(&from, &to)?;
        let page = EMPLOYEES
            .query()
            .cursor(cursor.as_deref())
            .limit(if limit == 0 { 100 } else { limit.min(1000) })
            .fetch()?;
        let mut employees = Vec::new();
        let history = match (page.items.first(), page.items.last()) {
            (Some(lo), Some(hi)) => changes_between(lo.value.number, hi.value.number, from, to)?,
            _ => BTreeMap::new(),
        };
        for e in &page.items {
            let spans = spans_of(history.get(&e.value.number).map_or(&[], Vec::as_slice), from, to);
            if spans.iter().any(|s| s.employed().is_some()) {
                // As the record stands at the period's end (or when they left).
                let last = spans.last().map_or_else(|| e.value.clone(), |s| s.record.clone());
                employees.push(directory_entry(&last, to));
            }
        }
        Ok(provide::EmployeePage { employees, next: page.next })
    }

    fn get_manager(id: String) -> Result<Option<provide::Employee>, provide::Error> {
        let number: u64 =
            id.parse().map_err(|_| Error::not_found("employee-not-found", format!("no employee `{id}`")))?;
        let on = today();
        let record = as_of(number, on)?.map_or_else(|| current(number).map(|e| e.value), |c| Ok(c.record))?;
        let Some(manager) = record.manager else { return Ok(None) };
        let stored = current(manager)?.value;
        let manager = as_of(manager, on)?.map_or(stored, |c| c.record);
        Ok(Some(directory_entry(&manager, on)))
    }

    fn get_working_time(id: String, from: String, to: String) -> Result<provide::WorkingTime, provide::Error> {
        let number: u64 =
            id.parse().map_err(|_| Error::not_found("employee-not-found", format!("no employee `{id}`")))?;
        current(number)?;
        let (from, to) = period(&from, &to)?;
        let t = leave_routes::working_time(number, &spans(number, from, to)?, from, to)?;
        Ok(working_time_entry(t))
    }

    fn working_times(
        from: String,
        to: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<provide::EmployeeTimePage, provide::Error> {
        let (from, to) = period(&from, &to)?;
        let page = EMPLOYEES
            .query()
            .cursor(cursor.as_deref())
            .limit(if limit == 0 { 100 } else { limit.min(1000) })
            .fetch()?;
        let (Some(lo), Some(hi)) = (page.items.first(), page.items.last()) else {
            return Ok(provide::EmployeeTimePage { items: Vec::new(), next: page.next });
        };
        // The page's employees are every number from `lo` to `hi` (keys are the numbers):
        // their history and leave are read with one range each.
        let (lo, hi) = (lo.value.number, hi.value.number);
        let history = changes_between(lo, hi, from, to)?;
        let requests = leave_routes::approved_between(lo, hi, from, to)?;
        let mut lookups = leave_routes::Lookups::default();
        let mut items = Vec::new();
        for e in &page.items {
            let number = e.value.number;
            let spans = spans_of(history.get(&number).map_or(&[], Vec::as_slice), from, to);
            if !spans.iter().any(|s| s.employed().is_some()) {
                continue;
            }
            let last = spans.last().map_or_else(|| e.value.clone(), |s| s.record.clone());
            let taken = requests.get(&number).map_or(&[][..], Vec::as_slice);
            // One person's trouble is theirs: the page goes on.
            let time = leave_routes::working_time_with(&spans, taken, from, to, &mut lookups)
                .map(working_time_entry)
                .map_err(provide::Error::from);
            items.push(provide::EmployeeTime { employee: directory_entry(&last, to), time });
        }
        Ok(provide::EmployeeTimePage { items, next: page.next })
    }

    fn employee_for_user(user_id: String) -> Result<Option<provide::Employee>, provide::Error> {
        if user_id.is_empty() {
            return Ok(None);
        }
        let page = EMPLOYEES.query().eq("user", &user_id).limit(1).fetch()?;
        let Some(found) = page.items.into_iter().next() else { return Ok(None) };
        let on = today();
        let record = as_of(found.value.number, on)?.map_or(found.value, |c| c.record);
        // A link that takes effect later is not theirs yet.
        if record.user.as_deref() != Some(user_id.as_str()) {
            return Ok(None);
        }
        Ok(Some(directory_entry(&record, on)))
    }
}

fn working_time_entry(t: leave_routes::WorkingTime) -> provide::WorkingTime {
    provide::WorkingTime {
        period_days: t.period_days,
        employed_days: t.employed_days,
        period_working_days: t.period_working_days,
        working_days: t.working_days,
        working_minutes: t.working_minutes,
        leave: t
            .leave
            .into_iter()
            .map(|l| provide::LeaveTaken {
                leave_type: l.leave_type,
                name: l.name,
                paid: l.paid,
                unit: match l.unit {
                    leave::Unit::Days => provide::LeaveUnit::Days,
                    leave::Unit::Hours => provide::LeaveUnit::Hours,
                },
                amount: l.amount,
                day_thousandths: l.day_thousandths,
                minutes: l.minutes,
            })
            .collect(),
    }
}

/// A period of at most 366 days, from directory arguments.
fn period(from: &str, to: &str) -> Result<(Date, Date), Error> {
    let date = |text: &str, field: &'static str| {
        Date::parse(text).ok_or_else(|| {
            Error::invalid("invalid-date", format!("`{field}` is YYYY-MM-DD (got `{text}`)")).at_field(field)
        })
    };
    let (from, to) = (date(from, "from")?, date(to, "to")?);
    let days = to.days_from_epoch() - from.days_from_epoch() + 1;
    if !(1..=leave::MAX_REQUEST_DAYS).contains(&days) {
        return Err(
            Error::invalid("invalid-period", "a period is 1 to 366 days, `to` not before `from`").at_field("to")
        );
    }
    Ok((from, to))
}

/// A stretch of a period during which one record of an employee was in force.
pub(crate) struct Span {
    pub start: Date,
    pub end: Date,
    pub record: Employee,
}

impl Span {
    /// The days of the span the employee was employed, if any.
    pub fn employed(&self) -> Option<(Date, Date)> {
        let lo = self.start.max(self.record.hire_date);
        let hi = self.record.termination.as_ref().map_or(self.end, |t| t.date.min(self.end));
        (lo <= hi).then_some((lo, hi))
    }
}

/// The records of `number` in force from `from` to `to`, in order, each with the days it
/// covered. Days before the first record (before the hire) are in no span.
pub(crate) fn spans(number: u64, from: Date, to: Date) -> Result<Vec<Span>, Error> {
    let mut starts: Vec<(Date, Employee)> = Vec::new();
    if let Some(c) = as_of(number, from)? {
        starts.push((from, c.record));
    }
    let mut cursor = None;
    loop {
        let page = HISTORY
            .query()
            .eq("employee", number)
            .gt("effective", from)
            .le("effective", to)
            .order_by("effective")
            .cursor(cursor.as_deref())
            .limit(500)
            .fetch()?;
        for c in page.items {
            start_at(&mut starts, c.value.effective, c.value.record);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(spans_from(starts, to))
}

/// [`spans`] from the employee's changes already read, in key order (by date, then as
/// recorded).
pub(crate) fn spans_of(changes: &[Change], from: Date, to: Date) -> Vec<Span> {
    let mut starts: Vec<(Date, Employee)> = Vec::new();
    if let Some(c) = changes.iter().filter(|c| c.effective <= from).last() {
        starts.push((from, c.record.clone()));
    }
    for c in changes.iter().filter(|c| c.effective > from && c.effective <= to) {
        start_at(&mut starts, c.effective, c.record.clone());
    }
    spans_from(starts, to)
}

fn start_at(starts: &mut Vec<(Date, Employee)>, effective: Date, record: Employee) {
    // Of several changes on one day, the last recorded is the one in force.
    match starts.last_mut() {
        Some(last) if last.0 == effective => last.1 = record,
        _ => starts.push((effective, record)),
    }
}

fn spans_from(starts: Vec<(Date, Employee)>, to: Date) -> Vec<Span> {
    let ends: Vec<Date> = starts
        .iter()
        .skip(1)
        .map(|(start, _)| Date::from_epoch_days(start.days_from_epoch() - 1))
        .chain(std::iter::once(to))
        .collect();
    starts.into_iter().zip(ends).map(|((start, record), end)| Span { start, end, record }).collect()
}

/// The changes of employees `lo` to `hi` that matter from `from` to `to`, by employee, each
/// list in key order: the one in force on `from` and those within the period. One walk of
/// the page's history (older changes are read and dropped, so memory stays that of the
/// period) instead of two queries each.
fn changes_between(lo: u64, hi: u64, from: Date, to: Date) -> Result<BTreeMap<u64, Vec<Change>>, Error> {
    let mut found: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = HISTORY
            .query()
            .ge("employee", lo)
            .le("employee", hi)
            .order_by("employee")
            .cursor(cursor.as_deref())
            .limit(1000)
            .fetch()?;
        for c in page.items {
            if c.value.effective > to {
                continue;
            }
            let list = found.entry(c.value.employee).or_default();
            // Of the changes up to `from`, only the last (in key order) is in force on it.
            if c.value.effective <= from && list.last().is_some_and(|l| l.effective <= from) {
                list.pop();
            }
            list.push(c.value);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(found),
        }
    }
}

fn directory_entry(e: &Employee, on: Date) -> provide::Employee {
    provide::Employee {
        id: e.number.to_string(),
        name: e.display_name().to_owned(),
        email: e.email.clone(),
        department: e.department.clone().unwrap_or_default(),
        title: e.title.clone(),
        start_date: e.hire_date.to_string(),
        active: e.is_active_on(on),
    }
}
