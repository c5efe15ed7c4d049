//! Retro pay. A change of pay recorded after a period was settled (its run approved or
//! paid), effective on or before that period's end, is owed as arrears in the next run:
//! the settled period is worked out again with today's pay history, from the same time
//! (the working days and hours its payslip stored) and the same rules (the settled run's),
//! and each line other than tax and one-offs is compared with what was paid for that
//! period, in its run and in arrears since. The difference, per line and period, is a line
//! of the new payslip (`arrears-2026-03-base`). A settled run is never changed.
//!
//! Arrears are earnings, deductions and employer contributions like the lines they follow
//! (a pension deduction stays pre-tax); earnings arrears are taxed in the period they are
//! paid in, as pay is.

use crate::calc::{Arrear, Line, LineKind, Payslip};
use crate::money::Money;

/// The code of the arrears of line `code` for `period` (`YYYY-MM`).
pub fn code(period: &str, code: &str) -> String {
    format!("arrears-{period}-{code}")
}

/// Lines a recalculation compares: not tax, not one-offs, not arrears of other periods.
fn recurring(line: &Line) -> bool {
    line.kind != LineKind::Tax && !line.code.starts_with("one-off-") && !line.code.starts_with("arrears-")
}

/// The arrears for `period`: per recurring line of `due` (the period worked out again with
/// today's pay) or of `paid` (its settled payslip), what is due less what was paid, in the
/// period and by the arrears lines in `since` (lines of later settled payslips). `pre_tax`
/// says which deduction codes are taken before tax.
pub fn arrears(
    period: &str,
    exponent: u32,
    due: &Payslip,
    paid: &Payslip,
    since: &[&Line],
    pre_tax: impl Fn(&str) -> bool,
) -> Vec<Arrear> {
    let mut codes: Vec<Line> = due.lines.iter().filter(|l| recurring(l)).cloned().collect();
    for l in paid.lines.iter().filter(|l| recurring(l)) {
        if !codes.iter().any(|c| c.code == l.code) {
            codes.push(l.clone());
        }
    }
    // A line owed earlier whose component has gone again since: what was paid for it is
    // taken back.
    let prefix = code(period, "");
    let suffix = format!(", arrears for {period}");
    for l in since {
        // Component codes have no `-`: `arrears-2026-04-H1-base` is another period's.
        let Some(original) = l.code.strip_prefix(&prefix).filter(|rest| !rest.contains('-')) else { continue };
        if !codes.iter().any(|c| c.code == original) {
            let name = l.name.strip_suffix(&suffix).unwrap_or(&l.name).to_owned();
            codes.push(Line { code: original.to_owned(), name, kind: l.kind, amount: 0, basis: String::new() });
        }
    }
    let amount = |slip: &Payslip, code: &str| -> i64 {
        slip.lines.iter().filter(|l| l.code == code && recurring(l)).map(|l| l.amount).sum()
    };
    let show = |minor: i64| Money { minor, exponent }.to_string();
    let mut out = Vec::new();
    for line in &codes {
        let owed_code = code(period, &line.code);
        let was =
            amount(paid, &line.code) + since.iter().filter(|l| l.code == owed_code).map(|l| l.amount).sum::<i64>();
        let now = amount(due, &line.code);
        if now == was {
            continue;
        }
        out.push(Arrear {
            line: Line {
                code: owed_code,
                name: format!("{}, arrears for {period}", line.name),
                kind: line.kind,
                amount: now - was,
                basis: format!("{} due − {} paid for {period}", show(now), show(was)),
            },
            pre_tax: line.kind == LineKind::Deduction && pre_tax(&line.code),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::{self, Amount, Assigned, Component, Input, Kind, OneOff, Pay, Time};
    use crate::money::Decimal;
    use crate::tax::{Bracket, TaxTable};
    use std::collections::BTreeMap;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn components() -> BTreeMap<String, Component> {
        let c = |name: &str, kind, pre_tax, amount: Amount, prorated| Component {
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
                "employer".into(),
                c("Employer pension", Kind::Employer, false, Amount::Formula("base * 0.03".into()), false),
            ),
            ("meal".into(), c("Meal", Kind::Earning, false, Amount::Fixed(d("100")), true)),
            (
                "union".into(),
                c("Union", Kind::Deduction, false, Amount::Formula("min(gross * 0.01, 25)".into()), false),
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

    fn slip(salary: Decimal, time: Time, one_offs: &[OneOff], arrears: &[Arrear]) -> Payslip {
        let set = components();
        let assigned: Vec<Assigned> = set.keys().map(|code| Assigned { code: code.clone(), amount: None }).collect();
        calc::calculate(&Input {
            pay: Pay::Salary(salary),
            exponent: 2,
            periods_per_year: 12,
            components: &set,
            assigned: &assigned,
            time,
            hours: None,
            one_offs,
            arrears,
            tax: &tax(),
        })
        .unwrap()
    }

    fn pre_tax(code: &str) -> bool {
        code == "pension"
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A back-dated raise of March 2026, 60,000 → 72,000 a year, with 2 unpaid days of 20:
    /// salary 4,500.00 → 5,400.00, meal 90.00 both times, pension 225.00 → 270.00, employer
    /// 135.00 → 162.00, union 25.00 both times.
    #[test]
    fn a_raise_back_to_a_paid_month_is_owed_line_by_line_once() {
        let time = Time {
            period_days: 31,
            employed_days: 31,
            period_working_days: 20,
            working_days: 20,
            unpaid_day_thousandths: 2000,
        };
        let paid = slip(d("60000"), time, &[], &[]);
        let due = slip(d("72000"), time, &[], &[]);
        let owed = arrears("2026-03", 2, &due, &paid, &[], pre_tax);
        let shown: Vec<(&str, i64, bool)> =
            owed.iter().map(|a| (a.line.code.as_str(), a.line.amount, a.pre_tax)).collect();
        assert_eq!(
            shown,
            [
                ("arrears-2026-03-base", 90_000, false),
                ("arrears-2026-03-pension", 4_500, true),
                ("arrears-2026-03-employer", 2_700, false),
            ]
        );
        assert_eq!(owed[0].line.basis, "5400.00 due − 4500.00 paid for 2026-03");
        assert_eq!(owed[0].line.name, "Salary, arrears for 2026-03");
        let since: Vec<&Line> = owed.iter().map(|a| &a.line).collect();
        assert!(arrears("2026-03", 2, &due, &paid, &since, pre_tax).is_empty(), "owed once");

        // Then the raise is undone: what its arrears paid is taken back, line by line, even
        // for a line the month no longer has at all.
        let extra = Line {
            code: code("2026-03", "bonus_scheme"),
            name: "Bonus scheme, arrears for 2026-03".into(),
            kind: LineKind::Earning,
            amount: 5_000,
            basis: String::new(),
        };
        let mut since = since;
        since.push(&extra);
        let back = arrears("2026-03", 2, &paid, &paid, &since, pre_tax);
        let shown: Vec<(&str, i64)> = back.iter().map(|a| (a.line.code.as_str(), a.line.amount)).collect();
        assert_eq!(
            shown,
            [
                ("arrears-2026-03-base", -90_000),
                ("arrears-2026-03-pension", -4_500),
                ("arrears-2026-03-employer", -2_700),
                ("arrears-2026-03-bonus_scheme", -5_000),
            ]
        );
        assert_eq!(back[3].line.name, "Bonus scheme, arrears for 2026-03");
    }

    #[test]
    fn for_random_pay_arrears_are_the_difference_of_two_full_recalculations() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..1_000 {
            let old = Decimal::from_minor(rng.below(20_000_000) as i64 + 1_000_000, 2);
            let new = Decimal::from_minor(rng.below(20_000_000) as i64 + 1_000_000, 2);
            let period_working = 18 + rng.below(5) as u32;
            let working = rng.below(u64::from(period_working) + 1) as u32;
            let time = Time {
                period_days: 30,
                employed_days: 30,
                period_working_days: period_working,
                working_days: working,
                unpaid_day_thousandths: rng.below(u64::from(working) * 1000 + 1) / 500 * 500,
            };
            let bonus = [OneOff {
                name: "Bonus".into(),
                kind: Kind::Earning,
                amount: Decimal::from_minor(rng.below(300_000) as i64, 2),
                taxable: true,
            }];
            let paid = slip(old, time, &bonus, &[]);
            let due = slip(new, time, &bonus, &[]);
            let owed = arrears("2026-03", 2, &due, &paid, &[], pre_tax);
            // Line by line, and so in total: due − paid, tax and one-offs aside.
            for line in due.lines.iter().filter(|l| l.kind != LineKind::Tax && !l.code.starts_with("one-off-")) {
                let was = paid.lines.iter().find(|l| l.code == line.code).map_or(0, |l| l.amount);
                let got = owed.iter().find(|a| a.line.code == code("2026-03", &line.code)).map_or(0, |a| a.line.amount);
                assert_eq!(got, line.amount - was, "case {case}: {}", line.code);
            }
            let total =
                |kind: LineKind| owed.iter().filter(|a| a.line.kind == kind).map(|a| a.line.amount).sum::<i64>();
            assert_eq!(total(LineKind::Earning), due.totals.gross - paid.totals.gross, "case {case}");
            assert_eq!(total(LineKind::Employer), due.totals.employer - paid.totals.employer, "case {case}");
            assert_eq!(total(LineKind::Deduction), due.totals.deductions - paid.totals.deductions, "case {case}");
            // Paid in a later month, the arrears keep that payslip's lines summing to its net
            // (a month paying more than a cut takes back).
            let more = new.add(old).unwrap();
            let later =
                slip(more, Time { working_days: period_working, unpaid_day_thousandths: 0, ..time }, &[], &owed);
            let signed: i64 = later
                .lines
                .iter()
                .map(|l| match l.kind {
                    LineKind::Earning => l.amount,
                    LineKind::Deduction | LineKind::Tax => -l.amount,
                    LineKind::Employer => 0,
                })
                .sum();
            assert_eq!(signed, later.totals.net, "case {case}");
            let since: Vec<&Line> = later.lines.iter().collect();
            assert!(arrears("2026-03", 2, &due, &paid, &since, pre_tax).is_empty(), "case {case}: owed once");
        }
    }
}
