//! Exact fixed-point numbers for stock: quantities to a thousandth of the base unit, money
//! to a ten-thousandth of the currency unit (unit costs such as 0.0125 a screw stay exact).
//!
//! Stored documents keep the raw integers (compact, fast to read back); the HTTP API reads
//! and writes decimal strings, so no amount ever passes through floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A quantity in thousandths of a unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Qty(pub i64);

/// An amount of money in ten-thousandths of the currency unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub i64);

pub const QTY_PLACES: u32 = 3;
pub const MONEY_PLACES: u32 = 4;
const QTY_SCALE: i128 = 1_000;
/// No quantity or amount parsed beyond ±10^12 units: far past any stock, far inside `i64`
/// after scaling and `i128` for every product taken.
const LIMIT: i128 = 1_000_000_000_000;
/// The most a line may move: 10^9 units, or be worth: 10^12 currency units. Sums of many
/// such lines stay inside `i64`; past that, arithmetic traps (the call fails, nothing is
/// saved) rather than wrap.
pub const MAX_LINE_QTY: Qty = Qty(1_000_000_000_000);
pub const MAX_LINE_VALUE: Money = Money(10_000_000_000_000_000);

/// `n / d` rounded half away from zero (`d` > 0).
pub fn div_round(n: i128, d: i128) -> i128 {
    let q = (n.abs() + d / 2) / d;
    if n < 0 { -q } else { q }
}

/// Parses `12`, `-0.5`, `1234.125` into units of `10^-places`: digits with at most one
/// point and `places` decimals, an optional leading minus; no exponent or separators.
fn parse_fixed(text: &str, places: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > places as usize
        || digits.ends_with('.')
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 13
    {
        return None;
    }
    let scale = 10i128.pow(places);
    let mut value: i128 = whole.parse::<i128>().ok()? * scale;
    if !fraction.is_empty() {
        value += fraction.parse::<i128>().ok()? * 10i128.pow(places - fraction.len() as u32);
    }
    if value > LIMIT * scale {
        return None;
    }
    Some(if negative { -value } else { value } as i64)
}

fn write_fixed(f: &mut fmt::Formatter<'_>, raw: i64, places: u32, min_places: u32) -> fmt::Result {
    let scale = 10i64.pow(places);
    let sign = if raw < 0 { "-" } else { "" };
    let (whole, mut fraction) = (raw.unsigned_abs() / scale as u64, raw.unsigned_abs() % scale as u64);
    let mut shown = places;
    while shown > min_places && fraction % 10 == 0 {
        fraction /= 10;
        shown -= 1;
    }
    if shown == 0 {
        write!(f, "{sign}{whole}")
    } else {
        write!(f, "{sign}{whole}.{fraction:0width$}", width = shown as usize)
    }
}

impl Qty {
    pub const ZERO: Qty = Qty(0);

    pub fn parse(text: &str) -> Option<Qty> {
        parse_fixed(text, QTY_PLACES).map(Qty)
    }

    pub fn units(n: i64) -> Qty {
        Qty(n * QTY_SCALE as i64)
    }

    pub fn is_whole(self) -> bool {
        self.0 % QTY_SCALE as i64 == 0
    }

    /// This quantity of a unit worth `factor` base units, rounded half away from zero to a
    /// thousandth; `None` past the limit.
    pub fn times_factor(self, factor: Qty) -> Option<Qty> {
        let raw = div_round(i128::from(self.0) * i128::from(factor.0), QTY_SCALE);
        (raw.abs() <= LIMIT * QTY_SCALE).then_some(Qty(raw as i64))
    }
}

fn add(a: i64, b: i64) -> i64 {
    a.checked_add(b).expect("stock quantities and values stay inside i64")
}

fn sub(a: i64, b: i64) -> i64 {
    a.checked_sub(b).expect("stock quantities and values stay inside i64")
}

impl std::ops::Add for Qty {
    type Output = Qty;
    fn add(self, other: Qty) -> Qty {
        Qty(add(self.0, other.0))
    }
}

impl std::ops::Sub for Qty {
    type Output = Qty;
    fn sub(self, other: Qty) -> Qty {
        Qty(sub(self.0, other.0))
    }
}

impl std::ops::Neg for Qty {
    type Output = Qty;
    fn neg(self) -> Qty {
        Qty(-self.0)
    }
}

impl std::ops::AddAssign for Qty {
    fn add_assign(&mut self, other: Qty) {
        self.0 = add(self.0, other.0);
    }
}

impl std::ops::SubAssign for Qty {
    fn sub_assign(&mut self, other: Qty) {
        self.0 = sub(self.0, other.0);
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(f, self.0, QTY_PLACES, 0)
    }
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn parse(text: &str) -> Option<Money> {
        parse_fixed(text, MONEY_PLACES).map(Money)
    }

    /// The value of `qty` at this unit cost, rounded to a ten-thousandth.
    pub fn of(self, qty: Qty) -> Money {
        Money(narrow(div_round(i128::from(self.0) * i128::from(qty.0), QTY_SCALE)))
    }

    /// `self × part / whole` rounded (`whole` > 0): the share of a value that part of a
    /// quantity carries.
    pub fn share(self, part: Qty, whole: Qty) -> Money {
        Money(narrow(div_round(i128::from(self.0) * i128::from(part.0), i128::from(whole.0))))
    }

    /// The unit cost of `qty` worth this much (`qty` > 0).
    pub fn per(self, qty: Qty) -> Money {
        Money(narrow(div_round(i128::from(self.0) * QTY_SCALE, i128::from(qty.0))))
    }
}

fn narrow(raw: i128) -> i64 {
    i64::try_from(raw).expect("stock values stay inside i64")
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, other: Money) -> Money {
        Money(add(self.0, other.0))
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, other: Money) -> Money {
        Money(sub(self.0, other.0))
    }
}

impl std::ops::Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, other: Money) {
        self.0 = add(self.0, other.0);
    }
}

impl fmt::Display for Money {
    /// At least cents, more places only when they are there: `1725.00`, `0.0125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(f, self.0, MONEY_PLACES, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        assert_eq!(Qty::parse("12").unwrap(), Qty(12_000));
        assert_eq!(Qty::parse("-0.5").unwrap(), Qty(-500));
        assert_eq!(Qty::parse("1.2345"), None);
        assert_eq!(Qty::parse("1."), None);
        assert_eq!(Qty::parse(".5"), None);
        assert_eq!(Qty::parse("1e3"), None);
        assert_eq!(Qty::parse("99999999999999"), None);
        assert_eq!(Qty(12_500).to_string(), "12.5");
        assert_eq!(Qty(-3_000).to_string(), "-3");
        assert_eq!(Money::parse("0.0125").unwrap().to_string(), "0.0125");
        assert_eq!(Money(17_250_000).to_string(), "1725.00");
        assert_eq!(Money(-5).to_string(), "-0.0005");
    }

    #[test]
    fn values_round_half_away_from_zero() {
        // 3 pieces at 0.33335 does not exist (4 places); 3 at 0.3333 is 0.9999.
        assert_eq!(Money::parse("0.3333").unwrap().of(Qty::units(3)), Money(9_999));
        // 1/3 of 100.00 for one of three units.
        assert_eq!(Money::parse("100").unwrap().share(Qty::units(1), Qty::units(3)), Money(333_333));
        assert_eq!(Money::parse("100").unwrap().per(Qty::units(3)), Money(333_333));
        assert_eq!(Qty::units(3).times_factor(Qty::units(12)), Some(Qty::units(36)));
        // 2 lb in kg (0.45359237 kept to the thousandth: 0.454).
        assert_eq!(Qty::units(2).times_factor(Qty::parse("0.454").unwrap()), Some(Qty(908)));
    }
}
