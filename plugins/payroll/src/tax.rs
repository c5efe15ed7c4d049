//! Income tax from progressive brackets with a tax-free allowance, annualised: a period's
//! taxable pay × periods per year, less the allowance, through the brackets, then back to
//! the period. So a monthly and a bi-weekly employee on the same salary pay the same tax a
//! year, and a month with a bonus is taxed at the rate a year like it would be.

use crate::money::{Decimal, MathError};
use serde::{Deserialize, Serialize};

/// One band: income above the previous band's `up_to` and up to this one is taxed at `rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bracket {
    /// The band's upper bound (a year's income after the allowance); none for the top band.
    pub up_to: Option<Decimal>,
    /// 0.2 for 20 %.
    pub rate: Decimal,
}

/// A tenant's income tax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxTable {
    /// Tax-free income a year.
    pub allowance: Decimal,
    pub brackets: Vec<Bracket>,
}

impl TaxTable {
    /// Checks the table is usable: rates from 0 to 1, bounds rising, only the last open.
    pub fn check(&self) -> Result<(), String> {
        if self.allowance.is_negative() {
            return Err("the allowance is 0 or more".into());
        }
        let mut previous = Decimal::ZERO;
        for (i, b) in self.brackets.iter().enumerate() {
            if b.rate.is_negative() || b.rate > Decimal::ONE {
                return Err(format!("brackets[{i}]: a rate is from 0 to 1 (0.2 is 20 %)"));
            }
            match b.up_to {
                Some(up_to) if up_to <= previous => {
                    return Err(format!("brackets[{i}]: bounds rise from one bracket to the next"));
                }
                Some(up_to) => previous = up_to,
                None if i + 1 != self.brackets.len() => {
                    return Err(format!("brackets[{i}]: only the last bracket is open-ended"));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The tax on a year's income (before the allowance); income beyond the last bound of a
    /// table without an open band is taxed at the last rate.
    pub fn annual(&self, income: Decimal) -> Result<Decimal, MathError> {
        let mut left = income.sub(self.allowance)?;
        let mut tax = Decimal::ZERO;
        let mut floor = Decimal::ZERO;
        for (i, b) in self.brackets.iter().enumerate() {
            if left <= Decimal::ZERO {
                break;
            }
            let last = i + 1 == self.brackets.len();
            let band = match b.up_to {
                Some(up_to) if !last => up_to.sub(floor)?.min(left),
                _ => left,
            };
            tax = tax.add(band.mul(b.rate)?)?;
            left = left.sub(band)?;
            floor = b.up_to.unwrap_or(floor);
        }
        Ok(tax)
    }

    /// The tax on one period's taxable pay, for `periods` periods a year (unrounded).
    pub fn period(&self, taxable: Decimal, periods: u32) -> Result<Decimal, MathError> {
        let n = Decimal::from_int(i64::from(periods));
        self.annual(taxable.mul(n)?)?.div(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    /// 12,000 tax-free; 20 % up to 50,000 (after the allowance), 40 % above.
    pub fn table() -> TaxTable {
        TaxTable {
            allowance: d("12000"),
            brackets: vec![
                Bracket { up_to: Some(d("50000")), rate: d("0.2") },
                Bracket { up_to: None, rate: d("0.4") },
            ],
        }
    }

    #[test]
    fn a_year_is_taxed_band_by_band_above_the_allowance() {
        let t = table();
        assert_eq!(t.annual(d("10000")).unwrap(), Decimal::ZERO, "under the allowance");
        assert_eq!(t.annual(d("42000")).unwrap(), d("6000"), "30,000 at 20 %");
        assert_eq!(t.annual(d("72000")).unwrap(), d("14000"), "50,000 at 20 % and 10,000 at 40 %");
        // A month of 3,500: 42,000 a year, 6,000 tax, 500 a month.
        assert_eq!(t.period(d("3500"), 12).unwrap(), d("500"));
        // The same year paid bi-weekly pays the same tax a year.
        let biweekly = t.period(d("42000").div(d("26")).unwrap(), 26).unwrap();
        assert_eq!(biweekly.mul(d("26")).unwrap().round(2), d("6000"));
    }

    #[test]
    fn tables_that_cannot_work_are_refused() {
        let mut t = table();
        assert_eq!(t.check(), Ok(()));
        t.brackets[0].rate = d("20");
        assert!(t.check().unwrap_err().contains("from 0 to 1"));
        t = table();
        t.brackets.insert(0, Bracket { up_to: Some(d("60000")), rate: d("0.1") });
        assert!(t.check().unwrap_err().contains("rise"));
        t = table();
        t.brackets.swap(0, 1);
        assert!(t.check().unwrap_err().contains("open-ended"));
    }
}
