//! Exact decimal arithmetic for pay: no floating point anywhere a cent can be lost.
//!
//! [`Decimal`] is a fixed-point number with 9 decimal places in an `i128`, exact for every
//! sum, difference and product a payslip needs; a quotient (`salary / 12`) is rounded half to
//! even at the 9th place, far below a cent. Amounts on a payslip are [`Money`]: whole minor
//! units (cents) of a currency, each line rounded once, half away from zero.

use std::fmt;

/// Decimal places kept.
const PLACES: u32 = 9;
const SCALE: i128 = 1_000_000_000;
/// The largest magnitude kept: a quadrillion, far beyond any pay and well inside `i128`
/// for products.
const LIMIT: i128 = 1_000_000_000_000_000 * SCALE;

/// Why arithmetic could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathError {
    /// A result beyond ±10^15.
    Overflow,
    DivisionByZero,
}

impl fmt::Display for MathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MathError::Overflow => write!(f, "a result is beyond ±10^15"),
            MathError::DivisionByZero => write!(f, "division by zero"),
        }
    }
}

/// An exact decimal number with 9 decimal places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(i128);

/// `n / d` rounded half to even (`d` > 0).
fn div_half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// `n / d` rounded half away from zero (`d` > 0).
fn div_half_away(n: i128, d: i128) -> i128 {
    let q = (n.abs() + d / 2) / d;
    if n < 0 { -q } else { q }
}

impl Decimal {
    pub const ZERO: Decimal = Decimal(0);
    pub const ONE: Decimal = Decimal(SCALE);

    fn checked(raw: i128) -> Result<Decimal, MathError> {
        if raw.abs() > LIMIT { Err(MathError::Overflow) } else { Ok(Decimal(raw)) }
    }

    pub fn from_int(n: i64) -> Decimal {
        Decimal(i128::from(n) * SCALE)
    }

    /// `minor` minor units of a currency with `exponent` decimal places (`1999`, 2 → 19.99).
    pub fn from_minor(minor: i64, exponent: u32) -> Decimal {
        Decimal(i128::from(minor) * SCALE / 10i128.pow(exponent.min(PLACES)))
    }

    /// Parses `-12.5`, `0.05`, `1000`: digits with at most one point and 9 decimals, an
    /// optional leading minus, no exponent, no thousands separators.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.len() > PLACES as usize
            || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
            || digits.ends_with('.')
            || whole.len() > 16
        {
            return None;
        }
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let fraction: i128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<i128>().ok()? * 10i128.pow(PLACES - fraction.len() as u32)
        };
        let raw = whole * SCALE + fraction;
        Decimal::checked(if negative { -raw } else { raw }).ok()
    }

    pub fn add(self, other: Decimal) -> Result<Decimal, MathError> {
        Decimal::checked(self.0 + other.0)
    }

    pub fn sub(self, other: Decimal) -> Result<Decimal, MathError> {
        Decimal::checked(self.0 - other.0)
    }

    pub fn mul(self, other: Decimal) -> Result<Decimal, MathError> {
        let product = self.0.checked_mul(other.0).ok_or(MathError::Overflow)?;
        Decimal::checked(div_half_even(product, SCALE))
    }

    pub fn div(self, other: Decimal) -> Result<Decimal, MathError> {
        if other.0 == 0 {
            return Err(MathError::DivisionByZero);
        }
        let n = self.0.checked_mul(SCALE).ok_or(MathError::Overflow)?;
        let (n, d) = if other.0 < 0 { (-n, -other.0) } else { (n, other.0) };
        Decimal::checked(div_half_even(n, d))
    }

    pub fn neg(self) -> Decimal {
        Decimal(-self.0)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Rounded to `places` decimals, half away from zero (2.345 → 2.35, -2.345 → -2.35).
    pub fn round(self, places: u32) -> Decimal {
        if places >= PLACES {
            return self;
        }
        let step = 10i128.pow(PLACES - places);
        Decimal(div_half_away(self.0, step) * step)
    }

    /// `self × num / den` in whole minor units of a currency with `exponent` decimals,
    /// rounded once, half away from zero (`den` > 0): a prorated amount without an
    /// intermediate rounding.
    pub fn scaled_to_minor(self, num: i128, den: i128, exponent: u32) -> Result<i64, MathError> {
        let n = self
            .0
            .checked_mul(num)
            .and_then(|n| n.checked_mul(10i128.pow(exponent.min(PLACES))))
            .ok_or(MathError::Overflow)?;
        let d = den.checked_mul(SCALE).ok_or(MathError::Overflow)?;
        i64::try_from(div_half_away(n, d)).map_err(|_| MathError::Overflow)
    }

    /// Whole minor units of a currency with `exponent` decimals, rounding half away from zero.
    pub fn to_minor(self, exponent: u32) -> i64 {
        let step = 10i128.pow(PLACES - exponent.min(PLACES));
        div_half_away(self.0, step) as i64
    }
}

impl fmt::Display for Decimal {
    /// Without trailing zeros: `2.5`, `0.05`, `-3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let (whole, fraction) = (self.0.abs() / SCALE, self.0.abs() % SCALE);
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{fraction:09}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// An amount in whole minor units of a currency (cents for EUR, yen for JPY).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money {
    pub minor: i64,
    /// Decimal places of the currency (2 for EUR and USD, 0 for JPY).
    pub exponent: u32,
}

impl Money {
    pub fn decimal(self) -> Decimal {
        Decimal::from_minor(self.minor, self.exponent)
    }
}

impl fmt::Display for Money {
    /// With all the currency's decimals: `1234.50`, `-0.07`, `1500` (JPY).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exponent == 0 {
            return write!(f, "{}", self.minor);
        }
        let step = 10i64.pow(self.exponent);
        let sign = if self.minor < 0 { "-" } else { "" };
        let width = self.exponent as usize;
        write!(f, "{sign}{}.{:0width$}", self.minor.abs() / step, self.minor.abs() % step)
    }
}

/// ISO 4217 codes with no minor unit.
const ZERO_DECIMALS: [&str; 17] = [
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
    "XPF",
];
/// ISO 4217 codes with three decimals.
const THREE_DECIMALS: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
/// ISO 4217 codes with four decimals.
const FOUR_DECIMALS: [&str; 2] = ["CLF", "UYW"];
/// ISO 4217 codes with two decimals.
const TWO_DECIMALS: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BMD", "BND",
    "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CNY", "COP", "CRC", "CUP", "CVE", "CZK",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK",
    "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON",
    "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD",
    "YER", "ZAR", "ZMW", "ZWG",
];

/// The decimal places of an ISO 4217 currency code, or `None` for a code that is not one.
pub fn currency_exponent(code: &str) -> Option<u32> {
    if ZERO_DECIMALS.contains(&code) {
        Some(0)
    } else if THREE_DECIMALS.contains(&code) {
        Some(3)
    } else if FOUR_DECIMALS.contains(&code) {
        Some(4)
    } else if TWO_DECIMALS.contains(&code) {
        Some(2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn decimals_parse_strictly_and_print_without_trailing_zeros() {
        for (text, shown) in
            [("0.05", "0.05"), ("-12.50", "-12.5"), ("1000", "1000"), (".5", "0.5"), ("0.000000001", "0.000000001")]
        {
            assert_eq!(d(text).to_string(), shown);
        }
        for bad in ["", "-", "1.", "1e3", "1,000", "0.0000000001", "++1", "1.2.3", " 1", "12345678901234567"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_is_exact_where_floating_point_is_not() {
        // 0.1 + 0.2 is 0.30000000000000004 in f64.
        assert_eq!(d("0.1").add(d("0.2")).unwrap(), d("0.3"));
        assert_eq!(d("1234.56").mul(d("0.05")).unwrap(), d("61.728"));
        // 50,000 a year, monthly: 4166.666666667 (half even at the 9th place).
        assert_eq!(d("50000").div(d("12")).unwrap().to_string(), "4166.666666667");
        assert_eq!(d("1").div(d("-8")).unwrap(), d("-0.125"));
        assert_eq!(d("1").div(Decimal::ZERO), Err(MathError::DivisionByZero));
        assert_eq!(d("999999999999999").mul(d("10")), Err(MathError::Overflow));
    }

    #[test]
    fn rounding_to_cents_is_half_away_from_zero() {
        assert_eq!(d("2.345").to_minor(2), 235);
        assert_eq!(d("-2.345").to_minor(2), -235);
        assert_eq!(d("2.3449").to_minor(2), 234);
        assert_eq!(d("1500.5").to_minor(0), 1501);
        assert_eq!(d("2.345").round(2), d("2.35"));
        assert_eq!(Money { minor: -7, exponent: 2 }.to_string(), "-0.07");
        assert_eq!(Money { minor: 123_450, exponent: 2 }.to_string(), "1234.50");
        assert_eq!(Money { minor: 1500, exponent: 0 }.to_string(), "1500");
        assert_eq!(Money { minor: 1500, exponent: 3 }.decimal(), d("1.5"));
        assert_eq!(
            (currency_exponent("EUR"), currency_exponent("JPY"), currency_exponent("KWD")),
            (Some(2), Some(0), Some(3))
        );
        assert_eq!(currency_exponent("eur"), None);
        assert_eq!((currency_exponent("ZZZ"), currency_exponent("BIF")), (None, Some(0)));
        // 180,000,000 IDR a year, 19 of 23 working days: exactly 12,391,304.3478..., once rounded.
        let year = d("180000000");
        assert_eq!(year.scaled_to_minor(19_000, 23_000 * 12, 2), Ok(1_239_130_435));
        assert_eq!(d("-1").scaled_to_minor(1, 8, 2), Ok(-13), "-0.125 → -0.13");
    }
}

impl serde::Serialize for Decimal {
    /// As text (`"4166.67"`), so no JSON reader turns it into a float.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Decimal {
    /// From text (`"0.05"`), or a whole JSON number (`1000`). A JSON number with decimals is
    /// refused: most readers hold it as a float, which cannot keep `0.1` exact.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            serde_json::Value::Number(n) => {
                return Err(serde::de::Error::custom(format!("write amounts with decimals as text: \"{n}\", not {n}")));
            }
            _ => return Err(serde::de::Error::custom("an amount is a decimal number as text, e.g. \"1234.50\"")),
        };
        Decimal::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a decimal amount (digits, one point, 9 decimals at most)"
            ))
        })
    }
}
