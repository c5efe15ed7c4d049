//! Pay periods. A schedule cuts the year into periods, each named by a label:
//! - monthly: `2026-04`, the calendar month;
//! - semi-monthly: `2026-04-H1` (the 1st to the 15th) and `2026-04-H2` (the 16th to the
//!   month's end);
//! - bi-weekly: 14 days named by their first day, `2026-04-06`; the tenant's anchor date
//!   says which days start one (every 14th day from it).
//!
//! Dates are days since 1970-01-01 inside, `YYYY-MM-DD` outside.

use crate::Schedule;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

pub fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// `YYYY-MM` as (year, month), years 1900 to 9999.
fn year_month(text: &str) -> Option<(i64, u32)> {
    let (y, m) = text.split_once('-')?;
    let (year, month) = (digits(y).filter(|_| y.len() == 4)?, digits(m).filter(|_| m.len() == 2)?);
    ((1900..=9999).contains(&year) && (1..=12).contains(&month)).then_some((i64::from(year), month))
}

/// A `YYYY-MM-DD` date with a day its month has, as days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i64> {
    if text.len() != 10 || text.as_bytes()[7] != b'-' {
        return None;
    }
    let (year, month) = year_month(&text[..7])?;
    let day = digits(&text[8..])?;
    (1..=days_in(year, month)).contains(&day).then(|| days_from_civil(year, month, day))
}

/// One pay period: its first and last day and its schedule. Ordered by first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    start: i64,
    end: i64,
    schedule: Schedule,
}

impl Period {
    /// A period from its label (see the module's documentation).
    pub fn parse(text: &str) -> Option<Period> {
        match text.len() {
            7 => {
                let (y, m) = year_month(text)?;
                Some(Period {
                    start: days_from_civil(y, m, 1),
                    end: days_from_civil(y, m, days_in(y, m)),
                    schedule: Schedule::Monthly,
                })
            }
            10 if text.ends_with("-H1") || text.ends_with("-H2") => {
                let (y, m) = year_month(&text[..7])?;
                let (from, to) = if text.ends_with("-H1") { (1, 15) } else { (16, days_in(y, m)) };
                Some(Period {
                    start: days_from_civil(y, m, from),
                    end: days_from_civil(y, m, to),
                    schedule: Schedule::SemiMonthly,
                })
            }
            10 => {
                let start = parse_date(text)?;
                Some(Period { start, end: start + 13, schedule: Schedule::BiWeekly })
            }
            _ => None,
        }
    }

    /// The period of `schedule` holding `day` (bi-weekly periods start every 14th day from
    /// `anchor`).
    pub fn containing(schedule: Schedule, day: i64, anchor: i64) -> Period {
        let (y, m, d) = civil_from_days(day);
        match schedule {
            Schedule::Monthly => {
                Period { start: days_from_civil(y, m, 1), end: days_from_civil(y, m, days_in(y, m)), schedule }
            }
            Schedule::SemiMonthly if d <= 15 => {
                Period { start: days_from_civil(y, m, 1), end: days_from_civil(y, m, 15), schedule }
            }
            Schedule::SemiMonthly => {
                Period { start: days_from_civil(y, m, 16), end: days_from_civil(y, m, days_in(y, m)), schedule }
            }
            Schedule::BiWeekly => {
                let start = anchor + (day - anchor).div_euclid(14) * 14;
                Period { start, end: start + 13, schedule }
            }
        }
    }

    /// Whether the period is one of its schedule's: a bi-weekly one starts a multiple of 14
    /// days from `anchor`.
    pub fn aligned(self, anchor: i64) -> bool {
        self.schedule != Schedule::BiWeekly || (self.start - anchor).rem_euclid(14) == 0
    }

    pub fn label(self) -> String {
        let (y, m, d) = civil_from_days(self.start);
        match self.schedule {
            Schedule::Monthly => format!("{y:04}-{m:02}"),
            Schedule::SemiMonthly => format!("{y:04}-{m:02}-{}", if d == 1 { "H1" } else { "H2" }),
            Schedule::BiWeekly => date_text(self.start),
        }
    }

    pub fn schedule(self) -> Schedule {
        self.schedule
    }

    pub fn first(self) -> String {
        date_text(self.start)
    }

    pub fn last(self) -> String {
        date_text(self.end)
    }

    pub fn start(self) -> i64 {
        self.start
    }

    pub fn end(self) -> i64 {
        self.end
    }

    /// The calendar year the period's pay counts in: that of its last day.
    pub fn year(self) -> i64 {
        civil_from_days(self.end).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_over_four_centuries() {
        for days in (-25_567..2_932_896).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert_eq!(parse_date(&date_text(days)), (y >= 1900 && y <= 9999).then_some(days));
        }
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(parse_date("2028-02-29").map(date_text).as_deref(), Some("2028-02-29"));
        assert_eq!(parse_date("2026-02-29"), None);
    }

    #[test]
    fn each_schedule_cuts_the_year_into_its_periods() {
        let april = Period::parse("2026-04").unwrap();
        assert_eq!(
            (april.first(), april.last(), april.label()),
            ("2026-04-01".into(), "2026-04-30".into(), "2026-04".into())
        );
        let h2 = Period::parse("2026-02-H2").unwrap();
        assert_eq!(
            (h2.first(), h2.last(), h2.schedule()),
            ("2026-02-16".into(), "2026-02-28".into(), Schedule::SemiMonthly)
        );
        let two_weeks = Period::parse("2026-04-06").unwrap();
        assert_eq!((two_weeks.last(), two_weeks.label()), ("2026-04-19".into(), "2026-04-06".into()));
        for bad in ["2026-13", "2026-04-H3", "2026-04-31", "26-04", "2026-4", "2026-04-H", ""] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        // Every day of 2026 is in exactly one period of each schedule, in order, without gaps.
        let anchor = parse_date("2024-01-01").unwrap();
        for schedule in [Schedule::Monthly, Schedule::SemiMonthly, Schedule::BiWeekly] {
            let first = parse_date("2026-01-01").unwrap();
            let mut p = Period::containing(schedule, first, anchor);
            let mut count = 1;
            while p.end < parse_date("2026-12-31").unwrap() {
                let next = Period::containing(schedule, p.end + 1, anchor);
                assert_eq!(next.start, p.end + 1, "{schedule:?} after {}", p.label());
                assert_eq!(Period::parse(&next.label()), Some(next));
                assert!(next.aligned(anchor));
                p = next;
                count += 1;
            }
            let expected = match schedule {
                Schedule::Monthly => 12,
                Schedule::SemiMonthly => 24,
                Schedule::BiWeekly => 27, // 2026 starts and ends inside one
            };
            assert_eq!(count, expected, "{schedule:?}");
        }
        assert!(!Period::parse("2026-04-07").unwrap().aligned(anchor));
        assert!(Period::parse("2026-04-06").unwrap().aligned(anchor));
    }
}
