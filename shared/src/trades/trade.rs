//! The trade event: its shape, its validation rules and its exact parser.
//!
//! A trade arrives as the JSON object of a Kinesis record. Amounts may be decimal strings
//! (`"250.00"`) or JSON numbers (`250.00`); either way the number's *text* is parsed into a
//! [`Decimal`], never through `f64`, so `0.1` is `0.1` and `4012.3500` keeps every digit.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest `trade_id` / `user_id` accepted, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Decimal places accepted in `usd_amount` (cents).
pub const USD_DECIMALS: u32 = 2;
/// Decimal places accepted in `rate` (COP per USD).
pub const RATE_DECIMALS: u32 = 4;

/// Whether the user buys or sells US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The canonical spelling (`BUY` / `SELL`), also used as the SNS message attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated trade. `usd_amount` always has scale 2 and `rate` scale 4, so they serialize as
/// `"250.00"` and `"4012.3500"` whatever spelling came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    pub trade_id: String,
    pub user_id: String,
    pub side: Side,
    pub usd_amount: Decimal,
    pub rate: Decimal,
    pub executed_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// The stable reason code of an invalid record. `Display` gives the code
/// (`missing_field:usd_amount`), which is what the DLQ message and the counters carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// Not JSON, or JSON but not an object.
    InvalidJson,
    /// The Kinesis record data is not valid base64 (decoded by the Lambda adapter).
    InvalidBase64,
    /// The bytes are not UTF-8.
    InvalidEncoding,
    /// A required field is absent or `null`.
    MissingField(&'static str),
    /// A field is present but violates its rule.
    InvalidField(&'static str),
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidReason::InvalidJson => f.write_str("invalid_json"),
            InvalidReason::InvalidBase64 => f.write_str("invalid_base64"),
            InvalidReason::InvalidEncoding => f.write_str("invalid_encoding"),
            InvalidReason::MissingField(field) => write!(f, "missing_field:{field}"),
            InvalidReason::InvalidField(field) => write!(f, "invalid_field:{field}"),
        }
    }
}

/// Why a record is not a valid trade: a stable [`InvalidReason`] plus a human detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct InvalidTrade {
    pub reason: InvalidReason,
    pub detail: String,
}

impl InvalidTrade {
    pub fn new(reason: InvalidReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// The stable reason code, e.g. `invalid_field:rate`.
    pub fn code(&self) -> String {
        self.reason.to_string()
    }
}

/// The wire shape, borrowed: every field is kept as raw JSON text so that a wrong type is
/// reported against its field, and numbers are never converted through `f64`.
#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(borrow, default)]
    trade_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    side: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usd_amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rate: Option<&'a RawValue>,
    #[serde(borrow, default)]
    executed_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
}

impl Trade {
    /// Parses and validates one record's bytes.
    ///
    /// Rules: `trade_id`, `user_id` non-empty strings of at most 64 characters; `side` BUY/SELL
    /// in any case; `usd_amount` > 0 with at most 2 decimals; `rate` > 0 with at most 4 decimals
    /// (both as decimal strings or JSON numbers, trailing zeros allowed); `executed_at` RFC 3339
    /// (any offset, stored as UTC); `channel` an optional string (`null` or `""` = absent).
    /// Unknown fields are ignored. The first failing field, in that order, is reported.
    pub fn parse(data: &[u8]) -> Result<Trade, InvalidTrade> {
        let text = std::str::from_utf8(data).map_err(|e| {
            InvalidTrade::new(
                InvalidReason::InvalidEncoding,
                format!("record is not UTF-8: {e}"),
            )
        })?;
        let raw: RawTrade<'_> = serde_json::from_str(text).map_err(|e| {
            let detail = if e.is_data() {
                format!("expected a JSON object: {e}")
            } else {
                e.to_string()
            };
            InvalidTrade::new(InvalidReason::InvalidJson, detail)
        })?;

        let trade_id = id_field("trade_id", raw.trade_id)?;
        let user_id = id_field("user_id", raw.user_id)?;
        let side = side_field(raw.side)?;
        let usd_amount = amount_field("usd_amount", raw.usd_amount, USD_DECIMALS)?;
        let rate = amount_field("rate", raw.rate, RATE_DECIMALS)?;
        let executed_at = time_field(raw.executed_at)?;
        let channel = match raw.channel {
            None => None,
            Some(value) => match json_str(value) {
                Some(s) if s.is_empty() => None,
                Some(s) => Some(s.into_owned()),
                None => {
                    return Err(InvalidTrade::new(
                        InvalidReason::InvalidField("channel"),
                        format!("expected a string, got {}", value.get()),
                    ))
                }
            },
        };
        Ok(Trade {
            trade_id,
            user_id,
            side,
            usd_amount,
            rate,
            executed_at,
            channel,
        })
    }

    /// The trade as one JSON line (no trailing newline), amounts as decimal strings.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, decimals and a timestamp cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn required<'a>(
    field: &'static str,
    value: Option<&'a RawValue>,
) -> Result<&'a RawValue, InvalidTrade> {
    value.ok_or_else(|| {
        InvalidTrade::new(
            InvalidReason::MissingField(field),
            format!("`{field}` is required"),
        )
    })
}

fn invalid(field: &'static str, detail: String) -> InvalidTrade {
    InvalidTrade::new(InvalidReason::InvalidField(field), detail)
}

/// A JSON string's content, borrowed when it has no escapes. `None` when not a string.
fn json_str(value: &RawValue) -> Option<Cow<'_, str>> {
    let raw = value.get();
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

fn id_field(field: &'static str, value: Option<&RawValue>) -> Result<String, InvalidTrade> {
    let value = required(field, value)?;
    let s = json_str(value)
        .ok_or_else(|| invalid(field, format!("expected a string, got {}", value.get())))?;
    if s.trim().is_empty() {
        return Err(invalid(field, "must not be empty".to_string()));
    }
    // Byte length bounds the character count, so the count is only needed for long values.
    if s.len() > MAX_ID_CHARS && s.chars().count() > MAX_ID_CHARS {
        return Err(invalid(
            field,
            format!("longer than {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(s.into_owned())
}

fn side_field(value: Option<&RawValue>) -> Result<Side, InvalidTrade> {
    let value = required("side", value)?;
    let s = json_str(value).unwrap_or(Cow::Borrowed(value.get()));
    if s.eq_ignore_ascii_case("buy") {
        Ok(Side::Buy)
    } else if s.eq_ignore_ascii_case("sell") {
        Ok(Side::Sell)
    } else {
        Err(invalid("side", format!("expected BUY or SELL, got {s:?}")))
    }
}

/// A positive amount with at most `decimals` places, rescaled to exactly `decimals` places.
fn amount_field(
    field: &'static str,
    value: Option<&RawValue>,
    decimals: u32,
) -> Result<Decimal, InvalidTrade> {
    let value = required(field, value)?;
    let raw = value.get();
    let parsed = if raw.starts_with('"') {
        let s = json_str(value)
            .ok_or_else(|| invalid(field, format!("not a decimal string: {raw}")))?;
        parse_plain_decimal(&s)
    } else {
        parse_json_number(raw)
    };
    let mut amount = parsed.ok_or_else(|| invalid(field, format!("not a decimal: {raw}")))?;
    if amount <= Decimal::ZERO {
        return Err(invalid(field, format!("must be greater than 0, got {raw}")));
    }
    if amount.normalize().scale() > decimals {
        return Err(invalid(
            field,
            format!("at most {decimals} decimal places, got {raw}"),
        ));
    }
    amount.rescale(decimals);
    Ok(amount)
}

/// `123`, `123.45`, `-1.5` — the decimal-string form (no exponent, no spaces, no `_`).
fn parse_plain_decimal(s: &str) -> Option<Decimal> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Decimal::from_str_exact(s).ok()
}

/// A JSON number token (already validated by the JSON parser), parsed from its text.
fn parse_json_number(raw: &str) -> Option<Decimal> {
    if raw.bytes().any(|b| b == b'e' || b == b'E') {
        Decimal::from_scientific(raw).ok()
    } else if raw.starts_with('-') || raw.starts_with(|c: char| c.is_ascii_digit()) {
        parse_plain_decimal(raw)
    } else {
        None
    }
}

fn time_field(value: Option<&RawValue>) -> Result<DateTime<Utc>, InvalidTrade> {
    let value = required("executed_at", value)?;
    let s = json_str(value)
        .ok_or_else(|| invalid("executed_at", format!("expected a string, got {}", value.get())))?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| invalid("executed_at", format!("not RFC 3339 ({e}): {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn reason_of(json: &str) -> String {
        match Trade::parse(json.as_bytes()) {
            Ok(t) => format!("accepted {t:?}"),
            Err(e) => e.code(),
        }
    }

    const VALID: &str = r#"{"trade_id":"t-1","user_id":"u-1","side":"BUY","usd_amount":"250.00","rate":"4012.3500","executed_at":"2026-11-28T17:00:00Z","channel":"app"}"#;

    #[test]
    fn parses_the_documented_event() -> TestResult {
        let t = Trade::parse(VALID.as_bytes())?;
        assert_eq!(t.trade_id, "t-1");
        assert_eq!(t.user_id, "u-1");
        assert_eq!(t.side, Side::Buy);
        assert_eq!(t.usd_amount.to_string(), "250.00");
        assert_eq!(t.rate.to_string(), "4012.3500");
        assert_eq!(t.executed_at.to_rfc3339(), "2026-11-28T17:00:00+00:00");
        assert_eq!(t.channel.as_deref(), Some("app"));
        Ok(())
    }

    #[test]
    fn json_numbers_are_parsed_exactly_not_through_f64() -> TestResult {
        // GIVEN amounts written as JSON numbers, one of which f64 cannot represent
        let json = r#"{"trade_id":"t","user_id":"u","side":"sell","usd_amount":250.10,"rate":4012.3501,"executed_at":"2026-11-28T17:00:00-05:00"}"#;
        // WHEN parsed
        let t = Trade::parse(json.as_bytes())?;
        // THEN every digit is kept and the scale is canonical
        assert_eq!(t.usd_amount.to_string(), "250.10");
        assert_eq!(t.rate.to_string(), "4012.3501");
        assert_eq!(t.side, Side::Sell);
        assert_eq!(t.executed_at.to_rfc3339(), "2026-11-28T22:00:00+00:00");
        assert_eq!(t.channel, None);
        Ok(())
    }

    #[test]
    fn exponent_numbers_and_trailing_zeros_are_accepted_when_exact() -> TestResult {
        let json = r#"{"trade_id":"t","user_id":"u","side":"Buy","usd_amount":2.5E2,"rate":"4000.000000","executed_at":"2026-01-01T00:00:00.123Z"}"#;
        let t = Trade::parse(json.as_bytes())?;
        assert_eq!(t.usd_amount, dec("250"));
        assert_eq!(t.usd_amount.to_string(), "250.00");
        assert_eq!(t.rate.to_string(), "4000.0000");
        Ok(())
    }

    #[test]
    fn three_decimal_usd_amount_is_rejected() {
        let json = VALID.replace(r#""250.00""#, r#""250.001""#);
        assert_eq!(reason_of(&json), "invalid_field:usd_amount");
        let json = VALID.replace(r#""250.00""#, "250.001");
        assert_eq!(reason_of(&json), "invalid_field:usd_amount");
    }

    #[test]
    fn five_decimal_rate_is_rejected() {
        let json = VALID.replace(r#""4012.3500""#, r#""4012.35001""#);
        assert_eq!(reason_of(&json), "invalid_field:rate");
    }

    #[test]
    fn zero_negative_and_malformed_amounts_are_rejected() {
        for bad in [
            r#""0.00""#,
            r#""-5""#,
            "-5",
            "0",
            r#""1_000""#,
            r#"" 10""#,
            r#""1e3""#,
            r#""""#,
            "true",
            r#"{"v":1}"#,
            r#""12.""#,
            r#""abc""#,
        ] {
            let json = VALID.replace(r#""250.00""#, bad);
            assert_eq!(reason_of(&json), "invalid_field:usd_amount", "{bad}");
        }
    }

    #[test]
    fn too_many_digits_for_a_decimal_is_rejected_not_rounded() {
        let json = VALID.replace(r#""4012.3500""#, r#""4012.350000000000000000000000001""#);
        assert_eq!(reason_of(&json), "invalid_field:rate");
    }

    #[test]
    fn missing_and_null_fields_are_reported_by_name() {
        assert_eq!(
            reason_of(r#"{"user_id":"u","side":"BUY","usd_amount":"1","rate":"1","executed_at":"2026-01-01T00:00:00Z"}"#),
            "missing_field:trade_id"
        );
        let json = VALID.replace(r#""rate":"4012.3500""#, r#""rate":null"#);
        assert_eq!(reason_of(&json), "missing_field:rate");
    }

    #[test]
    fn ids_must_be_non_empty_strings_of_at_most_64_chars() {
        let long = "x".repeat(65);
        let json = VALID.replace(r#""t-1""#, &format!("\"{long}\""));
        assert_eq!(reason_of(&json), "invalid_field:trade_id");
        let ok = "ñ".repeat(64); // 128 bytes, 64 characters
        let json = VALID.replace(r#""t-1""#, &format!("\"{ok}\""));
        assert!(reason_of(&json).starts_with("accepted"));
        let json = VALID.replace(r#""u-1""#, r#""  ""#);
        assert_eq!(reason_of(&json), "invalid_field:user_id");
        let json = VALID.replace(r#""u-1""#, "17");
        assert_eq!(reason_of(&json), "invalid_field:user_id");
    }

    #[test]
    fn escaped_strings_are_decoded() -> TestResult {
        let json = VALID.replace(r#""t-1""#, r#""t\u002d1\"q""#);
        let t = Trade::parse(json.as_bytes())?;
        assert_eq!(t.trade_id, "t-1\"q");
        Ok(())
    }

    #[test]
    fn side_and_time_are_validated() {
        let json = VALID.replace(r#""BUY""#, r#""HOLD""#);
        assert_eq!(reason_of(&json), "invalid_field:side");
        let json = VALID.replace("2026-11-28T17:00:00Z", "2026-11-28 17:00");
        assert_eq!(reason_of(&json), "invalid_field:executed_at");
        let json = VALID.replace(r#""app""#, "7");
        assert_eq!(reason_of(&json), "invalid_field:channel");
    }

    #[test]
    fn non_json_non_object_and_non_utf8_have_their_own_codes() {
        assert_eq!(reason_of(r#"{"trade_id": "#), "invalid_json");
        assert_eq!(reason_of("[1,2]"), "invalid_json");
        assert_eq!(reason_of(""), "invalid_json");
        let err = Trade::parse(&[0xff, 0xfe]).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "invalid_encoding");
    }

    #[test]
    fn serializes_amounts_as_decimal_strings_and_round_trips() -> TestResult {
        let t = Trade::parse(VALID.as_bytes())?;
        let line = t.to_json();
        assert!(line.contains(r#""usd_amount":"250.00""#), "{line}");
        assert!(line.contains(r#""rate":"4012.3500""#), "{line}");
        assert_eq!(Trade::parse(line.as_bytes())?, t);
        Ok(())
    }
}
