//! Pay runs: a month's payslips for everyone HR says was employed, worked out as chunked
//! background work (resumable after a crash, each employee calculated once per calculation),
//! then approved and paid. An approved or paid run never changes; a month is paid once.
//!
//! States: `calculating` → `calculated` (a draft, recalculable) → `approved` → `paid`; a
//! run being calculated, or a draft, may be `cancelled`.

use crate::calc::{Arrear, Line};
use crate::{
    COMPENSATION, INPUTS, Month, PayHistory, Rules, Worked, inputs_key, retro, rules, valid_code, work_out_again,
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

fn start_calculation(id: u64, run: &Run) -> Result<String, Error> {
    TaskSpec::new(
        CALCULATE,
        &format!("Pay run {id} for {}", run.period),
        &json!({ "run": id, "generation": run.generation, "cursor": null }),
    )?
    .start()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRun {
    period: String,
}

/// Starts a month's pay run: its calculation is queued as a task.
pub fn create(req: &Request) -> Result<Response, Error> {
    crate::migrated()?;
    let input: NewRun = req.json()?;
    let month = Month::parse(&input.period)
        .ok_or_else(|| Error::invalid("invalid-period", "`period` is a month, YYYY-MM").at_field("period"))?;
    let period = month.label();
    if let Some(paid) = PAID.get(&period)? {
        return Err(Error::conflict("period-paid", format!("{period} was paid by run {}", paid.value.run)));
    }
    let existing = RUNS.query().eq("period", &period).limit(100).fetch()?;
    if let Some(other) = existing.items.iter().find(|r| r.value.state != State::Cancelled) {
        return Err(Error::conflict(
            "run-exists",
            format!(
                "run {} for {period} is {}; recalculate it instead",
                other.key.trim_start_matches('0'),
                other.value.state.name()
            ),
        ));
    }
    let id = RUN_NUMBERS.next()?;
    let mut run = Run {
        period,
        state: State::Calculating,
        generation: 1,
        task: None,
        calculated: 0,
        failed: 0,
        totals: BTreeMap::new(),
        rules: rules()?,
        created_by: req.caller.user_id.clone(),
        created_at: now_ms(),
        started_at: now_ms(),
        calculated_at: None,
        approved_by: None,
        approved_at: None,
        paid_by: None,
        paid_at: None,
    };
    run.task = Some(start_calculation(id, &run)?);
    RUNS.insert(&run_key(id), &run)?;
    Response::json(202, &run_view(id, &run))
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
    run.generation += 1;
    run.state = State::Calculating;
    run.calculated = 0;
    run.failed = 0;
    run.totals.clear();
    run.calculated_at = None;
    run.task = Some(start_calculation(id, &run)?);
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
    if let Some(paid) = PAID.get(&run.period)? {
        return Err(Error::conflict("period-paid", format!("{} was paid by run {}", run.period, paid.value.run)));
    }
    PAID.insert(&run.period, &Paid { run: id })?;
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
    Response::json(200, &worked_view(&found.value.worked))
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
        for (id, run) in batch.iter().zip(RUNS.get_many(&keys)?) {
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
    let mut shown = worked_view(&found.value.worked);
    shown["run"] = json!(id);
    shown["state"] = json!(run.value.state);
    Response::json(200, &shown)
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

/// How far back a change of pay is owed: settled periods of the last twelve months.
const RETRO_MONTHS: u32 = 12;

/// A settled (approved or paid) run: immutable, its payslips what was paid.
pub(crate) struct Settled {
    id: u64,
    month: Month,
    run: Run,
}

/// The settled runs from twelve months before `month` on (later ones too: arrears paid in
/// them count as paid), but `except`.
pub(crate) fn settled_runs(month: Month, except: Option<u64>) -> Result<Vec<Settled>, Error> {
    let from = month.back(RETRO_MONTHS);
    let mut out = Vec::new();
    for state in [State::Approved, State::Paid] {
        let mut cursor = None;
        loop {
            let page = RUNS.query().eq("state", state.name()).cursor(cursor.as_deref()).limit(500).fetch()?;
            for r in page.items {
                let (Ok(id), Some(m)) = (r.key.parse::<u64>(), Month::parse(&r.value.period)) else { continue };
                if m >= from && Some(id) != except {
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
    Ok(out)
}

/// Settled periods before `month` that a change of `history` recorded since their
/// calculation reaches back into: the ones to work out again.
fn reaches_back<'a>(history: &PayHistory, month: Month, settled: &'a [Settled]) -> Vec<&'a Settled> {
    settled
        .iter()
        .filter(|s| {
            s.month < month
                && history
                    .entries
                    .iter()
                    .any(|e| e.recorded_at > 0 && e.recorded_at >= s.run.started_at && e.effective <= s.month.last())
        })
        .collect()
}

/// The arrears owed in `month` from the employee's settled payslips (by run).
fn arrears_from(
    history: &PayHistory,
    month: Month,
    settled: &[Settled],
    slips: &BTreeMap<u64, Worked>,
) -> Result<Vec<Arrear>, Error> {
    let mut out = Vec::new();
    for s in reaches_back(history, month, settled) {
        // Not paid in that run (not employed then, or a problem): nothing to compare with.
        let Some(paid) = slips.get(&s.id) else { continue };
        let due = work_out_again(history, s.month, &s.run.rules, paid)?;
        let period = s.month.label();
        let prefix = retro::code(&period, "");
        let since: Vec<&Line> = slips
            .iter()
            .filter(|(id, _)| **id != s.id)
            .flat_map(|(_, w)| w.slip.lines.iter())
            .filter(|l| l.code.starts_with(&prefix))
            .collect();
        let pre_tax = |code: &str| s.run.rules.components.get(code).is_some_and(|c| c.pre_tax);
        out.extend(retro::arrears(&period, paid.exponent, &due, &paid.slip, &since, pre_tax));
    }
    Ok(out)
}

/// The arrears `employee` is owed in `month` (for a preview: reads their settled payslips).
pub(crate) fn arrears_owed(
    employee: &str,
    history: &PayHistory,
    month: Month,
    settled: &[Settled],
) -> Result<Vec<Arrear>, Error> {
    if reaches_back(history, month, settled).is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = settled.iter().map(|s| format!("{}/{employee}", slot(s.id, s.run.generation))).collect();
    let slips =
        settled.iter().zip(read_all(&PAYSLIPS, &keys)?).filter_map(|(s, p)| Some((s.id, p?.value.worked))).collect();
    arrears_from(history, month, settled, &slips)
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
/// Settled payslips one chunk reads for retro pay at most (with the page's own reads, within
/// the 10,000 documents a call that writes may have read).
const RETRO_READS: usize = 6_000;
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
    let month = Month::parse(&run.period).ok_or_else(|| Error::internal("bad-period", run.period.clone()))?;
    let here = slot(chunk.run, chunk.generation);
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
    let settled = settled_runs(month, Some(chunk.run))?;
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
            let arrears = match retro_of.get(&i) {
                None => Vec::new(),
                Some(range) => {
                    let mine: BTreeMap<u64, Worked> = settled
                        .iter()
                        .zip(&retro_slips[range.clone()])
                        .filter_map(|(s, p)| Some((s.id, p.as_ref()?.value.worked.clone())))
                        .collect();
                    arrears_from(history, month, &settled, &mine)?
                }
            };
            work_out_with(&employee.id, &employee.name, month, &run.rules, history, &time, &input, &arrears)
        });
        match worked {
            Ok(worked) => {
                let sums = run.totals.entry(worked.currency.clone()).or_default();
                let t = &worked.slip.totals;
                sums.exponent = worked.exponent;
                sums.employees += 1;
                let add = |a: i64, b: i64| {
                    a.checked_add(b)
                        .ok_or_else(|| Error::internal("run-totals-overflow", "the run's totals are too large"))
                };
                sums.gross = add(sums.gross, t.gross)?;
                sums.deductions = add(sums.deductions, t.deductions)?;
                sums.tax = add(sums.tax, t.tax)?;
                sums.net = add(sums.net, t.net)?;
                sums.employer = add(sums.employer, t.employer)?;
                run.calculated += 1;
                let slip = Payslip { run: chunk.run, slot: here.clone(), employee: employee.id.clone(), worked };
                written += key.len() + serde_json::to_string(&slip)?.len();
                PAYSLIPS.insert(key, &slip)?;
            }
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
