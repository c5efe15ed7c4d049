//! People records: what an employee is, the rules a record must keep, and dates. Pure
//! functions, tested natively.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A calendar date, `YYYY-MM-DD`, ordered as dates (the text orders the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Parses `YYYY-MM-DD`, refusing days a month does not have (`2026-02-29`).
    pub fn parse(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| {
            let digits = text.get(range)?;
            digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse::<u32>().ok())?
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(1..=12).contains(&month) || year < 1900 {
            return None;
        }
        let date = Date { year: year as i32, month: month as u8, day: day as u8 };
        (day >= 1 && day <= u32::from(date.days_in_month())).then_some(date)
    }

    fn is_leap(year: i32) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    pub fn days_in_month(self) -> u8 {
        match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ if Date::is_leap(self.year) => 29,
            _ => 28,
        }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_from_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_epoch_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The date of a moment, in ms since the epoch (UTC).
    pub fn from_ms(ms: u64) -> Date {
        Date::from_epoch_days((ms / 86_400_000) as i64)
    }

    /// Monday 0 .. Sunday 6.
    pub fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday (3).
        (self.days_from_epoch() + 3).rem_euclid(7) as u8
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        let text = String::deserialize(deserializer)?;
        Date::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a date (YYYY-MM-DD)")))
    }
}

/// How someone is employed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Employment {
    FullTime,
    /// Part time, at `percent` of a full-time schedule (1-99).
    PartTime {
        percent: u8,
    },
    Contractor,
}

impl Employment {
    pub fn name(&self) -> &'static str {
        match self {
            Employment::FullTime => "full-time",
            Employment::PartTime { .. } => "part-time",
            Employment::Contractor => "contractor",
        }
    }
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Which weekdays someone works and how long a day is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingPattern {
    /// `mon` .. `sun`, each at most once.
    pub days: Vec<String>,
    /// Minutes in a working day (`7.5` hours is 450).
    pub minutes_per_day: u32,
}

impl Default for WorkingPattern {
    fn default() -> Self {
        WorkingPattern { days: WEEKDAYS[..5].iter().map(|d| d.to_string()).collect(), minutes_per_day: 480 }
    }
}

impl WorkingPattern {
    /// Whether `date` is one of the pattern's working weekdays.
    pub fn works_on(&self, date: Date) -> bool {
        let day = WEEKDAYS[date.weekday() as usize];
        self.days.iter().any(|d| d == day)
    }
}

/// Why someone left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The last day employed.
    pub date: Date,
    pub reason: String,
}

/// A person's record as HR keeps it (as of one effective date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Employee {
    /// From the tenant's `employee` sequence: never reused.
    pub number: u64,
    pub legal_name: String,
    pub preferred_name: Option<String>,
    /// Lower case, unique among the tenant's employees.
    pub email: String,
    pub title: String,
    pub department: Option<String>,
    /// The manager's employee number.
    pub manager: Option<u64>,
    pub location: Option<String>,
    pub employment: Employment,
    pub pattern: WorkingPattern,
    pub hire_date: Date,
    pub termination: Option<Termination>,
    /// The platform user id of this person, linking self-service calls to the record.
    #[serde(default)]
    pub user: Option<String>,
    /// The tenant's own fields (see `custom.rs`), by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Where an employee stands on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Hired, not started yet.
    Onboarding,
    Active,
    /// Active, and away on approved leave for the whole day.
    OnLeave,
    Terminated,
}

impl Employee {
    /// The name people use.
    pub fn display_name(&self) -> &str {
        self.preferred_name.as_deref().unwrap_or(&self.legal_name)
    }

    pub fn status_on(&self, date: Date) -> Status {
        match &self.termination {
            Some(t) if t.date < date => Status::Terminated,
            _ if self.hire_date > date => Status::Onboarding,
            _ => Status::Active,
        }
    }

    /// Employed on `date` (started, not yet left).
    pub fn is_active_on(&self, date: Date) -> bool {
        self.status_on(date) == Status::Active
    }
}

/// A record that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub code: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, code: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, code, reason: reason.into() }
}

pub const NAME_MAX: usize = 200;

/// Trimmed text of 1..=`max` characters without control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "required", format!("`{field}` must not be empty")));
    }
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "invalid-text",
            format!("`{field}` is 1-{max} characters without control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A work email, lower-cased: one `@`, a dotted domain, no spaces.
pub fn email(value: &str) -> Result<String, Invalid> {
    let value = value.trim().to_lowercase();
    let valid = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(value) } else { Err(invalid("email", "invalid-email", format!("`{value}` is not an email address"))) }
}

/// Checks the parts of a record that do not depend on other records.
pub fn check(e: &Employee) -> Result<(), Invalid> {
    if let Employment::PartTime { percent } = e.employment
        && !(1..=99).contains(&percent)
    {
        return Err(invalid("employment.percent", "invalid-percent", "a part-time percentage is 1 to 99"));
    }
    let mut seen = Vec::new();
    for day in &e.pattern.days {
        if !WEEKDAYS.contains(&day.as_str()) {
            return Err(invalid(
                "pattern.days",
                "invalid-weekday",
                format!("`{day}` is not one of {}", WEEKDAYS.join(", ")),
            ));
        }
        if seen.contains(&day) {
            return Err(invalid("pattern.days", "invalid-weekday", format!("`{day}` is listed twice")));
        }
        seen.push(day);
    }
    if e.pattern.days.is_empty() {
        return Err(invalid("pattern.days", "invalid-weekday", "a working pattern has at least one day"));
    }
    if !(1..=24 * 60).contains(&e.pattern.minutes_per_day) {
        return Err(invalid(
            "pattern.hours_per_day",
            "invalid-hours",
            "a working day is more than 0 and at most 24 hours",
        ));
    }
    if let Some(t) = &e.termination
        && t.date < e.hire_date
    {
        return Err(invalid(
            "date",
            "termination-before-hire",
            format!("the last day {} is before the hire date {}", t.date, e.hire_date),
        ));
    }
    Ok(())
}

/// The chain of managers from `start` upwards, given who manages whom; `Err` with the loop
/// (`7 → 3 → 7`) when following it comes back to `employee`.
/// Lookups may fail (`E`): the first failure is the answer.
pub fn manager_loop<E>(
    employee: u64,
    start: u64,
    mut manager_of: impl FnMut(u64) -> Result<Option<u64>, E>,
) -> Result<Result<(), Vec<u64>>, E> {
    let mut chain = vec![employee, start];
    let mut current = start;
    while current != employee {
        match manager_of(current)? {
            // An older loop above that does not pass through this employee: not this one's.
            Some(next) if chain.contains(&next) && next != employee => return Ok(Ok(())),
            Some(next) => {
                chain.push(next);
                current = next;
            }
            None => return Ok(Ok(())),
        }
        if chain.len() > 10_000 {
            return Ok(Ok(()));
        }
    }
    Ok(Err(chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    #[test]
    fn dates_parse_strictly_and_count_days_both_ways() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "26-01-01",
            "2026-1-01",
            "1899-12-31",
            "",
            "2026-+1-01",
            "+026-01-01",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(d("2024-02-29").to_string(), "2024-02-29");
        assert_eq!(d("2000-02-29").days_in_month(), 29);
        assert_eq!(d("1900-02-01").days_in_month(), 28);
        assert_eq!(d("1970-01-01").days_from_epoch(), 0);
        assert_eq!(d("2026-11-27").days_from_epoch(), 20_784);
        // Every day of 150 years survives the round trip and steps by one.
        let start = d("1950-01-01").days_from_epoch();
        for n in start..start + 365 * 150 {
            let date = Date::from_epoch_days(n);
            assert_eq!(date.days_from_epoch(), n);
            assert_eq!(Date::parse(&date.to_string()), Some(date));
        }
        assert_eq!(d("2026-11-27").weekday(), 4, "a Friday");
        assert_eq!(d("2024-02-29").weekday(), 3, "a Thursday");
        assert_eq!(Date::from_ms(1_795_784_133_249), d("2026-11-27"));
    }

    #[test]
    fn status_follows_hire_and_last_day() {
        let mut e = sample();
        e.hire_date = d("2026-03-01");
        assert_eq!(e.status_on(d("2026-02-28")), Status::Onboarding);
        assert_eq!(e.status_on(d("2026-03-01")), Status::Active);
        e.termination = Some(Termination { date: d("2026-06-30"), reason: "resigned".into() });
        assert_eq!(e.status_on(d("2026-06-30")), Status::Active, "the last day is still employed");
        assert_eq!(e.status_on(d("2026-07-01")), Status::Terminated);
    }

    #[test]
    fn records_are_checked_field_by_field() {
        let mut e = sample();
        assert_eq!(check(&e), Ok(()));
        e.employment = Employment::PartTime { percent: 100 };
        assert_eq!(check(&e).unwrap_err().field, "employment.percent");
        e.employment = Employment::PartTime { percent: 60 };
        e.pattern.days = vec!["mon".into(), "mon".into()];
        assert_eq!(check(&e).unwrap_err().code, "invalid-weekday");
        e.pattern.days = vec!["funday".into()];
        assert_eq!(check(&e).unwrap_err().field, "pattern.days");
        e.pattern = WorkingPattern::default();
        e.pattern.minutes_per_day = 0;
        assert_eq!(check(&e).unwrap_err().code, "invalid-hours");
        e.pattern = WorkingPattern::default();
        e.termination = Some(Termination { date: d("2020-01-01"), reason: "x".into() });
        assert_eq!(check(&e).unwrap_err().code, "termination-before-hire");
        assert_eq!(email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["ada", "ada@", "@x.com", "a@b", "a b@x.com", "a@@x.com", "a@x.com."] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(text("title", "  Analyst ", 20).unwrap(), "Analyst");
        assert_eq!(text("title", "   ", 20).unwrap_err().code, "required");
    }

    #[test]
    fn a_manager_chain_that_comes_back_is_a_loop_named_in_order() {
        // 3 reports to 5, 5 to 7; making 7 report to 3 closes 7 → 3 → 5 → 7.
        let managers = |n: u64| match n {
            3 => Some(5),
            5 => Some(7),
            _ => None,
        };
        let managers = |n: u64| Ok::<_, ()>(managers(n));
        assert_eq!(manager_loop(7, 3, managers), Ok(Err(vec![7, 3, 5, 7])));
        assert_eq!(manager_loop(9, 3, managers), Ok(Ok(())), "9 is not in 3's chain");
        assert_eq!(manager_loop(4, 4, |_| Ok::<_, ()>(None)), Ok(Err(vec![4, 4])), "one's own manager");
        assert_eq!(manager_loop(7, 3, |_| Err("storage down")), Err("storage down"), "a failed read is not 'no loop'");
    }

    pub fn sample() -> Employee {
        Employee {
            number: 1,
            legal_name: "Ada Lovelace".into(),
            preferred_name: None,
            email: "ada@example.com".into(),
            title: "Analyst".into(),
            department: Some("eng".into()),
            manager: None,
            location: None,
            employment: Employment::FullTime,
            pattern: WorkingPattern::default(),
            hire_date: d("2026-01-05"),
            termination: None,
            user: None,
            custom: Default::default(),
        }
    }
}
