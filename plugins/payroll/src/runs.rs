//! Pay runs: a month's payslips for everyone HR says was employed, worked out as chunked
//! background work (resumable after a crash, each employee calculated once per calculation),
//! then approved and paid. An approved or paid run never changes; a month is paid once.
//!
//! States: `calculating` → `calculated` (a draft, recalculable) → `approved` → `paid`; a
//! run being calculated, or a draft, may be `cancelled`.

use crate::calc::{Arrear, Line};
use crate::{
    COMPENSATION, INPUTS, PayHistory, Period, Rules, Worked, inputs_key, retro, rules, valid_code, work_out_again,
    work_out_with, worked_view,
};
use keel_hr::directory;
use keel_sdk::services::now_ms;
use keel_sdk::{Collection, Error, ErrorKind, Job, Request, Response, Sequence, TaskSpec, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const RUNS: Collection<Run> = Collection::new("runs");
const PAYSLIPS: Collection<Payslip> = Collection::new("payslips");
const PROBLEMS: Collection<Problem> = Collection::new("run_problems");
/// One per month paid, keyed by the month: a second payment of it cannot be written.
const PAID: Collection<Paid> = Collection::new("paid_periods");
const RUN_NUMBERS: Sequence = Sequence::new("run");

/// The schedule that starts the next run by itself (the `auto-calculate` setting).
pub const NEXT_RUN: &str = "next-pay-run";

/// Starts the run of the current period of the `auto-calculate` schedule once the period is
/// within `auto-calculate-days-before` days of its end (or over), unless it has one or is
/// paid.
pub fn next_run() -> Result<(), Error> {
    let schedule = match keel_sdk::services::config("auto-calculate").as_deref() {
        Some("monthly") => crate::Schedule::Monthly,
        Some("semi-monthly") => crate::Schedule::SemiMonthly,
        Some("bi-weekly") => crate::Schedule::BiWeekly,
        _ => return Ok(()),
    };
    let before: i64 =
        keel_sdk::services::config("auto-calculate-days-before").and_then(|d| d.parse().ok()).unwrap_or(3);
    let today = crate::today_days();
    let anchor = match schedule {
        crate::Schedule::BiWeekly => crate::biweekly_anchor()?,
        _ => 0,
    };
    let current = Period::containing(schedule, today, anchor);
    // The period before too, in case the firing near its end was missed.
    let previous = Period::containing(schedule, current.start() - 1, anchor);
    for period in [previous, current] {
        if today + before < period.end() {
            continue;
        }
        // A run payroll started, or cancelled, is theirs: it is not started again.
        if !RUNS.query().eq("period", period.label()).limit(1).fetch()?.items.is_empty() {
            continue;
        }
        match start_run(period, &format!("schedule {NEXT_RUN}"), None) {
            Ok(_) => {}
            Err(e) if matches!(e.code(), "run-exists" | "period-paid") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The job each chunk of a calculation runs as.
pub const CALCULATE: &str = "calculate-run";
/// Employees per chunk at most: one call to HR for all of them, four batched reads, a
/// payslip each written (a call writes at most 1,000 documents). The tenant's `run-chunk`
/// setting may choose fewer.
const MAX_CHUNK: u32 = 500;

fn chunk_size() -> u32 {
    keel_sdk::services::config("run-chunk").and_then(|n| n.parse().ok()).unwrap_or(MAX_CHUNK).clamp(1, MAX_CHUNK)
}
/// Attempts of a chunk before a passing failure (HR or the store unavailable) is recorded as
/// a problem rather than retried.
const ATTEMPTS_BEFORE_RECORDING: u32 = 3;

/// A failure that may pass (HR busy or off, the store busy), worth running the chunk again.
fn passing(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Calculating,
    Calculated,
    Approved,
    Paid,
    Cancelled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Calculating => "calculating",
            State::Calculated => "calculated",
            State::Approved => "approved",
            State::Paid => "paid",
            State::Cancelled => "cancelled",
        }
    }
}

/// Totals of one currency, in its minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    pub exponent: u32,
    pub employees: u64,
    pub gross: i64,
    pub deductions: i64,
    pub tax: i64,
    pub net: i64,
    pub employer: i64,
    /// Per line code (components, tax, one-offs by name, arrears): the register.
    #[serde(default)]
    pub lines: BTreeMap<String, LineSum>,
}

/// One line of the register: a code's total over the run's payslips.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSum {
    pub name: String,
    pub kind: Option<crate::calc::LineKind>,
    pub employees: u64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `YYYY-MM`.
    pub period: String,
    pub state: State,
    /// Each calculation is a new generation; payslips of older ones are not the run's.
    pub generation: u32,
    pub task: Option<String>,
    pub calculated: u64,
    pub failed: u64,
    /// Per currency.
    pub totals: BTreeMap<String, Sums>,
    /// The components and tax this calculation uses, taken when it started.
    #[serde(default)]
    pub rules: Rules,
    pub created_by: String,
    pub created_at: u64,
    /// When the current calculation started: pay recorded since may not be in it.
    #[serde(default)]
    pub started_at: u64,
    /// An off-cycle run pays these one-offs only, beside the period's regular run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_cycle: Option<OffCycle>,
    pub calculated_at: Option<u64>,
    pub approved_by: Option<String>,
    pub approved_at: Option<u64>,
    pub paid_by: Option<String>,
    pub paid_at: Option<u64>,
}

/// A stored payslip: one employee, one calculation of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payslip {
    pub run: u64,
    /// `{run}/{generation}`: the index a run's payslips are listed by.
    pub slot: String,
    pub employee: String,
    pub worked: Worked,
}

/// An employee whose payslip could not be worked out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub run: u64,
    pub slot: String,
    /// `*` when the run could not even list who to pay.
    pub employee: String,
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    pub run: u64,
}

fn run_key(id: u64) -> String {
    format!("{id:010}")
}

fn slot(id: u64, generation: u32) -> String {
    format!("{id:010}/{generation:04}")
}

fn money(minor: i64, exponent: u32) -> String {
    crate::money::Money { minor, exponent }.to_string()
}

fn run_view(id: u64, r: &Run) -> Value {
    let totals: BTreeMap<&String, Value> = r
        .totals
        .iter()
        .map(|(currency, s)| {
            let e = s.exponent;
            (
                currency,
                json!({ "employees": s.employees, "gross": money(s.gross, e), "deductions": money(s.deductions, e),
                        "tax": money(s.tax, e), "net": money(s.net, e), "employer": money(s.employer, e),
                        "employer_cost": money(s.gross + s.employer, e) }),
            )
        })
        .collect();
    json!({
        "id": id, "period": r.period, "state": r.state, "generation": r.generation, "task": r.task,
        "off_cycle": r.off_cycle.as_ref().map(|o| json!({ "name": o.name, "people": o.people.len() })),
        "calculated": r.calculated, "failed": r.failed, "totals": totals,
        "created_by": r.created_by, "created_at": r.created_at, "calculated_at": r.calculated_at,
        "approved_by": r.approved_by, "approved_at": r.approved_at, "paid_by": r.paid_by, "paid_at": r.paid_at,
    })
}

fn load(req: &Request) -> Result<(u64, Versioned<Run>), Error> {
    let text = req.param("id")?;
    let not_found = || Error::not_found("run-not-found", format!("no pay run `{text}`"));
    let id: u64 = text.parse().map_err(|_| not_found())?;
    Ok((id, RUNS.get(&run_key(id))?.ok_or_else(not_found)?))
}

fn start_calculation(id: u64, run: &Run, previous: u64) -> Result<String, Error> {
    let spec = TaskSpec::new(
        CALCULATE,
        &format!("Pay run {id} for {}", run.period),
        &json!({ "run": id, "generation": run.generation, "cursor": null }),
    )?;
    // How many people the run will go through is HR's to say as it goes; the last run's
    // count is the estimate the progress bar fills against.
    let known = run.off_cycle.as_ref().map(|o| o.people.len() as u64);
    match known.map_or_else(|| estimated_people(id, previous), |n| Ok(Some(n)))? {
        Some(total) => spec.total(total).start(),
        None => spec.start(),
    }
}

/// The people this run's earlier calculation (`previous`), or else the latest other run,
/// went through.
fn estimated_people(id: u64, previous: u64) -> Result<Option<u64>, Error> {
    if previous > 0 {
        return Ok(Some(previous));
    }
    let latest = RUNS.query().descending().limit(20).fetch()?;
    Ok(latest
        .items
        .iter()
        .filter(|r| r.key != run_key(id) && r.value.state != State::Calculating && r.value.off_cycle.is_none())
        .map(|r| r.value.calculated + r.value.failed)
        .find(|n| *n > 0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRun {
    period: String,
    #[serde(default)]
    off_cycle: Option<OffCycleInput>,
}

/// An off-cycle run: a bonus or a correction paid on its own, for the people named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffCycle {
    pub name: String,
    /// By employee (HR's id, and name when the run was made), in order: what each is paid.
    pub people: Vec<(String, String, Vec<crate::calc::OneOff>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffCycleInput {
    name: String,
    payments: Vec<PaymentInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentInput {
    employee: String,
    name: String,
    kind: crate::calc::Kind,
    amount: crate::money::Decimal,
    /// Earnings: taxed unless `false` (a reimbursement).
    #[serde(default)]
    taxable: Option<bool>,
}

const MAX_PAYMENTS: usize = 500;
/// One-off names the register keeps apart; the rest are added up as `one-off:(others)`.
const MAX_REGISTER_ONE_OFFS: usize = 100;

struct Payment {
    employee: String,
    one_off: crate::calc::OneOff,
}

fn off_cycle(input: OffCycleInput) -> Result<OffCycle, Error> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid("invalid-name", "a name is 1-200 characters").at_field("off_cycle.name"));
    }
    if input.payments.is_empty() || input.payments.len() > MAX_PAYMENTS {
        return Err(Error::invalid("invalid-payments", format!("an off-cycle run pays 1 to {MAX_PAYMENTS} amounts"))
            .at_field("off_cycle.payments"));
    }
    let mut people: BTreeMap<String, Vec<crate::calc::OneOff>> = BTreeMap::new();
    for (i, p) in input.payments.into_iter().enumerate() {
        let at = |f: &str| format!("off_cycle.payments[{i}].{f}");
        let p = Payment {
            one_off: crate::calc::OneOff {
                name: p.name,
                kind: p.kind,
                amount: p.amount,
                taxable: p.taxable.unwrap_or(true),
            },
            employee: p.employee,
        };
        if !valid_code(&p.employee) {
            return Err(Error::invalid("invalid-employee", "an employee id is 1-64 of a-z, 0-9, '_' and '-'")
                .at_field(at("employee")));
        }
        if p.one_off.amount.is_negative() || p.one_off.amount == crate::money::Decimal::ZERO {
            return Err(Error::invalid("invalid-amount", "an amount is more than 0").at_field(at("amount")));
        }
        if p.one_off.name.trim().is_empty() || p.one_off.name.chars().count() > 100 {
            return Err(Error::invalid("invalid-name", "a name is 1-100 characters").at_field(at("name")));
        }
        let list = people.entry(p.employee).or_default();
        if list.len() >= crate::MAX_ONE_OFFS {
            return Err(Error::invalid(
                "too-many-one-offs",
                format!("one person gets at most {} amounts", crate::MAX_ONE_OFFS),
            )
            .at_field(at("employee")));
        }
        list.push(p.one_off);
    }
    // HR's own ids (`007` is `7`) and names; someone HR does not know is refused now.
    let mut known: BTreeMap<String, (String, Vec<crate::calc::OneOff>)> = BTreeMap::new();
    for (given, one_offs) in people {
        let who = directory::get_employee(&given)?;
        if !valid_code(&who.id) {
            return Err(Error::unavailable(
                "invalid-directory-id",
                format!("HR's id `{}` cannot key pay records", who.id),
            ));
        }
        let entry = known.entry(who.id).or_insert((who.name, Vec::new()));
        entry.1.extend(one_offs);
        if entry.1.len() > crate::MAX_ONE_OFFS {
            return Err(Error::invalid(
                "too-many-one-offs",
                format!("one person gets at most {} amounts", crate::MAX_ONE_OFFS),
            )
            .at_field("off_cycle.payments"));
        }
    }
    Ok(OffCycle {
        name: name.to_owned(),
        people: known.into_iter().map(|(id, (name, one_offs))| (id, name, one_offs)).collect(),
    })
}

/// Starts a period's pay run: its calculation is queued as a task.
pub fn create(req: &Request) -> Result<Response, Error> {
    crate::migrated()?;
    let input: NewRun = req.json()?;
    let period = Period::parse(&input.period).ok_or_else(|| crate::invalid_period("period"))?;
    let anchor = match period.schedule() {
        crate::Schedule::BiWeekly => crate::biweekly_anchor()?,
        _ => 0,
    };
    if !period.aligned(anchor) {
        return Err(Error::invalid(
            "invalid-period",
            format!(
                "{} does not start a bi-weekly period: they start every 14 days from {} (the `biweekly-anchor` setting)",
                period.label(),
                crate::period::date_text(anchor)
            ),
        )
        .at_field("period"));
    }
    let extra = input.off_cycle.map(off_cycle).transpose()?;
    let (id, run) = start_run(period, &req.caller.user_id, extra)?;
    Response::json(202, &run_view(id, &run))
}

/// The `paid_periods` keys of a bi-weekly period's days.
fn paid_days(period: Period) -> Vec<String> {
    (period.start()..=period.end()).map(|d| format!("biweekly-day:{}", crate::period::date_text(d))).collect()
}

/// Starts the run of `period`, unless the period is paid or has a run already (an off-cycle
/// run goes beside those).
pub(crate) fn start_run(period: Period, by: &str, off_cycle: Option<OffCycle>) -> Result<(u64, Run), Error> {
    let label = period.label();
    if off_cycle.is_some() {
        return insert_run(label, by, off_cycle);
    }
    if let Some(paid) = PAID.get(&label)? {
        return Err(Error::conflict("period-paid", format!("{label} was paid by run {}", paid.value.run)));
    }
    if period.schedule() == crate::Schedule::BiWeekly
        && let Some(Some(paid)) = read_all(&PAID, &paid_days(period))?.into_iter().find(Option::is_some)
    {
        return Err(Error::conflict(
            "period-paid",
            format!("{label} overlaps bi-weekly days paid by run {} (was the anchor moved?)", paid.value.run),
        ));
    }
    let existing = RUNS.query().eq("period", &label).limit(1000).fetch()?;
    if let Some(other) =
        existing.items.iter().find(|r| r.value.state != State::Cancelled && r.value.off_cycle.is_none())
    {
        return Err(Error::conflict(
            "run-exists",
            format!(
                "run {} for {label} is {}; recalculate it instead",
                other.key.trim_start_matches('0'),
                other.value.state.name()
            ),
        ));
    }
    insert_run(label, by, None)
}

fn insert_run(label: String, by: &str, off_cycle: Option<OffCycle>) -> Result<(u64, Run), Error> {
    let id = RUN_NUMBERS.next()?;
    let mut run = Run {
        off_cycle,
        period: label,
        state: State::Calculating,
        generation: 1,
        task: None,
        calculated: 0,
        failed: 0,
        totals: BTreeMap::new(),
        rules: rules()?,
        created_by: by.to_owned(),
        created_at: now_ms(),
        started_at: now_ms(),
        calculated_at: None,
        approved_by: None,
        approved_at: None,
        paid_by: None,
        paid_at: None,
    };
    run.task = Some(start_calculation(id, &run, 0)?);
    RUNS.insert(&run_key(id), &run)?;
    Ok((id, run))
}

pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 200)?;
    let page = RUNS.query().cursor(paging.cursor.as_deref()).limit(paging.limit).descending().fetch()?;
    let items: Vec<Value> = page.items.iter().map(|r| run_view(r.key.parse().unwrap_or(0), &r.value)).collect();
    Response::page(&items, page.next.as_deref())
}

pub fn get(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    Response::json(200, &run_view(id, &run.value))
}

/// Starts a new calculation of a draft (after fixing compensation, inputs, rules or HR
/// records), or of a run whose calculation stopped (a chunk dead-lettered, the task
/// cancelled by an admin): its payslips supersede the earlier ones, whose chunks still queued
/// end without writing.
pub fn recalculate(req: &Request) -> Result<Response, Error> {
    crate::migrated()?;
    let (id, stored) = load(req)?;
    let mut run = stored.value;
    if run.state != State::Calculated && run.state != State::Calculating {
        return Err(Error::conflict(
            "not-a-draft",
            format!("run {id} is {}; only a draft or a calculation is run again", run.state.name()),
        ));
    }
    run.rules = rules()?;
    run.started_at = now_ms();
    let previous = run.calculated + run.failed;
    run.generation += 1;
    run.state = State::Calculating;
    run.calculated = 0;
    run.failed = 0;
    run.totals.clear();
    run.calculated_at = None;
    run.task = Some(start_calculation(id, &run, previous)?);
    RUNS.update(&run_key(id), &run, stored.version)?;
    Response::json(202, &run_view(id, &run))
}

/// Stops a calculation: chunks still queued see the run cancelled and end the task.
pub fn cancel(req: &Request) -> Result<Response, Error> {
    let (id, stored) = load(req)?;
    let mut run = stored.value;
    if run.state != State::Calculating && run.state != State::Calculated {
        return Err(Error::conflict("not-cancellable", format!("run {id} is {}", run.state.name())));
    }
    run.state = State::Cancelled;
    RUNS.update(&run_key(id), &run, stored.version)?;
    Response::json(200, &run_view(id, &run))
}

/// The run named in the path, which must be paid (its bank file is of money paid).
pub(crate) fn paid_run(req: &Request) -> Result<(u64, Run), Error> {
    let (id, stored) = load(req)?;
    if stored.value.state != State::Paid {
        return Err(Error::conflict(
            "not-paid",
            format!("run {id} is {}; a bank file is made for a paid run", stored.value.state.name()),
        ));
    }
    Ok((id, stored.value))
}

/// Every payslip of the run's current calculation.
pub(crate) fn payslips_of(id: u64, run: &Run) -> Result<Vec<Payslip>, Error> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            PAYSLIPS.query().eq("slot", slot(id, run.generation)).cursor(cursor.as_deref()).limit(500).fetch()?;
        out.extend(page.items.into_iter().map(|p| p.value));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
}

pub fn approve(req: &Request) -> Result<Response, Error> {
    let (id, stored) = load(req)?;
    let mut run = stored.value;
    if run.state != State::Calculated {
        return Err(Error::conflict(
            "not-a-draft",
            format!("run {id} is {}; only a calculated run is approved", run.state.name()),
        ));
    }
    if run.failed > 0 {
        return Err(Error::conflict(
            "run-has-problems",
            format!(
                "{} employee(s) could not be calculated (see /runs/{id}/problems); fix and recalculate",
                run.failed
            ),
        ));
    }
    if run.calculated == 0 {
        return Err(Error::conflict("empty-run", format!("run {id} pays nobody")));
    }
    // A run settled after this calculation started may have paid what this one pays again
    // (arrears, above all): the draft is worked out again first.
    for other in settled_runs(None, Some(id))? {
        // Only regular runs pay arrears; an off-cycle run's one-offs are its own.
        if run.off_cycle.is_none()
            && other.run.off_cycle.is_none()
            && other.run.approved_at.is_some_and(|at| at > run.started_at)
        {
            return Err(Error::conflict(
                "stale-calculation",
                format!("run {} was approved after this calculation started; recalculate run {id} first", other.id),
            ));
        }
    }
    run.state = State::Approved;
    run.approved_by = Some(req.caller.user_id.clone());
    run.approved_at = Some(now_ms());
    RUNS.update(&run_key(id), &run, stored.version)?;
    Response::json(200, &run_view(id, &run))
}

/// Marks an approved run paid: its month is then paid, once.
pub fn pay(req: &Request) -> Result<Response, Error> {
    let (id, stored) = load(req)?;
    let mut run = stored.value;
    if run.state != State::Approved {
        return Err(Error::conflict(
            "not-approved",
            format!("run {id} is {}; a run is approved before it is paid", run.state.name()),
        ));
    }
    // A period's regular pay is paid once; off-cycle runs go beside it.
    if run.off_cycle.is_none() {
        if let Some(paid) = PAID.get(&run.period)? {
            return Err(Error::conflict("period-paid", format!("{} was paid by run {}", run.period, paid.value.run)));
        }
        PAID.insert(&run.period, &Paid { run: id })?;
        // Bi-weekly periods are also paid day by day: a moved anchor cannot pay a day twice.
        if let Some(period) = Period::parse(&run.period).filter(|p| p.schedule() == crate::Schedule::BiWeekly) {
            let days = paid_days(period);
            if let Some(Some(paid)) = read_all(&PAID, &days)?.into_iter().find(Option::is_some) {
                return Err(Error::conflict(
                    "period-paid",
                    format!("{} overlaps bi-weekly days paid by run {}", run.period, paid.value.run),
                ));
            }
            for day in days {
                PAID.insert(&day, &Paid { run: id })?;
            }
        }
    }
    run.state = State::Paid;
    run.paid_by = Some(req.caller.user_id.clone());
    run.paid_at = Some(now_ms());
    RUNS.update(&run_key(id), &run, stored.version)?;
    Response::json(200, &run_view(id, &run))
}

pub fn payslips(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    let paging = req.paging(50, 200)?;
    let page = PAYSLIPS
        .query()
        .eq("slot", slot(id, run.value.generation))
        .cursor(paging.cursor.as_deref())
        .limit(paging.limit)
        .fetch()?;
    let items: Vec<Value> = page.items.iter().map(|p| worked_view(&p.value.worked)).collect();
    Response::page(&items, page.next.as_deref())
}

pub fn payslip(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    let employee = req.param("employee")?;
    let found = PAYSLIPS
        .get(&format!("{}/{employee}", slot(id, run.value.generation)))?
        .ok_or_else(|| Error::not_found("payslip-not-found", format!("run {id} has no payslip for `{employee}`")))?;
    Response::json(200, &payslip_view(id, &run.value, &found.value.worked)?)
}

/// `GET /runs/{id}/payslips/{employee}/pdf`.
pub fn payslip_pdf(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    let employee = req.param("employee")?;
    let found = PAYSLIPS
        .get(&format!("{}/{employee}", slot(id, run.value.generation)))?
        .ok_or_else(|| Error::not_found("payslip-not-found", format!("run {id} has no payslip for `{employee}`")))?;
    pdf_response(id, &run.value, &found.value.worked)
}

/// `GET /me/payslips/{run}/pdf`: the caller's own, once the run is approved.
pub fn my_payslip_pdf(req: &Request) -> Result<Response, Error> {
    let employee = me(req)?;
    let text = req.param("id")?;
    let not_found = || Error::not_found("payslip-not-found", format!("you have no payslip in pay run `{text}`"));
    let id: u64 = text.parse().map_err(|_| not_found())?;
    let run = RUNS.get(&run_key(id))?.filter(|r| published(r.value.state)).ok_or_else(not_found)?;
    let found = PAYSLIPS.get(&format!("{}/{employee}", slot(id, run.value.generation)))?.ok_or_else(not_found)?;
    pdf_response(id, &run.value, &found.value.worked)
}

fn pdf_response(id: u64, run: &Run, w: &Worked) -> Result<Response, Error> {
    let month = Period::parse(&w.period).ok_or_else(|| Error::internal("bad-period", w.period.clone()))?;
    let ytd = year_to_date(&w.employee, month, Some((id, w)))?;
    let e = w.exponent;
    let t = &w.slip.totals;
    let with_currency = |minor: i64| format!("{} {}", w.currency, money(minor, e));
    let mut footer = Vec::new();
    if let Some(years) = ytd.as_object() {
        for (currency, y) in years {
            footer.push(format!(
                "Year to date {} through {} ({} payslips), {currency}: gross {}, deductions {}, tax {}, net {}",
                y["year"],
                y["through"].as_str().unwrap_or_default(),
                y["payslips"],
                y["gross"].as_str().unwrap_or_default(),
                y["deductions"].as_str().unwrap_or_default(),
                y["tax"].as_str().unwrap_or_default(),
                y["net"].as_str().unwrap_or_default()
            ));
        }
    }
    if w.final_pay {
        footer.push("Final pay: the employee's last day falls in this period.".into());
    }
    let unpaid = crate::money::Decimal::from_minor(w.unpaid_day_thousandths as i64, 3);
    let sheet = crate::pdf::Sheet {
        title: format!("Payslip {}", w.period),
        heading: vec![
            format!("{} (employee {})", w.name, w.employee),
            format!("Period {} to {}, pay run {id} ({})", month.first(), month.last(), run.state.name()),
            format!("Working days {} of {}, unpaid leave {unpaid} days", w.working_days, w.period_working_days),
        ],
        lines: w.slip.lines.iter().map(|l| (l.kind, l.name.as_str(), l.basis.as_str(), money(l.amount, e))).collect(),
        totals: vec![
            ("Gross pay", with_currency(t.gross)),
            ("Deductions", with_currency(t.deductions)),
            ("Income tax", with_currency(t.tax)),
            ("Net pay", with_currency(t.net)),
            ("Cost to the employer", with_currency(t.gross + t.employer)),
        ],
        footer,
    };
    let file = format!("payslip-{}-{}.pdf", w.period, w.employee);
    Ok(Response::raw(200, "application/pdf", crate::pdf::payslip(&sheet))
        .with_header("content-disposition", &format!("attachment; filename=\"{file}\"")))
}

/// A stored payslip with its run and the employee's year to date through it.
fn payslip_view(id: u64, run: &Run, worked: &Worked) -> Result<Value, Error> {
    let mut shown = worked_view(worked);
    shown["run"] = json!(id);
    shown["state"] = json!(run.state);
    let month = Period::parse(&worked.period).ok_or_else(|| Error::internal("bad-period", worked.period.clone()))?;
    shown["year_to_date"] = year_to_date(&worked.employee, month, Some((id, worked)))?;
    Ok(shown)
}

/// `employee`'s totals for `month`'s calendar year through it, per currency: their payslips
/// of settled runs, plus `this` (the payslip shown, settled or not) instead of its run's.
fn year_to_date(employee: &str, month: Period, this: Option<(u64, &Worked)>) -> Result<Value, Error> {
    let mut slips = Vec::new();
    let mut cursor = None;
    loop {
        let page = PAYSLIPS.query().eq("employee", employee).cursor(cursor.as_deref()).limit(500).fetch()?;
        slips.extend(page.items.into_iter().map(|p| p.value));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut ids: Vec<u64> = slips.iter().map(|p| p.run).collect();
    ids.sort_unstable();
    ids.dedup();
    let keys: Vec<String> = ids.iter().map(|id| run_key(*id)).collect();
    let runs: BTreeMap<u64, Run> =
        ids.iter().zip(read_all(&RUNS, &keys)?).filter_map(|(id, r)| Some((*id, r?.value))).collect();
    let counted = slips.iter().filter(|p| {
        let Some(run) = runs.get(&p.run) else { return false };
        let m = Period::parse(&p.worked.period);
        published(run.state)
            && p.slot == slot(p.run, run.generation)
            && Some(p.run) != this.map(|(id, _)| id)
            && m.is_some_and(|m| m.year() == month.year() && m.end() <= month.end())
    });
    let mut totals: BTreeMap<String, (u32, [i64; 6], u32)> = BTreeMap::new();
    for w in counted.map(|p| &p.worked).chain(this.map(|(_, w)| w)) {
        let t = &w.slip.totals;
        let entry = totals.entry(w.currency.clone()).or_insert((w.exponent, [0; 6], 0));
        for (sum, v) in entry.1.iter_mut().zip([t.gross, t.taxable, t.deductions, t.tax, t.net, t.employer]) {
            *sum = sum.checked_add(v).ok_or_else(|| Error::internal("totals-overflow", "year to date too large"))?;
        }
        entry.2 += 1;
    }
    let shown: BTreeMap<String, Value> = totals
        .into_iter()
        .map(|(currency, (e, [gross, taxable, deductions, tax, net, employer], payslips))| {
            (
                currency,
                json!({ "year": month.year(), "through": month.last(), "payslips": payslips,
                        "gross": money(gross, e), "taxable": money(taxable, e), "deductions": money(deductions, e),
                        "tax": money(tax, e), "net": money(net, e), "employer": money(employer, e) }),
            )
        })
        .collect();
    Ok(json!(shown))
}

/// `GET /employees/{id}/year-to-date?year=2026`: an employee's settled pay of a year.
pub fn employee_year_to_date(req: &Request) -> Result<Response, Error> {
    let given = req.param("id")?;
    if !valid_code(given) {
        return Err(Error::not_found("employee-not-found", format!("no employee `{given}`")));
    }
    // HR's own id: `007` is `7`.
    let employee = &directory::get_employee(given)?.id;
    let year: i32 = match req.query("year") {
        Some(y) => y
            .parse()
            .ok()
            .filter(|y| (1900..=9999).contains(y))
            .ok_or_else(|| Error::invalid("invalid-year", "`year` is a year, such as 2026").at_field("year"))?,
        None => crate::period::civil_from_days(crate::today_days()).0 as i32,
    };
    let december = Period::parse(&format!("{year:04}-12")).expect("a valid month");
    Response::json(200, &json!({ "employee": employee, "year_to_date": year_to_date(employee, december, None)? }))
}

/// `GET /runs/{id}/register`: the run's totals per currency and per line code.
pub fn register(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    let run = run.value;
    let currencies: BTreeMap<&String, Value> = run
        .totals
        .iter()
        .map(|(currency, s)| {
            let e = s.exponent;
            let mut lines: Vec<(&String, &LineSum)> = s.lines.iter().collect();
            lines.sort_by_key(|(code, l)| (l.kind.map(kind_order), (*code).clone()));
            let lines: Vec<Value> = lines
                .into_iter()
                .map(|(code, l)| json!({ "code": code, "name": l.name, "kind": l.kind, "employees": l.employees, "amount": money(l.amount, e) }))
                .collect();
            (
                currency,
                json!({ "employees": s.employees, "gross": money(s.gross, e), "deductions": money(s.deductions, e),
                        "tax": money(s.tax, e), "net": money(s.net, e), "employer": money(s.employer, e),
                        "employer_cost": money(s.gross + s.employer, e), "lines": lines }),
            )
        })
        .collect();
    Response::json(
        200,
        &json!({ "run": id, "period": run.period, "state": run.state, "generation": run.generation, "currencies": currencies }),
    )
}

fn kind_order(kind: crate::calc::LineKind) -> u8 {
    use crate::calc::LineKind;
    match kind {
        LineKind::Earning => 0,
        LineKind::Deduction => 1,
        LineKind::Tax => 2,
        LineKind::Employer => 3,
    }
}

/// HR's id of the calling user's employee record.
fn me(req: &Request) -> Result<String, Error> {
    let found = directory::employee_for_user(&req.caller.user_id)?;
    found.map(|e| e.id).ok_or_else(|| {
        Error::not_found("no-employee-record", "your user is not linked to an employee record; ask HR to link it")
    })
}

/// Whether employees may see the payslips of a run in `state`: only once it is approved.
fn published(state: State) -> bool {
    matches!(state, State::Approved | State::Paid)
}

/// `GET /me/payslips`: the caller's payslips of approved and paid runs, newest run first.
/// A draft's payslips are not shown, nor older calculations of a run.
pub fn my_payslips(req: &Request) -> Result<Response, Error> {
    let employee = me(req)?;
    let mut mine = Vec::new();
    let mut cursor = None;
    loop {
        let page = PAYSLIPS.query().eq("employee", &employee).cursor(cursor.as_deref()).limit(500).fetch()?;
        mine.extend(page.items.into_iter().map(|p| p.value));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut runs: Vec<u64> = mine.iter().map(|p| p.run).collect();
    runs.sort_unstable();
    runs.dedup();
    let mut items = Vec::new();
    for batch in runs.chunks(500) {
        let keys: Vec<String> = batch.iter().map(|id| run_key(*id)).collect();
        for (id, run) in batch.iter().zip(read_all(&RUNS, &keys)?) {
            let Some(run) = run.filter(|r| published(r.value.state)) else { continue };
            let current = slot(*id, run.value.generation);
            for p in mine.iter().filter(|p| p.run == *id && p.slot == current) {
                let t = &p.worked.slip.totals;
                let e = p.worked.exponent;
                items.push(json!({ "run": id, "period": p.worked.period, "state": run.value.state,
                                   "currency": p.worked.currency, "gross": money(t.gross, e), "net": money(t.net, e) }));
            }
        }
    }
    items.reverse();
    Response::json(200, &json!({ "items": items }))
}

/// `GET /me/payslips/{run}`: the caller's payslip of an approved or paid run. A draft's is
/// not found, as if it did not exist.
pub fn my_payslip(req: &Request) -> Result<Response, Error> {
    let employee = me(req)?;
    let text = req.param("id")?;
    let not_found = || Error::not_found("payslip-not-found", format!("you have no payslip in pay run `{text}`"));
    let id: u64 = text.parse().map_err(|_| not_found())?;
    let run = RUNS.get(&run_key(id))?.filter(|r| published(r.value.state)).ok_or_else(not_found)?;
    let found = PAYSLIPS.get(&format!("{}/{employee}", slot(id, run.value.generation)))?.ok_or_else(not_found)?;
    Response::json(200, &payslip_view(id, &run.value, &found.value.worked)?)
}

pub fn problems(req: &Request) -> Result<Response, Error> {
    let (id, run) = load(req)?;
    let paging = req.paging(50, 200)?;
    let page = PROBLEMS
        .query()
        .eq("slot", slot(id, run.value.generation))
        .cursor(paging.cursor.as_deref())
        .limit(paging.limit)
        .fetch()?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|p| json!({ "employee": p.value.employee, "code": p.value.code, "detail": p.value.detail }))
        .collect();
    Response::page(&items, page.next.as_deref())
}

/// How far back a change of pay is owed: settled periods that started in the last 366 days.
const RETRO_DAYS: i64 = 366;

/// A settled (approved or paid) run: immutable, its payslips what was paid.
pub(crate) struct Settled {
    id: u64,
    month: Period,
    run: Run,
}

/// The settled runs from a year before `period` on (later ones too: arrears paid in them
/// count as paid), or all with no period, but `except`.
pub(crate) fn settled_runs(period: Option<Period>, except: Option<u64>) -> Result<Vec<Settled>, Error> {
    let from = period.map_or(i64::MIN, |p| p.start() - RETRO_DAYS);
    let mut out = Vec::new();
    for state in [State::Approved, State::Paid] {
        let mut cursor = None;
        loop {
            let page = RUNS.query().eq("state", state.name()).cursor(cursor.as_deref()).limit(500).fetch()?;
            for r in page.items {
                let (Ok(id), Some(m)) = (r.key.parse::<u64>(), Period::parse(&r.value.period)) else { continue };
                if m.start() >= from && Some(id) != except {
                    out.push(Settled { id, month: m, run: r.value });
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out.sort_by_key(|s| (s.month, s.id));
    // A run paid between the two queries is listed by both.
    out.dedup_by_key(|s| s.id);
    Ok(out)
}

/// Settled periods before `month` that a change of `history` recorded since their
/// calculation reaches back into: the ones to work out again.
fn reaches_back<'a>(history: &PayHistory, month: Period, settled: &'a [Settled]) -> Vec<&'a Settled> {
    settled
        .iter()
        .filter(|s| {
            s.month.end() < month.start()
                && s.run.off_cycle.is_none()
                && history
                    .entries
                    .iter()
                    .any(|e| e.recorded_at > 0 && e.recorded_at >= s.run.started_at && e.effective <= s.month.last())
        })
        .collect()
}

/// What retro pay found for one person: the arrears lines, and the settled months it could
/// not work out again (for payroll to settle by hand; they never block a run).
#[derive(Debug, Default)]
pub(crate) struct Owed {
    pub arrears: Vec<Arrear>,
    pub notes: Vec<String>,
}

/// The arrears owed in `month` from the employee's settled payslips (by run).
fn arrears_from(history: &PayHistory, month: Period, settled: &[Settled], slips: &BTreeMap<u64, Worked>) -> Owed {
    let mut out = Owed::default();
    for s in reaches_back(history, month, settled) {
        // Not paid in that run (not employed then, or a problem): nothing to compare with.
        let Some(paid) = slips.get(&s.id) else { continue };
        let period = s.month.label();
        // Worked out by a version that did not keep its inputs: it cannot be done again.
        if paid.period_days == 0 {
            out.notes.push(format!(
                "{period} (run {}) was worked out before payroll kept what it needs to redo it: check it by hand",
                s.id
            ));
            continue;
        }
        let due = match work_out_again(history, s.month, &s.run.rules, paid) {
            Ok(due) => due,
            Err(e) => {
                out.notes.push(format!("{period} (run {}) cannot be worked out again: {}", s.id, e.detail()));
                continue;
            }
        };
        let prefix = retro::code(&period, "");
        let since: Vec<&Line> = slips
            .iter()
            .filter(|(id, _)| **id != s.id)
            .flat_map(|(_, w)| w.slip.lines.iter())
            // `arrears-2026-04-base`, not `arrears-2026-04-H1-base` (component codes have no `-`).
            .filter(|l| l.code.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('-')))
            .collect();
        let pre_tax = |code: &str| s.run.rules.components.get(code).is_some_and(|c| c.pre_tax);
        out.arrears.extend(retro::arrears(&period, paid.exponent, &due, &paid.slip, &since, pre_tax));
    }
    out
}

/// The arrears `employee` is owed in `month` (for a preview: reads their settled payslips).
pub(crate) fn arrears_owed(
    employee: &str,
    history: &PayHistory,
    month: Period,
    settled: &[Settled],
) -> Result<Owed, Error> {
    if reaches_back(history, month, settled).is_empty() {
        return Ok(Owed::default());
    }
    let keys: Vec<String> = settled.iter().map(|s| format!("{}/{employee}", slot(s.id, s.run.generation))).collect();
    let slips =
        settled.iter().zip(read_all(&PAYSLIPS, &keys)?).filter_map(|(s, p)| Some((s.id, p?.value.worked))).collect();
    Ok(arrears_from(history, month, settled, &slips))
}

#[derive(Serialize, Deserialize)]
struct Chunk {
    run: u64,
    generation: u32,
    cursor: Option<String>,
}

/// Keys per batched read: 100 documents of a kind fit one read's budget unless they are
/// very large (then they are read one at a time).
const READ_BATCH: usize = 100;
/// Settled payslips one chunk reads for retro pay at most: within the 10,000 documents a
/// call that writes may have read, and what its memory holds with payslips of many lines.
const RETRO_READS: usize = 1_000;
/// Payslip bytes one chunk writes at most before it hands the rest of its page to the next
/// (a commit takes 8 MiB by default).
const WRITE_BUDGET: usize = 4 << 20;

fn read_all<T: Serialize + serde::de::DeserializeOwned>(
    collection: &Collection<T>,
    keys: &[String],
) -> Result<Vec<Option<Versioned<T>>>, Error> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(READ_BATCH) {
        match collection.get_many(batch) {
            Ok(found) => out.extend(found),
            // Larger than one read holds together: one at a time.
            Err(e) if e.kind() == ErrorKind::Invalid => {
                for key in batch {
                    out.push(collection.get(key)?);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A stable key for a directory id that cannot key a record itself.
fn odd_id_key(slot: &str, id: &str) -> String {
    // FNV-1a over the whole id, with its length: distinct ids get distinct keys.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{slot}/!{hash:016x}-{}", id.len())
}

/// Adds a payslip to its run's totals and register.
fn count_in(run: &mut Run, worked: &Worked) -> Result<(), Error> {
    let add = |a: i64, b: i64| {
        a.checked_add(b).ok_or_else(|| Error::internal("run-totals-overflow", "the run's totals are too large"))
    };
    let sums = run.totals.entry(worked.currency.clone()).or_default();
    let t = &worked.slip.totals;
    sums.exponent = worked.exponent;
    sums.employees += 1;
    sums.gross = add(sums.gross, t.gross)?;
    sums.deductions = add(sums.deductions, t.deductions)?;
    sums.tax = add(sums.tax, t.tax)?;
    sums.net = add(sums.net, t.net)?;
    sums.employer = add(sums.employer, t.employer)?;
    for line in &worked.slip.lines {
        // One-offs are numbered per payslip: the register groups them by name.
        let mut code = match line.code.starts_with("one-off-") {
            true => format!("one-off:{}", line.name),
            false => line.code.clone(),
        };
        // The run document stays small however many one-off names there are.
        let named = sums.lines.keys().filter(|k| k.starts_with("one-off:")).count();
        if code.starts_with("one-off:") && !sums.lines.contains_key(&code) && named >= MAX_REGISTER_ONE_OFFS {
            code = "one-off:(others)".into();
        }
        let entry = sums.lines.entry(code).or_default();
        if entry.kind.is_none() {
            entry.name = line.name.clone();
            entry.kind = Some(line.kind);
        }
        entry.employees += 1;
        entry.amount = add(entry.amount, line.amount)?;
    }
    run.calculated += 1;
    Ok(())
}

/// A chunk of an off-cycle run: the next people it names (from `cursor`, an index), each
/// paid their one-offs, taxed on top of their regular pay (`calc::off_cycle`). HR is not
/// asked: nobody's working time matters, and names were taken when the run was made.
fn off_cycle_chunk(job: &Job, chunk: &Chunk, version: u64, mut run: Run, period: Period) -> Result<(), Error> {
    let key = run_key(chunk.run);
    let here = slot(chunk.run, chunk.generation);
    let off = run.off_cycle.clone().expect("an off-cycle run");
    let start: usize = chunk.cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0).min(off.people.len());
    let end = (start + chunk_size() as usize).min(off.people.len());
    let people = &off.people[start..end];
    let keys: Vec<String> = people.iter().map(|(id, _, _)| format!("{here}/{id}")).collect();
    let ids: Vec<String> = people.iter().map(|(id, _, _)| id.clone()).collect();
    let (slips, problems, pay) =
        (read_all(&PAYSLIPS, &keys)?, read_all(&PROBLEMS, &keys)?, read_all(&COMPENSATION, &ids)?);
    for (i, (employee, name, one_offs)) in people.iter().enumerate() {
        if slips[i].is_some() || problems[i].is_some() {
            continue;
        }
        let worked = (|| {
            let history = pay[i].as_ref().map(|h| &h.value);
            let c =
                history.and_then(|h| h.on(&period.last())).ok_or_else(|| crate::no_compensation(employee, period))?;
            let exponent = crate::money::currency_exponent(&c.currency).unwrap_or(2);
            // A year of regular taxable pay to add the one-offs to: a full period of their pay
            // and components (pre-tax deductions taken off) times the periods a year. Hourly
            // pay has no fixed hours, so only their fixed components count.
            let full = crate::calc::calculate(&crate::calc::Input {
                pay: c.pay,
                exponent,
                periods_per_year: c.schedule.periods_per_year(),
                components: &run.rules.components,
                assigned: &c.components,
                time: crate::calc::Time {
                    period_days: 30,
                    employed_days: 30,
                    period_working_days: 20,
                    working_days: 20,
                    unpaid_day_thousandths: 0,
                },
                hours: Some(crate::money::Decimal::ZERO),
                one_offs: &[],
                arrears: &[],
                tax: &run.rules.tax,
            })
            .map_err(|e| Error::conflict(e.code, e.detail))?;
            let regular = crate::money::Decimal::from_minor(full.totals.taxable, exponent)
                .mul(crate::money::Decimal::from_int(i64::from(c.schedule.periods_per_year())))
                .map_err(|_| Error::conflict("calculation-failed", "a year of pay is too large"))?;
            let slip = crate::calc::off_cycle(one_offs, regular, &run.rules.tax, exponent)
                .map_err(|e| Error::conflict(e.code, e.detail))?;
            Ok(Worked {
                employee: employee.clone(),
                name: name.clone(),
                period: period.label(),
                currency: c.currency.clone(),
                exponent,
                compensation_effective: c.effective.clone(),
                working_days: 0,
                period_working_days: 0,
                unpaid_day_thousandths: 0,
                final_pay: false,
                period_days: 0,
                employed_days: 0,
                hours: None,
                one_offs: one_offs.clone(),
                arrears: Vec::new(),
                notes: vec![format!("off-cycle: {}", off.name)],
                slip,
            })
        })();
        match worked {
            Ok(worked) => {
                count_in(&mut run, &worked)?;
                PAYSLIPS.insert(
                    &keys[i],
                    &Payslip { run: chunk.run, slot: here.clone(), employee: employee.clone(), worked },
                )?;
            }
            Err(e) if passing(&e) && job.attempt < ATTEMPTS_BEFORE_RECORDING => return Err(e),
            Err(e) => {
                run.failed += 1;
                PROBLEMS.insert(
                    &keys[i],
                    &Problem {
                        run: chunk.run,
                        slot: here.clone(),
                        employee: employee.clone(),
                        code: e.code().into(),
                        detail: e.detail().into(),
                    },
                )?;
            }
        }
    }
    let done = people.len() as u64;
    if end < off.people.len() {
        RUNS.update(&key, &run, version)?;
        return keel_sdk::task::advance(
            done,
            Some(&Chunk { cursor: Some(end.to_string()), run: chunk.run, generation: chunk.generation }),
        );
    }
    run.state = State::Calculated;
    run.calculated_at = Some(now_ms());
    RUNS.update(&key, &run, version)?;
    keel_sdk::task::advance::<()>(done, None)
}

/// One chunk of a calculation: the next page of people HR says were employed in the month,
/// each worked out and stored (or their problem recorded), the run's totals and the task's
/// progress moved on, all in one unit of work. A chunk that fails is run again from the same
/// cursor; a chunk of an older calculation, or of a cancelled run, ends the task.
pub fn run_chunk(job: &Job) -> Result<(), Error> {
    let chunk: Chunk = job.payload()?;
    let key = run_key(chunk.run);
    let Some(stored) = RUNS.get(&key)? else { return keel_sdk::task::advance::<()>(0, None) };
    let mut run = stored.value;
    if run.generation != chunk.generation || run.state != State::Calculating {
        return keel_sdk::task::advance::<()>(0, None);
    }
    let month = Period::parse(&run.period).ok_or_else(|| Error::internal("bad-period", run.period.clone()))?;
    let here = slot(chunk.run, chunk.generation);
    if run.off_cycle.is_some() {
        return off_cycle_chunk(job, &chunk, stored.version, run, month);
    }
    let size = chunk_size();
    let page = match directory::working_times(&month.first(), &month.last(), chunk.cursor.as_deref(), size)
        .map_err(Error::from)
        .and_then(|page| {
            if page.items.len() > size as usize {
                return Err(Error::unavailable(
                    "directory-page-too-large",
                    format!("the directory answered {} people when asked for {size}", page.items.len()),
                ));
            }
            Ok(page)
        }) {
        Ok(page) => page,
        // Without HR nobody can be paid: tried again a few times, then the draft says so
        // (with what earlier chunks calculated) and cannot be approved.
        Err(e) => {
            if job.attempt < ATTEMPTS_BEFORE_RECORDING {
                return Err(e);
            }
            PROBLEMS.upsert(
                &format!("{here}/*"),
                &Problem {
                    run: chunk.run,
                    slot: here.clone(),
                    employee: "*".into(),
                    code: e.code().into(),
                    detail: e.detail().into(),
                },
            )?;
            run.failed += 1;
            run.state = State::Calculated;
            run.calculated_at = Some(now_ms());
            RUNS.update(&key, &run, stored.version)?;
            return keel_sdk::task::advance::<()>(0, None);
        }
    };
    // Once per calculation, even if a directory listed someone twice (on this page or an
    // earlier one); an id that cannot key a payslip is a problem of its own.
    // A chunk whose payslips filled its share of a commit leaves the rest of its page to
    // the next chunk, which asks for the same page: who is stored already is skipped then.
    let items = page.items;
    // People worked out (or found a problem) by this chunk: the task's progress.
    let mut handled = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut people = Vec::new();
    for item in &items {
        if !seen.insert(item.employee.id.clone()) {
            continue;
        }
        if !valid_code(&item.employee.id) {
            let shown: String = item.employee.id.chars().take(64).collect();
            let key = odd_id_key(&here, &item.employee.id);
            if PROBLEMS.get(&key)?.is_some() {
                continue;
            }
            run.failed += 1;
            handled += 1;
            PROBLEMS.insert(
                &key,
                &Problem {
                    run: chunk.run,
                    slot: here.clone(),
                    employee: shown.clone(),
                    code: "invalid-directory-id".into(),
                    detail: format!("the directory's id `{shown}` cannot key pay records"),
                },
            )?;
            continue;
        }
        people.push(item);
    }
    let keys: Vec<String> = people.iter().map(|p| format!("{here}/{}", p.employee.id)).collect();
    let ids: Vec<String> = people.iter().map(|p| p.employee.id.clone()).collect();
    let slips = read_all(&PAYSLIPS, &keys)?;
    let problems = read_all(&PROBLEMS, &keys)?;
    let pay = read_all(&COMPENSATION, &ids)?;
    let inputs = read_all(&INPUTS, &ids.iter().map(|id| inputs_key(id, month)).collect::<Vec<_>>())?;
    let none = Default::default();
    // Retro pay: the settled payslips of those whose pay changed back into settled periods.
    // Each such person costs a read per settled run; a chunk takes as many of them as keep
    // its reads within what a call may check again at commit.
    let settled = settled_runs(Some(month), Some(chunk.run))?;
    let mut full = false;
    let mut retro_keys: Vec<String> = Vec::new();
    let mut retro_of: BTreeMap<usize, std::ops::Range<usize>> = BTreeMap::new();
    let mut take = people.len();
    for (i, _) in people.iter().enumerate() {
        if slips[i].is_some() || problems[i].is_some() {
            continue;
        }
        let history = pay[i].as_ref().map_or(&none, |h| &h.value);
        if reaches_back(history, month, &settled).is_empty() {
            continue;
        }
        if retro_keys.len() + settled.len() > RETRO_READS && !retro_keys.is_empty() {
            take = i;
            full = true;
            break;
        }
        let start = retro_keys.len();
        retro_keys.extend(settled.iter().map(|s| format!("{}/{}", slot(s.id, s.run.generation), ids[i])));
        retro_of.insert(i, start..retro_keys.len());
    }
    let retro_slips = read_all(&PAYSLIPS, &retro_keys)?;
    let mut written = 0usize;
    for (i, item) in people.iter().enumerate().take(take) {
        if slips[i].is_some() || problems[i].is_some() {
            continue;
        }
        if written >= WRITE_BUDGET {
            full = true;
            break;
        }
        handled += 1;
        let (employee, key) = (&item.employee, &keys[i]);
        let history = pay[i].as_ref().map_or(&none, |h| &h.value);
        let input = inputs[i].as_ref().map(|v| v.value.clone()).unwrap_or_default();
        // HR may fail for one person only: that is their problem, not the page's.
        let worked = item.time.clone().map_err(Error::from).and_then(|time| {
            let owed = match retro_of.get(&i) {
                None => Owed::default(),
                Some(range) => {
                    let mine: BTreeMap<u64, Worked> = settled
                        .iter()
                        .zip(&retro_slips[range.clone()])
                        .filter_map(|(s, p)| Some((s.id, p.as_ref()?.value.worked.clone())))
                        .collect();
                    arrears_from(history, month, &settled, &mine)
                }
            };
            let between =
                |from: &str, to: &str| directory::get_working_time(&employee.id, from, to).map_err(Error::from);
            work_out_with(&employee.id, &employee.name, month, &run.rules, history, &time, &input, &owed, &between)
        });
        match worked {
            Ok(worked) => {
                count_in(&mut run, &worked)?;
                let slip = Payslip { run: chunk.run, slot: here.clone(), employee: employee.id.clone(), worked };
                written += key.len() + serde_json::to_string(&slip)?.len();
                PAYSLIPS.insert(key, &slip)?;
            }
            // Paid on another schedule: another run's.
            Err(e) if e.code() == crate::OTHER_SCHEDULE => {}
            // A passing failure runs the chunk again (from its start: nothing is kept).
            Err(e) if passing(&e) && job.attempt < ATTEMPTS_BEFORE_RECORDING => return Err(e),
            Err(e) => {
                run.failed += 1;
                PROBLEMS.insert(
                    key,
                    &Problem {
                        run: chunk.run,
                        slot: here.clone(),
                        employee: employee.id.clone(),
                        code: e.code().into(),
                        detail: e.detail().into(),
                    },
                )?;
            }
        }
    }
    if full {
        RUNS.update(&key, &run, stored.version)?;
        return keel_sdk::task::advance(handled, Some(&chunk));
    }
    // Listed twice on this page: counted once, as the directory's count of people.
    let done = handled + (items.len() - seen.len()) as u64;
    match page.next {
        Some(next) => {
            RUNS.update(&key, &run, stored.version)?;
            keel_sdk::task::advance(done, Some(&Chunk { cursor: Some(next), ..chunk }))
        }
        None => {
            run.state = State::Calculated;
            run.calculated_at = Some(now_ms());
            RUNS.update(&key, &run, stored.version)?;
            keel_sdk::task::advance::<()>(done, None)
        }
    }
}
