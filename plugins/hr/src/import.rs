//! Employees from a spreadsheet, through the platform's bulk import: every bad row is
//! reported (line, field, reason) and nothing is saved unless every row is good.
//!
//! An import records people who work here already: it publishes no `hr.employee.hired`
//! (they are not new hires, and the helpdesk should not order laptops for them).

use crate::employee::{self, Date, Employee, Employment, WEEKDAYS, WorkingPattern};
use crate::{EMPLOYEE_NUMBERS, EMPLOYEES, check_relations, key, record_change};
use keel_sdk::{Error, ImportBatch, ImportRow, RowProblem};
use serde::Deserialize;
use serde_json::Value;

/// One row: a CSV's cells by header (all text), or a JSON Lines object (text or numbers).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    number: Value,
    legal_name: String,
    #[serde(default)]
    preferred_name: Value,
    email: String,
    title: String,
    #[serde(default)]
    department: Value,
    /// The manager's work email: someone employed already, or on an earlier line.
    #[serde(default)]
    manager_email: Value,
    #[serde(default)]
    location: Value,
    /// full-time (the default), part-time or contractor.
    #[serde(default)]
    employment: Value,
    /// For part-time: 1 to 99.
    #[serde(default)]
    percent: Value,
    /// `mon-fri`, or days by name: `mon,tue,thu`.
    #[serde(default)]
    days: Value,
    #[serde(default)]
    hours_per_day: Value,
    hire_date: String,
}

/// A cell's text: trimmed, empty as none; numbers as written.
fn cell(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `mon-fri` or `mon,tue,thu` as weekday names.
pub fn days(text: &str) -> Option<Vec<String>> {
    let position = |day: &str| WEEKDAYS.iter().position(|d| *d == day.trim().to_lowercase());
    if let Some((from, to)) = text.split_once('-') {
        let (from, to) = (position(from)?, position(to)?);
        return (from <= to).then(|| WEEKDAYS[from..=to].iter().map(|d| d.to_string()).collect());
    }
    text.split([',', ' ', ';']).filter(|d| !d.is_empty()).map(|d| position(d).map(|i| WEEKDAYS[i].to_owned())).collect()
}

/// Hours as whole minutes (`7.5` is 450).
fn minutes(text: &str) -> Option<u32> {
    let hours: f64 = text.parse().ok()?;
    let minutes = hours * 60.0;
    (minutes.is_finite() && minutes > 0.0 && (minutes - minutes.round()).abs() < 1e-6).then_some(minutes.round() as u32)
}

/// The fields a problem names are the file's columns.
fn column(field: &str) -> &str {
    match field {
        "manager" => "manager_email",
        "employment.percent" => "percent",
        "pattern.days" => "days",
        "pattern.hours_per_day" => "hours_per_day",
        other => other,
    }
}

pub fn employees(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
    let mut problems = Vec::new();
    // A number the sequence handed out while being moved past a number the file gave: the
    // next row without one takes it.
    let mut spare: Option<u64> = None;
    for row in &batch.rows {
        match employee_of(row) {
            Ok((mut record, given, manager_hired)) => {
                // Today's manager may have joined after their report: they must be employed
                // from whichever start is later, not on the report's first day.
                let on = manager_hired.map_or(record.hire_date, |m| m.max(record.hire_date));
                if let Err(e) = check_relations(&record, None, on) {
                    problems.push(row.problem(e.field().map(column), e.detail()));
                    continue;
                }
                if given {
                    if EMPLOYEES.get(&key(record.number))?.is_some() {
                        problems
                            .push(row.problem(Some("number"), format!("employee {} exists already", record.number)));
                        continue;
                    }
                    // Later hires must not be given this number: move the sequence past it.
                    let after = EMPLOYEE_NUMBERS.next_after(record.number)?;
                    spare = Some(after);
                } else {
                    record.number = match spare.take() {
                        Some(n) => n,
                        None => EMPLOYEE_NUMBERS.next()?,
                    };
                }
                EMPLOYEES.insert(&key(record.number), &record)?;
                record_change(
                    "hire",
                    record.hire_date,
                    &batch.caller.user_id,
                    &record,
                    &format!("import-{}", row.line),
                )?;
            }
            Err(problem) => problems.push(problem),
        }
    }
    Ok(problems)
}

/// Employee numbers fit the history's ten-digit keys.
const MAX_NUMBER: u64 = 9_999_999_999;

/// The record a row describes (number 0 when the file gives none), whether the file numbered
/// it, and when its manager was hired; or the row's problem.
fn employee_of(row: &ImportRow) -> Result<(Employee, bool, Option<Date>), RowProblem> {
    let input: Row = row.parse()?;
    let problem = |field: &str, reason: String| row.problem(Some(field), reason);
    let text = |field: &'static str, value: &str| {
        employee::text(field, value, employee::NAME_MAX).map_err(|e| row.problem(Some(e.field), e.reason))
    };
    let optional = |field: &'static str, value: &Value| cell(value).map(|v| text(field, &v)).transpose();
    let number = match cell(&input.number) {
        None => None,
        Some(n) => Some(
            n.parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_NUMBER).contains(n))
                .ok_or_else(|| problem("number", format!("`{n}` is not an employee number (1 to {MAX_NUMBER})")))?,
        ),
    };
    let employment = match (cell(&input.employment).map(|e| e.to_lowercase()).as_deref(), cell(&input.percent)) {
        (None | Some("full-time"), None) => Employment::FullTime,
        (Some("contractor"), None) => Employment::Contractor,
        (Some("part-time"), Some(p)) => Employment::PartTime {
            percent: p.parse().map_err(|_| problem("percent", format!("`{p}` is not a percentage")))?,
        },
        (Some("part-time"), None) => return Err(problem("percent", "part-time needs a percentage".into())),
        (_, Some(_)) => return Err(problem("percent", "only part-time takes a percentage".into())),
        (Some(other), None) => {
            return Err(problem("employment", format!("`{other}` is not full-time, part-time or contractor")));
        }
    };
    let mut pattern = WorkingPattern::default();
    if let Some(d) = cell(&input.days) {
        pattern.days = days(&d).ok_or_else(|| problem("days", format!("`{d}` is not mon-fri or days like mon,tue")))?;
    }
    if let Some(h) = cell(&input.hours_per_day) {
        pattern.minutes_per_day = minutes(&h)
            .ok_or_else(|| problem("hours_per_day", format!("`{h}` is not a number of hours in whole minutes")))?;
    }
    let hire_date = Date::parse(input.hire_date.trim())
        .ok_or_else(|| problem("hire_date", format!("`{}` is not a date (YYYY-MM-DD)", input.hire_date)))?;
    let (manager, manager_hired) = match cell(&input.manager_email) {
        None => (None, None),
        Some(email) => {
            let email = employee::email(&email).map_err(|e| problem("manager_email", e.reason))?;
            let found = EMPLOYEES
                .query()
                .eq("email", &email)
                .limit(1)
                .fetch()
                .map_err(|e| problem("manager_email", e.to_string()))?;
            let boss = found.items.into_iter().next().ok_or_else(|| {
                problem("manager_email", format!("{email} is not an employee (list managers before their reports)"))
            })?;
            (Some(boss.value.number), Some(boss.value.hire_date))
        }
    };
    let record = Employee {
        number: number.unwrap_or(0),
        legal_name: text("legal_name", &input.legal_name)?,
        preferred_name: optional("preferred_name", &input.preferred_name)?,
        email: employee::email(&input.email).map_err(|e| problem("email", e.reason))?,
        title: text("title", &input.title)?,
        department: optional("department", &input.department)?,
        manager,
        location: optional("location", &input.location)?,
        employment,
        pattern,
        hire_date,
        termination: None,
        user: None,
        custom: Default::default(),
    };
    employee::check(&record).map_err(|e| problem(column(e.field), e.reason))?;
    Ok((record, number.is_some(), manager_hired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_days_read_as_spreadsheets_write_them() {
        assert_eq!(days("mon-fri").unwrap(), ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(days("Mon, Wed;fri").unwrap(), ["mon", "wed", "fri"]);
        assert_eq!(days("sat-sun").unwrap(), ["sat", "sun"]);
        assert_eq!(days("fri-mon"), None);
        assert_eq!(days("mon,funday"), None);
        assert_eq!(minutes("7.5"), Some(450));
        assert_eq!(minutes("8"), Some(480));
        assert_eq!(minutes("7.33"), None);
        assert_eq!(minutes("0"), None);
    }
}
