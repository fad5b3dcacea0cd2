//! Parsing of the numbers and dates found in real Spanish-language exports.
//!
//! Numbers are parsed exactly into [`Decimal`] (never through `f64`). The decimal separator is
//! decided once per file, so `1.234` is either 1234 or 1.234 for the whole file — never guessed
//! per value, which is how values end up silently 1000× off.

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The decimal separator of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecimalSep {
    #[serde(rename = ".")]
    Point,
    #[serde(rename = ",")]
    Comma,
}

impl DecimalSep {
    pub fn decimal(&self) -> u8 {
        match self {
            DecimalSep::Point => b'.',
            DecimalSep::Comma => b',',
        }
    }
    pub fn grouping(&self) -> u8 {
        match self {
            DecimalSep::Point => b',',
            DecimalSep::Comma => b'.',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not a number in the file's convention.
    Invalid,
    /// More significant digits than a decimal can hold.
    TooLarge,
}

/// Parses `1234.5`, `1,234.5`, `-12` (point files) or `1234,5`, `1.234,5` (comma files).
/// Grouping separators must form groups of three digits before the decimal separator.
pub fn parse_decimal(s: &str, sep: DecimalSep) -> Result<Decimal, NumberError> {
    let (m, scale) = parse_decimal_parts(s, sep)?;
    Decimal::try_from_i128_with_scale(m, scale).map_err(|_| NumberError::TooLarge)
}

/// Like [`parse_decimal`], as a mantissa and a scale (`12.50` → `(1250, 2)`).
pub fn parse_decimal_parts(s: &str, sep: DecimalSep) -> Result<(i128, u32), NumberError> {
    let b = trimmed(s).as_bytes();
    match plain_decimal(b, sep.decimal()) {
        Some(parts) => Ok(parts),
        None => decimal_parts(b, sep),
    }
}

/// `s` without surrounding whitespace; values that start and end with a visible ASCII
/// character (nearly all) are returned as they are without scanning for Unicode spaces.
fn trimmed(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// The form nearly every value takes — up to 19 digits with at most one decimal separator
/// between them (`1234`, `0.25`) — parsed in 64 bits. `None` for anything else (a sign,
/// grouping, `.5`, too long), which [`decimal_parts`] decides.
fn plain_decimal(b: &[u8], dec: u8) -> Option<(i128, u32)> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut m = 0u64;
    let mut point = None;
    for (i, &c) in b.iter().enumerate() {
        let digit = c.wrapping_sub(b'0');
        if digit < 10 {
            // At most 19 digits: below 10^19 < 2^64.
            m = m * 10 + u64::from(digit);
        } else if c == dec && point.is_none() && i > 0 && i + 1 < b.len() {
            point = Some(i);
        } else {
            return None;
        }
    }
    let scale = point.map_or(0, |p| (b.len() - p - 1) as u32);
    Some((i128::from(m), scale))
}

/// Every accepted form of a trimmed number: sign, grouping, a leading decimal separator.
fn decimal_parts(b: &[u8], sep: DecimalSep) -> Result<(i128, u32), NumberError> {
    let (neg, mut i) = match b.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        Some(_) => (false, 0),
        None => return Err(NumberError::Invalid),
    };
    let dec = sep.decimal();
    let grp = sep.grouping();
    let mut mantissa: u128 = 0;
    let mut digits = 0u32;
    let mut scale = 0u32;
    let mut int_digits = 0u32;
    // Grouping state: digits since the last grouping separator (None before the first one).
    let mut group_len: Option<u32> = None;
    let mut first_group = 0u32;
    let mut in_fraction = false;
    let mut any_digit = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            any_digit = true;
            if digits > 0 || c != b'0' {
                digits += 1;
                if digits > 28 {
                    return Err(NumberError::TooLarge);
                }
            }
            mantissa = mantissa * 10 + u128::from(c - b'0');
            if in_fraction {
                scale += 1;
                if scale > 28 {
                    return Err(NumberError::TooLarge);
                }
            } else {
                int_digits += 1;
                match group_len.as_mut() {
                    Some(g) => *g += 1,
                    None => first_group += 1,
                }
            }
        } else if c == grp && !in_fraction {
            // A grouping separator closes a group: the first has 1–3 digits, the others exactly 3.
            match group_len {
                None if (1..=3).contains(&first_group) => {}
                Some(3) => {}
                _ => return Err(NumberError::Invalid),
            }
            group_len = Some(0);
        } else if c == dec && !in_fraction {
            in_fraction = true;
        } else {
            return Err(NumberError::Invalid);
        }
        i += 1;
    }
    if !any_digit || int_digits == 0 && !in_fraction {
        return Err(NumberError::Invalid);
    }
    if let Some(g) = group_len {
        if g != 3 {
            return Err(NumberError::Invalid);
        }
    }
    if in_fraction && scale == 0 {
        return Err(NumberError::Invalid);
    }
    let m = i128::try_from(mantissa).map_err(|_| NumberError::TooLarge)?;
    Ok((if neg { -m } else { m }, scale))
}

/// Evidence one value gives about the decimal separator, if any.
pub fn separator_evidence(s: &str) -> Option<DecimalSep> {
    let t = s.trim().trim_start_matches(['-', '+']);
    let dots = t.matches('.').count();
    let commas = t.matches(',').count();
    if t.is_empty()
        || !t
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b'.' || c == b',')
    {
        return None;
    }
    match (dots, commas) {
        (0, 0) => None,
        // `1.234,5` or `1,234.5`: the last separator is the decimal one.
        (d, c) if d > 0 && c > 0 => {
            if t.rfind(',') > t.rfind('.') {
                Some(DecimalSep::Comma)
            } else {
                Some(DecimalSep::Point)
            }
        }
        // A single separator followed by exactly three digits is ambiguous (`1.234`).
        (1, 0) => unambiguous(t, '.', DecimalSep::Point, DecimalSep::Comma),
        (0, 1) => unambiguous(t, ',', DecimalSep::Comma, DecimalSep::Point),
        // `1.234.567` can only be grouping.
        (_, 0) => Some(DecimalSep::Comma),
        (0, _) => Some(DecimalSep::Point),
        _ => None,
    }
}

fn unambiguous(
    t: &str,
    sep: char,
    as_decimal: DecimalSep,
    as_group: DecimalSep,
) -> Option<DecimalSep> {
    let (int, frac) = t.split_once(sep)?;
    if frac.len() != 3 || int.is_empty() || int.len() > 3 || int == "0" {
        // `0.234`, `12.5`, `1234.567` can only be decimals.
        Some(as_decimal)
    } else {
        let _ = as_group;
        None
    }
}

/// Days from 0001-01-01 (day 1) to 1970-01-01.
const EPOCH_DAYS_CE: i32 = 719_163;

/// Days since 1970-01-01 of a calendar date.
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_CE
}

/// The calendar date `days` after 1970-01-01, when chrono can represent it.
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_CE)?)
}

/// The value of 1 to 4 ASCII digits.
fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    // One test for all the digits rather than a branch per byte.
    let mut value = 0u32;
    let mut not_digit = false;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        not_digit |= d > 9;
        value = value * 10 + u32::from(d);
    }
    (!not_digit).then_some(value)
}

/// Year, month and day of `2025-05-10`, `2025-05-10T00:00:00.000`, `2025/05/10` or
/// `10/05/2025` (day first), not checked to be a real date.
fn date_parts(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() == 10 && (b[4] == b'-' || b[4] == b'/') && b[7] == b[4] {
        return Some((num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?));
    }
    if b.len() > 10 && b[10] == b'T' && b[4] == b'-' && b[7] == b'-' {
        // Open-data portals write dates as midnight timestamps. Any other time of day is not
        // a date, and is refused rather than truncated to one.
        return if is_midnight(&b[11..]) {
            Some((num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?))
        } else {
            None
        };
    }
    // D/M/YYYY with one or two digits for day and month: never longer than 10 bytes.
    if b.len() > 10 {
        return None;
    }
    // The first slash ends the day, the second (before the last five bytes) the month.
    let first = b.iter().position(|&c| c == b'/')?;
    let year = b.len().checked_sub(4)?;
    if !(1..=2).contains(&first) || year < first + 3 || b[year - 1] != b'/' {
        return None;
    }
    let (d, m, y) = (&b[..first], &b[first + 1..year - 1], &b[year..]);
    if m.len() > 2 {
        return None;
    }
    // `num` refuses any byte that is not a digit, a stray slash included.
    Some((num(y)?, num(m)?, num(d)?))
}

/// `00:00:00`, with an optional fraction of zeros (`.000`) and an optional `Z`.
fn is_midnight(t: &[u8]) -> bool {
    let t = t.strip_suffix(b"Z").unwrap_or(t);
    let Some(fraction) = t.strip_prefix(b"00:00:00") else {
        return false;
    };
    match fraction.split_first() {
        None => true,
        Some((b'.', zeros)) => (1..=9).contains(&zeros.len()) && zeros.iter().all(|&c| c == b'0'),
        Some(_) => false,
    }
}

/// Parses `2025-05-10`, `2025-05-10T00:00:00.000` (midnight only), `2025/05/10` and
/// `10/05/2025` (day first).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let (y, m, d) = date_parts(trimmed(s))?;
    NaiveDate::from_ymd_opt(y as i32, m, d)
}

/// [`parse_date`] as days since 1970-01-01.
pub fn parse_date_days(s: &str) -> Option<i32> {
    let (y, m, d) = date_parts(trimmed(s))?;
    civil_days(y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date of a year up to 9999, if the date exists
/// (the days-from-civil computation: eras of 400 years, years starting in March).
fn civil_days(y: u32, m: u32, d: u32) -> Option<i32> {
    if y > 9999 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let leap = y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
    const MONTH_DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if d > MONTH_DAYS[(m - 1) as usize] + u32::from(m == 2 && leap) {
        return None;
    }
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((m + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(d) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    i32::try_from(era * 146_097 + day_of_era - 719_468).ok()
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `2025-05-10T14:30:00Z`, the form most exports use, when its fields are in range; anything
/// else (leap seconds included) is left to the general parser.
fn utc_seconds_timestamp(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let two = |i: usize| num(&b[i..i + 2]);
    let (h, mi, sec) = (two(11)?, two(14)?, two(17)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = civil_days(num(&b[0..4])?, two(5)?, two(8)?)?;
    Some(i64::from(days) * MICROS_PER_DAY + i64::from(h * 3600 + mi * 60 + sec) * 1_000_000)
}

/// Parses a date (midnight UTC) or an RFC 3339 / ISO 8601 timestamp; a timestamp without offset
/// is taken as UTC. Returns microseconds since the epoch.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let t = trimmed(s);
    if let Some(days) = parse_date_days(t) {
        return Some(i64::from(days) * MICROS_PER_DAY);
    }
    if t.len() < 16 {
        return None;
    }
    if let Some(us) = utc_seconds_timestamp(t) {
        return Some(us);
    }
    parse_timestamp_general(t)
}

/// Timestamps in every accepted form, through chrono.
fn parse_timestamp_general(t: &str) -> Option<i64> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_micros());
    }
    let naive = t.strip_suffix('Z').unwrap_or(t);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test literal")
    }

    #[test]
    fn numbers_in_both_conventions() {
        use DecimalSep::*;
        assert_eq!(parse_decimal("1234.5", Point), Ok(d("1234.5")));
        assert_eq!(parse_decimal("1,234.5", Point), Ok(d("1234.5")));
        assert_eq!(parse_decimal("1234,5", Comma), Ok(d("1234.5")));
        assert_eq!(parse_decimal("1.234,5", Comma), Ok(d("1234.5")));
        assert_eq!(parse_decimal("1.234.567", Comma), Ok(d("1234567")));
        assert_eq!(parse_decimal(" -0.25 ", Point), Ok(d("-0.25")));
        assert_eq!(parse_decimal(".5", Point), Ok(d("0.5")));
    }

    #[test]
    fn wrong_convention_or_garbage_is_rejected_not_misread() {
        use DecimalSep::*;
        // In a decimal-point file `1,5` is not a number: it is never read as 15.
        assert_eq!(parse_decimal("1,5", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("12,34.5", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("1.234.5", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("12a.5", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("-", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("1.", Point), Err(NumberError::Invalid));
        assert_eq!(parse_decimal("1e5", Point), Err(NumberError::Invalid));
        assert_eq!(
            parse_decimal("123456789012345678901234567890", Point),
            Err(NumberError::TooLarge)
        );
    }

    #[test]
    fn separator_evidence_ignores_ambiguous_values() {
        assert_eq!(separator_evidence("1234,5"), Some(DecimalSep::Comma));
        assert_eq!(separator_evidence("1.234,50"), Some(DecimalSep::Comma));
        assert_eq!(separator_evidence("1,234.50"), Some(DecimalSep::Point));
        assert_eq!(separator_evidence("12.5"), Some(DecimalSep::Point));
        assert_eq!(separator_evidence("1.234"), None);
        assert_eq!(separator_evidence("1234"), None);
        assert_eq!(separator_evidence("Bogotá"), None);
    }

    #[test]
    fn dates_in_every_accepted_form() {
        let may10 = NaiveDate::from_ymd_opt(2025, 5, 10);
        assert_eq!(parse_date("2025-05-10"), may10);
        assert_eq!(parse_date("2025/05/10"), may10);
        assert_eq!(parse_date("10/05/2025"), may10);
        assert_eq!(parse_date("10/5/2025"), may10);
        assert_eq!(parse_date("2025-13-45"), None);
        assert_eq!(parse_date("31/02/2025"), None);
        assert_eq!(parse_date("ayer"), None);
    }

    #[test]
    fn midnight_timestamps_are_dates() {
        let may10 = NaiveDate::from_ymd_opt(2025, 5, 10);
        for text in [
            "2025-05-10T00:00:00.000",
            "2025-05-10T00:00:00",
            "2025-05-10T00:00:00Z",
            "2025-05-10T00:00:00.000Z",
            " 2025-05-10T00:00:00.000 ",
        ] {
            assert_eq!(parse_date(text), may10, "{text}");
            assert_eq!(parse_date_days(text), may10.map(days_since_epoch), "{text}");
        }
    }

    #[test]
    fn a_time_of_day_is_not_a_date() {
        for text in [
            "2025-05-10T13:45:00.000",
            "2025-05-10T00:00:01",
            "2025-05-10T00:00:00.001",
            "2025-05-10T00:00:00.",
            "2025-05-10T00:00:00-05:00",
            "2025-05-10T",
            "2025/05/10T00:00:00",
            "2025-02-30T00:00:00.000",
        ] {
            assert_eq!(parse_date(text), None, "{text}");
            assert_eq!(parse_date_days(text), None, "{text}");
        }
        // As a timestamp it is still read, at its time of day.
        assert_eq!(
            parse_timestamp_micros("1970-01-01T00:00:01.000"),
            Some(1_000_000)
        );
    }

    #[test]
    fn timestamps_are_utc_micros() {
        assert_eq!(
            parse_timestamp_micros("1970-01-01T00:00:01Z"),
            Some(1_000_000)
        );
        assert_eq!(parse_timestamp_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp_micros("1970-01-02"), Some(86_400_000_000));
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:00.5"),
            Some(500_000)
        );
        assert_eq!(parse_timestamp_micros("2025-05-10T25:00:00Z"), None);
    }

    #[test]
    fn civil_days_agree_with_chrono_for_every_four_digit_year() {
        for y in 0..=9999u32 {
            for m in 0..=13u32 {
                for d in [0, 1, 15, 27, 28, 29, 30, 31, 32] {
                    let chrono_days = NaiveDate::from_ymd_opt(y as i32, m, d).map(days_since_epoch);
                    assert_eq!(civil_days(y, m, d), chrono_days, "{y:04}-{m:02}-{d:02}");
                }
            }
        }
    }

    /// Every string of up to ten digits, slashes and dashes is read as its plain reading: an
    /// ISO date, or exactly three slash-separated parts — day and month of one or two digits,
    /// a year of four — all digits.
    #[test]
    fn day_first_dates_are_read_as_their_three_slash_separated_parts() {
        let plain = |s: &str| -> Option<(u32, u32, u32)> {
            let b = s.as_bytes();
            if b.len() == 10 && (b[4] == b'-' || b[4] == b'/') && b[7] == b[4] {
                let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
                return n(0..4)
                    .zip(n(5..7))
                    .zip(n(8..10))
                    .map(|((y, m), d)| (y, m, d));
            }
            match s.split('/').collect::<Vec<_>>()[..] {
                [d, m, y] if s.len() <= 10 && d.len() <= 2 && m.len() <= 2 && y.len() == 4 => {
                    let n = |p: &str| {
                        let digits = !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
                        digits.then(|| p.parse::<u32>().ok())?
                    };
                    n(y).zip(n(m)).zip(n(d)).map(|((y, m), d)| (y, m, d))
                }
                _ => None,
            }
        };
        let mut texts = vec![String::new()];
        let mut checked = 0;
        for _ in 0..10 {
            texts = texts
                .iter()
                .flat_map(|t| ["1", "/", "-"].map(|c| format!("{t}{c}")))
                .collect();
            for t in &texts {
                assert_eq!(date_parts(t), plain(t), "{t:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 88_572);
    }

    /// The old timestamp parser: dates through chrono, then the general forms.
    fn timestamp_through_chrono(s: &str) -> Option<i64> {
        let t = s.trim();
        if let Some(d) = parse_date(t) {
            return Some(
                d.and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros(),
            );
        }
        if t.len() < 16 {
            return None;
        }
        parse_timestamp_general(t)
    }

    fn render(m: i64, scale: u32, sep: DecimalSep, grouped: bool) -> String {
        let v = Decimal::new(m, scale);
        let s = v.abs().to_string();
        let (int, frac) = s
            .split_once('.')
            .map_or((s.as_str(), None), |(a, b)| (a, Some(b)));
        let mut int_out = String::new();
        for (i, c) in int.chars().enumerate() {
            if grouped && i > 0 && (int.len() - i) % 3 == 0 {
                int_out.push(sep.grouping() as char);
            }
            int_out.push(c);
        }
        let sign = if v.is_sign_negative() && !v.is_zero() {
            "-"
        } else {
            ""
        };
        match frac {
            Some(f) => format!("{sign}{int_out}{}{f}", sep.decimal() as char),
            None => format!("{sign}{int_out}"),
        }
    }

    proptest! {
        #[test]
        fn any_rendered_decimal_parses_back_exactly(
            m in -1_000_000_000_000i64..1_000_000_000_000i64,
            scale in 0u32..6,
            comma in any::<bool>(),
            grouped in any::<bool>(),
        ) {
            let sep = if comma { DecimalSep::Comma } else { DecimalSep::Point };
            let text = render(m, scale, sep, grouped);
            prop_assert_eq!(parse_decimal(&text, sep), Ok(Decimal::new(m, scale)));
        }

        #[test]
        fn the_plain_form_parses_as_the_general_parser_parses_it(
            s in "[ \u{a0}]?[+-]?[0-9]{0,21}([.,][0-9]{0,6})?([.,][0-9]{0,4})?[ \u{a0}]?",
            comma in any::<bool>(),
        ) {
            let sep = if comma { DecimalSep::Comma } else { DecimalSep::Point };
            prop_assert_eq!(
                parse_decimal_parts(&s, sep),
                decimal_parts(s.trim().as_bytes(), sep)
            );
        }

        #[test]
        fn parse_decimal_never_panics(s in "\\PC{0,24}") {
            let _ = parse_decimal(&s, DecimalSep::Point);
            let _ = parse_decimal(&s, DecimalSep::Comma);
        }

        #[test]
        fn any_valid_date_parses_in_every_form(days in 0i64..40_000) {
            let date = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(days as u64);
            for text in [
                date.format("%Y-%m-%d").to_string(),
                date.format("%Y-%m-%dT00:00:00.000").to_string(),
                date.format("%Y/%m/%d").to_string(),
                date.format("%d/%m/%Y").to_string(),
            ] {
                prop_assert_eq!(parse_date(&text), Some(date));
            }
            prop_assert_eq!(days_since_epoch(date) as i64, days);
            prop_assert_eq!(date_from_days(days as i32), Some(date));
        }

        #[test]
        fn timestamps_parse_as_chrono_parses_them(
            (y, m, d) in (0u32..10_000, 0u32..14, 0u32..33),
            (h, mi, sec) in (0u32..26, 0u32..62, 0u32..62),
            shape in 0usize..5,
            typo in proptest::option::of((0usize..20, proptest::sample::select(vec!["x", " ", "t", "z", "1"]))),
        ) {
            let mut text = match shape {
                0 | 1 => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z"),
                2 => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}-05:00"),
                3 => format!("{y:04}/{m:02}/{d:02}"),
                _ => format!("{d}/{m}/{y:04}"),
            };
            if let Some((pos, with)) = typo {
                if pos < text.len() {
                    text.replace_range(pos..=pos, with);
                }
            }
            prop_assert_eq!(parse_timestamp_micros(&text), timestamp_through_chrono(&text));
            prop_assert_eq!(
                parse_date_days(&text),
                parse_date(&text).map(days_since_epoch)
            );
        }

        #[test]
        fn parse_date_never_panics(s in "\\PC{0,16}") {
            let _ = parse_date(&s);
            let _ = parse_date_days(&s);
            let _ = parse_timestamp_micros(&s);
        }
    }
}
