//! Business hours: deadlines and elapsed time counted only while a team is at work.
//!
//! A [`Calendar`] is a team's weekly opening hours in its own IANA time zone plus its
//! holidays; [`Calendar::always`] is the 24/7 UTC calendar, where business time is wall time.
//! A [`BusinessClock`] is a stopwatch over such a calendar: it runs, pauses (a case waiting on
//! the customer) and resumes, and answers when a target of N business minutes falls due. A
//! [`Deadline`] is one target on that clock (first response, resolution): when it is due,
//! when to warn, and whether it was met, warned about and breached, each once.
//! Needs the SDK's `business-hours` feature.
//!
//! Instants are milliseconds since the Unix epoch, in UTC, everywhere. Only the calendar's
//! *rules* are local: each day's windows are placed in the calendar's zone, day by day, so
//! a daylight-saving change moves them by the hour it should and never by a fixed offset
//! taken on another day. A local time a DST change skips (02:30 on a spring-forward night)
//! means the first instant after the gap (the change itself), so a window inside the gap is
//! empty; a local time it repeats means the earlier occurrence.
//! The zone rules are the tz database bundled in the SDK, so a plugin gets the same answer
//! natively and in WebAssembly.
//!
//! ```
//! # #[cfg(feature = "business-hours")] {
//! use keel_sdk::business_hours::{BusinessClock, Calendar, CalendarSpec};
//!
//! let spec: CalendarSpec = serde_json::from_value(serde_json::json!({
//!     "time_zone": "Europe/Berlin",
//!     "hours": { "mon": ["09:00-17:00"], "tue": ["09:00-17:00"], "wed": ["09:00-17:00"],
//!                "thu": ["09:00-17:00"], "fri": ["09:00-17:00"] },
//!     "holidays": ["2025-04-18", "2025-04-21"],
//! })).unwrap();
//! let calendar = Calendar::new(spec).unwrap();
//! // Thu 2025-04-17 16:00 CEST, 4 business hours: 1 h on Thursday, Easter closes Friday to
//! // Monday, so the deadline is Tue 2025-04-22 12:00 CEST.
//! let opened = 1_744_898_400_000; // 2025-04-17T14:00:00Z
//! let clock = BusinessClock::started(opened);
//! assert_eq!(clock.deadline(&calendar, 4 * 3_600_000), Some(1_745_316_000_000)); // 10:00Z
//! # }
//! ```

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

/// How far ahead a deadline is looked for: a target the calendar cannot reach in about ten
/// years has none (the walk is bounded however sparse the calendar is).
pub const MAX_DAYS: u32 = 3_660;
/// Opening windows a day may have (e.g. a morning and an afternoon around lunch).
pub const MAX_WINDOWS_PER_DAY: usize = 8;
/// Holidays a calendar may list.
pub const MAX_HOLIDAYS: usize = 1_000;
/// Longest time zone name and window text accepted.
const MAX_NAME: usize = 64;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u16 = 1_440;

/// A calendar as a tenant writes it (and as it is stored): the zone, each weekday's opening
/// windows as `"HH:MM-HH:MM"` (end exclusive, `24:00` for midnight; a missing day is closed),
/// and holidays as local dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// An IANA time zone name, e.g. `Europe/Berlin`, or `UTC`.
    pub time_zone: String,
    /// Opening windows per weekday.
    #[serde(default)]
    pub hours: WeekHours,
    /// Days closed all day, as `YYYY-MM-DD` in the calendar's zone.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// Opening windows per weekday, each `"HH:MM-HH:MM"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WeekHours {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mon: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tue: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thu: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fri: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sat: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sun: Vec<String>,
}

impl WeekHours {
    fn days(&self) -> [&Vec<String>; 7] {
        [&self.mon, &self.tue, &self.wed, &self.thu, &self.fri, &self.sat, &self.sun]
    }
}

/// Why a [`CalendarSpec`] was refused: the field (`hours.mon[1]`, `holidays[3]`, ...) and the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarError {
    /// Where in the spec.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for CalendarError {}

impl From<CalendarError> for crate::Error {
    fn from(e: CalendarError) -> crate::Error {
        crate::Error::invalid("invalid-calendar", e.to_string())
    }
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> CalendarError {
    CalendarError { field: field.into(), reason: reason.into() }
}

/// A checked calendar, ready to compute with. Serializes as its [`CalendarSpec`] (and
/// deserializing checks it again), so it can be stored in a collection as it is.
#[derive(Debug, Clone)]
pub struct Calendar {
    spec: CalendarSpec,
    zone: TimeZone,
    /// Per weekday (Monday first): sorted, non-overlapping `[start, end)` minutes of the day.
    week: [Vec<(u16, u16)>; 7],
    holidays: BTreeSet<Date>,
    /// Open every minute: business time is wall time (the fast path).
    always: bool,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Calendar) -> bool {
        self.spec == other.spec
    }
}

fn bundled() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// Parses `HH:MM` (00:00 to 24:00) into minutes of the day.
fn minute_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= MINUTES_PER_DAY).then_some(minutes)
}

impl Calendar {
    /// Checks `spec`: a known zone, windows `HH:MM-HH:MM` with start before end, at most
    /// [`MAX_WINDOWS_PER_DAY`] a day and none overlapping, at least one window in the week,
    /// and holidays that are real dates, at most [`MAX_HOLIDAYS`].
    pub fn new(spec: CalendarSpec) -> Result<Calendar, CalendarError> {
        if spec.time_zone.len() > MAX_NAME {
            return Err(refuse("time_zone", format!("must be at most {MAX_NAME} characters")));
        }
        let zone = bundled()
            .get(&spec.time_zone)
            .map_err(|_| refuse("time_zone", format!("`{}` is not a known IANA time zone", spec.time_zone)))?;
        let mut week: [Vec<(u16, u16)>; 7] = Default::default();
        for (day, windows) in spec.hours.days().into_iter().enumerate() {
            if windows.len() > MAX_WINDOWS_PER_DAY {
                return Err(refuse(
                    format!("hours.{}", DAY_NAMES[day]),
                    format!("has more than {MAX_WINDOWS_PER_DAY} windows"),
                ));
            }
            for (i, text) in windows.iter().enumerate() {
                let field = || format!("hours.{}[{i}]", DAY_NAMES[day]);
                if text.len() > MAX_NAME {
                    return Err(refuse(field(), format!("must be at most {MAX_NAME} characters")));
                }
                let window = text
                    .split_once('-')
                    .and_then(|(s, e)| Some((minute_of_day(s.trim())?, minute_of_day(e.trim())?)))
                    .ok_or_else(|| refuse(field(), format!("`{text}` is not HH:MM-HH:MM (00:00 to 24:00)")))?;
                if window.0 >= window.1 {
                    return Err(refuse(field(), format!("`{text}` must start before it ends")));
                }
                week[day].push(window);
            }
            week[day].sort_unstable();
            if let Some(pair) = week[day].windows(2).find(|p| p[0].1 > p[1].0) {
                return Err(refuse(
                    format!("hours.{}", DAY_NAMES[day]),
                    format!("windows overlap around {:02}:{:02}", pair[1].0 / 60, pair[1].0 % 60),
                ));
            }
        }
        if week.iter().all(Vec::is_empty) {
            return Err(refuse("hours", "must open at least one window in the week"));
        }
        if spec.holidays.len() > MAX_HOLIDAYS {
            return Err(refuse("holidays", format!("must list at most {MAX_HOLIDAYS} days")));
        }
        let mut holidays = BTreeSet::new();
        for (i, text) in spec.holidays.iter().enumerate() {
            let date: Date = (text.len() == 10)
                .then(|| text.parse().ok())
                .flatten()
                .ok_or_else(|| refuse(format!("holidays[{i}]"), format!("`{text}` is not a YYYY-MM-DD date")))?;
            holidays.insert(date);
        }
        let always = holidays.is_empty()
            && matches!(spec.time_zone.as_str(), "UTC" | "Etc/UTC")
            && week.iter().all(|w| w.as_slice() == [(0, MINUTES_PER_DAY)]);
        Ok(Calendar { spec, zone, week, holidays, always })
    }

    /// Open every minute of every day, in UTC: business time is wall time.
    pub fn always() -> Calendar {
        let all = || vec!["00:00-24:00".to_owned()];
        let spec = CalendarSpec {
            time_zone: "UTC".into(),
            hours: WeekHours { mon: all(), tue: all(), wed: all(), thu: all(), fri: all(), sat: all(), sun: all() },
            holidays: Vec::new(),
        };
        Calendar::new(spec).expect("the 24/7 calendar is valid")
    }

    /// The spec this calendar was built from.
    pub fn spec(&self) -> &CalendarSpec {
        &self.spec
    }

    /// Whether this is business time around the clock in UTC (then deadlines are wall time).
    pub fn is_always_open(&self) -> bool {
        self.always
    }

    /// The instant `budget_ms` of business time after `start`: `start` itself for a zero
    /// budget, else the end of the window where the budget runs out (a target that lands on a
    /// window's end falls due at that end, not when the next one opens). `None` when the
    /// calendar does not open long enough within [`MAX_DAYS`].
    pub fn add(&self, start: u64, budget_ms: u64) -> Option<u64> {
        if budget_ms == 0 || self.always {
            return start.checked_add(budget_ms);
        }
        let mut left = budget_ms;
        for (open, close) in self.windows_from(start, MAX_DAYS) {
            let from = open.max(start);
            if close <= from {
                continue;
            }
            if left <= close - from {
                return Some(from + left);
            }
            left -= close - from;
        }
        None
    }

    /// Business time in `[from, to)`, in ms.
    pub fn between(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        if self.always {
            return to - from;
        }
        let mut total = 0;
        // Whole days the span covers, plus the day before and after: never cut short.
        let days = u32::try_from((to - from) / 86_400_000).unwrap_or(u32::MAX).saturating_add(3);
        for (open, close) in self.windows_from(from, days) {
            if open >= to {
                break;
            }
            total += close.min(to).saturating_sub(open.max(from));
        }
        total
    }

    /// Whether `at` falls inside an opening window.
    pub fn is_open(&self, at: u64) -> bool {
        self.always || self.windows_from(at, 3).take_while(|(open, _)| *open <= at).any(|(_, close)| close > at)
    }

    /// The opening windows, as UTC `[open, close)` instants in time order, from the local day
    /// before `start`'s (windows never cross local midnight) for `days` days.
    fn windows_from(&self, start: u64, days: u32) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = i64::try_from(start)
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .map(|ts| ts.to_zoned(self.zone.clone()).date())
            .and_then(|d| d.yesterday().ok());
        first
            .into_iter()
            .flat_map(move |first| (0..i64::from(days) + 1).map_while(move |n| first.checked_add(n.days()).ok()))
            .filter(|day| !self.holidays.contains(day))
            .flat_map(move |day| {
                self.week[weekday_index(day.weekday())].iter().filter_map(move |&(start_min, end_min)| {
                    let open = self.instant(day, start_min)?;
                    let close = match end_min {
                        MINUTES_PER_DAY => self.instant(day.tomorrow().ok()?, 0)?,
                        _ => self.instant(day, end_min)?,
                    };
                    // A window inside a skipped hour is empty.
                    (close > open).then_some((open, close))
                })
            })
    }

    /// Local `minute` of `day` in the calendar's zone, as UTC ms: in a gap (a DST change
    /// skips it) the change itself, in a fold (repeated) the earlier occurrence. Both keep
    /// instants in the order of the local times, so windows never overlap.
    fn instant(&self, day: Date, minute: u16) -> Option<u64> {
        let local: DateTime = day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        let ambiguous = self.zone.to_ambiguous_timestamp(local);
        let ts = match ambiguous.offset() {
            // Read with the later offset, a skipped time lands just before the change.
            AmbiguousOffset::Gap { after, .. } => {
                self.zone.following(after.to_timestamp(local).ok()?).next()?.timestamp()
            }
            _ => ambiguous.compatible().ok()?,
        };
        u64::try_from(ts.as_millisecond()).ok()
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.to_monday_zero_offset() as usize
}

impl Serialize for Calendar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Calendar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Calendar, D::Error> {
        Calendar::new(CalendarSpec::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A stopwatch in business time: how much a case has used of its targets, paused while it
/// waits on someone else. Stored on the case. When the calendar changes, [`rebase`] the
/// running stretch at the change on the old calendar, so time used before a change stays
/// measured as it was and only what follows is measured on the new one.
///
/// [`rebase`]: BusinessClock::rebase
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessClock {
    /// Business time used before `running_since` (or in total, while paused).
    pub consumed_ms: u64,
    /// When the clock last started or resumed; `None` while paused.
    pub running_since: Option<u64>,
}

impl BusinessClock {
    /// A clock started at `at`.
    pub fn started(at: u64) -> BusinessClock {
        BusinessClock { consumed_ms: 0, running_since: Some(at) }
    }

    /// Whether it is running (not paused).
    pub fn is_running(&self) -> bool {
        self.running_since.is_some()
    }

    /// Business time used by `now`.
    pub fn elapsed(&self, calendar: &Calendar, now: u64) -> u64 {
        self.consumed_ms + self.running_since.map_or(0, |since| calendar.between(since, now))
    }

    /// Stops the clock at `now`, keeping what it used. Returns whether it was running.
    pub fn pause(&mut self, calendar: &Calendar, now: u64) -> bool {
        let Some(since) = self.running_since.take() else { return false };
        self.consumed_ms += calendar.between(since, now);
        true
    }

    /// Measures the running stretch up to `at` on `old` (the calendar in force until `at`)
    /// and keeps running from `at`. A no-op for a paused clock or one started after `at`.
    pub fn rebase(&mut self, old: &Calendar, at: u64) {
        if let Some(since) = self.running_since.filter(|since| *since < at) {
            self.consumed_ms += old.between(since, at);
            self.running_since = Some(at);
        }
    }

    /// Starts it again at `now`. Returns whether it was paused.
    pub fn resume(&mut self, now: u64) -> bool {
        if self.running_since.is_some() {
            return false;
        }
        self.running_since = Some(now);
        true
    }

    /// When the clock reaches `target_ms` of business time: `None` while paused (a paused
    /// clock has no deadline) or when the calendar cannot reach it. A target already used up
    /// before the last resume is due at that resume.
    pub fn deadline(&self, calendar: &Calendar, target_ms: u64) -> Option<u64> {
        let since = self.running_since?;
        match target_ms.checked_sub(self.consumed_ms) {
            Some(left) => calendar.add(since, left),
            None => Some(since),
        }
    }
}

/// What a [`Deadline`] announces: the warning before it, or its breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alarm {
    /// A share of the target's business time is used (e.g. 80 %).
    Warning,
    /// The target was missed.
    Breach,
}

/// One service-level target on a case: its budget of business time, when it falls due and
/// when to warn (both `None` while the clock is paused), and what became of it. Met and
/// breached targets are settled: re-planning leaves them as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// Business time the target allows, in ms.
    pub target_ms: u64,
    /// When it falls due.
    pub due: Option<u64>,
    /// When its warning falls due.
    pub warn_at: Option<u64>,
    /// When it was met.
    pub met_at: Option<u64>,
    /// When its warning was given.
    pub warned_at: Option<u64>,
    /// When it was missed.
    pub breached_at: Option<u64>,
}

impl Deadline {
    /// A target of `target_ms` business time, not yet planned.
    pub fn new(target_ms: u64) -> Deadline {
        Deadline { target_ms, ..Deadline::default() }
    }

    /// Neither met nor breached.
    pub fn is_pending(&self) -> bool {
        self.met_at.is_none() && self.breached_at.is_none()
    }

    /// Recomputes when a pending target falls due and when to warn (`warn_percent` of its
    /// budget, 1-99), from `clock` on `calendar`. A warning already given stays as it was.
    pub fn plan(&mut self, clock: &BusinessClock, calendar: &Calendar, warn_percent: u64) {
        if !self.is_pending() {
            return;
        }
        self.due = clock.deadline(calendar, self.target_ms);
        if self.warned_at.is_none() {
            self.warn_at = clock.deadline(calendar, self.target_ms.saturating_mul(warn_percent.min(100)) / 100);
        }
    }

    /// Records that the target was met at `at` (if it was still pending). Returns whether it
    /// changed.
    pub fn meet(&mut self, at: u64) -> bool {
        let pending = self.is_pending();
        if pending {
            self.met_at = Some(at);
        }
        pending
    }

    /// Records what `alarm` announces if it still holds at `now`: the warning of a pending
    /// target whose warning time has come and that was not warned yet; the breach of a
    /// pending target past its deadline, which brings its warning with it if that has not
    /// come yet (both fell due before one check). Returns what to announce, in order: a
    /// target is warned once and breached once, however often this is called.
    pub fn fire(&mut self, alarm: Alarm, now: u64) -> Vec<Alarm> {
        let mut fired = Vec::new();
        if !self.is_pending() {
            return fired;
        }
        match alarm {
            Alarm::Warning if self.warned_at.is_none() && self.warn_at.is_some_and(|at| at <= now) => {
                self.warned_at = Some(now);
                fired.push(Alarm::Warning);
            }
            Alarm::Breach if self.due.is_some_and(|due| due <= now) => {
                if self.warned_at.is_none() {
                    self.warned_at = Some(now);
                    fired.push(Alarm::Warning);
                }
                self.breached_at = Some(now);
                fired.push(Alarm::Breach);
            }
            _ => {}
        }
        fired
    }

    /// The alarms still to come, with when: the warning (if not given) and the deadline, for
    /// a pending target whose clock runs.
    pub fn alarms(&self) -> Vec<(Alarm, u64)> {
        if !self.is_pending() {
            return Vec::new();
        }
        let warning = self.warn_at.filter(|_| self.warned_at.is_none()).map(|at| (Alarm::Warning, at));
        warning.into_iter().chain(self.due.map(|at| (Alarm::Breach, at))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const H: u64 = 60 * MIN;

    fn utc(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn iso(ms: u64) -> String {
        Timestamp::from_millisecond(ms as i64).unwrap().to_string()
    }

    fn calendar(zone: &str, weekdays: &[&str], holidays: &[&str]) -> Calendar {
        let d = || weekdays.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        Calendar::new(CalendarSpec {
            time_zone: zone.into(),
            hours: WeekHours { mon: d(), tue: d(), wed: d(), thu: d(), fri: d(), ..Default::default() },
            holidays: holidays.iter().map(|h| h.to_string()).collect(),
        })
        .unwrap()
    }

    fn berlin() -> Calendar {
        calendar("Europe/Berlin", &["09:00-17:00"], &[])
    }

    #[test]
    fn a_weekend_with_a_dst_change_uses_each_days_own_offset() {
        // E1: Fri 2025-03-28 16:30 CET + 4 h: 30 min on Friday, then Mon 09:00 CEST + 3 h 30.
        let cal = berlin();
        assert_eq!(iso(cal.add(utc("2025-03-28T15:30:00Z"), 4 * H).unwrap()), "2025-03-31T10:30:00Z");
        // Autumn mirror: Fri 2025-10-24 16:30 CEST, Mon 12:30 CET.
        assert_eq!(iso(cal.add(utc("2025-10-24T14:30:00Z"), 4 * H).unwrap()), "2025-10-27T11:30:00Z");
    }

    #[test]
    fn the_warning_at_80_percent_is_80_percent_of_business_time() {
        // E2: 192 of 240 min: 30 on Friday and 162 on Monday, Mon 11:42 CEST (not Sunday night).
        let clock = BusinessClock::started(utc("2025-03-28T15:30:00Z"));
        assert_eq!(iso(clock.deadline(&berlin(), 240 * MIN * 80 / 100).unwrap()), "2025-03-31T09:42:00Z");
    }

    #[test]
    fn a_pause_excludes_business_time_while_waiting() {
        // E3: 16 h target from Tue 2025-03-04 10:00 CET: Thu 10:00 without a pause.
        let cal = berlin();
        let opened = utc("2025-03-04T09:00:00Z");
        let mut clock = BusinessClock::started(opened);
        assert_eq!(iso(clock.deadline(&cal, 16 * H).unwrap()), "2025-03-06T09:00:00Z");
        // Waiting on the customer from Tue 11:00 to Thu 14:00: 1 h used, 15 h left from
        // Thu 14:00: Thu 3 h + Fri 8 h + Mon 09-13.
        assert!(clock.pause(&cal, utc("2025-03-04T10:00:00Z")));
        assert_eq!(clock.consumed_ms, H);
        assert_eq!(clock.deadline(&cal, 16 * H), None, "a paused clock has no deadline");
        assert!(!clock.pause(&cal, utc("2025-03-05T10:00:00Z")), "pausing twice is a no-op");
        assert!(clock.resume(utc("2025-03-06T13:00:00Z")));
        assert!(!clock.resume(utc("2025-03-06T14:00:00Z")), "resuming a running clock is a no-op");
        assert_eq!(iso(clock.deadline(&cal, 16 * H).unwrap()), "2025-03-10T12:00:00Z");
        assert_eq!(clock.elapsed(&cal, utc("2025-03-07T16:00:00Z")), H + 3 * H + 8 * H);
    }

    #[test]
    fn only_business_time_inside_a_pause_is_lost() {
        // E4: FR 4 h from Fri 2025-03-07 16:00, paused 16:30 to Mon 10:00: Mon 13:30 (12:00
        // without the pause).
        let cal = berlin();
        let mut clock = BusinessClock::started(utc("2025-03-07T15:00:00Z"));
        assert_eq!(iso(clock.deadline(&cal, 4 * H).unwrap()), "2025-03-10T11:00:00Z");
        clock.pause(&cal, utc("2025-03-07T15:30:00Z"));
        clock.resume(utc("2025-03-10T09:00:00Z"));
        assert_eq!(iso(clock.deadline(&cal, 4 * H).unwrap()), "2025-03-10T12:30:00Z");
    }

    #[test]
    fn holidays_close_the_whole_local_day() {
        // E5: Good Friday and Easter Monday: Thu 2025-04-17 16:00 CEST + 4 h = Tue 12:00 CEST.
        let cal = calendar("Europe/Berlin", &["09:00-17:00"], &["2025-04-18", "2025-04-21"]);
        assert_eq!(iso(cal.add(utc("2025-04-17T14:00:00Z"), 4 * H).unwrap()), "2025-04-22T10:00:00Z");
        assert_eq!(cal.between(utc("2025-04-17T14:00:00Z"), utc("2025-04-22T10:00:00Z")), 4 * H);
    }

    #[test]
    fn a_24_7_calendar_in_a_dst_zone_counts_real_hours() {
        // E6: the local day has 23 h in spring and 25 h in autumn.
        let all = || vec!["00:00-24:00".to_owned()];
        let cal = Calendar::new(CalendarSpec {
            time_zone: "Europe/Berlin".into(),
            hours: WeekHours { mon: all(), tue: all(), wed: all(), thu: all(), fri: all(), sat: all(), sun: all() },
            holidays: vec![],
        })
        .unwrap();
        assert!(!cal.is_always_open(), "only UTC takes the wall-time fast path");
        assert_eq!(iso(cal.add(utc("2025-03-29T23:30:00Z"), 4 * H).unwrap()), "2025-03-30T03:30:00Z");
        assert_eq!(iso(cal.add(utc("2025-10-25T22:30:00Z"), 4 * H).unwrap()), "2025-10-26T02:30:00Z");
        assert_eq!(cal.between(utc("2025-10-25T22:00:00Z"), utc("2025-10-26T23:00:00Z")), 25 * H);
    }

    #[test]
    fn a_team_across_the_ocean_follows_its_own_dst_dates() {
        // E7: New York 09-17, FR 60 min, mail at 10:00 Berlin. 2025-03-17: US on EDT, EU on
        // CET; 2025-03-31 both on summer time; the deadline is 14:00Z both times.
        let cal = calendar("America/New_York", &["09:00-17:00"], &[]);
        assert_eq!(iso(cal.add(utc("2025-03-17T09:00:00Z"), H).unwrap()), "2025-03-17T14:00:00Z");
        assert_eq!(iso(cal.add(utc("2025-03-31T08:00:00Z"), H).unwrap()), "2025-03-31T14:00:00Z");
        // Autumn week when they disagree: 2025-10-27 Berlin is back on CET, New York still EDT.
        assert_eq!(iso(cal.add(utc("2025-10-27T09:00:00Z"), H).unwrap()), "2025-10-27T14:00:00Z");
    }

    #[test]
    fn windows_in_a_skipped_or_repeated_hour() {
        let sunday = |windows: &[&str]| {
            Calendar::new(CalendarSpec {
                time_zone: "Europe/Berlin".into(),
                hours: WeekHours { sun: windows.iter().map(|w| w.to_string()).collect(), ..Default::default() },
                holidays: vec![],
            })
        };
        assert!(sunday(&["00:00-02:30", "02:15-02:45"]).is_err(), "overlapping local windows are refused");
        // On 2025-03-30 a window into the gap ends at the change (01:00Z), one inside it is
        // empty, and one from 03:00 starts there: they meet, never overlap.
        let partial = sunday(&["00:00-02:30", "02:40-02:50", "03:00-06:00"]).unwrap();
        assert_eq!(partial.between(utc("2025-03-29T00:00:00Z"), utc("2025-03-31T00:00:00Z")), 5 * H);
        assert_eq!(iso(partial.add(utc("2025-03-30T00:30:00Z"), H).unwrap()), "2025-03-30T01:30:00Z");
        // E8: 2025-03-30 (Sunday) 02:00-03:00 does not exist in Berlin: an empty window.
        let gap = Calendar::new(CalendarSpec {
            time_zone: "Europe/Berlin".into(),
            hours: WeekHours { sun: vec!["02:00-03:00".into(), "10:00-11:00".into()], ..Default::default() },
            holidays: vec![],
        })
        .unwrap();
        assert_eq!(gap.between(utc("2025-03-29T00:00:00Z"), utc("2025-03-31T00:00:00Z")), H);
        assert_eq!(iso(gap.add(utc("2025-03-29T00:00:00Z"), 30 * MIN).unwrap()), "2025-03-30T08:30:00Z");
        // 2025-10-26 00:00-04:00 lasts five real hours: 02:00-03:00 happens twice.
        let fold = Calendar::new(CalendarSpec {
            time_zone: "Europe/Berlin".into(),
            hours: WeekHours { sun: vec!["00:00-04:00".into()], ..Default::default() },
            holidays: vec![],
        })
        .unwrap();
        assert_eq!(fold.between(utc("2025-10-25T00:00:00Z"), utc("2025-10-27T00:00:00Z")), 5 * H);
    }

    #[test]
    fn outside_hours_the_clock_starts_at_the_next_opening_and_ends_on_a_window_end() {
        let cal = calendar("Europe/Berlin", &["09:00-12:00", "13:00-17:00"], &[]);
        // Saturday 11:00: Monday 09:00 + 1 h.
        assert_eq!(iso(cal.add(utc("2025-03-08T10:00:00Z"), H).unwrap()), "2025-03-10T09:00:00Z");
        // 07:00 on a Tuesday: 09:00 + 1 h; over lunch: 11:30 + 1 h = 13:30.
        assert_eq!(iso(cal.add(utc("2025-03-11T06:00:00Z"), H).unwrap()), "2025-03-11T09:00:00Z");
        assert_eq!(iso(cal.add(utc("2025-03-11T10:30:00Z"), H).unwrap()), "2025-03-11T12:30:00Z");
        // Exactly at 17:00 (end exclusive): the next morning. Exactly at 09:00: that morning.
        assert_eq!(iso(cal.add(utc("2025-03-11T16:00:00Z"), H).unwrap()), "2025-03-12T09:00:00Z");
        assert_eq!(iso(cal.add(utc("2025-03-11T08:00:00Z"), H).unwrap()), "2025-03-11T09:00:00Z");
        // A target landing on a window end is due at that end; a zero budget is due at once.
        assert_eq!(iso(cal.add(utc("2025-03-11T15:00:00Z"), H).unwrap()), "2025-03-11T16:00:00Z");
        assert_eq!(cal.add(utc("2025-03-08T10:00:00Z"), 0), Some(utc("2025-03-08T10:00:00Z")));
        assert!(cal.is_open(utc("2025-03-11T08:00:00Z")));
        assert!(!cal.is_open(utc("2025-03-11T11:30:00Z")), "lunch");
        assert!(!cal.is_open(utc("2025-03-08T10:00:00Z")), "Saturday");
    }

    #[test]
    fn a_calendar_change_keeps_time_used_before_it_as_measured() {
        // Open 24/7 until Monday 2025-03-10 12:00Z, then weekdays 09-17 Berlin.
        let (old, new) = (Calendar::always(), berlin());
        let mut clock = BusinessClock::started(utc("2025-03-08T12:00:00Z")); // Saturday
        clock.rebase(&old, utc("2025-03-10T12:00:00Z"));
        assert_eq!(clock.consumed_ms, 48 * H, "the weekend counted on the 24/7 calendar");
        // 4 h left from Mon 13:00 CET: 13:00-17:00.
        assert_eq!(iso(clock.deadline(&new, 52 * H).unwrap()), "2025-03-10T16:00:00Z");
        // Rebasing again at the same change, or a paused clock, changes nothing.
        let before = clock;
        clock.rebase(&old, utc("2025-03-10T12:00:00Z"));
        assert_eq!(clock, before);
        clock.pause(&new, utc("2025-03-10T13:00:00Z"));
        let paused = clock;
        clock.rebase(&old, utc("2025-03-11T12:00:00Z"));
        assert_eq!(clock, paused);
    }

    #[test]
    fn long_spans_are_counted_in_full() {
        // Twelve years of one hour each weekday, past the ten years `add` looks ahead:
        // 2020-2031 has 3,131 weekdays.
        let cal = calendar("UTC", &["09:00-10:00"], &[]);
        assert_eq!(cal.between(utc("2020-01-01T00:00:00Z"), utc("2032-01-01T00:00:00Z")), 3_131 * H);
    }

    #[test]
    fn a_deadline_warns_and_breaches_once_each_and_settled_ones_stay() {
        let cal = berlin();
        let mut clock = BusinessClock::started(utc("2025-03-28T15:30:00Z"));
        let mut first = Deadline::new(240 * MIN);
        first.plan(&clock, &cal, 80);
        assert_eq!(iso(first.warn_at.unwrap()), "2025-03-31T09:42:00Z", "E2");
        assert_eq!(iso(first.due.unwrap()), "2025-03-31T10:30:00Z", "E1");
        assert_eq!(first.alarms().len(), 2);
        let at = |t: &str| utc(t);
        assert_eq!(first.fire(Alarm::Warning, at("2025-03-31T09:41:00Z")), []);
        assert_eq!(first.fire(Alarm::Warning, at("2025-03-31T09:42:00Z")), [Alarm::Warning]);
        assert_eq!(first.fire(Alarm::Warning, at("2025-03-31T09:50:00Z")), [], "once");
        assert_eq!(first.alarms(), [(Alarm::Breach, at("2025-03-31T10:30:00Z"))]);
        assert_eq!(first.fire(Alarm::Breach, at("2025-03-31T10:30:00Z")), [Alarm::Breach]);
        assert_eq!(first.fire(Alarm::Breach, at("2025-03-31T10:31:00Z")), [], "once");
        assert!(!first.meet(at("2025-03-31T11:00:00Z")), "a breached target stays breached");
        // Paused: no deadline, no alarms; a met target keeps its deadline through re-plans.
        let mut second = Deadline::new(16 * H);
        second.plan(&clock, &cal, 80);
        clock.pause(&cal, at("2025-03-28T16:00:00Z"));
        second.plan(&clock, &cal, 80);
        assert_eq!((second.due, second.warn_at, second.alarms()), (None, None, vec![]));
        assert_eq!(second.fire(Alarm::Breach, u64::MAX), []);
        clock.resume(at("2025-03-31T07:00:00Z"));
        second.plan(&clock, &cal, 80);
        assert!(second.meet(at("2025-03-31T08:00:00Z")));
        let settled = second;
        clock.pause(&cal, at("2025-03-31T09:00:00Z"));
        second.plan(&clock, &cal, 80);
        assert_eq!(second, settled);
        // Both due before one check: the breach brings its warning.
        let mut late = Deadline::new(H);
        late.plan(&BusinessClock::started(0), &Calendar::always(), 80);
        assert_eq!(late.fire(Alarm::Breach, 2 * H), [Alarm::Warning, Alarm::Breach]);
        assert_eq!(late.fire(Alarm::Warning, 2 * H), []);
    }

    #[test]
    fn the_24_7_utc_calendar_is_wall_time() {
        let cal = Calendar::always();
        assert!(cal.is_always_open());
        assert_eq!(cal.add(1_000, 4 * H), Some(1_000 + 4 * H));
        assert_eq!(cal.between(1_000, 1_000 + 7 * H), 7 * H);
        let mut clock = BusinessClock::started(0);
        clock.pause(&cal, 2 * H);
        clock.resume(10 * H);
        assert_eq!(clock.deadline(&cal, 4 * H), Some(12 * H));
        assert_eq!(clock.deadline(&cal, H), Some(10 * H), "a target used up while paused is due on resume");
    }

    #[test]
    fn a_target_the_calendar_cannot_reach_has_no_deadline() {
        // One hour a week: a year of business minutes needs ~168 years.
        let sparse = Calendar::new(CalendarSpec {
            time_zone: "UTC".into(),
            hours: WeekHours { mon: vec!["09:00-10:00".into()], ..Default::default() },
            holidays: vec![],
        })
        .unwrap();
        assert_eq!(sparse.add(0, 8_760 * H), None);
        assert!(sparse.add(0, 500 * H).is_some());
    }

    #[test]
    fn bad_calendars_are_refused_with_the_field_at_fault() {
        let with = |hours: WeekHours, zone: &str, holidays: &[&str]| {
            Calendar::new(CalendarSpec {
                time_zone: zone.into(),
                hours,
                holidays: holidays.iter().map(|h| h.to_string()).collect(),
            })
        };
        let mon = |w: &[&str]| WeekHours { mon: w.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let field = |r: Result<Calendar, CalendarError>| r.unwrap_err().field;
        assert_eq!(field(with(mon(&["09:00-17:00"]), "Mars/Olympus", &[])), "time_zone");
        assert_eq!(field(with(mon(&["17:00-09:00"]), "UTC", &[])), "hours.mon[0]");
        assert_eq!(field(with(mon(&["09:00-12:00", "11:00-13:00"]), "UTC", &[])), "hours.mon");
        assert_eq!(field(with(mon(&["9-17"]), "UTC", &[])), "hours.mon[0]");
        assert_eq!(field(with(mon(&["09:00-24:01"]), "UTC", &[])), "hours.mon[0]");
        assert_eq!(field(with(mon(&["09:60-10:00"]), "UTC", &[])), "hours.mon[0]");
        assert_eq!(field(with(WeekHours::default(), "UTC", &[])), "hours");
        assert_eq!(field(with(mon(&["09:00-17:00"]), "UTC", &["2025-02-30"])), "holidays[0]");
        assert_eq!(field(with(mon(&["09:00-17:00"]), "UTC", &["2025-2-3"])), "holidays[0]");
        // Adjacent windows and 24:00 are fine; the spec round-trips through serde.
        let ok = with(mon(&["13:00-24:00", "09:00-13:00"]), "America/New_York", &["2025-12-25"]).unwrap();
        let back: Calendar = serde_json::from_value(serde_json::to_value(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
        assert!(serde_json::from_value::<Calendar>(serde_json::json!({ "time_zone": "UTC" })).is_err());
    }
}
