//! Checked conversions for the domain's value types: money and calendar days.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Parses an amount such as `12.34`, `-5` or `0.5` (an optional sign, digits, at most two
/// decimals) into integer cents. Amounts outside `i64` cents are refused, never wrapped.
pub fn parse_cents(text: &str) -> Result<i64> {
    let invalid = |reason: &str| Error::InvalidValue {
        field: "amount",
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid("no digits"));
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(invalid(
            "only digits, a sign and a decimal point are allowed",
        ));
    }
    if fraction.len() > 2 {
        return Err(invalid("at most two decimals"));
    }
    let overflow = || invalid("outside the range of i64 cents");
    let mut cents: i64 = 0;
    for b in whole.bytes() {
        cents = cents
            .checked_mul(10)
            .and_then(|c| c.checked_add(i64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    let fraction_cents = match fraction.as_bytes() {
        [] => 0,
        [a] => i64::from(a - b'0') * 10,
        [a, b] => i64::from(a - b'0') * 10 + i64::from(b - b'0'),
        _ => unreachable!("checked above"),
    };
    cents = cents
        .checked_mul(100)
        .and_then(|c| c.checked_add(fraction_cents))
        .ok_or_else(overflow)?;
    Ok(if negative { -cents } else { cents })
}

/// Checks that `date` is a real calendar day written `YYYY-MM-DD`.
pub fn validate_date(date: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidValue {
        field: "expense_date",
        value: date.to_owned(),
        reason: reason.to_owned(),
    };
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(invalid("expected YYYY-MM-DD"));
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(invalid("expected YYYY-MM-DD"));
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(invalid("month must be 01 to 12")),
    };
    if day == 0 || day > days {
        return Err(invalid("no such day in that month"));
    }
    Ok(())
}

/// Now, as the domain's timestamps are stored: Unix time in milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_parse_and_refuse() -> Result<()> {
        assert_eq!(parse_cents("12.34")?, 1234);
        assert_eq!(parse_cents("-5")?, -500);
        assert_eq!(parse_cents("0.5")?, 50);
        assert_eq!(parse_cents(".07")?, 7);
        assert_eq!(parse_cents("92233720368547758.07")?, i64::MAX);
        for bad in [
            "",
            "-",
            "1.234",
            "1e3",
            "12,34",
            "92233720368547758.08",
            "99999999999999999999",
        ] {
            assert!(parse_cents(bad).is_err(), "{bad} accepted");
        }
        Ok(())
    }

    #[test]
    fn dates_are_real_days() -> Result<()> {
        validate_date("2024-02-29")?;
        validate_date("2026-12-31")?;
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "20260101",
            "2026-01-32",
            "２０２６-01-01",
        ] {
            assert!(validate_date(bad).is_err(), "{bad} accepted");
        }
        Ok(())
    }
}
