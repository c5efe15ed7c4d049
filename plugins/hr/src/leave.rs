//! Leave: types, holiday calendars, counting working days, requests day by day, accruals,
//! carry-over and balances. Pure functions over plain values, tested natively; the routes in
//! `leave_routes.rs` load and store them.
//!
//! Amounts are whole *ticks* of a type's unit, never floats: a thousandth of a day for types
//! counted in days, a minute for types counted in hours. So half days, 7.5-hour days and a
//! monthly twelfth of an allowance add up exactly, and a cap is always compared in the unit
//! of the type it belongs to.

use crate::employee::{Date, WorkingPattern};
use serde::{Deserialize, Serialize};

/// What a type's amounts count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Days,
    Hours,
}

impl Unit {
    /// Ticks in one unit: thousandths of a day, minutes of an hour.
    pub fn ticks(self) -> i64 {
        match self {
            Unit::Days => 1000,
            Unit::Hours => 60,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Days => "days",
            Unit::Hours => "hours",
        }
    }

    /// `value` units as ticks, if it is a whole number of ticks (0.001 day, one minute) and
    /// not negative.
    pub fn parse(self, value: f64) -> Option<i64> {
        let ticks = value * self.ticks() as f64;
        let whole = ticks.round();
        (ticks.is_finite() && ticks >= 0.0 && (ticks - whole).abs() < 1e-6 && whole < 1e15).then_some(whole as i64)
    }

    /// Ticks as units, for showing (`2083` thousandths of a day is `2.083`).
    pub fn show(self, ticks: i64) -> f64 {
        let value = ticks as f64 / self.ticks() as f64;
        (value * 10_000.0).round() / 10_000.0
    }
}

/// When a year's allowance becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accrual {
    /// All of it from the first day of the year (or of employment).
    UpFront,
    /// A twelfth at the end of each month worked, posted by the accrual job.
    Monthly,
}

/// A kind of leave a tenant offers (annual, sick, unpaid, time off in lieu...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveType {
    pub name: String,
    /// Whether pay continues: payroll deducts approved unpaid leave.
    pub paid: bool,
    pub unit: Unit,
    /// Ticks per year for someone employed all year; `None` keeps no balance (unlimited,
    /// typical of unpaid leave).
    pub allowance: Option<i64>,
    pub accrual: Accrual,
    /// At most this many ticks of a year's remainder move to the next year (0: none).
    pub carry_over_cap: i64,
    /// Whether a request waits for the manager (or HR); if not it is approved when made.
    pub requires_approval: bool,
}

/// A public holiday.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holiday {
    pub date: Date,
    pub name: String,
}

/// The public holidays of a location, sorted by date, one per date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    pub name: String,
    pub holidays: Vec<Holiday>,
}

impl Calendar {
    /// Sorts the holidays; `Err` names a date given twice.
    pub fn normalise(mut self) -> Result<Calendar, Date> {
        self.holidays.sort_by_key(|h| h.date);
        if let Some(pair) = self.holidays.windows(2).find(|w| w[0].date == w[1].date) {
            return Err(pair[0].date);
        }
        Ok(self)
    }

    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.binary_search_by_key(&date, |h| h.date).is_ok()
    }

    /// The holidays from `from` to `to`, inclusive.
    pub fn between(&self, from: Date, to: Date) -> &[Holiday] {
        let start = self.holidays.partition_point(|h| h.date < from);
        let end = self.holidays.partition_point(|h| h.date <= to);
        &self.holidays[start..end.max(start)]
    }
}

/// Which weekdays a pattern works, Monday first.
fn weekdays(pattern: &WorkingPattern) -> [bool; 7] {
    let mut days = [false; 7];
    for (i, name) in crate::employee::WEEKDAYS.iter().enumerate() {
        days[i] = pattern.days.iter().any(|d| d == name);
    }
    days
}

/// Working days from `from` to `to` inclusive: the pattern's weekdays that are not holidays.
/// Counts whole weeks at once, then the holidays in the range, so a year costs the same as a
/// week.
pub fn working_days(pattern: &WorkingPattern, calendar: &Calendar, from: Date, to: Date) -> u32 {
    if to < from {
        return 0;
    }
    let works = weekdays(pattern);
    let per_week = works.iter().filter(|w| **w).count() as i64;
    let (start, end) = (from.days_from_epoch(), to.days_from_epoch());
    let length = end - start + 1;
    let mut count = length / 7 * per_week;
    let first = from.weekday() as i64;
    for offset in 0..length % 7 {
        if works[((first + offset) % 7) as usize] {
            count += 1;
        }
    }
    let holidays = calendar.between(from, to).iter().filter(|h| works[h.date.weekday() as usize]).count() as i64;
    (count - holidays) as u32
}

/// Half of a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Half {
    Morning,
    Afternoon,
}

/// How much of a day a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "part", content = "minutes")]
pub enum Part {
    Full,
    Morning,
    Afternoon,
    /// Some hours of the day (hour-counted types), in minutes.
    Minutes(u32),
}

impl Part {
    /// As shown: `full`, `morning`, `afternoon` or `hours`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Full => "full",
            Part::Morning => "morning",
            Part::Afternoon => "afternoon",
            Part::Minutes(_) => "hours",
        }
    }
}

/// One working day of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    pub date: Date,
    #[serde(flatten)]
    pub part: Part,
    /// What the day costs, in ticks of the type's unit.
    pub ticks: i64,
    /// The working day's length then, in minutes (what a part is a part of).
    pub day_minutes: u32,
}

impl Day {
    /// Minutes of the working day this takes.
    pub fn minutes(&self) -> u32 {
        match self.part {
            Part::Full => self.day_minutes,
            Part::Morning => self.day_minutes / 2,
            Part::Afternoon => self.day_minutes - self.day_minutes / 2,
            Part::Minutes(m) => m,
        }
    }

    /// Whether this day cannot be taken beside `others` already taken on the same date:
    /// the same half twice, a full day with anything, or more minutes in all than the
    /// working day has.
    pub fn clashes_with_all<'a>(&self, others: impl IntoIterator<Item = &'a Day>) -> bool {
        let mut minutes = self.minutes();
        for other in others.into_iter().filter(|o| o.date == self.date) {
            if self.clashes(other) {
                return true;
            }
            minutes += other.minutes();
        }
        minutes > self.day_minutes
    }

    /// Whether two requests' days cannot both be taken: the same half twice, a full day
    /// with anything, or more hours than the day has.
    pub fn clashes(&self, other: &Day) -> bool {
        if self.date != other.date {
            return false;
        }
        match (self.part, other.part) {
            (Part::Morning, Part::Morning) | (Part::Afternoon, Part::Afternoon) => true,
            (Part::Morning, Part::Afternoon) | (Part::Afternoon, Part::Morning) => false,
            _ => self.minutes() + other.minutes() > self.day_minutes.max(other.day_minutes),
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub from: Date,
    pub to: Date,
    /// Only this half of the first day.
    pub from_half: Option<Half>,
    /// Only this half of the last day.
    pub to_half: Option<Half>,
    /// Hour-counted types: this many minutes of a one-day request.
    pub minutes: Option<u32>,
}

/// Why a request cannot be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub field: &'static str,
    pub reason: String,
}

fn refuse(code: &'static str, field: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal { code, field, reason: reason.into() }
}

/// The longest request: a year.
pub const MAX_REQUEST_DAYS: i64 = 366;

/// The working days a request takes and what each costs, skipping weekends (per the pattern)
/// and the calendar's holidays. Half days: a request may begin at midday (`from_half:
/// afternoon`) and end at midday (`to_half: morning`); a one-day request may be either half.
pub fn request_days(unit: Unit, pattern: &WorkingPattern, calendar: &Calendar, ask: &Ask) -> Result<Vec<Day>, Refusal> {
    request_days_with(unit, ask, |_| Some((pattern, calendar)))
}

/// As [`request_days`], with the pattern and calendar of each day from `on` (the employee's
/// record in force that day); `None` for a day they were not employed, which refuses the
/// request naming it.
pub fn request_days_with<'a>(
    unit: Unit,
    ask: &Ask,
    on: impl Fn(Date) -> Option<(&'a WorkingPattern, &'a Calendar)>,
) -> Result<Vec<Day>, Refusal> {
    if ask.to < ask.from {
        return Err(refuse(
            "invalid-period",
            "to",
            format!("the last day {} is before the first {}", ask.to, ask.from),
        ));
    }
    let length = ask.to.days_from_epoch() - ask.from.days_from_epoch() + 1;
    if length > MAX_REQUEST_DAYS {
        return Err(refuse("invalid-period", "to", format!("a request is at most {MAX_REQUEST_DAYS} days long")));
    }
    if ask.from.year != ask.to.year {
        return Err(refuse(
            "request-spans-years",
            "to",
            format!(
                "leave is counted per year: request {}..{}-12-31 and {}-01-01..{} apart",
                ask.from, ask.from.year, ask.to.year, ask.to
            ),
        ));
    }
    let one_day = ask.from == ask.to;
    let single_half = match (ask.from_half, ask.to_half) {
        (Some(a), Some(b)) if one_day && a != b => {
            return Err(refuse("invalid-half-day", "to_half", "a one-day request is one half or the whole day"));
        }
        (a, b) if one_day => a.or(b),
        _ => None,
    };
    if !one_day {
        if ask.from_half == Some(Half::Morning) {
            return Err(refuse(
                "invalid-half-day",
                "from_half",
                "leave over several days starts in the afternoon of its first day, or in the morning",
            ));
        }
        if ask.to_half == Some(Half::Afternoon) {
            return Err(refuse(
                "invalid-half-day",
                "to_half",
                "leave over several days ends at midday of its last day, or in the evening",
            ));
        }
    }
    if ask.minutes.is_some() {
        if unit != Unit::Hours {
            return Err(refuse(
                "hours-not-allowed",
                "hours",
                "this leave type is counted in days: ask for days or half days",
            ));
        }
        if !one_day || ask.from_half.is_some() || ask.to_half.is_some() {
            return Err(refuse("invalid-hours", "hours", "hours are asked for one day, without a half"));
        }
    }
    let mut days = Vec::new();
    let (start, end) = (ask.from.days_from_epoch(), ask.to.days_from_epoch());
    for n in start..=end {
        let date = Date::from_epoch_days(n);
        let Some((pattern, calendar)) = on(date) else {
            return Err(refuse(
                "not-employed",
                if n == start { "from" } else { "to" },
                format!("not employed on {date}"),
            ));
        };
        let day_minutes = pattern.minutes_per_day;
        if !pattern.works_on(date) || calendar.is_holiday(date) {
            continue;
        }
        let part = match (ask.minutes, single_half) {
            (Some(m), _) => {
                if m == 0 || m > day_minutes {
                    return Err(refuse(
                        "invalid-hours",
                        "hours",
                        format!("{date} is a working day of {} hours", Unit::Hours.show(i64::from(day_minutes))),
                    ));
                }
                Part::Minutes(m)
            }
            (None, Some(Half::Morning)) => Part::Morning,
            (None, Some(Half::Afternoon)) => Part::Afternoon,
            (None, None) if n == start && ask.from_half == Some(Half::Afternoon) => Part::Afternoon,
            (None, None) if n == end && ask.to_half == Some(Half::Morning) => Part::Morning,
            (None, None) => Part::Full,
        };
        let mut day = Day { date, part, ticks: 0, day_minutes };
        day.ticks = match unit {
            Unit::Days => match part {
                Part::Full => 1000,
                Part::Morning | Part::Afternoon => 500,
                Part::Minutes(m) => i64::from(m) * 1000 / i64::from(day_minutes),
            },
            Unit::Hours => i64::from(day.minutes()),
        };
        days.push(day);
    }
    if days.is_empty() {
        return Err(refuse(
            "no-working-days",
            "from",
            format!("{}..{} has no working day (weekends and public holidays are not leave)", ask.from, ask.to),
        ));
    }
    Ok(days)
}

/// The part of the allowance `year` a person employed from `hired` (to `left`, inclusive)
/// is given up front: the allowance in proportion to the days of the year employed, rounded
/// down to a half day (days) or a minute (hours).
pub fn up_front(kind: &LeaveType, allowance: i64, year: i32, hired: Date, left: Option<Date>) -> i64 {
    let first = Date { year, month: 1, day: 1 };
    let last = Date { year, month: 12, day: 31 };
    let from = hired.max(first);
    let to = left.map_or(last, |l| l.min(last));
    if to < from {
        return 0;
    }
    let employed = to.days_from_epoch() - from.days_from_epoch() + 1;
    let in_year = last.days_from_epoch() - first.days_from_epoch() + 1;
    let share = allowance * employed / in_year;
    match kind.unit {
        Unit::Days => share / 500 * 500,
        Unit::Hours => share,
    }
}

/// What month `month` of `year` accrues of a yearly `allowance`: the twelfths are cut so the
/// months add up to the allowance exactly (25 days: 2.083, 2.083, 2.084, ...), and a month
/// worked in part accrues in proportion to its calendar days employed.
pub fn monthly(allowance: i64, year: i32, month: u8, hired: Date, left: Option<Date>) -> i64 {
    let m = i64::from(month);
    let full = allowance * m / 12 - allowance * (m - 1) / 12;
    let first = Date { year, month, day: 1 };
    let last = Date { year, month, day: first.days_in_month() };
    let from = hired.max(first);
    let to = left.map_or(last, |l| l.min(last));
    if to < from {
        return 0;
    }
    let employed = to.days_from_epoch() - from.days_from_epoch() + 1;
    full * employed / i64::from(last.day)
}

/// The last day of a month.
pub fn month_end(year: i32, month: u8) -> Date {
    let first = Date { year, month, day: 1 };
    Date { year, month, day: first.days_in_month() }
}

/// A year's leave of one type for one employee: what was allocated and when it became
/// available. Requests are counted against it, not written into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub employee: u64,
    pub leave_type: String,
    pub year: i32,
    pub unit: Unit,
    pub accrual: Accrual,
    /// The year's allocation in ticks (for monthly accrual, what the twelve months add to).
    pub amount: i64,
    /// Up front: the day it became available.
    pub granted_on: Date,
    /// Monthly: what each month posted, on its last day.
    #[serde(default)]
    pub accrued: Vec<Accrued>,
    /// Carried in from last year (capped), once the year before was closed.
    #[serde(default)]
    pub carried_over: Option<i64>,
    /// Who set the amount (`accrual-job` when it was the type's allowance).
    pub set_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrued {
    pub month: u8,
    pub on: Date,
    pub ticks: i64,
}

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Cancelled => "cancelled",
        }
    }

    /// Whether it holds days: awaiting a decision or granted.
    pub fn is_live(self) -> bool {
        matches!(self, State::Pending | State::Approved)
    }
}

/// Where a year's balance stands on a date, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The year's allocation.
    pub allocated: i64,
    /// What of it is available by the date (all of it up front; the months posted so far).
    pub accrued: i64,
    pub carried_over: i64,
    /// Approved leave on days up to the date.
    pub taken: i64,
    /// Approved leave on days after it.
    pub booked: i64,
    /// Awaiting approval.
    pub pending: i64,
    /// Moved on to next year when this year was closed.
    pub carried_forward: i64,
    /// accrued + carried over − taken − booked − pending − carried forward.
    pub remaining: i64,
}

impl Balance {
    /// The balance of a year whose remainder (`ticks`) moved on to the next: those days
    /// cannot also be taken in this year.
    pub fn with_carried_forward(mut self, ticks: i64) -> Balance {
        self.carried_forward = ticks;
        self.remaining -= ticks;
        self
    }
}

/// The balance of `allocation` on `on`, counting the requests (of the same employee, type
/// and year) given as (state, days).
pub fn balance<'a>(
    allocation: Option<&Allocation>,
    requests: impl IntoIterator<Item = (State, &'a [Day])>,
    on: Date,
) -> Balance {
    let mut b = Balance::default();
    if let Some(a) = allocation {
        b.allocated = a.amount;
        b.accrued = match a.accrual {
            Accrual::UpFront if a.granted_on <= on => a.amount,
            Accrual::UpFront => 0,
            Accrual::Monthly => a.accrued.iter().filter(|m| m.on <= on).map(|m| m.ticks).sum(),
        };
        b.carried_over = a.carried_over.unwrap_or(0);
    }
    for (state, days) in requests {
        for day in days {
            match state {
                State::Approved if day.date <= on => b.taken += day.ticks,
                State::Approved => b.booked += day.ticks,
                State::Pending => b.pending += day.ticks,
                State::Rejected | State::Cancelled => {}
            }
        }
    }
    b.remaining = b.accrued + b.carried_over - b.taken - b.booked - b.pending;
    b
}

/// What moves from a closed year to the next: what is left at its end, at most the type's
/// cap, in the type's own unit. Pending requests count as used (a year is not closed on a
/// hope), and a negative remainder carries nothing.
pub fn carry_over(kind: &LeaveType, year_end: &Balance) -> i64 {
    year_end.remaining.clamp(0, kind.carry_over_cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn weekdays_only() -> WorkingPattern {
        WorkingPattern::default()
    }

    fn easter_2026() -> Calendar {
        Calendar {
            name: "UK".into(),
            holidays: vec![
                Holiday { date: d("2026-04-03"), name: "Good Friday".into() },
                Holiday { date: d("2026-04-06"), name: "Easter Monday".into() },
            ],
        }
    }

    fn ask(from: &str, to: &str) -> Ask {
        Ask { from: d(from), to: d(to), from_half: None, to_half: None, minutes: None }
    }

    fn total(days: &[Day]) -> i64 {
        days.iter().map(|d| d.ticks).sum()
    }

    #[test]
    fn a_week_across_easter_counts_its_working_days_to_the_half_day() {
        // Wednesday 1 April (afternoon only) to Wednesday 8 April (morning only) 2026, across
        // Good Friday, the weekend and Easter Monday: Wed ½, Thu 1, Tue 1, Wed ½ = 3 days.
        let mut a = ask("2026-04-01", "2026-04-08");
        a.from_half = Some(Half::Afternoon);
        a.to_half = Some(Half::Morning);
        let days = request_days(Unit::Days, &weekdays_only(), &easter_2026(), &a).unwrap();
        let dates: Vec<String> = days.iter().map(|d| d.date.to_string()).collect();
        assert_eq!(dates, ["2026-04-01", "2026-04-02", "2026-04-07", "2026-04-08"]);
        assert_eq!(total(&days), 3_000);
        assert_eq!((days[0].part, days[3].part), (Part::Afternoon, Part::Morning));
        // The same in hours for someone on 7.5-hour days: 3.75 + 7.5 + 7.5 + 3.75 = 22.5 h.
        let pattern = WorkingPattern { minutes_per_day: 450, ..weekdays_only() };
        let hours = request_days(Unit::Hours, &pattern, &easter_2026(), &a).unwrap();
        assert_eq!(total(&hours), 22 * 60 + 30);
        // A part-timer working Monday, Wednesday and Friday loses only the Wednesdays.
        let mwf = WorkingPattern { days: vec!["mon".into(), "wed".into(), "fri".into()], minutes_per_day: 480 };
        assert_eq!(total(&request_days(Unit::Days, &mwf, &easter_2026(), &a).unwrap()), 1_000);
        assert_eq!(working_days(&weekdays_only(), &easter_2026(), d("2026-04-01"), d("2026-04-08")), 4);
    }

    #[test]
    fn requests_that_cannot_be_counted_say_why() {
        let cal = easter_2026();
        let p = weekdays_only();
        let code = |a: Ask, unit: Unit| request_days(unit, &p, &cal, &a).unwrap_err().code;
        assert_eq!(code(ask("2026-04-03", "2026-04-06"), Unit::Days), "no-working-days", "holiday, weekend, holiday");
        assert_eq!(code(ask("2026-04-08", "2026-04-01"), Unit::Days), "invalid-period");
        assert_eq!(code(ask("2026-12-30", "2027-01-04"), Unit::Days), "request-spans-years");
        let mut morning_first = ask("2026-04-08", "2026-04-09");
        morning_first.from_half = Some(Half::Morning);
        assert_eq!(code(morning_first, Unit::Days), "invalid-half-day");
        let mut both = ask("2026-04-08", "2026-04-08");
        both.from_half = Some(Half::Morning);
        both.to_half = Some(Half::Afternoon);
        assert_eq!(code(both, Unit::Days), "invalid-half-day");
        let mut hours = ask("2026-04-08", "2026-04-08");
        hours.minutes = Some(9 * 60);
        assert_eq!(code(hours.clone(), Unit::Hours), "invalid-hours", "more than the 8-hour day");
        assert_eq!(code(hours, Unit::Days), "hours-not-allowed");
        let mut afternoon = ask("2026-04-08", "2026-04-08");
        afternoon.to_half = Some(Half::Afternoon);
        let days = request_days(Unit::Days, &p, &cal, &afternoon).unwrap();
        assert_eq!((days[0].part, total(&days)), (Part::Afternoon, 500), "a one-day request may be either half");
    }

    #[test]
    fn halves_and_hours_clash_only_when_the_day_is_overbooked() {
        let day = |part: Part| Day { date: d("2026-04-08"), part, ticks: 0, day_minutes: 480 };
        assert!(!day(Part::Morning).clashes(&day(Part::Afternoon)));
        assert!(day(Part::Morning).clashes(&day(Part::Morning)));
        assert!(day(Part::Full).clashes(&day(Part::Minutes(30))));
        assert!(!day(Part::Minutes(120)).clashes(&day(Part::Afternoon)), "2 h of the morning and the afternoon off");
        assert!(day(Part::Minutes(300)).clashes(&day(Part::Afternoon)));
        let other_day = Day { date: d("2026-04-09"), ..day(Part::Full) };
        assert!(!other_day.clashes(&day(Part::Full)));
        // Pairwise each fits; together they overbook the day.
        let three = [day(Part::Minutes(180)), day(Part::Minutes(180))];
        assert!(!day(Part::Minutes(120)).clashes_with_all(&three));
        assert!(day(Part::Minutes(180)).clashes_with_all(&three), "9 hours on an 8-hour day");
        let halves = [day(Part::Morning), day(Part::Afternoon)];
        assert!(day(Part::Minutes(60)).clashes_with_all(&halves), "both halves are taken already");
        assert!(!day(Part::Minutes(60)).clashes_with_all(&[other_day]));
        // Stored and read back the same, whatever the part.
        for part in [Part::Full, Part::Morning, Part::Afternoon, Part::Minutes(90)] {
            let text = serde_json::to_string(&day(part)).unwrap();
            assert_eq!(serde_json::from_str::<Day>(&text).unwrap(), day(part), "{text}");
        }
    }

    fn annual(unit: Unit, accrual: Accrual, cap: i64) -> LeaveType {
        LeaveType {
            name: "Annual leave".into(),
            paid: true,
            unit,
            allowance: Some(25 * unit.ticks()),
            accrual,
            carry_over_cap: cap,
            requires_approval: true,
        }
    }

    #[test]
    fn monthly_twelfths_add_up_to_the_allowance_and_part_months_are_prorated() {
        let hired = d("2020-01-01");
        let months: Vec<i64> = (1..=12).map(|m| monthly(25_000, 2026, m, hired, None)).collect();
        assert_eq!(&months[..3], &[2083, 2083, 2084]);
        assert_eq!(months.iter().sum::<i64>(), 25_000, "exactly the allowance, not 24.996");
        // Hired on 16 March: 16 of March's 31 days accrue 16/31 of 2.084 = 1.075 days.
        assert_eq!(monthly(25_000, 2026, 3, d("2026-03-16"), None), 2084 * 16 / 31);
        assert_eq!(monthly(25_000, 2026, 2, d("2026-03-16"), None), 0);
        // Leaving on 10 June: June accrues 10/30 of its twelfth, July nothing.
        assert_eq!(monthly(25_000, 2026, 6, hired, Some(d("2026-06-10"))), 2083 * 10 / 30);
        assert_eq!(monthly(25_000, 2026, 7, hired, Some(d("2026-06-10"))), 0);
        assert_eq!(month_end(2028, 2), d("2028-02-29"));
    }

    #[test]
    fn up_front_allowances_are_prorated_to_the_half_day_for_joiners() {
        let kind = annual(Unit::Days, Accrual::UpFront, 0);
        // 2026-03-16 to 2026-12-31 is 291 of 365 days: 25 × 291 / 365 = 19.93, so 19.5 days.
        assert_eq!(up_front(&kind, 25_000, 2026, d("2026-03-16"), None), 19_500);
        assert_eq!(up_front(&kind, 25_000, 2026, d("2019-05-01"), None), 25_000);
        assert_eq!(up_front(&kind, 25_000, 2026, d("2027-01-04"), None), 0, "not employed that year");
        let hours = annual(Unit::Hours, Accrual::UpFront, 0);
        // 200 h for the same joiner: 200 × 60 × 291 / 365 = 9567 minutes (159 h 27 min).
        assert_eq!(up_front(&hours, 200 * 60, 2026, d("2026-03-16"), None), 9567);
    }

    #[test]
    fn balances_count_taken_booked_and_pending_as_of_a_date() {
        let alloc = Allocation {
            employee: 1,
            leave_type: "annual".into(),
            year: 2026,
            unit: Unit::Days,
            accrual: Accrual::Monthly,
            amount: 25_000,
            granted_on: d("2026-01-01"),
            accrued: (1..=4).map(|m| Accrued { month: m, on: month_end(2026, m), ticks: 2083 }).collect(),
            carried_over: Some(3_000),
            set_by: "accrual-job".into(),
        };
        let p = weekdays_only();
        let cal = easter_2026();
        let past = request_days(Unit::Days, &p, &cal, &ask("2026-02-02", "2026-02-03")).unwrap();
        let future = request_days(Unit::Days, &p, &cal, &ask("2026-05-04", "2026-05-04")).unwrap();
        let waiting = request_days(Unit::Days, &p, &cal, &ask("2026-06-01", "2026-06-02")).unwrap();
        let refused = request_days(Unit::Days, &p, &cal, &ask("2026-07-01", "2026-07-10")).unwrap();
        let requests = [
            (State::Approved, &past[..]),
            (State::Approved, &future[..]),
            (State::Pending, &waiting[..]),
            (State::Rejected, &refused[..]),
        ];
        let b = balance(Some(&alloc), requests, d("2026-03-31"));
        assert_eq!(
            b,
            Balance {
                allocated: 25_000,
                accrued: 3 * 2083,
                carried_over: 3_000,
                taken: 2_000,
                booked: 1_000,
                pending: 2_000,
                carried_forward: 0,
                remaining: 3 * 2083 + 3_000 - 5_000
            }
        );
        assert_eq!(balance(Some(&alloc), requests, d("2026-05-04")).taken, 3_000, "the day itself is taken");
        assert_eq!(balance(None, requests, d("2026-05-04")).remaining, -5_000);
    }

    #[test]
    fn carry_over_is_capped_in_the_types_own_unit() {
        // 16 hours may move on; 30 hours are left. The cap is 16 hours (960 minutes), not
        // 16 days of 8 hours: comparing a day cap with hours is the bug to avoid.
        let hours = annual(Unit::Hours, Accrual::UpFront, 16 * 60);
        let left = |remaining| Balance { remaining, ..Balance::default() };
        assert_eq!(carry_over(&hours, &left(30 * 60)), 960);
        assert_eq!(carry_over(&hours, &left(90)), 90, "less than the cap moves whole");
        let days = annual(Unit::Days, Accrual::UpFront, 5_000);
        assert_eq!(carry_over(&days, &left(7_500)), 5_000);
        assert_eq!(carry_over(&days, &left(-1_500)), 0, "an overdrawn year carries nothing");
        assert_eq!(carry_over(&annual(Unit::Days, Accrual::UpFront, 0), &left(7_500)), 0);
    }

    #[test]
    fn amounts_parse_to_whole_ticks_of_their_unit() {
        assert_eq!(Unit::Days.parse(2.5), Some(2_500));
        assert_eq!(Unit::Days.parse(0.0005), None, "finer than a thousandth of a day");
        assert_eq!(Unit::Hours.parse(7.5), Some(450));
        assert_eq!(Unit::Hours.parse(0.3333), None, "19.998 minutes is not a whole minute");
        assert_eq!(Unit::Hours.parse(1.0 / 3.0), Some(20));
        assert_eq!(Unit::Hours.parse(-1.0), None);
        assert_eq!(Unit::Hours.parse(f64::NAN), None);
        assert_eq!(Unit::Days.show(2083), 2.083);
        assert_eq!(Unit::Hours.show(445), 7.4167);
    }

    /// A small deterministic generator (xorshift), so a failing case can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn working_day_counts_equal_a_day_by_day_count_for_random_calendars_patterns_and_periods() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..3_000 {
            let days: Vec<String> =
                crate::employee::WEEKDAYS.iter().filter(|_| rng.below(3) != 0).map(|d| d.to_string()).collect();
            let pattern = WorkingPattern {
                days: if days.is_empty() { vec!["wed".into()] } else { days },
                minutes_per_day: 240 + rng.below(300) as u32,
            };
            let base = Date::parse("2024-01-01").unwrap().days_from_epoch();
            let holidays = (0..rng.below(25))
                .map(|i| Holiday {
                    date: Date::from_epoch_days(base + rng.below(3 * 366) as i64),
                    name: format!("h{i}"),
                })
                .collect::<Vec<_>>();
            let mut seen = std::collections::BTreeSet::new();
            let holidays: Vec<Holiday> = holidays.into_iter().filter(|h| seen.insert(h.date)).collect();
            let calendar = Calendar { name: "random".into(), holidays }.normalise().unwrap();
            let from = Date::from_epoch_days(base + rng.below(3 * 366) as i64);
            let to = Date::from_epoch_days(from.days_from_epoch() + rng.below(120) as i64);
            let brute = (from.days_from_epoch()..=to.days_from_epoch())
                .map(Date::from_epoch_days)
                .filter(|day| pattern.works_on(*day) && !calendar.is_holiday(*day))
                .count() as u32;
            assert_eq!(
                working_days(&pattern, &calendar, from, to),
                brute,
                "case {case}: {from}..{to}, {:?}, {:?}",
                pattern.days,
                calendar.holidays
            );
            // A request over the same days (within one year) costs one day per working day.
            if from.year == to.year && brute > 0 {
                let days = request_days(
                    Unit::Days,
                    &pattern,
                    &calendar,
                    &Ask { from, to, from_half: None, to_half: None, minutes: None },
                )
                .unwrap();
                assert_eq!(total(&days), i64::from(brute) * 1000, "case {case}");
                let hours = request_days(
                    Unit::Hours,
                    &pattern,
                    &calendar,
                    &Ask { from, to, from_half: None, to_half: None, minutes: None },
                )
                .unwrap();
                assert_eq!(total(&hours), i64::from(brute) * i64::from(pattern.minutes_per_day), "case {case}");
            }
        }
    }
}
