//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) evaluated in a
//! time zone, as plugins declare them for their schedules.
//!
//! Syntax is Vixie cron's: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`,
//! month and weekday names (`jan`, `mon`), 0 or 7 for Sunday, and the `@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly` shorthands. When both day fields are restricted a day
//! matching either one fires, as in Vixie cron. Times are civil times in the schedule's zone:
//! a time skipped by a daylight-saving jump fires at the first instant after the gap, and a
//! repeated hour fires once.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Why an expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("a cron expression has 5 fields (minute hour day-of-month month day-of-week); found {0}")]
    FieldCount(usize),
    #[error("{field} field `{text}`: {reason}")]
    Field { field: &'static str, text: String, reason: String },
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Whether the day-of-month / day-of-week field was `*` (then only the other one counts).
    any_day_of_month: bool,
    any_day_of_week: bool,
    zone: TimeZone,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// How far ahead `next_after` looks before deciding an expression never fires (e.g. `0 0 31 2 *`).
const HORIZON_DAYS: u32 = 366 * 8;

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this number.
    names_from: u32,
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], names_from: 0 };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], names_from: 0 };
const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], names_from: 0 };
const MONTH: FieldSpec = FieldSpec { name: "month", min: 1, max: 12, names: &MONTHS, names_from: 1 };
// 7 is accepted for Sunday and folded onto 0.
const DAY_OF_WEEK: FieldSpec = FieldSpec { name: "day-of-week", min: 0, max: 7, names: &WEEKDAYS, names_from: 0 };

impl CronSchedule {
    /// Parses `expression` for the IANA time zone `zone` (e.g. `Europe/Paris`, `UTC`).
    pub fn parse(expression: &str, zone: &str) -> Result<CronSchedule, CronError> {
        let zone = TimeZone::get(zone).map_err(|_| CronError::TimeZone(zone.to_owned()))?;
        let expanded = match expression.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(CronError::FieldCount(fields.len()));
        };
        let mut days_of_week = parse_field(dow, &DAY_OF_WEEK)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        Ok(CronSchedule {
            minutes: parse_field(minute, &MINUTE)?,
            hours: parse_field(hour, &HOUR)?,
            days_of_month: parse_field(dom, &DAY_OF_MONTH)?,
            months: parse_field(month, &MONTH)?,
            days_of_week,
            any_day_of_month: dom == "*",
            any_day_of_week: dow == "*",
            zone,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first firing strictly after `after_ms` (ms since the Unix epoch), or `None` if
    /// there is none within the next eight years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        let start = after.to_zoned(self.zone.clone()).datetime();
        // Whole minutes: the minute `after` falls in is a candidate only if it is still to come.
        let first_minute = start.with().second(0).subsec_nanosecond(0).build().ok()?;
        let mut date = start.date();
        for day in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 || (day == 0 && hour < start.hour()) {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let civil = DateTime::from_parts(date, jiff::civil::Time::new(hour, minute, 0, 0).ok()?);
                        if civil < first_minute {
                            continue;
                        }
                        let Ok(zoned) = self.zone.to_ambiguous_zoned(civil).compatible() else { continue };
                        let at = zoned.timestamp().as_millisecond();
                        if at > after_ms {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let bad = |reason: String| CronError::Field { field: spec.name, text: text.to_owned(), reason };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| bad(format!("step `{step}` is not a number")))?;
                if step == 0 || step > spec.max {
                    return Err(bad(format!("step {step} is out of range")));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, spec).map_err(&bad)?, value(b, spec).map_err(&bad)?)
        } else {
            let v = value(range, spec).map_err(&bad)?;
            // `a/n` means from a to the end, stepping n.
            (v, if step > 1 { spec.max } else { v })
        };
        if low > high {
            return Err(bad(format!("range {low}-{high} runs backwards")));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let v = match spec.names.iter().position(|n| *n == lower) {
        Some(i) => i as u32 + spec.names_from,
        None => text.parse().map_err(|_| format!("`{text}` is not a number"))?,
    };
    if !(spec.min..=spec.max).contains(&v) {
        return Err(format!("{v} is outside {}-{}", spec.min, spec.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let at = CronSchedule::parse(expr, zone).unwrap().next_after(ms(after)).unwrap();
        Timestamp::from_millisecond(at).unwrap().to_string()
    }

    #[test]
    fn every_minute_fires_at_the_next_whole_minute() {
        assert_eq!(next("* * * * *", "UTC", "2026-03-01T10:15:30Z"), "2026-03-01T10:16:00Z");
        assert_eq!(next("* * * * *", "UTC", "2026-03-01T10:15:00Z"), "2026-03-01T10:16:00Z");
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        assert_eq!(next("*/15 * * * *", "UTC", "2026-03-01T10:16:00Z"), "2026-03-01T10:30:00Z");
        assert_eq!(next("0 9-17/4 * * *", "UTC", "2026-03-01T13:00:00Z"), "2026-03-01T17:00:00Z");
        assert_eq!(next("30 8 * * mon-fri", "UTC", "2026-02-27T09:00:00Z"), "2026-03-02T08:30:00Z"); // Fri → Mon
        assert_eq!(next("0 0 1 jan,jul *", "UTC", "2026-03-01T00:00:00Z"), "2026-07-01T00:00:00Z");
        assert_eq!(next("0 12 * * 7", "UTC", "2026-03-02T00:00:00Z"), "2026-03-08T12:00:00Z"); // 7 = Sunday
        assert_eq!(next("@hourly", "UTC", "2026-03-01T10:15:00Z"), "2026-03-01T11:00:00Z");
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday: from Monday 2026-03-02 the first is Friday the 6th.
        assert_eq!(next("0 0 13 * fri", "UTC", "2026-03-02T00:00:00Z"), "2026-03-06T00:00:00Z");
    }

    #[test]
    fn civil_times_follow_the_zone_across_daylight_saving() {
        // 09:00 in Paris is 08:00Z in winter and 07:00Z after the switch on 2026-03-29.
        assert_eq!(next("0 9 * * *", "Europe/Paris", "2026-03-28T12:00:00Z"), "2026-03-29T07:00:00Z");
        // 02:30 does not exist in Paris on 2026-03-29: it fires just after the gap, once.
        assert_eq!(next("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z"), "2026-03-29T01:30:00Z");
        // 02:30 happens twice on 2026-10-25: once is enough.
        let first = next("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z");
        assert_eq!(first, "2026-10-25T00:30:00Z");
        assert_eq!(next("30 2 * * *", "Europe/Paris", &first), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn impossible_dates_never_fire_and_bad_text_is_refused_by_field() {
        assert_eq!(CronSchedule::parse("0 0 31 2 *", "UTC").unwrap().next_after(0), None);
        assert!(matches!(CronSchedule::parse("* * * *", "UTC"), Err(CronError::FieldCount(4))));
        for (expr, field) in [
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * foo *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "minute"),
            ("5-1 * * * *", "minute"),
        ] {
            match CronSchedule::parse(expr, "UTC") {
                Err(CronError::Field { field: f, .. }) => assert_eq!(f, field, "{expr}"),
                other => panic!("{expr}: {other:?}"),
            }
        }
        assert!(matches!(CronSchedule::parse("* * * * *", "Mars/Olympus"), Err(CronError::TimeZone(_))));
    }
}
