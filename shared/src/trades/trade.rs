//! The trade event: its shape, its validation rules and its exact parser.
//!
//! A trade arrives as the JSON object of a Kinesis record. Amounts may be decimal strings
//! (`"250.00"`) or JSON numbers (`250.00`); either way the number's *text* is parsed into a
//! [`Decimal`], never through `f64`, so `0.1` is `0.1` and `4012.3500` keeps every digit.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::archive::ArchiveStatus;
use super::hash::FastSet;

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
/// `"250.00"` and `"4012.3500"` whatever spelling came in. The ids are shared strings: the
/// decision, the notification and the archive line of a trade all point at one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    #[serde(serialize_with = "serialize_shared")]
    pub trade_id: Arc<str>,
    #[serde(serialize_with = "serialize_shared")]
    pub user_id: Arc<str>,
    pub side: Side,
    pub usd_amount: Decimal,
    pub rate: Decimal,
    pub executed_at: DateTime<Utc>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_shared_opt"
    )]
    pub channel: Option<Arc<str>>,
}

/// The decision fields of an archive line, as read back by [`Trade::parse_archived`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchivedFields {
    pub status: ArchiveStatus,
    pub reason: String,
    pub sequence_number: String,
    pub arrived_at: Option<DateTime<Utc>>,
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
    /// A KPL-aggregated record that cannot be de-aggregated (`kpl_digest_mismatch`,
    /// `kpl_malformed`, `kpl_empty`): see [`super::kpl`].
    Kpl(&'static str),
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidReason::InvalidJson => f.write_str("invalid_json"),
            InvalidReason::InvalidBase64 => f.write_str("invalid_base64"),
            InvalidReason::InvalidEncoding => f.write_str("invalid_encoding"),
            InvalidReason::MissingField(field) => write!(f, "missing_field:{field}"),
            InvalidReason::InvalidField(field) => write!(f, "invalid_field:{field}"),
            InvalidReason::Kpl(code) => f.write_str(code),
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

/// Serializes an `Arc<str>` as a plain string (without serde's `rc` feature).
pub(crate) fn serialize_shared<S: Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

fn serialize_shared_opt<S: Serializer>(value: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

/// Shares the strings that repeat within a batch (user ids, channels), so a parsed trade
/// costs one allocation (its `trade_id`) instead of three.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: FastSet<Arc<str>>,
}

impl Interner {
    pub(crate) fn with_capacity(strings: usize) -> Self {
        Self {
            strings: FastSet::with_capacity_and_hasher(strings, Default::default()),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(known) = self.strings.get(s) {
            return Arc::clone(known);
        }
        let fresh: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&fresh));
        fresh
    }
}

/// One field's JSON value: a string's content, or the text of any other token (number,
/// `true`, `false`, or a whole nested value). `null` is never a value: it reads as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Json<'a> {
    Str(Cow<'a, str>),
    Token(&'a str),
}

impl Json<'_> {
    /// As shown in a detail: strings quoted, tokens as written.
    fn shown(&self) -> String {
        match self {
            Json::Str(s) => format!("{s:?}"),
            Json::Token(t) => (*t).to_string(),
        }
    }
}

/// The fields a trade is made of, before validation.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fields<'a> {
    trade_id: Option<Json<'a>>,
    user_id: Option<Json<'a>>,
    side: Option<Json<'a>>,
    usd_amount: Option<Json<'a>>,
    rate: Option<Json<'a>>,
    executed_at: Option<Json<'a>>,
    channel: Option<Json<'a>>,
    // What an archive line adds (see `super::archive`); ignored when parsing a trade.
    status: Option<Json<'a>>,
    reason: Option<Json<'a>>,
    sequence_number: Option<Json<'a>>,
    arrived_at: Option<Json<'a>>,
}

/// The wire shape for serde_json, borrowed: every field kept as raw JSON text, so a wrong type
/// is reported against its field and numbers never go through `f64`.
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
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arrived_at: Option<&'a RawValue>,
}

impl Trade {
    /// Parses and validates one record's bytes.
    ///
    /// Rules: `trade_id`, `user_id` non-empty strings of at most 64 characters; `side` BUY/SELL
    /// in any case; `usd_amount` > 0 with at most 2 decimals; `rate` > 0 with at most 4 decimals
    /// (both as decimal strings or JSON numbers, trailing zeros allowed); `executed_at` RFC 3339
    /// (any offset, stored as UTC); `channel` an optional string (`null` or `""` = absent).
    /// Unknown fields are ignored; a repeated field is invalid JSON. The first failing field,
    /// in that order, is reported.
    pub fn parse(data: &[u8]) -> Result<Trade, InvalidTrade> {
        Self::parse_with(data, true, None)
    }

    /// [`Trade::parse`], sharing repeated strings through `interner` (one per batch).
    pub(crate) fn parse_interned(
        data: &[u8],
        interner: &mut Interner,
    ) -> Result<Trade, InvalidTrade> {
        Self::parse_with(data, true, Some(interner))
    }

    /// Either path, for the property test that compares them.
    #[cfg(test)]
    pub(crate) fn parse_for_tests(data: &[u8], fast: bool) -> Result<Trade, InvalidTrade> {
        Self::parse_with(data, fast, None)
    }

    /// `fast`: try the single-pass scanner first. Both paths give the same result (tested).
    fn parse_with(
        data: &[u8],
        fast: bool,
        interner: Option<&mut Interner>,
    ) -> Result<Trade, InvalidTrade> {
        Self::from_fields(Self::fields(data, fast)?, interner)
    }

    /// One archive line (see [`super::archive`]): the trade, validated as [`Trade::parse`]
    /// does, and the decision fields — `status` one of `applied`/`rejected`/`duplicate`,
    /// `reason` and `sequence_number` strings (absent = empty), `arrived_at` RFC 3339 or absent.
    pub(crate) fn parse_archived(
        data: &[u8],
        interner: &mut Interner,
    ) -> Result<(Trade, ArchivedFields), InvalidTrade> {
        let mut fields = Self::fields(data, true)?;
        let status = match required("status", fields.status.take())? {
            Json::Str(s) => match &*s {
                "applied" => ArchiveStatus::Applied,
                "rejected" => ArchiveStatus::Rejected,
                "duplicate" => ArchiveStatus::Duplicate,
                _ => return Err(invalid("status", format!("unknown status {s:?}"))),
            },
            other => {
                return Err(invalid(
                    "status",
                    format!("expected a string, got {}", other.shown()),
                ))
            }
        };
        let text = |field: &'static str, value: Option<Json<'_>>| match value {
            None => Ok(String::new()),
            Some(Json::Str(s)) => Ok(s.into_owned()),
            Some(other) => Err(invalid(
                field,
                format!("expected a string, got {}", other.shown()),
            )),
        };
        let reason = text("reason", fields.reason.take())?;
        let sequence_number = text("sequence_number", fields.sequence_number.take())?;
        let arrived_at = match fields.arrived_at.take() {
            None => None,
            Some(value) => Some(timestamp("arrived_at", value)?),
        };
        let trade = Self::from_fields(fields, Some(interner))?;
        Ok((
            trade,
            ArchivedFields {
                status,
                reason,
                sequence_number,
                arrived_at,
            },
        ))
    }

    fn fields(data: &[u8], fast: bool) -> Result<Fields<'_>, InvalidTrade> {
        let text = std::str::from_utf8(data).map_err(|e| {
            InvalidTrade::new(
                InvalidReason::InvalidEncoding,
                format!("record is not UTF-8: {e}"),
            )
        })?;
        // A derived struct would also accept a JSON array; only an object is a trade.
        if !text.trim_start_matches(is_json_space).starts_with('{') {
            let shown: String = text.chars().take(40).collect();
            return Err(InvalidTrade::new(
                InvalidReason::InvalidJson,
                format!("expected a JSON object, got {shown:?}"),
            ));
        }
        match fast.then(|| scan_object(text)).flatten() {
            Some(fields) => Ok(fields),
            None => serde_fields(text),
        }
    }

    fn from_fields(
        f: Fields<'_>,
        mut interner: Option<&mut Interner>,
    ) -> Result<Trade, InvalidTrade> {
        let mut share = |s: &str| match interner.as_deref_mut() {
            Some(interner) => interner.intern(s),
            None => Arc::from(s),
        };
        let trade_id = Arc::from(&*id_field("trade_id", f.trade_id)?);
        let user_id = share(&id_field("user_id", f.user_id)?);
        let side = side_field(f.side)?;
        let usd_amount = amount_field("usd_amount", f.usd_amount, USD_DECIMALS)?;
        let rate = amount_field("rate", f.rate, RATE_DECIMALS)?;
        let executed_at = time_field(f.executed_at)?;
        let channel = match f.channel {
            None => None,
            Some(Json::Str(s)) if s.is_empty() => None,
            Some(Json::Str(s)) => Some(share(&s)),
            Some(other) => {
                return Err(invalid(
                    "channel",
                    format!("expected a string, got {}", other.shown()),
                ))
            }
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

fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The general path: serde_json with every field as a raw value.
fn serde_fields(text: &str) -> Result<Fields<'_>, InvalidTrade> {
    let raw: RawTrade<'_> = serde_json::from_str(text)
        .map_err(|e| InvalidTrade::new(InvalidReason::InvalidJson, e.to_string()))?;
    fn json(value: Option<&RawValue>) -> Option<Json<'_>> {
        value.map(|v| {
            let raw = v.get();
            if raw.starts_with('"') {
                // A string serde_json accepted decodes.
                Json::Str(serde_json::from_str::<Cow<'_, str>>(raw).unwrap_or(Cow::Borrowed("")))
            } else {
                Json::Token(raw)
            }
        })
    }
    Ok(Fields {
        trade_id: json(raw.trade_id),
        user_id: json(raw.user_id),
        side: json(raw.side),
        usd_amount: json(raw.usd_amount),
        rate: json(raw.rate),
        executed_at: json(raw.executed_at),
        channel: json(raw.channel),
        status: json(raw.status),
        reason: json(raw.reason),
        sequence_number: json(raw.sequence_number),
        arrived_at: json(raw.arrived_at),
    })
}

/// The fast path: one pass over a flat object whose strings have no escapes. `None` for
/// anything else — escapes, nested values, invalid JSON, a repeated field — which the serde
/// path then accepts or rejects.
fn scan_object(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    let mut f = Fields::default();
    let mut seen = [false; 11];
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, next) = scan_string(text, i)?;
            i = skip_space(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_space(b, i + 1);
            let (value, next) = scan_value(text, i)?;
            i = skip_space(b, next);
            let slot = match key {
                "trade_id" => Some((0, &mut f.trade_id)),
                "user_id" => Some((1, &mut f.user_id)),
                "side" => Some((2, &mut f.side)),
                "usd_amount" => Some((3, &mut f.usd_amount)),
                "rate" => Some((4, &mut f.rate)),
                "executed_at" => Some((5, &mut f.executed_at)),
                "channel" => Some((6, &mut f.channel)),
                "status" => Some((7, &mut f.status)),
                "reason" => Some((8, &mut f.reason)),
                "sequence_number" => Some((9, &mut f.sequence_number)),
                "arrived_at" => Some((10, &mut f.arrived_at)),
                _ => None,
            };
            if let Some((k, slot)) = slot {
                if seen[k] {
                    return None;
                }
                seen[k] = true;
                *slot = value;
            }
            match b.get(i) {
                Some(b',') => i = skip_space(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(b, i) == b.len()).then_some(f)
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string without escapes or control characters starting at `i`: its content and the
/// index after the closing quote.
fn scan_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    loop {
        match *b.get(j)? {
            b'"' => return Some((&text[start..j], j + 1)),
            b'\\' | 0..=0x1f => return None,
            _ => j += 1,
        }
    }
}

/// A flat value at `i`: `None` inside for `null`.
fn scan_value(text: &str, i: usize) -> Option<(Option<Json<'_>>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let (s, next) = scan_string(text, i)?;
            Some((Some(Json::Str(Cow::Borrowed(s))), next))
        }
        b'-' | b'0'..=b'9' => {
            let end = scan_number(b, i)?;
            Some((Some(Json::Token(&text[i..end])), end))
        }
        _ => {
            for literal in ["true", "false", "null"] {
                if b[i..].starts_with(literal.as_bytes()) {
                    let end = i + literal.len();
                    let value = (literal != "null").then_some(Json::Token(&text[i..end]));
                    return Some((value, end));
                }
            }
            None
        }
    }
}

/// The end of a JSON number token starting at `i` (strict JSON grammar).
fn scan_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

fn required<'a>(field: &'static str, value: Option<Json<'a>>) -> Result<Json<'a>, InvalidTrade> {
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

fn id_field<'a>(
    field: &'static str,
    value: Option<Json<'a>>,
) -> Result<Cow<'a, str>, InvalidTrade> {
    let s = match required(field, value)? {
        Json::Str(s) => s,
        other => {
            return Err(invalid(
                field,
                format!("expected a string, got {}", other.shown()),
            ))
        }
    };
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
    Ok(s)
}

fn side_field(value: Option<Json<'_>>) -> Result<Side, InvalidTrade> {
    let value = required("side", value)?;
    let s: &str = match &value {
        Json::Str(s) => s,
        Json::Token(t) => t,
    };
    if s.eq_ignore_ascii_case("buy") {
        Ok(Side::Buy)
    } else if s.eq_ignore_ascii_case("sell") {
        Ok(Side::Sell)
    } else {
        Err(invalid(
            "side",
            format!("expected BUY or SELL, got {}", value.shown()),
        ))
    }
}

/// A positive amount with at most `decimals` places, at exactly `decimals` places.
fn amount_field(
    field: &'static str,
    value: Option<Json<'_>>,
    decimals: u32,
) -> Result<Decimal, InvalidTrade> {
    let value = required(field, value)?;
    let parts = match &value {
        Json::Str(s) => decimal_parts(s),
        Json::Token(t) if t.contains(['e', 'E']) => Decimal::from_scientific(t)
            .ok()
            .map(|d| (d.is_sign_negative(), d.mantissa().unsigned_abs(), d.scale())),
        Json::Token(t)
            if t.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
        {
            decimal_parts(t)
        }
        Json::Token(_) => None,
    };
    let (negative, mut mantissa, mut scale) =
        parts.ok_or_else(|| invalid(field, format!("not a decimal: {}", value.shown())))?;
    if negative || mantissa == 0 {
        return Err(invalid(
            field,
            format!("must be greater than 0, got {}", value.shown()),
        ));
    }
    // Trailing zeros are not decimals: 10.500 has 1.
    while scale > decimals && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if scale > decimals {
        return Err(invalid(
            field,
            format!("at most {decimals} decimal places, got {}", value.shown()),
        ));
    }
    mantissa = 10u128
        .checked_pow(decimals - scale)
        .and_then(|p| mantissa.checked_mul(p))
        .filter(|m| *m < 1u128 << 96)
        .ok_or_else(|| invalid(field, format!("too large: {}", value.shown())))?;
    Ok(Decimal::from_i128_with_scale(mantissa as i128, decimals))
}

/// `123`, `123.45`, `-1.5` — the decimal-string form (no exponent, no spaces, no `_`) — as
/// (negative, mantissa, scale). `None` on bad syntax or more than 38 digits.
fn decimal_parts(s: &str) -> Option<(bool, u128, u32)> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (digits, ""),
    };
    if int.is_empty() || (digits.len() > int.len() && frac.is_empty()) {
        return None;
    }
    // Up to 19 digits fit a u64, whose arithmetic is cheaper than u128's.
    let mut small: u64 = 0;
    let mut digits = int.bytes().chain(frac.bytes());
    for c in digits.by_ref().take(19) {
        if !c.is_ascii_digit() {
            return None;
        }
        small = small * 10 + u64::from(c - b'0');
    }
    let mut mantissa = u128::from(small);
    for c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(c - b'0'))?;
    }
    Some((negative, mantissa, frac.len() as u32))
}

fn time_field(value: Option<Json<'_>>) -> Result<DateTime<Utc>, InvalidTrade> {
    timestamp("executed_at", required("executed_at", value)?)
}

/// An RFC 3339 string (any offset), as UTC.
fn timestamp(field: &'static str, value: Json<'_>) -> Result<DateTime<Utc>, InvalidTrade> {
    let s = match value {
        Json::Str(s) => s,
        other => {
            return Err(invalid(
                field,
                format!("expected a string, got {}", other.shown()),
            ))
        }
    };
    if let Some(t) = rfc3339_fast(&s) {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| invalid(field, format!("not RFC 3339 ({e}): {s:?}")))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` exactly; `None` for anything else (lower-case
/// separators, leap seconds, out-of-range fields…), which chrono then parses or rejects.
fn rfc3339_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let mut v = 0u32;
        for c in b.get(from..from + len)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let sep = |at: usize, c: u8| (b.get(at) == Some(&c)).then_some(());
    let year = num(0, 4)?;
    sep(4, b'-')?;
    let month = num(5, 2)?;
    sep(7, b'-')?;
    let day = num(8, 2)?;
    sep(10, b'T')?;
    let hour = num(11, 2)?;
    sep(13, b':')?;
    let minute = num(14, 2)?;
    sep(16, b':')?;
    let second = num(17, 2)?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let len = i - start;
        if len == 0 || len > 9 {
            return None;
        }
        nanos = num(start, len)? * 10u32.pow(9 - len as u32);
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() => {
            sep(i + 3, b':')?;
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let local = NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_time(NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?);
    let utc = local.checked_sub_signed(TimeDelta::seconds(offset_secs))?;
    Some(utc.and_utc())
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
        assert_eq!(&*t.trade_id, "t-1");
        assert_eq!(&*t.user_id, "u-1");
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
            reason_of(
                r#"{"user_id":"u","side":"BUY","usd_amount":"1","rate":"1","executed_at":"2026-01-01T00:00:00Z"}"#
            ),
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
        assert_eq!(&*t.trade_id, "t-1\"q");
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
