//! Leave over HTTP: types, holiday calendars, allocations, requests with approval, balances,
//! the team calendar and the accrual job. The rules are in `leave.rs`; this loads, checks who
//! may do what, and stores.
//!
//! Who may do what (the host has checked the route's permission already): HR admins
//! (`hr.manage`) everything; everyone else acts as the employee linked to their user: their
//! own requests and balances, and, as a manager, their reports' requests, balances and team
//! calendar. Nobody approves their own leave.

use crate::employee::{Date, Employee};
use crate::leave::{
    self, Accrual, Accrued, Allocation, Ask, Calendar, Day, Half, Holiday, LeaveType, Refusal, State, Unit,
};
use crate::{EMPLOYEES, MANAGE, as_of, current, date_query, invalid, key, number_param, today};
use keel_sdk::services::has_permission;
use keel_sdk::{Collection, Error, Job, Request, Response, Sequence, TaskSpec, Versioned, publish};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const TYPES: Collection<LeaveType> = Collection::new("leave_types");
const CALENDARS: Collection<Calendar> = Collection::new("holiday_calendars");
const ALLOCATIONS: Collection<Allocation> = Collection::new("allocations");
const REQUESTS: Collection<LeaveRequest> = Collection::new("leave_requests");
const REQUEST_NUMBERS: Sequence = Sequence::new("leave-request");

/// Payload: the request's view (id, employee, type, paid, unit, from, to, days, amount).
pub const APPROVED: &str = "hr.leave.approved";
/// Payload: the request's view and `was` (`pending` or `approved`).
pub const CANCELLED: &str = "hr.leave.cancelled";

/// The calendar of employees with no location, or whose location has none of its own.
const DEFAULT_CALENDAR: &str = "default";
/// The longest key the store takes, in bytes.
const MAX_CALENDAR_KEY: usize = 256;
/// The longest team calendar one call returns.
const MAX_CALENDAR_DAYS: i64 = 93;
/// Employees per chunk of the accrual task (each writes at most one allocation per type).
const ACCRUAL_CHUNK: u32 = 40;
/// Query pages a chunk may read: a call that writes may re-check at most 100 at commit, and
/// carrying a year over reads each employee's requests once per type with an allowance.
const ACCRUAL_QUERIES: u32 = 90;
const MAX_TYPES: u32 = 20;
const MAX_HOLIDAYS: usize = 1000;
/// What the accrual job records as having set an allowance.
const BY_ALLOWANCE: &str = "allowance";

/// A request for leave and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveRequest {
    pub employee: u64,
    pub leave_type: String,
    pub year: i32,
    pub from: Date,
    pub to: Date,
    pub from_half: Option<Half>,
    pub to_half: Option<Half>,
    pub unit: Unit,
    pub paid: bool,
    /// The working days it takes, counted when it was made.
    pub days: Vec<Day>,
    pub state: State,
    /// The manager when it was made, who may decide it (as may HR and a later manager).
    pub approver: Option<u64>,
    pub reason: Option<String>,
    pub requested_by: String,
    pub requested_at: u64,
    pub decided_by: Option<String>,
    pub decided_at: Option<u64>,
    /// Why it was rejected or cancelled.
    pub note: Option<String>,
}

impl LeaveRequest {
    fn total(&self) -> i64 {
        self.days.iter().map(|d| d.ticks).sum()
    }
}

fn request_key(id: u64) -> String {
    format!("{id:010}")
}

fn allocation_key(employee: u64, kind: &str, year: i32) -> String {
    format!("{}/{kind}/{year}", key(employee))
}

fn refusal(r: Refusal) -> Error {
    Error::invalid(r.code, r.reason).at_field(r.field)
}

/// Ids of types and calendars: 1-64 of a-z, 0-9, '-' and '_'.
fn check_id(id: &str, what: &str) -> Result<(), Error> {
    let valid = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid("invalid-id", format!("{what} ids are 1-64 of a-z, 0-9, '-' and '_'")).at_field("id"))
    }
}

fn is_hr() -> bool {
    has_permission(MANAGE)
}

/// The employee linked to the caller's user, if any.
pub(crate) fn me(req: &Request) -> Result<Option<Employee>, Error> {
    let page = EMPLOYEES.query().eq("user", &req.caller.user_id).limit(1).fetch()?;
    Ok(page.items.into_iter().next().map(|e| e.value))
}

fn not_linked() -> Error {
    Error::forbidden("no-employee-record", "your user is not linked to an employee record; ask HR to link it")
}

/// Whether the caller may see `employee`'s leave: HR, the employee, or their manager.
pub(crate) fn may_see(req: &Request, employee: &Employee) -> Result<(), Error> {
    if is_hr() {
        return Ok(());
    }
    match me(req)? {
        Some(m) if m.number == employee.number || employee.manager == Some(m.number) => Ok(()),
        Some(_) => Err(Error::forbidden(
            "not-your-employee",
            format!("only employee {}, their manager and HR see their leave", employee.number),
        )),
        None => Err(not_linked()),
    }
}

fn type_of(id: &str) -> Result<LeaveType, Error> {
    TYPES
        .get(id)?
        .map(|t| t.value)
        .ok_or_else(|| Error::invalid("unknown-leave-type", format!("no leave type `{id}`")).at_field("type"))
}

fn all_types() -> Result<Vec<(String, LeaveType)>, Error> {
    Ok(TYPES.query().limit(MAX_TYPES).fetch()?.items.into_iter().map(|t| (t.key, t.value)).collect())
}

/// The holidays that apply to `employee`: their location's calendar, else the default one.
fn calendar_for(employee: &Employee) -> Result<Calendar, Error> {
    // A location longer than a key can be has no calendar of its own.
    if let Some(location) = employee.location.as_ref().map(|l| l.to_lowercase())
        && location.len() <= MAX_CALENDAR_KEY
        && let Some(c) = CALENDARS.get(&location)?
    {
        return Ok(c.value);
    }
    Ok(CALENDARS.get(DEFAULT_CALENDAR)?.map(|c| c.value).unwrap_or_default())
}

/// The employee's record in force on `date` (their latest if none is yet).
fn record_on(number: u64, date: Date) -> Result<Employee, Error> {
    let latest = current(number)?.value;
    Ok(as_of(number, date)?.map_or(latest, |c| c.record))
}

/// The requests of `employee` starting from `from` to `to` (a request is at most a year, so
/// one starting a year before `from` is the earliest that can reach into it).
fn requests_starting(employee: u64, from: Date, to: Date) -> Result<Vec<(u64, LeaveRequest)>, Error> {
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let page = REQUESTS
            .query()
            .eq("employee", employee)
            .ge("from", from)
            .le("from", to)
            .order_by("from")
            .cursor(cursor.as_deref())
            .limit(200)
            .fetch()?;
        found.extend(page.items.into_iter().filter_map(|r| Some((r.key.parse().ok()?, r.value))));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(found),
        }
    }
}

fn year_bounds(year: i32) -> (Date, Date) {
    (Date { year, month: 1, day: 1 }, Date { year, month: 12, day: 31 })
}

/// The live requests of one employee, type and year.
fn requests_of_year(employee: u64, kind: &str, year: i32) -> Result<Vec<LeaveRequest>, Error> {
    let (first, last) = year_bounds(year);
    Ok(requests_starting(employee, first, last)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.leave_type == kind && r.year == year)
        .collect())
}

fn balance_of(allocation: Option<&Allocation>, requests: &[LeaveRequest], on: Date) -> leave::Balance {
    leave::balance(allocation, requests.iter().map(|r| (r.state, &r.days[..])), on)
}

/// What of `year` moved on to the next year when it was closed (0 while it is open).
fn carried_forward(employee: u64, kind: &str, year: i32) -> Result<i64, Error> {
    Ok(ALLOCATIONS.get(&allocation_key(employee, kind, year + 1))?.and_then(|a| a.value.carried_over).unwrap_or(0))
}

/// `employee`'s allocation of `kind` for `year`, brought up to `through`: created from the
/// type's allowance if HR set none, last year's remainder carried in (capped) once, and the
/// months ended by `through` accrued. `None` for a type without a balance, or a year the
/// employee did not work in. The flag says whether it differs from what is stored.
fn allocation_through(
    employee: &Employee,
    kind_id: &str,
    kind: &LeaveType,
    year: i32,
    through: Date,
) -> Result<Option<(Allocation, Option<u64>, bool)>, Error> {
    allocation_at(employee, kind_id, kind, year, through, true)
}

/// `allocation_through`; without `whole`, only a stored allocation, with its months posted
/// (what the year before looks like when its remainder is carried over).
fn allocation_at(
    employee: &Employee,
    kind_id: &str,
    kind: &LeaveType,
    year: i32,
    through: Date,
    whole: bool,
) -> Result<Option<(Allocation, Option<u64>, bool)>, Error> {
    let Some(allowance) = kind.allowance else { return Ok(None) };
    let stored = ALLOCATIONS.get(&allocation_key(employee.number, kind_id, year))?;
    let (first, last) = year_bounds(year);
    let left = employee.termination.as_ref().map(|t| t.date);
    let worked_this_year = employee.hire_date <= last.min(through) && left.is_none_or(|l| l >= first);
    let (mut allocation, version) = match stored {
        Some(s) => (s.value, Some(s.version)),
        None if !whole || !worked_this_year => return Ok(None),
        None => {
            let amount = match kind.accrual {
                Accrual::UpFront => leave::up_front(kind, allowance, year, employee.hire_date, left),
                Accrual::Monthly => allowance,
            };
            let allocation = Allocation {
                employee: employee.number,
                leave_type: kind_id.to_owned(),
                year,
                unit: kind.unit,
                accrual: kind.accrual,
                amount,
                granted_on: employee.hire_date.max(first),
                accrued: Vec::new(),
                carried_over: None,
                set_by: BY_ALLOWANCE.to_owned(),
            };
            (allocation, None)
        }
    };
    let before = allocation.clone();
    // Carried over from a year Keel kept (a year before it did is set by HR, if at all),
    // with that year's months all posted, once; from then on those days count as used in
    // the year before (`carried_forward`).
    if whole && allocation.carried_over.is_none() && through >= first {
        let year_end = year_bounds(year - 1).1;
        let previous = allocation_at(employee, kind_id, kind, year - 1, year_end, false)?;
        let carried = match previous {
            Some((p, _, _)) if kind.carry_over_cap > 0 && p.unit == kind.unit => {
                let requests = requests_of_year(employee.number, kind_id, year - 1)?;
                leave::carry_over(kind, &balance_of(Some(&p), &requests, year_end))
            }
            _ => 0,
        };
        allocation.carried_over = Some(carried);
    }
    if allocation.accrual == Accrual::Monthly {
        for month in 1..=12u8 {
            let end = leave::month_end(year, month);
            if end > through || allocation.accrued.iter().any(|a| a.month == month) {
                continue;
            }
            let ticks = leave::monthly(allocation.amount, year, month, employee.hire_date, left);
            allocation.accrued.push(Accrued { month, on: end, ticks });
        }
    }
    let changed = version.is_none() || allocation != before;
    Ok(Some((allocation, version, changed)))
}

/// Stores what `allocation_through` worked out, if it changed.
fn store_allocation(found: &(Allocation, Option<u64>, bool)) -> Result<(), Error> {
    let (allocation, version, changed) = found;
    if !changed {
        return Ok(());
    }
    let key = allocation_key(allocation.employee, &allocation.leave_type, allocation.year);
    match version {
        Some(v) => ALLOCATIONS.update(&key, allocation, *v)?,
        None => ALLOCATIONS.insert(&key, allocation)?,
    };
    Ok(())
}

fn amount(unit: Unit, ticks: i64) -> Value {
    json!(unit.show(ticks))
}

fn request_view(id: u64, r: &LeaveRequest, kind_name: Option<&str>) -> Value {
    let days: Vec<Value> = r
        .days
        .iter()
        .map(|d| json!({ "date": d.date, "part": d.part.name(), "amount": amount(r.unit, d.ticks) }))
        .collect();
    json!({
        "id": id, "employee": r.employee, "type": r.leave_type, "type_name": kind_name, "paid": r.paid,
        "unit": r.unit, "from": r.from, "to": r.to, "from_half": r.from_half, "to_half": r.to_half,
        "amount": amount(r.unit, r.total()), "days": days, "state": r.state, "approver": r.approver,
        "reason": r.reason, "requested_by": r.requested_by, "requested_at": r.requested_at,
        "decided_by": r.decided_by, "decided_at": r.decided_at, "note": r.note,
    })
}

fn balance_view(kind_id: &str, kind: &LeaveType, b: &leave::Balance, on: Date) -> Value {
    let unit = kind.unit;
    let limited = kind.allowance.is_some();
    json!({
        "type": kind_id, "name": kind.name, "unit": unit, "paid": kind.paid, "as_of": on,
        "allocated": amount(unit, b.allocated), "accrued": amount(unit, b.accrued),
        "carried_over": amount(unit, b.carried_over), "taken": amount(unit, b.taken),
        "booked": amount(unit, b.booked), "pending": amount(unit, b.pending),
        "carried_forward": amount(unit, b.carried_forward),
        "remaining": if limited { amount(unit, b.remaining) } else { Value::Null },
    })
}

fn type_view(id: &str, t: &LeaveType) -> Value {
    json!({
        "id": id, "name": t.name, "paid": t.paid, "unit": t.unit,
        "allowance": t.allowance.map(|a| t.unit.show(a)), "accrual": t.accrual,
        "carry_over_cap": t.unit.show(t.carry_over_cap), "requires_approval": t.requires_approval,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeInput {
    name: String,
    #[serde(default = "yes")]
    paid: bool,
    unit: Unit,
    /// Per year, in the unit; absent or `null`: no balance kept.
    allowance: Option<f64>,
    #[serde(default = "up_front")]
    accrual: Accrual,
    #[serde(default)]
    carry_over_cap: f64,
    #[serde(default = "yes")]
    requires_approval: bool,
}

fn yes() -> bool {
    true
}

fn up_front() -> Accrual {
    Accrual::UpFront
}

fn parse_amount(unit: Unit, value: f64, field: &'static str) -> Result<i64, Error> {
    unit.parse(value).ok_or_else(|| {
        let grain = match unit {
            Unit::Days => "a thousandth of a day",
            Unit::Hours => "a minute",
        };
        Error::invalid("invalid-amount", format!("`{field}` is {} of 0 or more, to {grain}", unit.name()))
            .at_field(field)
    })
}

pub fn put_type(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?.to_owned();
    check_id(&id, "leave type")?;
    let input: TypeInput = req.json()?;
    let name = crate::employee::text("name", &input.name, crate::employee::NAME_MAX).map_err(invalid)?;
    let allowance = input.allowance.map(|a| parse_amount(input.unit, a, "allowance")).transpose()?;
    let carry_over_cap = parse_amount(input.unit, input.carry_over_cap, "carry_over_cap")?;
    let kind = LeaveType {
        name,
        paid: input.paid,
        unit: input.unit,
        allowance,
        accrual: input.accrual,
        carry_over_cap,
        requires_approval: input.requires_approval,
    };
    match TYPES.get(&id)? {
        // Amounts already allocated and requested are in the old unit.
        Some(old) if old.value.unit != kind.unit => {
            return Err(Error::conflict(
                "unit-change",
                format!(
                    "`{id}` is counted in {}; make a new type to count in {}",
                    old.value.unit.name(),
                    kind.unit.name()
                ),
            )
            .at_field("unit"));
        }
        Some(old) => TYPES.update(&id, &kind, old.version)?,
        None => {
            if TYPES.query().limit(MAX_TYPES).fetch()?.items.len() as u32 >= MAX_TYPES {
                return Err(Error::conflict(
                    "too-many-leave-types",
                    format!("a tenant has at most {MAX_TYPES} leave types"),
                ));
            }
            TYPES.insert(&id, &kind)?
        }
    };
    Response::json(200, &type_view(&id, &kind))
}

pub fn list_types(_req: &Request) -> Result<Response, Error> {
    let items: Vec<Value> = all_types()?.iter().map(|(id, t)| type_view(id, t)).collect();
    Response::json(200, &json!({ "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarInput {
    name: String,
    holidays: Vec<Holiday>,
}

pub fn put_calendar(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?.to_owned();
    check_id(&id, "calendar")?;
    let input: CalendarInput = req.json()?;
    if input.holidays.len() > MAX_HOLIDAYS {
        return Err(Error::invalid("too-many-holidays", format!("a calendar has at most {MAX_HOLIDAYS} holidays"))
            .at_field("holidays"));
    }
    let name = crate::employee::text("name", &input.name, crate::employee::NAME_MAX).map_err(invalid)?;
    let mut holidays = Vec::with_capacity(input.holidays.len());
    for h in input.holidays {
        let name = crate::employee::text("holidays.name", &h.name, crate::employee::NAME_MAX).map_err(invalid)?;
        holidays.push(Holiday { date: h.date, name });
    }
    let calendar = Calendar { name, holidays }
        .normalise()
        .map_err(|date| Error::invalid("duplicate-holiday", format!("{date} is listed twice")).at_field("holidays"))?;
    CALENDARS.upsert(&id, &calendar)?;
    Response::json(200, &json!({ "id": id, "name": calendar.name, "holidays": calendar.holidays }))
}

pub fn get_calendar(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?;
    let calendar = CALENDARS
        .get(id)?
        .ok_or_else(|| Error::not_found("calendar-not-found", format!("no holiday calendar `{id}`")))?;
    Response::json(200, &json!({ "id": id, "name": calendar.value.name, "holidays": calendar.value.holidays }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationInput {
    amount: f64,
    /// What came over from the year before (e.g. from the system used until now).
    carried_over: Option<f64>,
}

/// Sets a year's allocation of a type for one employee (an agreed extra, a contract's
/// allowance); what was accrued and carried over stays.
pub fn put_allocation(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    let kind_id = req.param("type")?.to_owned();
    let year: i32 = req
        .param("year")?
        .parse()
        .ok()
        .filter(|y| (1900..=9999).contains(y))
        .ok_or_else(|| Error::invalid("invalid-year", "the year is a number like 2026").at_field("year"))?;
    let kind = type_of(&kind_id)?;
    if kind.allowance.is_none() {
        return Err(Error::conflict("no-balance", format!("`{kind_id}` keeps no balance: it has no allowance")));
    }
    let input: AllocationInput = req.json()?;
    let ticks = parse_amount(kind.unit, input.amount, "amount")?;
    let carried = input.carried_over.map(|c| parse_amount(kind.unit, c, "carried_over")).transpose()?;
    let employee = current(number)?.value;
    let through = today().min(year_bounds(year).1);
    let found = allocation_through(&employee, &kind_id, &kind, year, through)?;
    let (mut allocation, version) = match found {
        Some((a, v, _)) => (a, v),
        None => {
            let (first, _) = year_bounds(year);
            let a = Allocation {
                employee: number,
                leave_type: kind_id.clone(),
                year,
                unit: kind.unit,
                accrual: kind.accrual,
                amount: 0,
                granted_on: employee.hire_date.max(first),
                accrued: Vec::new(),
                carried_over: None,
                set_by: String::new(),
            };
            (a, None)
        }
    };
    allocation.amount = ticks;
    if carried.is_some() {
        allocation.carried_over = carried;
    }
    allocation.set_by = req.caller.user_id.clone();
    store_allocation(&(allocation.clone(), version, true))?;
    let requests = requests_of_year(number, &kind_id, year)?;
    let on = today();
    let b = balance_of(Some(&allocation), &requests, on);
    Response::json(
        200,
        &json!({ "employee": number, "year": year, "balance": balance_view(&kind_id, &kind, &b, on),
                                 "set_by": allocation.set_by }),
    )
}

pub fn balances(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    let on = date_query(req, "as_of")?.unwrap_or_else(today);
    let employee = current(number)?.value;
    may_see(req, &employee)?;
    let mut items = Vec::new();
    for (kind_id, kind) in all_types()? {
        // As the accrual job will have it through the date (a date to come counts the
        // months that will have ended by then): nothing is written by looking.
        let allocation = allocation_through(&employee, &kind_id, &kind, on.year, on)?.map(|(a, _, _)| a);
        let requests = requests_of_year(number, &kind_id, on.year)?;
        let b = balance_of(allocation.as_ref(), &requests, on)
            .with_carried_forward(carried_forward(number, &kind_id, on.year)?);
        items.push(balance_view(&kind_id, &kind, &b, on));
    }
    Response::json(200, &json!({ "employee": number, "as_of": on, "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    /// Whose leave (default: the caller's own); for someone else, HR only.
    employee: Option<u64>,
    #[serde(rename = "type")]
    kind: String,
    from: Date,
    to: Date,
    from_half: Option<Half>,
    to_half: Option<Half>,
    /// Hour-counted types: hours of a one-day request (`2.5`).
    hours: Option<f64>,
    reason: Option<String>,
}

pub fn request_leave(req: &Request) -> Result<Response, Error> {
    let input: RequestInput = req.json()?;
    let own = me(req)?;
    let number = match (input.employee, &own) {
        (Some(n), Some(m)) if n == m.number => n,
        (Some(n), _) if is_hr() => n,
        (Some(n), _) => {
            return Err(Error::forbidden(
                "not-your-employee",
                format!("only HR asks for leave on behalf of employee {n}"),
            ));
        }
        (None, Some(m)) => m.number,
        (None, None) => return Err(not_linked()),
    };
    let kind = type_of(&input.kind)?;
    let minutes = input
        .hours
        .map(|h| parse_amount(Unit::Hours, h, "hours").map(|m| u32::try_from(m).unwrap_or(u32::MAX)))
        .transpose()?;
    let ask = Ask { from: input.from, to: input.to, from_half: input.from_half, to_half: input.to_half, minutes };
    // Each day is counted with the record in force on it (a new pattern or location from
    // the day it applies), and only while employed.
    let spans = crate::spans(number, input.from, input.to.max(input.from))?;
    let calendars = spans.iter().map(|s| calendar_for(&s.record)).collect::<Result<Vec<_>, _>>()?;
    let days = leave::request_days_with(kind.unit, &ask, |date| {
        let i = spans.iter().position(|s| s.employed().is_some_and(|(lo, hi)| lo <= date && date <= hi))?;
        Some((&spans[i].record.pattern, &calendars[i]))
    })
    .map_err(|r| match r.code {
        "not-employed" => Error::invalid(r.code, format!("employee {number} is {}", r.reason)).at_field(r.field),
        _ => refusal(r),
    })?;
    let reason = input.reason.map(|r| crate::employee::text("reason", &r, 1000)).transpose().map_err(invalid)?;

    // Overlap with the live requests of the employee, of any type: a day may not hold more
    // than it has.
    let reach_back = Date::from_epoch_days(input.from.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    let others: Vec<(u64, LeaveRequest)> = requests_starting(number, reach_back, input.to)?
        .into_iter()
        .filter(|(_, o)| o.state.is_live() && o.to >= input.from)
        .collect();
    for day in &days {
        let taken = others.iter().flat_map(|(_, o)| o.days.iter());
        if day.clashes_with_all(taken) {
            let (id, other) = others.iter().find(|(_, o)| o.days.iter().any(|d| d.date == day.date)).expect("a clash");
            return Err(Error::conflict(
                "leave-overlap",
                format!(
                    "{} is already taken by request {id} ({}, {}, {})",
                    day.date,
                    other.leave_type,
                    other.state.name(),
                    other.from
                ),
            )
            .at_field("from"));
        }
    }

    let manager_now = record_on(number, today())?.manager;
    let mut request = LeaveRequest {
        employee: number,
        leave_type: input.kind.clone(),
        year: input.from.year,
        from: input.from,
        to: input.to,
        from_half: input.from_half,
        to_half: input.to_half,
        unit: kind.unit,
        paid: kind.paid,
        days,
        state: State::Pending,
        approver: manager_now,
        reason,
        requested_by: req.caller.user_id.clone(),
        requested_at: keel_sdk::services::now_ms(),
        decided_by: None,
        decided_at: None,
        note: None,
    };

    // The balance, with this request counted as pending, as of its last day, with the
    // months that will have accrued by then. Reading the year's requests makes two
    // concurrent requests serialize: the second is run again and sees the first.
    if kind.allowance.is_some() {
        let latest = current(number)?.value;
        if let Some(found) = allocation_through(&latest, &input.kind, &kind, request.year, today())? {
            store_allocation(&found)?;
        }
        let projected = allocation_through(&latest, &input.kind, &kind, request.year, request.to)?;
        let mut requests = requests_of_year(number, &input.kind, request.year)?;
        requests.push(request.clone());
        let b = balance_of(projected.as_ref().map(|f| &f.0), &requests, request.to)
            .with_carried_forward(carried_forward(number, &input.kind, request.year)?);
        if b.remaining < 0 {
            let unit = kind.unit;
            let forward = match b.carried_forward {
                0 => String::new(),
                ticks => format!(", carried forward to {} {}", request.year + 1, unit.show(ticks)),
            };
            return Err(Error::conflict(
                "insufficient-balance",
                format!(
                    "{} {} of {} asked; {} remain on {} (accrued {}, carried over {}, taken {}, booked {}, pending {}{forward})",
                    unit.show(request.total()),
                    unit.name(),
                    kind.name,
                    unit.show(b.remaining + request.total()),
                    request.to,
                    unit.show(b.accrued),
                    unit.show(b.carried_over),
                    unit.show(b.taken),
                    unit.show(b.booked),
                    unit.show(b.pending - request.total()),
                ),
            ));
        }
    }
    let id = REQUEST_NUMBERS.next()?;
    if !kind.requires_approval {
        request.state = State::Approved;
        request.decided_by = Some("auto".into());
        request.decided_at = Some(request.requested_at);
    }
    REQUESTS.insert(&request_key(id), &request)?;
    let shown = request_view(id, &request, Some(&kind.name));
    if request.state == State::Approved {
        publish(APPROVED, &shown)?;
    }
    Response::json(201, &shown)
}

fn request_param(req: &Request) -> Result<(u64, Versioned<LeaveRequest>), Error> {
    let text = req.param("id")?;
    let not_found = || Error::not_found("leave-request-not-found", format!("no leave request `{text}`"));
    let id: u64 = text.parse().map_err(|_| not_found())?;
    let stored = REQUESTS.get(&request_key(id))?.ok_or_else(not_found)?;
    Ok((id, stored))
}

fn type_name(id: &str) -> Option<String> {
    TYPES.get(id).ok().flatten().map(|t| t.value.name)
}

pub fn get_request(req: &Request) -> Result<Response, Error> {
    let (id, stored) = request_param(req)?;
    may_see(req, &current(stored.value.employee)?.value)?;
    Response::json(200, &request_view(id, &stored.value, type_name(&stored.value.leave_type).as_deref()))
}

pub fn list_requests(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 200)?;
    let state = match req.query("state") {
        None => None,
        Some(s) => Some(serde_json::from_value::<State>(json!(s)).map_err(|_| {
            Error::invalid("invalid-state", "`state` is pending, approved, rejected or cancelled").at_field("state")
        })?),
    };
    let mut query = REQUESTS.query().cursor(paging.cursor.as_deref()).limit(paging.limit);
    if req.query("awaiting") == Some("me") {
        // What the caller, as a manager, is to decide.
        let m = me(req)?.ok_or_else(not_linked)?;
        query = query.eq("approver", m.number).eq("state", "pending");
    } else if let Some(text) = req.query("employee") {
        let number: u64 = text
            .parse()
            .map_err(|_| Error::invalid("invalid-employee", "`employee` is an employee number").at_field("employee"))?;
        may_see(req, &current(number)?.value)?;
        query = query.eq("employee", number).order_by("from");
    } else if !is_hr() {
        let m = me(req)?.ok_or_else(not_linked)?;
        query = query.eq("employee", m.number).order_by("from");
    }
    if let Some(s) = state {
        query = query.eq("state", s.name());
    }
    let page = query.fetch()?;
    let mut names = BTreeMap::new();
    let mut items = Vec::with_capacity(page.items.len());
    for r in &page.items {
        let name = names.entry(r.value.leave_type.clone()).or_insert_with(|| type_name(&r.value.leave_type));
        items.push(request_view(r.key.parse().unwrap_or(0), &r.value, name.as_deref()));
    }
    Response::page(&items, page.next.as_deref())
}

/// Whether the caller may decide `request`: HR, its approver, or the employee's manager now;
/// never the employee themself.
fn may_decide(req: &Request, request: &LeaveRequest) -> Result<(), Error> {
    let own = me(req)?;
    if own.as_ref().is_some_and(|m| m.number == request.employee) {
        return Err(Error::forbidden("own-leave", "nobody approves or rejects their own leave"));
    }
    if is_hr() {
        return Ok(());
    }
    let Some(m) = own else { return Err(not_linked()) };
    let manager_now = record_on(request.employee, today())?.manager;
    if request.approver == Some(m.number) || manager_now == Some(m.number) {
        return Ok(());
    }
    let who = match manager_now.or(request.approver) {
        Some(n) => format!("employee {n} (their manager) or HR"),
        None => "HR".to_owned(),
    };
    Err(Error::forbidden("not-approver", format!("employee {}'s leave is decided by {who}", request.employee)))
}

fn decide(req: &Request, to: State, note: Option<String>) -> Result<Response, Error> {
    let (id, stored) = request_param(req)?;
    let mut request = stored.value;
    may_decide(req, &request)?;
    if request.state != State::Pending {
        return Err(Error::conflict(
            "not-pending",
            format!("request {id} is {}; only a pending request is decided", request.state.name()),
        ));
    }
    request.state = to;
    request.decided_by = Some(req.caller.user_id.clone());
    request.decided_at = Some(keel_sdk::services::now_ms());
    request.note = note;
    REQUESTS.update(&request_key(id), &request, stored.version)?;
    let shown = request_view(id, &request, type_name(&request.leave_type).as_deref());
    if to == State::Approved {
        publish(APPROVED, &shown)?;
    }
    Response::json(200, &shown)
}

pub fn approve(req: &Request) -> Result<Response, Error> {
    decide(req, State::Approved, None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: Option<String>,
}

fn reason_of(req: &Request, required: bool) -> Result<Option<String>, Error> {
    let input: Reason = if req.body.is_empty() { Reason { reason: None } } else { req.json()? };
    match input.reason {
        Some(r) => Ok(Some(crate::employee::text("reason", &r, 1000).map_err(invalid)?)),
        None if required => Err(Error::invalid("required", "say why (`reason`)").at_field("reason")),
        None => Ok(None),
    }
}

pub fn reject(req: &Request) -> Result<Response, Error> {
    let reason = reason_of(req, true)?;
    decide(req, State::Rejected, reason)
}

/// Cancels a request, giving its days back: the employee while it is pending or has not
/// started, HR at any time.
pub fn cancel(req: &Request) -> Result<Response, Error> {
    let (id, stored) = request_param(req)?;
    let mut request = stored.value;
    let hr = is_hr();
    let own = me(req)?.is_some_and(|m| m.number == request.employee);
    if !hr && !own {
        return Err(Error::forbidden("not-your-leave", "only the employee and HR cancel leave"));
    }
    let was = request.state;
    if !was.is_live() {
        return Err(Error::conflict("not-cancellable", format!("request {id} is {}", was.name())));
    }
    if !hr && was == State::Approved && request.from <= today() {
        return Err(Error::conflict(
            "already-started",
            format!("request {id} started on {}; ask HR to cancel leave already begun", request.from),
        ));
    }
    let note = reason_of(req, false)?;
    request.state = State::Cancelled;
    request.decided_by = Some(req.caller.user_id.clone());
    request.decided_at = Some(keel_sdk::services::now_ms());
    request.note = note;
    REQUESTS.update(&request_key(id), &request, stored.version)?;
    let mut shown = request_view(id, &request, type_name(&request.leave_type).as_deref());
    publish(CANCELLED, &json!({ "request": shown.clone(), "was": was }))?;
    shown["was"] = json!(was);
    Response::json(200, &shown)
}

/// Who is away on which days, for a manager's reports or a department.
pub fn team_calendar(req: &Request) -> Result<Response, Error> {
    let from =
        date_query(req, "from")?.ok_or_else(|| Error::invalid("required", "`from` is required").at_field("from"))?;
    let to = date_query(req, "to")?.ok_or_else(|| Error::invalid("required", "`to` is required").at_field("to"))?;
    if to < from || to.days_from_epoch() - from.days_from_epoch() >= MAX_CALENDAR_DAYS {
        return Err(
            Error::invalid("invalid-period", format!("`from`..`to` is 1 to {MAX_CALENDAR_DAYS} days")).at_field("to")
        );
    }
    let members: Vec<Employee> = if let Some(text) = req.query("manager") {
        let manager: u64 = text
            .parse()
            .map_err(|_| Error::invalid("invalid-employee", "`manager` is an employee number").at_field("manager"))?;
        if !is_hr() && me(req)?.map(|m| m.number) != Some(manager) {
            return Err(Error::forbidden("not-your-team", format!("only employee {manager} and HR see their team")));
        }
        EMPLOYEES.query().eq("manager", manager).limit(1000).fetch()?.items.into_iter().map(|e| e.value).collect()
    } else if let Some(department) = req.query("department") {
        if !is_hr() {
            let head = crate::department_head(department)?;
            if head.is_none() || me(req)?.map(|m| m.number) != head {
                return Err(Error::forbidden(
                    "not-your-team",
                    format!("only the head of `{department}` and HR see its calendar"),
                ));
            }
        }
        EMPLOYEES.query().eq("department", department).limit(1000).fetch()?.items.into_iter().map(|e| e.value).collect()
    } else {
        return Err(Error::invalid("required", "ask for `manager` or `department`").at_field("manager"));
    };
    let mut names = BTreeMap::new();
    let mut people = Vec::new();
    let reach_back = Date::from_epoch_days(from.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    for e in members {
        let mut days = Vec::new();
        for (id, r) in requests_starting(e.number, reach_back, to)? {
            if !r.state.is_live() || r.to < from {
                continue;
            }
            let name = names.entry(r.leave_type.clone()).or_insert_with(|| type_name(&r.leave_type)).clone();
            for d in r.days.iter().filter(|d| d.date >= from && d.date <= to) {
                days.push(json!({ "date": d.date, "part": d.part.name(), "request": id, "type": r.leave_type,
                                  "type_name": name, "state": r.state }));
            }
        }
        if !days.is_empty() {
            people.push(json!({ "number": e.number, "name": e.display_name(), "days": days }));
        }
    }
    Response::json(200, &json!({ "from": from, "to": to, "people": people }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AccrualInput {
    through: Option<Date>,
}

/// Starts the accrual task now (the schedule starts it nightly): every employee's
/// allocations brought up to `through` (default today).
pub fn start_accruals(req: &Request) -> Result<Response, Error> {
    let input: AccrualInput = if req.body.is_empty() { AccrualInput::default() } else { req.json()? };
    let through = input.through.unwrap_or_else(today);
    if through > today() {
        return Err(Error::invalid("future-date", format!("accruals run through today ({}) at the latest", today()))
            .at_field("through"));
    }
    let task = start_accrual_task(through)?;
    Response::json(202, &json!({ "task": task, "through": through }))
}

fn start_accrual_task(through: Date) -> Result<String, Error> {
    TaskSpec::new(ACCRUE, &format!("Leave accruals through {through}"), &json!({ "cursor": null, "through": through }))?
        .start()
}

/// The job that runs one chunk of the accrual task.
pub const ACCRUE: &str = "accrue-leave";
/// The manifest schedule that starts it.
pub const ACCRUAL_SCHEDULE: &str = "leave-accrual";

#[derive(Deserialize)]
struct AccrualChunk {
    through: Date,
}

pub fn run_job(job: &Job) -> Result<(), Error> {
    match job.name.as_str() {
        ACCRUAL_SCHEDULE => start_accrual_task(Date::from_ms(job.due_at)).map(|_| ()),
        ACCRUE => {
            let chunk: AccrualChunk = job.payload()?;
            let types = all_types()?;
            let year = chunk.through.year;
            let kept = types.iter().filter(|(_, t)| t.allowance.is_some()).count().max(1) as u32;
            let chunk_size = (ACCRUAL_QUERIES / kept).clamp(1, ACCRUAL_CHUNK);
            keel_sdk::task::walk(job, EMPLOYEES.query().limit(chunk_size), |e| {
                for (kind_id, kind) in &types {
                    // Last year's months all posted first (a missed 31 December run), then
                    // this year's, with last year's remainder carried over.
                    let year_end = year_bounds(year - 1).1;
                    if let Some(previous) = allocation_at(&e.value, kind_id, kind, year - 1, year_end, false)? {
                        store_allocation(&previous)?;
                    }
                    if let Some(found) = allocation_through(&e.value, kind_id, kind, year, chunk.through)? {
                        store_allocation(&found)?;
                    }
                }
                Ok(())
            })
        }
        other => Err(Error::invalid("unknown-job", format!("HR runs no job `{other}`"))),
    }
}

/// An employee's working time in a period, as the directory gives it to payroll.
pub struct WorkingTime {
    pub period_days: u32,
    pub employed_days: u32,
    pub period_working_days: u32,
    pub working_days: u32,
    pub working_minutes: u64,
    pub leave: Vec<LeaveTaken>,
}

/// Approved leave of one type in a period.
pub struct LeaveTaken {
    pub leave_type: String,
    pub name: String,
    pub paid: bool,
    pub unit: Unit,
    pub amount: String,
    pub day_thousandths: u64,
    pub minutes: u64,
}

/// Holiday calendars and leave type names, each read once however many employees use them.
#[derive(Default)]
pub(crate) struct Lookups {
    /// By lowercased location (`""`: none).
    calendars: BTreeMap<String, Calendar>,
    names: BTreeMap<String, Option<String>>,
}

impl Lookups {
    fn calendar(&mut self, employee: &Employee) -> Result<&Calendar, Error> {
        let location = employee.location.as_deref().unwrap_or_default().to_lowercase();
        if !self.calendars.contains_key(&location) {
            let calendar = calendar_for(employee)?;
            self.calendars.insert(location.clone(), calendar);
        }
        Ok(&self.calendars[&location])
    }

    fn type_name(&mut self, id: &str) -> Option<String> {
        self.names.entry(id.to_owned()).or_insert_with(|| type_name(id)).clone()
    }
}

/// The approved requests of employees `lo` to `hi` that may reach into `from`..`to`, by
/// employee: one query for a page of employees instead of one each.
pub(crate) fn approved_between(
    lo: u64,
    hi: u64,
    from: Date,
    to: Date,
) -> Result<BTreeMap<u64, Vec<LeaveRequest>>, Error> {
    let reach_back = Date::from_epoch_days(from.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    let mut found: BTreeMap<u64, Vec<LeaveRequest>> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = REQUESTS
            .query()
            .ge("employee", lo)
            .le("employee", hi)
            .eq("state", State::Approved.name())
            .ge("from", reach_back)
            .le("from", to)
            .order_by("employee")
            .cursor(cursor.as_deref())
            .limit(1000)
            .fetch()?;
        for r in page.items {
            found.entry(r.value.employee).or_default().push(r.value);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // In the order one employee's are read alone (by first day, then as made), so the first
    // of a type (whose `paid` the answer shows) is the same either way.
    for list in found.values_mut() {
        list.sort_by_key(|r| r.from);
    }
    Ok(found)
}

/// Counts the working days of `spans` (the employee's records through the period) and the
/// approved leave on the period's days.
pub(crate) fn working_time(number: u64, spans: &[crate::Span], from: Date, to: Date) -> Result<WorkingTime, Error> {
    let reach_back = Date::from_epoch_days(from.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    let requests: Vec<LeaveRequest> = requests_starting(number, reach_back, to)?.into_iter().map(|(_, r)| r).collect();
    working_time_with(spans, &requests, from, to, &mut Lookups::default())
}

/// [`working_time`] from the employee's requests already read (any that may reach into the
/// period; others are ignored).
pub(crate) fn working_time_with(
    spans: &[crate::Span],
    requests: &[LeaveRequest],
    from: Date,
    to: Date,
    lookups: &mut Lookups,
) -> Result<WorkingTime, Error> {
    let mut t = WorkingTime {
        period_days: (to.days_from_epoch() - from.days_from_epoch() + 1) as u32,
        employed_days: 0,
        period_working_days: 0,
        working_days: 0,
        working_minutes: 0,
        leave: Vec::new(),
    };
    for (i, span) in spans.iter().enumerate() {
        let calendar = lookups.calendar(&span.record)?;
        // Days before the first record (before the hire) follow the first record's pattern.
        let start = if i == 0 { from } else { span.start };
        t.period_working_days += leave::working_days(&span.record.pattern, calendar, start, span.end);
        if let Some((lo, hi)) = span.employed() {
            let days = leave::working_days(&span.record.pattern, calendar, lo, hi);
            t.employed_days += (hi.days_from_epoch() - lo.days_from_epoch() + 1) as u32;
            t.working_days += days;
            t.working_minutes += u64::from(days) * u64::from(span.record.pattern.minutes_per_day);
        }
    }
    let mut by_type: BTreeMap<String, (Unit, bool, i64, u64, u64)> = BTreeMap::new();
    for r in requests {
        if r.state != State::Approved || r.to < from || r.from > to {
            continue;
        }
        let entry = by_type.entry(r.leave_type.clone()).or_insert((r.unit, r.paid, 0, 0, 0));
        let employed = |date: Date| spans.iter().any(|s| s.employed().is_some_and(|(lo, hi)| lo <= date && date <= hi));
        for d in r.days.iter().filter(|d| d.date >= from && d.date <= to && employed(d.date)) {
            let day_minutes = i64::from(d.day_minutes.max(1));
            let (thousandths, minutes) = match r.unit {
                Unit::Days => (d.ticks, d.ticks * day_minutes / 1000),
                Unit::Hours => (d.ticks * 1000 / day_minutes, d.ticks),
            };
            entry.2 += d.ticks;
            entry.3 += thousandths as u64;
            entry.4 += minutes as u64;
        }
    }
    for (kind, (unit, paid, ticks, thousandths, minutes)) in by_type {
        if ticks == 0 {
            continue;
        }
        let name = lookups.type_name(&kind).unwrap_or_else(|| kind.clone());
        t.leave.push(LeaveTaken {
            leave_type: kind,
            name,
            paid,
            unit,
            amount: unit.show(ticks).to_string(),
            day_thousandths: thousandths,
            minutes,
        });
    }
    Ok(t)
}

/// Whether `number` is away on approved leave for the whole of `on`.
pub(crate) fn away_on(number: u64, on: Date) -> Result<bool, Error> {
    let reach_back = Date::from_epoch_days(on.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    let mut minutes = 0;
    let mut day_minutes = u32::MAX;
    for (_, r) in requests_starting(number, reach_back, on)? {
        if r.state != State::Approved || r.to < on {
            continue;
        }
        for d in r.days.iter().filter(|d| d.date == on) {
            minutes += d.minutes();
            day_minutes = day_minutes.min(d.day_minutes);
        }
    }
    Ok(minutes >= day_minutes)
}

/// Pending requests of `employee` follow a change of manager: the new manager decides them
/// (and sees them in their queue).
pub(crate) fn repoint_pending(employee: u64, manager: Option<u64>) -> Result<(), Error> {
    let page = REQUESTS.query().eq("employee", employee).eq("state", State::Pending.name()).limit(1000).fetch()?;
    for r in page.items {
        if r.value.approver != manager {
            let mut request = r.value;
            request.approver = manager;
            REQUESTS.update(&r.key, &request, r.version)?;
        }
    }
    Ok(())
}

/// When someone leaves: the up-front allowance of their last year is prorated to the last
/// day (unless HR set it by hand), and leave after the last day is cancelled, or cut to end
/// on it, each with `hr.leave.cancelled`.
pub(crate) fn on_termination(employee: &Employee, last_day: Date, by: &str) -> Result<(), Error> {
    let year = last_day.year;
    for (kind_id, kind) in all_types()? {
        let Some(allowance) = kind.allowance else { continue };
        let key = allocation_key(employee.number, &kind_id, year);
        if let Some(stored) = ALLOCATIONS.get(&key)?
            && stored.value.set_by == BY_ALLOWANCE
            && stored.value.accrual == Accrual::UpFront
        {
            let prorated = leave::up_front(&kind, allowance, year, employee.hire_date, Some(last_day));
            if prorated < stored.value.amount {
                let mut allocation = stored.value;
                allocation.amount = prorated;
                ALLOCATIONS.update(&key, &allocation, stored.version)?;
            }
        }
    }
    let reach_back = Date::from_epoch_days(last_day.days_from_epoch() - leave::MAX_REQUEST_DAYS);
    let far = Date { year: 9999, month: 12, day: 31 };
    for (id, _) in requests_starting(employee.number, reach_back, far)? {
        let key = request_key(id);
        let Some(stored) = REQUESTS.get(&key)? else { continue };
        let mut request = stored.value;
        if !request.state.is_live() || request.to <= last_day {
            continue;
        }
        let was = request.state;
        request.days.retain(|d| d.date <= last_day);
        if request.days.is_empty() {
            request.state = State::Cancelled;
            request.decided_by = Some(by.to_owned());
            request.decided_at = Some(keel_sdk::services::now_ms());
        } else {
            request.to = last_day;
            request.to_half = None;
        }
        request.note = Some(format!("employment ended on {last_day}"));
        REQUESTS.update(&key, &request, stored.version)?;
        let shown = request_view(id, &request, type_name(&request.leave_type).as_deref());
        publish(CANCELLED, &json!({ "request": shown, "was": was, "reason": "employment-ended" }))?;
    }
    Ok(())
}
