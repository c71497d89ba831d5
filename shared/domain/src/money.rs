//! The one money type. Amounts are exact decimals with the currency's scale; they are never floats,
//! and excess precision is rejected, never rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A currency the service holds. Conversions to chain base units happen at the chain boundary only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema, sqlx::Type)]
#[sqlx(type_name = "text")]
pub enum Currency {
    #[schema(rename = "USDT")]
    #[sqlx(rename = "USDT")]
    Usdt,
}

impl Currency {
    pub const ALL: [Currency; 1] = [Currency::Usdt];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Usdt => "USDT",
        }
    }

    /// Digits after the decimal point that the currency can represent (USDT on TRON: 6).
    pub fn decimals(self) -> u32 {
        match self {
            Currency::Usdt => 6,
        }
    }

    /// `value` in the currency's base units on chain (USDT: millionths); `None` when it has more
    /// decimals than the currency, is negative, or does not fit.
    pub fn to_base_units(self, value: Decimal) -> Option<u64> {
        let units = value.checked_mul(Decimal::from(10u64.pow(self.decimals())))?;
        if !units.fract().is_zero() {
            return None;
        }
        u64::try_from(units).ok()
    }

    /// Base units on chain as an amount of the currency (exact).
    pub fn from_base_units(self, units: u64) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(units), self.decimals())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency {0:?}")]
pub struct CurrencyError(pub String);

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, CurrencyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| CurrencyError(s.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// A decimal as a client sent it, before it is checked against a currency: a JSON string or a JSON
/// number, read from its text (never through a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAmount(Decimal);

impl RawAmount {
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let text = text.trim();
        let looks_numeric = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
        if !looks_numeric {
            return Err(AmountError::NotADecimal);
        }
        let parsed = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text)
        } else {
            Decimal::from_str_exact(text)
        };
        parsed.map(RawAmount).map_err(|_| AmountError::NotADecimal)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl<'de> Deserialize<'de> for RawAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `serde_json` keeps a number's text (feature `arbitrary_precision`), so 0.1 stays 0.1.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) => RawAmount::parse(&text),
            serde_json::Value::Number(number) => RawAmount::parse(&number.to_string()),
            _ => Err(AmountError::NotADecimal),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Why a decimal is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal number, as a string or a JSON number")]
    NotADecimal,
    #[error("amount has more than {decimals} decimal places")]
    TooPrecise { decimals: u32 },
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount exceeds the maximum of {max}")]
    AboveMaximum { max: Decimal },
}

/// A positive amount of one currency, with exactly the currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    value: Decimal,
    currency: Currency,
}

impl Amount {
    /// Checks a client's decimal against the currency and the configured maximum.
    pub fn new(raw: RawAmount, currency: Currency, max: Decimal) -> Result<Self, AmountError> {
        let mut value = raw.value().normalize();
        if value.scale() > currency.decimals() {
            return Err(AmountError::TooPrecise {
                decimals: currency.decimals(),
            });
        }
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value > max {
            return Err(AmountError::AboveMaximum { max });
        }
        value.rescale(currency.decimals());
        Ok(Self { value, currency })
    }

    /// Wraps a value read back from storage, where the database constraints already hold.
    pub fn from_stored(value: Decimal, currency: Currency) -> Result<Self, AmountError> {
        Self::new(RawAmount(value), currency, Decimal::MAX)
    }

    pub fn value(self) -> Decimal {
        self.value
    }

    pub fn currency(self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// Formats any ledger decimal (a balance may be zero) as the wire string with the currency's scale.
pub fn format_wire(value: Decimal, currency: Currency) -> String {
    let mut value = value;
    value.rescale(currency.decimals());
    value.to_string()
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_wire(self.value, self.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> Decimal {
        Decimal::from(1_000_000_000)
    }

    fn usdt(text: &str) -> Result<Amount, AmountError> {
        Amount::new(RawAmount::parse(text)?, Currency::Usdt, max())
    }

    #[test]
    fn amounts_keep_the_currency_scale_on_the_wire() {
        assert_eq!(usdt("12.5").unwrap().to_string(), "12.500000");
        assert_eq!(serde_json::to_string(&usdt("1").unwrap()).unwrap(), "\"1.000000\"");
        assert_eq!(usdt("0.000001").unwrap().to_string(), "0.000001");
        assert_eq!(
            usdt("1.2300000").unwrap().to_string(),
            "1.230000",
            "trailing zeros are not precision"
        );
    }

    #[test]
    fn excess_precision_is_rejected_not_rounded() {
        assert_eq!(usdt("0.0000001"), Err(AmountError::TooPrecise { decimals: 6 }));
        assert_eq!(usdt("1.0000005"), Err(AmountError::TooPrecise { decimals: 6 }));
    }

    #[test]
    fn zero_negative_and_huge_amounts_are_rejected() {
        assert_eq!(usdt("0"), Err(AmountError::NotPositive));
        assert_eq!(usdt("-1"), Err(AmountError::NotPositive));
        assert_eq!(usdt("1000000000.000001"), Err(AmountError::AboveMaximum { max: max() }));
        assert!(usdt("1000000000").is_ok());
    }

    #[test]
    fn garbage_is_not_a_decimal() {
        for bad in [
            "",
            "abc",
            "1,5",
            "NaN",
            "inf",
            "0x10",
            "1.2.3",
            " ",
            "1e99999",
            "1e-99999",
            "123456789012345678901234567890123",
        ] {
            assert_eq!(RawAmount::parse(bad), Err(AmountError::NotADecimal), "{bad:?}");
        }
    }

    #[test]
    fn json_numbers_are_parsed_from_their_text_not_through_a_float() {
        let raw: RawAmount = serde_json::from_str("0.1").unwrap();
        assert_eq!(raw.value().to_string(), "0.1");
        let raw: RawAmount = serde_json::from_str("123456789.123456").unwrap();
        assert_eq!(raw.value().to_string(), "123456789.123456");
        let raw: RawAmount = serde_json::from_str("\"2.50\"").unwrap();
        assert_eq!(raw.value().to_string(), "2.50");
        let raw: RawAmount = serde_json::from_str("1e2").unwrap();
        assert_eq!(raw.value(), Decimal::from(100));
        assert!(serde_json::from_str::<RawAmount>("true").is_err());
        assert!(serde_json::from_str::<RawAmount>("null").is_err());
    }

    #[test]
    fn currencies_parse_by_code_only() {
        assert_eq!("USDT".parse::<Currency>(), Ok(Currency::Usdt));
        assert!("usdt".parse::<Currency>().is_err());
        assert!("BTC".parse::<Currency>().is_err());
    }

    #[test]
    fn base_units_convert_exactly_both_ways() {
        let usdt = Currency::Usdt;
        assert_eq!(usdt.to_base_units(Decimal::new(12_500_000, 6)), Some(12_500_000));
        assert_eq!(usdt.to_base_units(Decimal::new(3, 0)), Some(3_000_000));
        assert_eq!(
            usdt.to_base_units(Decimal::new(1, 7)),
            None,
            "more decimals than USDT has"
        );
        assert_eq!(usdt.to_base_units(Decimal::new(-1, 0)), None);
        assert_eq!(usdt.from_base_units(12_500_000), Decimal::new(125, 1));
        assert_eq!(usdt.from_base_units(u64::MAX).to_string(), "18446744073709.551615");
    }
}
