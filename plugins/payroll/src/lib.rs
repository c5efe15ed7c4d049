//! The payroll department: salary components with exact formulas, income tax from brackets,
//! effective-dated compensation per employee, and payslips worked out from HR's working time
//! and leave (`keel:hr/directory@0.2.2`). Written against the public SDK and the `keel-hr`
//! contract only.
//!
//! One employee's payslip for a month can be previewed; a pay run works out everyone's as a
//! chunked task (`runs.rs`), then is approved and paid.

mod bank;
pub mod calc;
mod enrolment;
pub mod formula;
pub mod money;
mod pdf;
pub mod period;
pub mod retro;
mod runs;
pub mod tax;

use calc::{Amount, Assigned, Component, Kind, OneOff, Pay};
use keel_hr::directory;
use keel_sdk::{Collection, Error, Job, Plugin, Request, Response, Router, export_plugin};
use money::{Decimal, Money, currency_exponent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tax::TaxTable;

const COMPONENTS: Collection<Component> = Collection::new("components");
const SETTINGS: Collection<TaxTable> = Collection::new("settings");
/// One document per employee holding their whole pay history, so a page of employees'
/// pay is one read.
const COMPENSATION: Collection<PayHistory> = Collection::new("compensation");
/// The same collection as payroll 0.1 wrote it: one document per entry, `{employee}/{date}`,
/// with `employee` and `effective` indexed (a history has neither field at its top).
const COMPENSATION_V1: Collection<Compensation> = Collection::new("compensation");
/// Entries of 0.1 folded into histories per call of `POST /compensation/migrate` (each is a
/// delete, plus a write per employee: within a call's 1,000 writes).
const MIGRATE_BATCH: u32 = 400;
const INPUTS: Collection<PeriodInputs> = Collection::new("inputs");

const TAX: &str = "tax";
/// Someone paid on another schedule than the period's: not on this run.
pub(crate) const OTHER_SCHEDULE: &str = "other-schedule";
const MAX_COMPONENTS: u32 = 100;
pub(crate) const MAX_ONE_OFFS: usize = 50;
/// Entries of one employee's pay history.
const MAX_PAY_CHANGES: usize = 500;

struct Payroll;

impl Plugin for Payroll {
    fn router() -> Router {
        Router::new()
            .put("/components/{code}", put_component)
            .get("/components", list_components)
            .put("/tax", put_tax)
            .get("/tax", get_tax)
            .put("/employees/{id}/compensation", put_compensation)
            .post("/compensation/migrate", migrate_compensation)
            .get("/employees/{id}/compensation", get_compensation)
            .put("/employees/{id}/inputs/{period}", put_inputs)
            .get("/employees/{id}/payslip-preview", preview)
            .post("/runs", runs::create)
            .get("/runs", runs::list)
            .get("/runs/{id}", runs::get)
            .post("/runs/{id}/recalculate", runs::recalculate)
            .post("/runs/{id}/cancel", runs::cancel)
            .post("/runs/{id}/approve", runs::approve)
            .post("/runs/{id}/pay", runs::pay)
            .get("/runs/{id}/payslips", runs::payslips)
            .get("/runs/{id}/payslips/{employee}", runs::payslip)
            .get("/runs/{id}/problems", runs::problems)
            .get("/runs/{id}/register", runs::register)
            .get("/runs/{id}/bank-file", bank::bank_file)
            .put("/bank", bank::put_debtor)
            .get("/bank", bank::get_debtor)
            .put("/employees/{id}/bank", bank::put_account)
            .get("/employees/{id}/bank", bank::get_account)
            .get("/runs/{id}/payslips/{employee}/pdf", runs::payslip_pdf)
            .get("/me/payslips/{id}/pdf", runs::my_payslip_pdf)
            .get("/employees/{id}/year-to-date", runs::employee_year_to_date)
            .put("/structure", enrolment::put_structure)
            .get("/structure", enrolment::get_structure)
            .get("/enrolments", enrolment::list)
            .get("/me/payslips", runs::my_payslips)
            .get("/me/payslips/{id}", runs::my_payslip)
    }

    fn on_event(event: &keel_sdk::Event) -> Result<(), Error> {
        enrolment::on_event(event)
    }

    fn run_job(job: &Job) -> Result<(), Error> {
        match job.name.as_str() {
            runs::CALCULATE => runs::run_chunk(job),
            runs::NEXT_RUN if job.scheduled => runs::next_run(),
            other => Err(Error::invalid("unknown-job", format!("payroll runs no job `{other}`"))),
        }
    }
}

export_plugin!(Payroll);

/// How often someone is paid: the periods a run covers (see `period.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Monthly,
    /// The 1st to the 15th, and the 16th to the month's end.
    SemiMonthly,
    /// Every 14 days from the tenant's anchor date.
    BiWeekly,
}

impl Schedule {
    fn periods_per_year(self) -> u32 {
        match self {
            Schedule::Monthly => 12,
            Schedule::SemiMonthly => 24,
            Schedule::BiWeekly => 26,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Schedule::Monthly => "monthly",
            Schedule::SemiMonthly => "semi-monthly",
            Schedule::BiWeekly => "bi-weekly",
        }
    }
}

/// An employee's pay from a date on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    pub employee: String,
    /// `YYYY-MM-DD`: applies from this day.
    pub effective: String,
    pub pay: Pay,
    pub currency: String,
    pub schedule: Schedule,
    pub components: Vec<Assigned>,
    pub set_by: String,
    /// When it was recorded (ms): a change recorded after a period was settled, effective
    /// in it, is owed as arrears (0: recorded before this was kept).
    #[serde(default)]
    pub recorded_at: u64,
}

/// An employee's compensation entries, in order of the day each applies from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayHistory {
    pub entries: Vec<Compensation>,
    /// The last day of employment HR reported (`hr.employee.terminated`): the period holding
    /// it is the final pay. A rehire clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_day: Option<String>,
}

impl PayHistory {
    /// The entry in force on `date` (`YYYY-MM-DD`): the latest effective on or before it.
    pub fn on(&self, date: &str) -> Option<&Compensation> {
        self.entries.iter().rev().find(|c| c.effective.as_str() <= date)
    }
}

/// What an employee's period needs beyond their compensation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodInputs {
    /// Hours worked (hourly pay).
    pub hours: Option<Decimal>,
    #[serde(default)]
    pub one_offs: Vec<OneOff>,
}

pub(crate) use period::Period;

/// Today, as days since 1970-01-01 by the host's clock.
pub(crate) fn today_days() -> i64 {
    (keel_sdk::services::now_ms() / 86_400_000) as i64
}

/// The first day of a bi-weekly period (the `biweekly-anchor` setting): every 14th day
/// from it starts one.
pub(crate) fn biweekly_anchor() -> Result<i64, Error> {
    let text = keel_sdk::services::config("biweekly-anchor").unwrap_or_else(|| "2024-01-01".into());
    period::parse_date(&text).ok_or_else(|| {
        Error::conflict("invalid-setting", format!("the `biweekly-anchor` setting `{text}` is not a date, YYYY-MM-DD"))
    })
}

/// Today, `YYYY-MM-DD`, by the host's clock.
pub(crate) fn today() -> String {
    period::date_text(today_days())
}

/// `YYYY-MM-DD` with a day the month has.
fn valid_date(text: &str) -> bool {
    period::parse_date(text).is_some()
}

/// Codes of components and ids of employees: 1-64 of a-z, 0-9, `_` and `-`.
fn valid_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn all_components() -> Result<BTreeMap<String, Component>, Error> {
    let page = COMPONENTS.query().limit(MAX_COMPONENTS).fetch()?;
    Ok(page.items.into_iter().map(|c| (c.key, c.value)).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentInput {
    name: String,
    kind: Kind,
    #[serde(default)]
    pre_tax: bool,
    /// A fixed amount, or...
    amount: Option<Decimal>,
    /// ...a formula.
    formula: Option<String>,
    #[serde(default)]
    prorated: bool,
    #[serde(default)]
    unpaid_leave: bool,
}

fn component_view(code: &str, c: &Component) -> Value {
    let (amount, formula) = match &c.amount {
        Amount::Fixed(n) => (Some(n.to_string()), None),
        Amount::Formula(f) => (None, Some(f.clone())),
    };
    json!({ "code": code, "name": c.name, "kind": c.kind, "pre_tax": c.pre_tax, "amount": amount,
            "formula": formula, "prorated": c.prorated, "unpaid_leave": c.unpaid_leave })
}

/// Defines or changes a component. The whole set is checked with it: a formula that does
/// not parse, reads an unknown name, or closes a loop of components is refused, pointing at
/// the position.
fn put_component(req: &Request) -> Result<Response, Error> {
    let code = req.param("code")?.to_owned();
    if !valid_code(&code) || code.contains('-') {
        return Err(Error::invalid("invalid-code", "component codes are 1-64 of a-z, 0-9 and '_'").at_field("code"));
    }
    let input: ComponentInput = req.json()?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid("invalid-name", "a name is 1-200 characters").at_field("name"));
    }
    let amount = match (input.amount, input.formula) {
        (Some(n), None) if !n.is_negative() => Amount::Fixed(n),
        (Some(_), None) => return Err(Error::invalid("negative-amount", "an amount is 0 or more").at_field("amount")),
        (None, Some(f)) => Amount::Formula(f),
        _ => {
            return Err(Error::invalid("amount-or-formula", "give either `amount` or `formula`").at_field("amount"));
        }
    };
    if input.pre_tax && input.kind != Kind::Deduction {
        return Err(
            Error::invalid("pre-tax-deductions-only", "only a deduction is taken before tax").at_field("pre_tax")
        );
    }
    let component = Component {
        name: name.to_owned(),
        kind: input.kind,
        pre_tax: input.pre_tax,
        amount,
        prorated: input.prorated,
        unpaid_leave: input.unpaid_leave,
    };
    let mut set = all_components()?;
    let existing = COMPONENTS.get(&code)?;
    if existing.is_none() && set.len() as u32 >= MAX_COMPONENTS {
        return Err(Error::conflict(
            "too-many-components",
            format!("a tenant has at most {MAX_COMPONENTS} components"),
        ));
    }
    set.insert(code.clone(), component.clone());
    if let Err(e) = calc::check(&set) {
        let field = if e.code == "reserved-name" { "code" } else { "formula" };
        let mut problem = Error::invalid(e.code, format!("`{}`: {}", e.component, e.detail)).at_field(field);
        if e.component != code {
            problem =
                Error::invalid(e.code, format!("with this change, `{}`: {}", e.component, e.detail)).at_field(field);
        }
        return Err(problem);
    }
    match existing {
        Some(old) => COMPONENTS.update(&code, &component, old.version)?,
        None => COMPONENTS.insert(&code, &component)?,
    };
    Response::json(200, &component_view(&code, &component))
}

fn list_components(_req: &Request) -> Result<Response, Error> {
    let items: Vec<Value> = all_components()?.iter().map(|(code, c)| component_view(code, c)).collect();
    Response::json(200, &json!({ "items": items }))
}

fn put_tax(req: &Request) -> Result<Response, Error> {
    let table: TaxTable = req.json()?;
    table.check().map_err(|e| Error::invalid("invalid-tax-table", e).at_field("brackets"))?;
    SETTINGS.upsert(TAX, &table)?;
    Response::json(200, &table)
}

fn get_tax(_req: &Request) -> Result<Response, Error> {
    Response::json(200, &SETTINGS.get(TAX)?.map(|t| t.value).unwrap_or_default())
}

/// The employee named in the path, as HR knows them: HR's own id (`7` for `007`), so one
/// person never has two histories. Needs HR to answer.
fn employee_param(req: &Request) -> Result<(String, directory::Employee), Error> {
    let id = req.param("id")?;
    if !valid_code(id) {
        return Err(Error::not_found("employee-not-found", format!("no employee `{id}`")));
    }
    let employee = directory::get_employee(id)?;
    if !valid_code(&employee.id) {
        return Err(Error::unavailable(
            "invalid-directory-id",
            format!("HR's id `{}` cannot key pay records", employee.id),
        ));
    }
    Ok((employee.id.clone(), employee))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompensationInput {
    effective: String,
    pay: Pay,
    currency: String,
    #[serde(default = "monthly")]
    schedule: Schedule,
    #[serde(default)]
    components: Vec<Assigned>,
}

fn monthly() -> Schedule {
    Schedule::Monthly
}

fn compensation_view(c: &Compensation) -> Value {
    json!({ "employee": c.employee, "effective": c.effective, "pay": c.pay, "currency": c.currency,
            "schedule": c.schedule, "components": c.components, "set_by": c.set_by })
}

/// Records an employee's pay from a date on (a raise is a new entry; history stays).
fn put_compensation(req: &Request) -> Result<Response, Error> {
    migrated()?;
    let (employee, _) = employee_param(req)?;
    let input: CompensationInput = req.json()?;
    if !valid_date(&input.effective) {
        return Err(Error::invalid("invalid-date", "`effective` is YYYY-MM-DD").at_field("effective"));
    }
    check_pay(&input.currency, Some(input.pay), &input.components)?;
    let compensation = Compensation {
        employee: employee.clone(),
        effective: input.effective.clone(),
        pay: input.pay,
        currency: input.currency,
        schedule: input.schedule,
        components: input.components,
        set_by: req.caller.user_id.clone(),
        recorded_at: keel_sdk::services::now_ms(),
    };
    record_compensation(compensation.clone())?;
    Response::json(200, &compensation_view(&compensation))
}

/// Checks a currency, a pay and components assigned to someone.
fn check_pay(currency: &str, pay: Option<Pay>, assigned: &[Assigned]) -> Result<(), Error> {
    if currency_exponent(currency).is_none() {
        return Err(
            Error::invalid("invalid-currency", "`currency` is an ISO 4217 code such as EUR").at_field("currency")
        );
    }
    if let Some(Pay::Salary(amount) | Pay::Hourly(amount)) = pay
        && (amount.is_negative() || amount == Decimal::ZERO)
    {
        return Err(Error::invalid("invalid-pay", "pay is more than 0").at_field("pay"));
    }
    let components = all_components()?;
    for (i, a) in assigned.iter().enumerate() {
        if !components.contains_key(&a.code) {
            return Err(Error::invalid("unknown-component", format!("no component `{}`", a.code))
                .at_field(format!("components[{i}].code")));
        }
        if assigned[..i].iter().any(|b| b.code == a.code) {
            return Err(Error::invalid("duplicate-component", format!("`{}` is listed twice", a.code))
                .at_field(format!("components[{i}].code")));
        }
        if a.amount.is_some_and(Decimal::is_negative) {
            return Err(
                Error::invalid("negative-amount", "an amount is 0 or more").at_field(format!("components[{i}].amount"))
            );
        }
    }
    Ok(())
}

/// Adds an entry to its employee's pay history.
fn record_compensation(compensation: Compensation) -> Result<(), Error> {
    let employee = compensation.employee.clone();
    let stored = COMPENSATION.get(&employee)?;
    let mut history = stored.as_ref().map(|s| s.value.clone()).unwrap_or_default();
    // History is kept: a second entry for the same day is refused, not overwritten.
    if history.entries.iter().any(|c| c.effective == compensation.effective) {
        return Err(Error::conflict(
            "compensation-exists",
            format!(
                "employee `{employee}` already has pay recorded from {}; record a change from another day",
                compensation.effective
            ),
        )
        .at_field("effective"));
    }
    if history.entries.len() >= MAX_PAY_CHANGES {
        return Err(Error::conflict(
            "too-many-pay-changes",
            format!("an employee's pay history holds at most {MAX_PAY_CHANGES} entries"),
        ));
    }
    let at = history.entries.partition_point(|c| c.effective < compensation.effective);
    history.entries.insert(at, compensation.clone());
    match stored {
        Some(s) => COMPENSATION.update(&employee, &history, s.version)?,
        None => COMPENSATION.insert(&employee, &history)?,
    };
    Ok(())
}

/// Refuses while pay recorded by payroll 0.1 is not folded into the histories yet: read
/// without it, those people would look unpaid.
pub(crate) fn migrated() -> Result<(), Error> {
    let left = COMPENSATION_V1.query().order_by("employee").limit(1).fetch()?;
    if !left.items.is_empty() {
        return Err(Error::conflict(
            "compensation-not-migrated",
            "pay recorded by payroll 0.1 is not in the new histories yet: POST /compensation/migrate until it says `done`",
        ));
    }
    Ok(())
}

/// Folds the entries payroll 0.1 wrote for one employee into their history (one query).
pub(crate) fn fold_legacy(employee: &str) -> Result<(), Error> {
    let page = COMPENSATION_V1.query().eq("employee", employee).limit(MAX_PAY_CHANGES as u32).fetch()?;
    if page.items.is_empty() {
        return Ok(());
    }
    let stored = COMPENSATION.get(employee)?;
    let mut history = stored.as_ref().map(|s| s.value.clone()).unwrap_or_default();
    for entry in page.items {
        if !history.entries.iter().any(|c| c.effective == entry.value.effective) {
            let at = history.entries.partition_point(|c| c.effective < entry.value.effective);
            history.entries.insert(at, entry.value);
        }
        COMPENSATION_V1.delete(&entry.key, None)?;
    }
    match stored {
        Some(s) => COMPENSATION.update(employee, &history, s.version)?,
        None => COMPENSATION.insert(employee, &history)?,
    };
    Ok(())
}

/// `POST /compensation/migrate`: folds up to 400 entries written by payroll 0.1 into their
/// employees' histories, deleting them; answers how many and whether any are left. Safe to
/// repeat: an entry already in a history is not added twice.
fn migrate_compensation(_req: &Request) -> Result<Response, Error> {
    let page = COMPENSATION_V1.query().order_by("employee").limit(MIGRATE_BATCH).fetch()?;
    let mut by_employee: BTreeMap<String, Vec<(String, Compensation)>> = BTreeMap::new();
    for entry in page.items {
        by_employee.entry(entry.value.employee.clone()).or_default().push((entry.key, entry.value));
    }
    let mut moved = 0;
    for (employee, entries) in by_employee {
        let stored = COMPENSATION.get(&employee)?;
        let mut history = stored.as_ref().map(|s| s.value.clone()).unwrap_or_default();
        for (key, entry) in entries {
            if !history.entries.iter().any(|c| c.effective == entry.effective) {
                let at = history.entries.partition_point(|c| c.effective < entry.effective);
                history.entries.insert(at, entry);
            }
            COMPENSATION_V1.delete(&key, None)?;
            moved += 1;
        }
        match stored {
            Some(s) => COMPENSATION.update(&employee, &history, s.version)?,
            None => COMPENSATION.insert(&employee, &history)?,
        };
    }
    let done = page.next.is_none();
    Response::json(200, &json!({ "migrated": moved, "done": done }))
}

/// The compensation in force on `date` (the latest effective on or before it).
fn compensation_on(employee: &str, date: &str) -> Result<Option<Compensation>, Error> {
    Ok(COMPENSATION.get(employee)?.and_then(|h| h.value.on(date).cloned()))
}

fn get_compensation(req: &Request) -> Result<Response, Error> {
    migrated()?;
    let (employee, _) = employee_param(req)?;
    let on = match req.query("as_of") {
        Some(d) if valid_date(d) => d.to_owned(),
        Some(_) => return Err(Error::invalid("invalid-date", "`as_of` is YYYY-MM-DD").at_field("as_of")),
        None => "9999-12-31".to_owned(),
    };
    let c = compensation_on(&employee, &on)?.ok_or_else(|| {
        Error::not_found("no-compensation", format!("employee `{employee}` has no pay recorded by {on}"))
    })?;
    Response::json(200, &compensation_view(&c))
}

fn period_param(req: &Request, name: &'static str) -> Result<Period, Error> {
    let text = req.param(name).ok().or_else(|| req.query(name)).unwrap_or_default();
    Period::parse(text).ok_or_else(|| invalid_period(name))
}

pub(crate) fn invalid_period(name: &str) -> Error {
    Error::invalid(
        "invalid-period",
        format!("`{name}` is a pay period: a month (2026-04), a half month (2026-04-H1, 2026-04-H2) or a bi-weekly period's first day (2026-04-06)"),
    )
    .at_field(name)
}

fn put_inputs(req: &Request) -> Result<Response, Error> {
    let (employee, _) = employee_param(req)?;
    let period = period_param(req, "period")?;
    if period.schedule() == Schedule::BiWeekly && !period.aligned(biweekly_anchor()?) {
        return Err(invalid_period("period"));
    }
    let inputs: PeriodInputs = req.json()?;
    if inputs.one_offs.len() > MAX_ONE_OFFS {
        return Err(Error::invalid("too-many-one-offs", format!("a period has at most {MAX_ONE_OFFS} one-offs"))
            .at_field("one_offs"));
    }
    if inputs.hours.is_some_and(|h| h.is_negative()) {
        return Err(Error::invalid("invalid-hours", "hours are 0 or more").at_field("hours"));
    }
    for (i, o) in inputs.one_offs.iter().enumerate() {
        if o.amount.is_negative() {
            return Err(
                Error::invalid("negative-amount", "an amount is 0 or more").at_field(format!("one_offs[{i}].amount"))
            );
        }
        if o.name.trim().is_empty() || o.name.chars().count() > 200 {
            return Err(
                Error::invalid("invalid-name", "a name is 1-200 characters").at_field(format!("one_offs[{i}].name"))
            );
        }
    }
    INPUTS.upsert(&inputs_key(&employee, period), &inputs)?;
    Response::json(200, &inputs)
}

fn money(minor: i64, exponent: u32) -> String {
    Money { minor, exponent }.to_string()
}

/// The tenant's components and tax, loaded once for many payslips (and kept with a run, so
/// every chunk of one calculation uses the same rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rules {
    components: BTreeMap<String, Component>,
    tax: TaxTable,
}

pub(crate) fn rules() -> Result<Rules, Error> {
    Ok(Rules { components: all_components()?, tax: SETTINGS.get(TAX)?.map(|t| t.value).unwrap_or_default() })
}

/// A payslip worked out, with what it was worked out from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worked {
    pub employee: String,
    pub name: String,
    /// `YYYY-MM`.
    pub period: String,
    pub currency: String,
    pub exponent: u32,
    pub compensation_effective: String,
    pub working_days: u32,
    pub period_working_days: u32,
    pub unpaid_day_thousandths: u64,
    /// The month holds the employee's last day: their final pay.
    #[serde(default)]
    pub final_pay: bool,
    /// What else the payslip was worked out from, so the period can be worked out again
    /// with other pay (retro pay): calendar days, days employed, hours, one-offs, arrears.
    #[serde(default)]
    pub period_days: u32,
    #[serde(default)]
    pub employed_days: u32,
    #[serde(default)]
    pub hours: Option<Decimal>,
    #[serde(default)]
    pub one_offs: Vec<OneOff>,
    #[serde(default)]
    pub arrears: Vec<calc::Arrear>,
    /// What payroll should look at by hand (a settled month retro pay could not redo).
    #[serde(default)]
    pub notes: Vec<String>,
    pub slip: calc::Payslip,
}

/// The first and last day of `period` on which `history` pays on the period's schedule (the
/// span from the first such day to the last), or none.
fn schedule_days(history: &PayHistory, period: Period) -> Option<(i64, i64)> {
    let mut starts = vec![period.start()];
    starts.extend(
        history
            .entries
            .iter()
            .filter_map(|e| period::parse_date(&e.effective))
            .filter(|d| *d > period.start() && *d <= period.end()),
    );
    starts.sort_unstable();
    starts.dedup();
    let mut span: Option<(i64, i64)> = None;
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(period.end(), |next| next - 1);
        let on = history.on(&period::date_text(*start)).is_some_and(|c| c.schedule == period.schedule());
        if on {
            span = Some(span.map_or((*start, end), |(from, _)| (from, end)));
        }
    }
    span
}

/// Settled period `month` worked out again with `history` as it stands, from what its
/// payslip `paid` was worked out from and with its run's `rules`.
pub(crate) fn work_out_again(
    history: &PayHistory,
    period: Period,
    rules: &Rules,
    paid: &Worked,
) -> Result<calc::Payslip, Error> {
    let c = history.on(&period.last()).ok_or_else(|| no_compensation(&paid.employee, period))?;
    if c.schedule != period.schedule() {
        return Err(Error::conflict(
            "retro-schedule-changed",
            format!(
                "employee `{}` is now paid {}, and {} is a {} period: settle the difference by hand",
                paid.employee,
                c.schedule.name(),
                period.label(),
                period.schedule().name()
            ),
        ));
    }
    if c.currency != paid.currency {
        return Err(Error::conflict(
            "retro-currency-changed",
            format!(
                "employee `{}` was paid {} for {} and is now paid {}: settle the difference by hand",
                paid.employee,
                paid.currency,
                period.label(),
                c.currency
            ),
        ));
    }
    calc::calculate(&calc::Input {
        pay: c.pay,
        exponent: paid.exponent,
        periods_per_year: c.schedule.periods_per_year(),
        components: &rules.components,
        assigned: &c.components,
        time: calc::Time {
            period_days: paid.period_days,
            employed_days: paid.employed_days,
            period_working_days: paid.period_working_days,
            working_days: paid.working_days,
            unpaid_day_thousandths: paid.unpaid_day_thousandths,
        },
        hours: paid.hours,
        one_offs: &paid.one_offs,
        arrears: &paid.arrears,
        tax: &rules.tax,
    })
    .map_err(|e| Error::conflict(e.code, e.detail))
}

/// Works out `employee`'s payslip for `month`: their compensation in force at its end, HR's
/// working time and unpaid leave, the month's inputs. HR's errors pass through as they are
/// (`department-unavailable` when it cannot answer).
pub(crate) fn work_out(employee: &str, name: &str, period: Period, rules: &Rules) -> Result<Worked, Error> {
    let history = COMPENSATION.get(employee)?.map(|h| h.value).unwrap_or_default();
    // Without pay recorded, HR need not be asked.
    history.on(&period.last()).ok_or_else(|| no_compensation(employee, period))?;
    let time = directory::get_working_time(employee, &period.first(), &period.last())?;
    let inputs = INPUTS.get(&inputs_key(employee, period))?.map(|i| i.value).unwrap_or_default();
    let settled = runs::settled_runs(Some(period), None)?;
    let owed = runs::arrears_owed(employee, &history, period, &settled)?;
    let between = |from: &str, to: &str| directory::get_working_time(employee, from, to).map_err(Error::from);
    work_out_with(employee, name, period, rules, &history, &time, &inputs, &owed, &between)
}

pub(crate) fn no_compensation(employee: &str, period: Period) -> Error {
    Error::conflict("no-compensation", format!("employee `{employee}` has no pay recorded by {}", period.last()))
}

pub(crate) fn inputs_key(employee: &str, period: Period) -> String {
    format!("{employee}/{}", period.label())
}

/// [`work_out`] from what was read already: the employee's pay history, HR's working time
/// for the month and the month's inputs.
pub(crate) fn work_out_with(
    employee: &str,
    name: &str,
    period: Period,
    rules: &Rules,
    history: &PayHistory,
    time: &directory::WorkingTime,
    inputs: &PeriodInputs,
    owed: &runs::Owed,
    time_between: &dyn Fn(&str, &str) -> Result<directory::WorkingTime, Error>,
) -> Result<Worked, Error> {
    let arrears = owed.arrears.as_slice();
    let (first, last) = (period.first(), period.last());
    // Only the days the person is paid on this period's schedule: someone who moves from
    // monthly to bi-weekly on the 16th is paid the 1st to the 15th by the month's run and
    // the rest by the bi-weekly runs, each day once.
    let Some((from, to)) = schedule_days(history, period) else {
        let now = history.on(&last).ok_or_else(|| no_compensation(employee, period))?;
        return Err(Error::conflict(
            OTHER_SCHEDULE,
            format!(
                "employee `{employee}` is paid {}; {} is a {} period",
                now.schedule.name(),
                period.label(),
                period.schedule().name()
            ),
        ));
    };
    let (from, to) = (period::date_text(from), period::date_text(to));
    let compensation = history.on(&to).ok_or_else(|| no_compensation(employee, period))?.clone();
    let mut notes = owed.notes.clone();
    let part;
    let days: &directory::WorkingTime = if from == first && to == last {
        time
    } else {
        notes.push(format!(
            "paid {} from {from} to {to} only: the schedule changes within this period",
            compensation.schedule.name()
        ));
        part = time_between(&from, &to)?;
        &part
    };
    if days.employed_days == 0 {
        return Err(Error::conflict(
            "not-employed-in-period",
            format!("employee `{employee}` was not employed from {from} to {to}"),
        ));
    }
    let unpaid: u64 = days.leave.iter().filter(|l| !l.paid).map(|l| l.day_thousandths).sum();
    let exponent = currency_exponent(&compensation.currency).unwrap_or(2);
    let slip = calc::calculate(&calc::Input {
        pay: compensation.pay,
        exponent,
        periods_per_year: compensation.schedule.periods_per_year(),
        components: &rules.components,
        assigned: &compensation.components,
        time: calc::Time {
            period_days: time.period_days,
            employed_days: days.employed_days,
            period_working_days: time.period_working_days,
            working_days: days.working_days,
            unpaid_day_thousandths: unpaid,
        },
        hours: inputs.hours,
        one_offs: &inputs.one_offs,
        arrears,
        tax: &rules.tax,
    })
    .map_err(|e| Error::conflict(e.code, e.detail))?;
    Ok(Worked {
        employee: employee.to_owned(),
        name: name.to_owned(),
        period: period.label(),
        currency: compensation.currency,
        exponent,
        compensation_effective: compensation.effective,
        working_days: days.working_days,
        period_working_days: time.period_working_days,
        unpaid_day_thousandths: unpaid,
        final_pay: history.final_day.as_deref().is_some_and(|d| first.as_str() <= d && d <= last.as_str()),
        period_days: time.period_days,
        employed_days: days.employed_days,
        hours: inputs.hours,
        one_offs: inputs.one_offs.clone(),
        arrears: arrears.to_vec(),
        notes,
        slip,
    })
}

/// A payslip as the API shows it: amounts as text in the currency's minor unit.
pub(crate) fn worked_view(w: &Worked) -> Value {
    let e = w.exponent;
    let lines: Vec<Value> = w
        .slip
        .lines
        .iter()
        .map(|l| json!({ "code": l.code, "name": l.name, "kind": l.kind, "amount": money(l.amount, e), "basis": l.basis }))
        .collect();
    let t = &w.slip.totals;
    json!({
        "employee": w.employee, "name": w.name, "period": w.period,
        "currency": w.currency, "compensation_effective": w.compensation_effective,
        "working_days": w.working_days, "period_working_days": w.period_working_days,
        "unpaid_days": Decimal::from_minor(w.unpaid_day_thousandths as i64, 3),
        "final_pay": w.final_pay,
        "notes": w.notes,
        "lines": lines,
        "gross": money(t.gross, e), "taxable": money(t.taxable, e),
        "deductions": money(t.deductions, e), "tax": money(t.tax, e),
        "net": money(t.net, e), "employer_cost": money(t.gross + t.employer, e),
    })
}

/// What employee `id`'s payslip for `period` (a month) comes to now: the calculation a pay
/// run stores, shown without storing anything.
fn preview(req: &Request) -> Result<Response, Error> {
    migrated()?;
    let (employee, who) = employee_param(req)?;
    let period = period_param(req, "period")?;
    if period.schedule() == Schedule::BiWeekly && !period.aligned(biweekly_anchor()?) {
        return Err(invalid_period("period"));
    }
    let worked = work_out(&employee, &who.name, period, &rules()?)?;
    let mut shown = worked_view(&worked);
    shown["from"] = json!(period.first());
    shown["to"] = json!(period.last());
    Response::json(200, &shown)
}
