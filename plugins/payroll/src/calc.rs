//! One employee's payslip for one period, from their pay, the tenant's components and tax,
//! their working time from HR, and the period's one-off inputs. Pure and exact.
//!
//! The rounding rule, applied once per line: each line is worked out exactly and rounded to
//! the currency's minor unit, half away from zero. Totals are sums of the rounded lines, so
//! gross − deductions − tax is the net to the cent, always.

use crate::formula::{self, Expr, GraphError};
use crate::money::{Decimal, MathError};
use crate::tax::TaxTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a component is on the payslip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Paid to the employee (salary, allowances, bonus).
    Earning,
    /// Taken from the employee's pay (pension, loan repayment).
    Deduction,
    /// Paid by the business on top of pay (employer pension, social charges): a cost, not
    /// on the net.
    Employer,
}

/// How a component's amount is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Amount {
    Fixed(Decimal),
    /// A formula over inputs and other components (see [`INPUTS`]).
    Formula(String),
}

/// A salary component the tenant defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub kind: Kind,
    /// Deductions: taken before tax (reduces taxable pay) or after.
    pub pre_tax: bool,
    pub amount: Amount,
    /// Scaled by the share of the period's working days the employee was employed.
    pub prorated: bool,
    /// Reduced by unpaid leave, in working days.
    pub unpaid_leave: bool,
}

/// The names a formula may read besides components.
pub const INPUTS: [&str; 9] = [
    "salary",
    "rate",
    "hours",
    "period_salary",
    "working_days",
    "period_working_days",
    "unpaid_days",
    "employed_days",
    "period_days",
];
/// Totals a deduction or employer contribution may read.
pub const TOTALS: [&str; 3] = ["gross", "taxable", "tax"];
/// The base pay's code: salary for the period, or hours × rate.
pub const BASE: &str = "base";

/// How someone is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pay {
    /// A year's salary.
    Salary(Decimal),
    /// Per hour worked.
    Hourly(Decimal),
}

/// The employee's time in the period, from HR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Time {
    pub period_days: u32,
    pub employed_days: u32,
    pub period_working_days: u32,
    pub working_days: u32,
    /// Approved unpaid leave on working days, in thousandths of a day.
    pub unpaid_day_thousandths: u64,
}

/// A one-off for this period (a bonus, a reimbursement, an advance recovered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneOff {
    pub name: String,
    pub kind: Kind,
    pub amount: Decimal,
    /// Earnings: taxed (a bonus, the default) or not (a reimbursement of expenses).
    #[serde(default = "taxed")]
    pub taxable: bool,
}

fn taxed() -> bool {
    true
}

/// A component assigned to an employee, optionally with their own fixed amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    pub code: String,
    pub amount: Option<Decimal>,
}

#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub pay: Pay,
    pub exponent: u32,
    pub periods_per_year: u32,
    pub components: &'a BTreeMap<String, Component>,
    pub assigned: &'a [Assigned],
    pub time: Time,
    pub hours: Option<Decimal>,
    pub one_offs: &'a [OneOff],
    /// Differences owed for earlier, settled periods (see `retro.rs`), already rounded.
    pub arrears: &'a [Arrear],
    pub tax: &'a TaxTable,
}

/// A line owed for an earlier period: what a recalculation of it with today's pay says,
/// less what was paid for it. Negative when pay was cut back to a date already paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrear {
    pub line: Line,
    /// A deduction taken before tax (as the component it is the arrears of).
    pub pre_tax: bool,
}

/// What a line of a payslip is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineKind {
    Earning,
    Deduction,
    Tax,
    Employer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub code: String,
    pub name: String,
    pub kind: LineKind,
    /// In minor units, rounded once.
    pub amount: i64,
    /// How it was worked out, for people ("4166.666666667 × 15/20 working days").
    pub basis: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub gross: i64,
    pub taxable: i64,
    pub deductions: i64,
    pub tax: i64,
    pub net: i64,
    pub employer: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payslip {
    pub lines: Vec<Line>,
    pub totals: Totals,
}

/// Why a payslip cannot be worked out (reported for the employee; others go on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalcError {
    pub code: &'static str,
    pub detail: String,
}

fn fail(code: &'static str, detail: impl Into<String>) -> CalcError {
    CalcError { code, detail: detail.into() }
}

fn math(what: &str) -> impl Fn(MathError) -> CalcError + '_ {
    move |e| fail("calculation-failed", format!("{what}: {e}"))
}

/// What each component reads, and the totals as nodes of the same graph (so an earning
/// reading `gross` is a cycle, named like any other).
fn graph(
    components: &BTreeMap<String, Component>,
    parsed: &BTreeMap<String, Expr>,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut nodes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    nodes.insert(BASE.to_owned(), BTreeMap::new());
    for (code, c) in components {
        nodes.insert(code.clone(), parsed.get(code).map(formula::names).unwrap_or_default());
        let total = match (c.kind, c.pre_tax) {
            (Kind::Earning, _) => Some("gross"),
            (Kind::Deduction, true) => Some("taxable"),
            _ => None,
        };
        if let Some(total) = total {
            nodes.entry(total.to_owned()).or_default().insert(code.clone(), 0);
        }
    }
    nodes.entry("gross".to_owned()).or_default().insert(BASE.to_owned(), 0);
    nodes.entry("taxable".to_owned()).or_default().insert("gross".to_owned(), 0);
    nodes.entry("tax".to_owned()).or_default().insert("taxable".to_owned(), 0);
    nodes
}

/// Why a set of components cannot be saved: the component at fault, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub component: String,
    pub code: &'static str,
    pub detail: String,
    /// Where in its formula, when it is about the formula.
    pub position: Option<usize>,
}

/// Checks a tenant's components together: every formula parses, reads only inputs, totals
/// and components, and nothing reads itself through others.
pub fn check(components: &BTreeMap<String, Component>) -> Result<Vec<String>, Invalid> {
    let mut parsed = BTreeMap::new();
    for (code, c) in components {
        if code == BASE || INPUTS.contains(&code.as_str()) || TOTALS.contains(&code.as_str()) || code == "net" {
            return Err(Invalid {
                component: code.clone(),
                code: "reserved-name",
                detail: format!("`{code}` is a name formulas already use"),
                position: None,
            });
        }
        if let Amount::Formula(text) = &c.amount {
            let expr = formula::parse(text).map_err(|e| Invalid {
                component: code.clone(),
                code: "invalid-formula",
                detail: e.to_string(),
                position: Some(e.position),
            })?;
            parsed.insert(code.clone(), expr);
        }
    }
    let inputs: BTreeSet<&str> = INPUTS.iter().copied().collect();
    formula::order(&graph(components, &parsed), &inputs).map_err(|e| match e {
        GraphError::Unknown { name, unknown, position } => Invalid {
            component: name,
            code: "unknown-name",
            detail: format!(
                "`{unknown}` is not a component, nor one of {}, {} (at character {})",
                INPUTS.join(", "),
                TOTALS.join(", "),
                position + 1
            ),
            position: Some(position),
        },
        GraphError::Cycle(cycle) => Invalid {
            component: cycle[0].clone(),
            code: "formula-cycle",
            detail: format!("these read each other: {}", cycle.join(" → ")),
            position: None,
        },
    })
}

/// The largest line: a trillion in major units. Far above any pay, and small enough that no
/// sum of lines can overflow.
pub const MAX_LINE: i64 = 1_000_000_000_000;

/// Running totals in minor units, every addition checked.
#[derive(Default)]
struct Sums {
    gross: i64,
    pre_tax: i64,
    not_taxed: i64,
    deductions: i64,
    employer: i64,
}

fn add(total: &mut i64, amount: i64) -> Result<(), CalcError> {
    *total =
        total.checked_add(amount).ok_or_else(|| fail("calculation-failed", "the payslip's totals are too large"))?;
    Ok(())
}

/// Works out one payslip.
pub fn calculate(input: &Input<'_>) -> Result<Payslip, CalcError> {
    let order = check(input.components).map_err(|e| fail(e.code, format!("`{}`: {}", e.component, e.detail)))?;
    if let Some(a) = input.assigned.iter().find(|a| !input.components.contains_key(&a.code)) {
        return Err(fail(
            "unknown-component",
            format!("the compensation names `{}`, which is not a component", a.code),
        ));
    }
    let t = input.time;
    let exponent = input.exponent;
    let periods = Decimal::from_int(i64::from(input.periods_per_year));
    let (salary, rate) = match input.pay {
        Pay::Salary(s) => (s, Decimal::ZERO),
        Pay::Hourly(r) => (Decimal::ZERO, r),
    };
    let hours = match (input.pay, input.hours) {
        (Pay::Hourly(_), None) => {
            return Err(fail("missing-hours", "an hourly employee's hours for the period are not recorded"));
        }
        (_, h) => h.unwrap_or_default(),
    };
    let unpaid_days = Decimal::from_minor(t.unpaid_day_thousandths as i64, 3);
    let int = |n: u32| Decimal::from_int(i64::from(n));
    let mut values: BTreeMap<String, Decimal> = BTreeMap::from([
        ("salary".to_owned(), salary),
        ("rate".to_owned(), rate),
        ("hours".to_owned(), hours),
        ("period_salary".to_owned(), salary.div(periods).map_err(math("period salary"))?),
        ("working_days".to_owned(), int(t.working_days)),
        ("period_working_days".to_owned(), int(t.period_working_days)),
        ("unpaid_days".to_owned(), unpaid_days),
        ("employed_days".to_owned(), int(t.employed_days)),
        ("period_days".to_owned(), int(t.period_days)),
    ]);
    // The share of the period a component pays for, as days paid over working days (both in
    // thousandths of a day), so a prorated line is one division, rounded once.
    let period_days = i128::from(t.period_working_days) * 1000;
    let share = |prorated: bool, unpaid: bool| -> (i128, i128, String) {
        if period_days == 0 {
            return (1, 1, String::new());
        }
        let mut days = if prorated { i128::from(t.working_days) * 1000 } else { period_days };
        if unpaid {
            days = (days - i128::from(t.unpaid_day_thousandths)).max(0);
        }
        if days == period_days {
            return (1, 1, String::new());
        }
        let shown = Decimal::from_minor(days as i64, 3);
        (days, period_days, format!(" × {shown}/{} working days", t.period_working_days))
    };
    let line_amount = |code: &str, exact: Decimal, num: i128, den: i128| -> Result<i64, CalcError> {
        let amount = exact.scaled_to_minor(num, den, exponent).map_err(math(code))?;
        if amount.abs() > MAX_LINE.saturating_mul(10i64.pow(exponent)) {
            return Err(fail("calculation-failed", format!("`{code}` comes to more than {MAX_LINE}")));
        }
        Ok(amount)
    };
    let as_decimal = |minor: i64| Decimal::from_minor(minor, exponent);
    let assigned: BTreeMap<&str, &Assigned> = input.assigned.iter().map(|a| (a.code.as_str(), a)).collect();
    let mut lines = Vec::new();
    let mut sums = Sums::default();
    let mut tax = 0i64;
    // One-off earnings count towards gross before anything reads it.
    let mut one_off_lines = Vec::new();
    for (i, o) in input.one_offs.iter().enumerate() {
        let code = format!("one-off-{}", i + 1);
        let amount = line_amount(&code, o.amount, 1, 1)?;
        one_off_lines.push(one_off_line(&mut sums, code, o, amount, "one-off")?);
    }
    // Arrears count like one-offs: before anything reads gross. Earnings are taxed in this
    // period, as pay is when it is paid.
    for a in input.arrears {
        let amount = a.line.amount;
        match a.line.kind {
            LineKind::Earning => add(&mut sums.gross, amount)?,
            LineKind::Deduction => {
                add(&mut sums.deductions, amount)?;
                if a.pre_tax {
                    add(&mut sums.pre_tax, amount)?;
                }
            }
            LineKind::Employer => add(&mut sums.employer, amount)?,
            LineKind::Tax => return Err(fail("calculation-failed", "tax is never carried as arrears")),
        }
        one_off_lines.push(a.line.clone());
    }
    let taxable = |sums: &Sums| sums.gross - sums.pre_tax - sums.not_taxed;
    for name in order {
        match name.as_str() {
            BASE => {
                let (exact, num, den, basis, label) = match input.pay {
                    Pay::Salary(s) => {
                        let (num, den, why) = share(true, true);
                        // salary × days / (periods × working days): one division.
                        let den = den * i128::from(input.periods_per_year);
                        (s, num, den, format!("{s} / {}{why}", input.periods_per_year), "Salary")
                    }
                    Pay::Hourly(r) => {
                        (r.mul(hours).map_err(math("base"))?, 1, 1, format!("{hours} h × {r}"), "Hours worked")
                    }
                };
                let amount = line_amount(BASE, exact, num, den)?;
                add(&mut sums.gross, amount)?;
                values.insert(BASE.to_owned(), as_decimal(amount));
                lines.push(Line { code: BASE.into(), name: label.into(), kind: LineKind::Earning, amount, basis });
            }
            "gross" => {
                values.insert(name.clone(), as_decimal(sums.gross));
            }
            "taxable" => {
                values.insert(name.clone(), as_decimal(taxable(&sums)));
            }
            "tax" => {
                let exact =
                    input.tax.period(as_decimal(taxable(&sums)), input.periods_per_year).map_err(math("tax"))?;
                tax = line_amount("tax", exact.max(Decimal::ZERO), 1, 1)?;
                values.insert(name.clone(), as_decimal(tax));
            }
            code => {
                let (Some(c), Some(a)) = (input.components.get(code), assigned.get(code)) else {
                    // Defined but not this employee's: reads as 0, no line.
                    values.insert(code.to_owned(), Decimal::ZERO);
                    continue;
                };
                let (exact, mut basis) = match (&c.amount, a.amount) {
                    (_, Some(own)) => (own, own.to_string()),
                    (Amount::Fixed(n), None) => (*n, n.to_string()),
                    (Amount::Formula(text), None) => {
                        let expr = formula::parse(text).map_err(|e| fail("invalid-formula", e.to_string()))?;
                        let v = formula::eval(&expr, &|n| values.get(n).copied())
                            .map_err(|e| fail("calculation-failed", format!("`{code}`: {e}")))?;
                        (v, text.clone())
                    }
                };
                let (num, den, why) = share(c.prorated, c.unpaid_leave);
                basis.push_str(&why);
                let amount = line_amount(code, exact, num, den)?;
                if amount < 0 {
                    return Err(fail(
                        "negative-amount",
                        format!("`{code}` comes to {} (a {:?} is never negative)", as_decimal(amount), c.kind),
                    ));
                }
                let kind = match c.kind {
                    Kind::Earning => {
                        add(&mut sums.gross, amount)?;
                        LineKind::Earning
                    }
                    Kind::Deduction => {
                        add(&mut sums.deductions, amount)?;
                        if c.pre_tax {
                            add(&mut sums.pre_tax, amount)?;
                        }
                        LineKind::Deduction
                    }
                    Kind::Employer => {
                        add(&mut sums.employer, amount)?;
                        LineKind::Employer
                    }
                };
                values.insert(code.to_owned(), as_decimal(amount));
                lines.push(Line { code: code.to_owned(), name: c.name.clone(), kind, amount, basis });
            }
        }
    }
    lines.extend(one_off_lines);
    let yearly = as_decimal(taxable(&sums)).mul(periods).map_err(math("tax"))?;
    lines.push(Line {
        code: "tax".into(),
        name: "Income tax".into(),
        kind: LineKind::Tax,
        amount: tax,
        basis: format!("{yearly} a year through the brackets, / {}", input.periods_per_year),
    });
    // Shown in payslip order: earnings, deductions, tax, then what the business adds.
    lines.sort_by_key(|l| match l.kind {
        LineKind::Earning => 0,
        LineKind::Deduction => 1,
        LineKind::Tax => 2,
        LineKind::Employer => 3,
    });
    let net = sums.gross - sums.deductions - tax;
    Ok(Payslip {
        lines,
        totals: Totals {
            gross: sums.gross,
            taxable: taxable(&sums),
            deductions: sums.deductions,
            tax,
            net,
            employer: sums.employer,
        },
    })
}

/// A one-off's line, counted in the payslip's sums: earnings in gross (and, when not taxed,
/// out of taxable pay), deductions after tax, employer amounts beside.
fn one_off_line(sums: &mut Sums, code: String, o: &OneOff, amount: i64, label: &str) -> Result<Line, CalcError> {
    let kind = match o.kind {
        Kind::Earning => {
            add(&mut sums.gross, amount)?;
            if !o.taxable {
                add(&mut sums.not_taxed, amount)?;
            }
            LineKind::Earning
        }
        Kind::Deduction => {
            add(&mut sums.deductions, amount)?;
            LineKind::Deduction
        }
        Kind::Employer => {
            add(&mut sums.employer, amount)?;
            LineKind::Employer
        }
    };
    let basis = if o.kind == Kind::Earning && !o.taxable { format!("{label}, not taxed") } else { label.to_owned() };
    Ok(Line { code, name: o.name.clone(), kind, amount, basis })
}

/// A payslip of an off-cycle run: the one-offs only (a bonus, a correction), no salary or
/// components. Its tax is what the one-offs add to a year's tax on top of the regular pay
/// (`regular`, a year's taxable income): tax(regular + taxable one-offs) − tax(regular),
/// rounded once, so a bonus is taxed at the employee's marginal rate, not as if it were
/// their pay every period.
pub fn off_cycle(one_offs: &[OneOff], regular: Decimal, tax: &TaxTable, exponent: u32) -> Result<Payslip, CalcError> {
    let math = |what: &'static str| move |e: MathError| fail("calculation-failed", format!("{what}: {e:?}"));
    let mut sums = Sums::default();
    let mut lines = Vec::new();
    for (i, o) in one_offs.iter().enumerate() {
        let code = format!("one-off-{}", i + 1);
        let amount = o.amount.scaled_to_minor(1, 1, exponent).map_err(math("one-off"))?;
        lines.push(one_off_line(&mut sums, code, o, amount, "off-cycle")?);
    }
    let taxable = sums.gross - sums.not_taxed;
    let extra = Decimal::from_minor(taxable, exponent);
    let with = tax.annual(regular.add(extra).map_err(math("tax"))?).map_err(math("tax"))?;
    let without = tax.annual(regular).map_err(math("tax"))?;
    let owed = with.sub(without).map_err(math("tax"))?.max(Decimal::ZERO);
    let tax_amount = owed.scaled_to_minor(1, 1, exponent).map_err(math("tax"))?;
    lines.push(Line {
        code: "tax".into(),
        name: "Income tax".into(),
        kind: LineKind::Tax,
        amount: tax_amount,
        basis: format!("tax on {} a year less tax on {regular}", regular.add(extra).map_err(math("tax"))?),
    });
    lines.sort_by_key(|l| match l.kind {
        LineKind::Earning => 0,
        LineKind::Deduction => 1,
        LineKind::Tax => 2,
        LineKind::Employer => 3,
    });
    Ok(Payslip {
        lines,
        totals: Totals {
            gross: sums.gross,
            taxable,
            deductions: sums.deductions,
            tax: tax_amount,
            net: sums.gross - sums.deductions - tax_amount,
            employer: sums.employer,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tax::Bracket;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn components() -> BTreeMap<String, Component> {
        let c = |name: &str, kind, pre_tax, amount, prorated| Component {
            name: name.into(),
            kind,
            pre_tax,
            amount,
            prorated,
            unpaid_leave: prorated,
        };
        BTreeMap::from([
            ("pension".into(), c("Pension", Kind::Deduction, true, Amount::Formula("base * 0.05".into()), false)),
            (
                "employer_pension".into(),
                c("Employer pension", Kind::Employer, false, Amount::Formula("base * 0.03".into()), false),
            ),
            ("meal".into(), c("Meal allowance", Kind::Earning, false, Amount::Fixed(d("100")), true)),
            (
                "loan".into(),
                c("Loan repayment", Kind::Deduction, false, Amount::Formula("min(50, gross - tax)".into()), false),
            ),
        ])
    }

    fn tax() -> TaxTable {
        TaxTable {
            allowance: d("12000"),
            brackets: vec![
                Bracket { up_to: Some(d("50000")), rate: d("0.2") },
                Bracket { up_to: None, rate: d("0.4") },
            ],
        }
    }

    fn assigned(codes: &[&str]) -> Vec<Assigned> {
        codes.iter().map(|c| Assigned { code: c.to_string(), amount: None }).collect()
    }

    fn slip(pay: Pay, time: Time, hours: Option<&str>, codes: &[&str], one_offs: &[OneOff]) -> Payslip {
        let (components, tax, assigned) = (components(), tax(), assigned(codes));
        calculate(&Input {
            pay,
            exponent: 2,
            periods_per_year: 12,
            components: &components,
            assigned: &assigned,
            time,
            hours: hours.map(d),
            one_offs,
            arrears: &[],
            tax: &tax,
        })
        .unwrap()
    }

    fn lines(p: &Payslip) -> Vec<(&str, i64)> {
        p.lines.iter().map(|l| (l.code.as_str(), l.amount)).collect()
    }

    fn month(working: u32, unpaid_thousandths: u64) -> Time {
        Time {
            period_days: 31,
            employed_days: 31,
            period_working_days: 22,
            working_days: working,
            unpaid_day_thousandths: unpaid_thousandths,
        }
    }

    #[test]
    fn a_worked_month_to_the_cent() {
        // 60,000 a year: 5,000.00; meal 100.00; pension 5 % of base before tax; tax on
        // 4,850 × 12 = 58,200 − 12,000 = 46,200 at 20 % = 9,240 a year, 770.00 a month.
        let full = slip(Pay::Salary(d("60000")), month(22, 0), None, &["pension", "employer_pension", "meal"], &[]);
        assert_eq!(
            lines(&full),
            [("base", 500_000), ("meal", 10_000), ("pension", 25_000), ("tax", 77_000), ("employer_pension", 15_000)]
        );
        assert_eq!(
            full.totals,
            Totals {
                gross: 510_000,
                taxable: 485_000,
                deductions: 25_000,
                tax: 77_000,
                net: 408_000,
                employer: 15_000
            }
        );

        // Two days of unpaid leave: 20 of 22 days paid. 5,000 × 20/22 = 4,545.4545... → 4,545.45;
        // meal 90.91; pension 5 % of 4,545.45 = 227.2725 → 227.27; taxable 4,409.09 →
        // 52,909.08 a year → 8,181.816 tax → 681.818 a month → 681.82.
        let unpaid = slip(Pay::Salary(d("60000")), month(22, 2000), None, &["pension", "meal"], &[]);
        assert_eq!(lines(&unpaid), [("base", 454_545), ("meal", 9_091), ("pension", 22_727), ("tax", 68_182)]);
        assert_eq!(unpaid.totals.net, 454_545 + 9_091 - 22_727 - 68_182);
        assert!(unpaid.lines[0].basis.ends_with("× 20/22 working days"), "{}", unpaid.lines[0].basis);

        // Hired mid-month: 11 of 22 working days.
        let joiner = slip(Pay::Salary(d("60000")), month(11, 0), None, &["pension", "meal"], &[]);
        assert_eq!(lines(&joiner), [("base", 250_000), ("meal", 5_000), ("pension", 12_500), ("tax", 28_500)]);

        // Hourly: 120 h at 25.00; a bonus taxed, a reimbursement not; a loan repaid after tax.
        let bonus = OneOff { name: "Bonus".into(), kind: Kind::Earning, amount: d("500"), taxable: true };
        let expenses = OneOff { name: "Train tickets".into(), kind: Kind::Earning, amount: d("80.5"), taxable: false };
        let hourly = slip(Pay::Hourly(d("25")), month(22, 0), Some("120"), &["pension", "loan"], &[bonus, expenses]);
        // Gross 3,000 + 500 + 80.50 = 3,580.50; pension 150.00; taxable 3,350.00 → 40,200 a
        // year → 5,640 tax → 470.00; loan min(50, 3,580.50 − 470) = 50.00.
        assert_eq!(
            hourly.totals,
            Totals { gross: 358_050, taxable: 335_000, deductions: 20_000, tax: 47_000, net: 291_050, employer: 0 }
        );
        assert_eq!(
            lines(&hourly),
            [
                ("base", 300_000),
                ("one-off-1", 50_000),
                ("one-off-2", 8_050),
                ("pension", 15_000),
                ("loan", 5_000),
                ("tax", 47_000)
            ]
        );
    }

    #[test]
    fn an_off_cycle_bonus_is_taxed_at_the_marginal_rate_on_top_of_the_year() {
        // 45,000 a year, 33,000 of it taxable at 20 % after the allowance: a 10,000 bonus
        // takes the year to 55,000, 43,000 taxable: still 20 %, so 2,000.00. On 60,000 a year
        // (48,000 taxable) it crosses into the 40 % band: 2,000 at 20 % and 8,000 at 40 %,
        // 3,600.00.
        let bonus = OneOff { name: "Q1 bonus".into(), kind: Kind::Earning, amount: d("10000"), taxable: true };
        let expenses = OneOff { name: "Travel".into(), kind: Kind::Earning, amount: d("120.40"), taxable: false };
        let low = off_cycle(&[bonus.clone(), expenses.clone()], d("45000"), &tax(), 2).unwrap();
        assert_eq!(lines(&low), [("one-off-1", 1_000_000), ("one-off-2", 12_040), ("tax", 200_000)]);
        assert_eq!(low.totals.net, 1_000_000 + 12_040 - 200_000);
        let high = off_cycle(&[bonus], d("60000"), &tax(), 2).unwrap();
        assert_eq!(high.totals.tax, 360_000);
        // Straddling the band: 5,000 more on 59,000 (47,000 taxable): 3,000 at 20 %, 2,000 at 40 %.
        let split = OneOff { name: "Bonus".into(), kind: Kind::Earning, amount: d("5000"), taxable: true };
        assert_eq!(off_cycle(&[split], d("59000"), &tax(), 2).unwrap().totals.tax, 60_000 + 80_000);
    }

    #[test]
    fn component_sets_that_cannot_be_computed_are_refused_naming_the_fault() {
        let mut set = components();
        set.get_mut("meal").unwrap().amount = Amount::Formula("gross * 0.01".into());
        let cycle = check(&set).unwrap_err();
        assert_eq!(cycle.code, "formula-cycle");
        assert!(cycle.detail.contains("gross → meal → gross"), "{}", cycle.detail);
        set.get_mut("meal").unwrap().amount = Amount::Formula("bsae * 2".into());
        let unknown = check(&set).unwrap_err();
        assert_eq!((unknown.component.as_str(), unknown.code, unknown.position), ("meal", "unknown-name", Some(0)));
        set.get_mut("meal").unwrap().amount = Amount::Formula("base * ".into());
        assert_eq!(check(&set).unwrap_err().position, Some(7));
        let mut reserved = components();
        reserved.insert("gross".into(), reserved["meal"].clone());
        assert_eq!(check(&reserved).unwrap_err().code, "reserved-name");
    }

    /// A small deterministic generator (xorshift), so a failing case can be replayed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn for_random_pay_and_time_the_lines_sum_to_the_net_and_proration_never_adds() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for case in 0..2_000 {
            let salary = Decimal::from_minor(rng.below(50_000_000) as i64 + 100, 2);
            let period_working = 15 + rng.below(9) as u32;
            let working = rng.below(u64::from(period_working) + 1) as u32;
            let unpaid = rng.below(u64::from(working) * 1000 + 1) / 500 * 500;
            let time = Time {
                period_days: 30,
                employed_days: 30,
                period_working_days: period_working,
                working_days: working,
                unpaid_day_thousandths: unpaid,
            };
            let codes: Vec<&str> =
                ["pension", "employer_pension", "meal", "loan"].into_iter().filter(|_| rng.below(2) == 0).collect();
            let bonus = OneOff {
                name: "Bonus".into(),
                kind: Kind::Earning,
                amount: Decimal::from_minor(rng.below(100_000) as i64, 2),
                taxable: rng.below(2) == 0,
            };
            let p = slip(Pay::Salary(salary), time, None, &codes, std::slice::from_ref(&bonus));
            let sum = |kind: LineKind| p.lines.iter().filter(|l| l.kind == kind).map(|l| l.amount).sum::<i64>();
            assert_eq!(sum(LineKind::Earning), p.totals.gross, "case {case}");
            assert_eq!(sum(LineKind::Deduction), p.totals.deductions, "case {case}");
            assert_eq!(sum(LineKind::Tax), p.totals.tax, "case {case}");
            // The lines, as printed, add up to the net.
            let signed: i64 = p
                .lines
                .iter()
                .map(|l| match l.kind {
                    LineKind::Earning => l.amount,
                    LineKind::Deduction | LineKind::Tax => -l.amount,
                    LineKind::Employer => 0,
                })
                .sum();
            assert_eq!(signed, p.totals.net, "case {case}");
            let full = slip(
                Pay::Salary(salary),
                Time { working_days: period_working, unpaid_day_thousandths: 0, ..time },
                None,
                &codes,
                std::slice::from_ref(&bonus),
            );
            assert!(
                p.totals.gross <= full.totals.gross,
                "case {case}: prorated {} > full {}",
                p.totals.gross,
                full.totals.gross
            );
        }
    }
}
