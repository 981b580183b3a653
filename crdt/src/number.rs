//! Numbers as Redis reads and writes them, and how a counter register renders.
//!
//! Redis accepts an integer only in canonical form (`string2ll`: optional `-`,
//! no leading zeros, no `+`, no spaces, within `i64`) and a float as `strtold`
//! reads it without spaces or NaN. Integer sums from several regions are
//! widened to `i128` (see [`crate::register`]), so a rendered value may lie
//! outside `i64`: GET shows it, INCR then refuses it as Redis would.

use std::borrow::Cow;

use crate::register::Register;
use crate::short_bytes::ShortBytes;

/// Parses a canonical Redis integer.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    parse_i128(bytes).and_then(|v| i64::try_from(v).ok())
}

/// Parses a canonical integer of any size up to `i128`.
pub fn parse_i128(bytes: &[u8]) -> Option<i128> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 39 {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || negative) {
        return None;
    }
    let mut value: i128 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = (b - b'0') as i128;
        value = value.checked_mul(10)?;
        value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    Some(value)
}

/// Parses a float the way Redis's `string2ld` does: the whole string, no
/// leading or trailing space, not NaN. `inf`/`-inf` are accepted.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    if bytes.is_empty() || bytes.len() > 5_000 {
        return None;
    }
    if bytes[0].is_ascii_whitespace() || bytes[bytes.len() - 1].is_ascii_whitespace() {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    // Letters other than an exponent's `e` can only spell the infinities
    // (Rust's parser would also take "nan" and "infinity" in any case, Redis
    // takes no NaN). Checked without lowercasing a copy: scores are parsed on
    // the ZADD hot path.
    let value = if bytes.iter().any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) {
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
        if !unsigned.eq_ignore_ascii_case("inf") && !unsigned.eq_ignore_ascii_case("infinity") {
            return None;
        }
        if text.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY }
    } else {
        text.parse::<f64>().ok()?
    };
    (!value.is_nan()).then_some(value)
}

/// Formats a float as INCRBYFLOAT replies: the shortest decimal that reads
/// back to the same `f64`, never in exponent form. (Redis computes in `long
/// double`; Meridian in `f64`, so the last digits of very long results may
/// differ — documented in docs/semantics.md.)
pub fn format_f64(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{value}")
}

/// Formats a score as Redis 7.2 replies with it (`d2string`): `inf`/`-inf`;
/// an integral value up to 2^62 as an integer; anything else as the shortest
/// decimal that reads back to the same `f64`, laid out the way Redis's
/// `fpconv_dtoa` lays it out (plain digits while the exponent is small,
/// otherwise `d.ddde+N` / `d.ddde-N` with no zero padding); negative zero
/// as `-0`. (Redis stores a `-0` score of a small sorted set as the integer
/// 0, so ZSCORE shows `0`: the sorted-set commands store -0 as 0 to match.
/// Redis's grisu2 may, rarely, print one digit more than the shortest form.)
pub fn format_score(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    if value.is_infinite() {
        return format_f64(value);
    }
    const INTEGRAL_MAX: f64 = (i64::MAX / 2) as f64;
    if value.abs() <= INTEGRAL_MAX && value.fract() == 0.0 {
        return (value as i64).to_string();
    }
    // `{:e}` prints the shortest round-trip digits as `d.ddde±x`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let ndigits = digits.len() as i32;
    // value = digits × 10^k (fpconv's K).
    let k = exponent - (ndigits - 1);
    let magnitude = exponent.abs();
    let mut out = String::with_capacity(24);
    if value < 0.0 {
        out.push('-');
    }
    if k >= 0 && magnitude < ndigits + 7 {
        out.push_str(&digits);
        out.extend(core::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || magnitude < 4) {
        let offset = ndigits + k;
        if offset <= 0 {
            out.push_str("0.");
            out.extend(core::iter::repeat_n('0', (-offset) as usize));
            out.push_str(&digits);
        } else {
            out.push_str(&digits[..offset as usize]);
            out.push('.');
            out.push_str(&digits[offset as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if ndigits > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&magnitude.to_string());
    }
    out
}

/// The value a string register shows: the winning entry plus the sum of live
/// increments. `None` when the key holds nothing.
///
/// - no increments: the winning value as written;
/// - integer base (or none) and integer increments: the exact sum;
/// - a float on either side: the `f64` sum, base first, increments in dot order;
/// - a base that is not a number: the base, with the increments kept but not
///   shown (they appear again if a later write makes the base numeric... which
///   it cannot, since a write removes the increments it observes; so in
///   practice they are discarded by the next write — docs/semantics.md).
pub fn render(register: &Register<ShortBytes>) -> Option<Cow<'_, [u8]>> {
    let base = register.winner().map(|e| e.value.as_slice());
    if register.increments().is_empty() {
        return base.map(Cow::Borrowed);
    }
    match numeric_value(register) {
        Some(Numeric::Int(v)) => Some(Cow::Owned(v.to_string().into_bytes())),
        Some(Numeric::Float(v)) => Some(Cow::Owned(format_f64(v).into_bytes())),
        None => base.map(Cow::Borrowed),
    }
}

/// A register's value as a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Numeric {
    /// Exact integer (possibly beyond `i64` after concurrent increments).
    Int(i128),
    /// Float.
    Float(f64),
}

/// The register's numeric value, or `None` if the base is not a number.
pub fn numeric_value(register: &Register<ShortBytes>) -> Option<Numeric> {
    let base = register.winner().map(|e| e.value.as_slice());
    let int_base = match base {
        None => Some(0),
        Some(bytes) => parse_i128(bytes),
    };
    if let (Some(int_base), Some(sum)) = (int_base, register.int_sum()) {
        return Some(Numeric::Int(int_base.saturating_add(sum)));
    }
    let mut total = match base {
        None => 0.0,
        Some(bytes) => parse_f64(bytes)?,
    };
    for increment in register.increments() {
        total += match increment.amount {
            crate::register::Amount::Int(v) => v as f64,
            crate::register::Amount::Float(v) => v,
        };
    }
    Some(Numeric::Float(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_only_in_canonical_form() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"0"), Some(0));
        for bad in [&b""[..], b"-", b"007", b"-0", b"+1", b" 1", b"1 ", b"1.0", b"9223372036854775808"] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i128(b"9223372036854775808"), Some(9223372036854775808));
    }

    #[test]
    fn floats_parse_like_string2ld() {
        assert_eq!(parse_f64(b"10.5"), Some(10.5));
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
        // The infinities in any case and with a sign; nothing else spelled.
        assert_eq!(parse_f64(b"INF"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"+Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"-InFiNiTy"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"+-inf"), None);
        assert_eq!(parse_f64(b"infx"), None);
        assert_eq!(parse_f64(b"-nan"), None);
        assert_eq!(parse_f64(b"NaN"), None);
        assert_eq!(parse_f64(b"1E5"), Some(100_000.0));
        assert_eq!(parse_f64(b"E5"), None);
        assert_eq!(parse_f64(b"0x10"), None);
        assert_eq!(format_f64(10.5 + 0.1), "10.6");
        assert_eq!(format_f64(5000.0 + 200.0), "5200");
        assert_eq!(format_f64(1e20), "100000000000000000000");
    }

    #[test]
    fn scores_format_like_redis_7_2_d2string() {
        for (value, text) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (1.1, "1.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e8, "100000000"),
            (4611686018427387904.0, "4611686018427387904"),
            (1.2345678901234568e20, "123456789012345680000"),
            (1e21, "1e+21"),
            (1e300, "1e+300"),
            (-1.5e300, "-1.5e+300"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (0.0001234, "1.234e-4"),
            (0.001234, "0.001234"),
            (123.456, "123.456"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ] {
            assert_eq!(format_score(value), text, "{value:e}");
        }
    }
}
