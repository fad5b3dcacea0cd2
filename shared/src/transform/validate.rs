//! Validating one record against its contract: every field parsed, normalised and checked, and
//! the computed columns derived — or the one reason the record is rejected.

use std::borrow::Cow;

use crate::contract::{ColumnKind, ComputedProduct, RowReason};
use crate::dialect::{decode_field, Encoding};
use crate::parse::{
    date_from_days, parse_date_days, parse_decimal_parts, parse_timestamp_micros, NumberError,
};
use crate::text::{clean_text, fold_enum, is_valid_email, mask_email, normalized_name, pii_hash};

use super::records::RawRecord;
use super::rows::{push_str, FileContext, Val};

const POW10: [i128; 20] = {
    let mut t = [1i128; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `a × b` with the scales given, rounded half away from zero to `to` decimal places.
pub fn mul_round(a: i128, a_scale: u32, b: i128, b_scale: u32, to: u32) -> Option<i128> {
    // Factors that fit in 64 bits (nearly all) multiply without an overflow check: their
    // product always fits in 128.
    let p = match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => i128::from(a) * i128::from(b),
        _ => a.checked_mul(b)?,
    };
    let from = a_scale + b_scale;
    if from <= to {
        return p.checked_mul(*POW10.get((to - from) as usize)?);
    }
    let div = *POW10.get((from - to) as usize)?;
    // Most products fit in 64 bits, where division is much cheaper.
    let (q, r) = match (i64::try_from(p), i64::try_from(div)) {
        (Ok(p), Ok(div)) => (i128::from(p / div), i128::from(p % div)),
        _ => (p / div, p % div),
    };
    Some(if r.abs() * 2 >= div {
        q + p.signum()
    } else {
        q
    })
}

pub(super) struct RowError {
    pub(super) reason: RowReason,
    pub(super) detail: String,
}

fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(80).collect();
    if v.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// What the writer checks of a valid record against the rows accepted before it.
pub(super) struct Validated {
    /// Fingerprint of the key, when the dataset is keyed and the key is present.
    pub(super) key: Option<u128>,
    /// First and last day in force, when the contract has an interval rule and both are present.
    pub(super) interval: Option<(i32, i32)>,
}

/// The fingerprint of a date key: its day number, tagged so it never equals a text key's.
fn date_key(days: i32) -> u128 {
    let mut b = [0u8; 5];
    b[0] = b'D';
    b[1..].copy_from_slice(&days.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&b)
}

/// The spellings of one enum column's values met so far in a chunk. Exports repeat a handful
/// ("Solar", "SOLAR", "HIDROELÉCTRICA"): the short ones are found again by their exact bytes,
/// with one multiplication and one comparison, before any comparison ignoring case.
#[derive(Clone, Default)]
pub(super) struct Spellings {
    /// Spellings of up to 16 bytes, one per slot (the last one seen wins its slot): the bytes
    /// zero-padded, the length (0: empty slot) and the value's position.
    recent: Vec<(u128, u8, u8)>,
    /// Spellings that folding accents and case was needed to recognise.
    long: Vec<(Box<str>, usize)>,
}

/// Slots of [`Spellings::recent`].
const RECENT_SLOTS: usize = 64;

impl Spellings {
    /// The bytes of a spelling of 1 to 16 bytes as one number, and its slot.
    fn slot(text: &str) -> Option<(u128, usize)> {
        let b = text.as_bytes();
        if b.is_empty() || b.len() > 16 {
            return None;
        }
        let mut padded = [0u8; 16];
        padded[..b.len()].copy_from_slice(b);
        let bits = u128::from_le_bytes(padded);
        let mixed = ((bits as u64) ^ ((bits >> 64) as u64) ^ b.len() as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Some((bits, (mixed >> 58) as usize))
    }

    /// The position of the value `text` was last recognised as, if it is remembered.
    fn recent(&self, text: &str) -> Option<usize> {
        let (bits, slot) = Self::slot(text)?;
        match self.recent.get(slot) {
            Some(&(b, len, i)) if b == bits && usize::from(len) == text.len() => {
                Some(usize::from(i))
            }
            _ => None,
        }
    }

    /// Remembers that `text` spells the value at position `i`.
    fn remember(&mut self, text: &str, i: usize) {
        let (Some((bits, slot)), Ok(i)) = (Self::slot(text), u8::try_from(i)) else {
            return;
        };
        if self.recent.is_empty() {
            self.recent = vec![(0, 0, 0); RECENT_SLOTS];
        }
        self.recent[slot] = (bits, text.len() as u8, i);
    }
}

/// Validates one record into `vals` (output columns except lineage).
pub(super) fn validate<'r>(
    ctx: &FileContext,
    rec: &RawRecord<'r>,
    encoding: Encoding,
    scratch: &mut String,
    field: &mut String,
    vals: &mut Vec<Val<'r>>,
    spellings: &mut [Spellings],
) -> Result<Validated, RowError> {
    if rec.len() != ctx.n_fields {
        return Err(RowError {
            reason: RowReason::RaggedRow,
            detail: format!("{} fields where the header has {}", rec.len(), ctx.n_fields),
        });
    }
    // Without a checked chunk, one UTF-8 check for the whole record. Its fields are separated
    // by ASCII bytes, so it is valid exactly when every field is.
    let record_text = match rec.text {
        Some(_) => None,
        None => {
            let all = &rec.buf[rec.span.clone()];
            if encoding == Encoding::Utf8 || all.is_ascii() {
                std::str::from_utf8(all).ok()
            } else {
                None
            }
        }
    };
    let mut key = None;
    // The factors of the computed column, as they are read.
    let mut factors: [Option<i128>; 2] = [None, None];
    // The bounds of the row's interval, as they are read.
    let mut bounds: [Option<i32>; 2] = [None, None];
    for (ci, spec) in ctx.contract.columns.iter().enumerate() {
        // The field as text of the record (`direct`), or decoded into `field`.
        let (direct, clean): (Option<&'r str>, bool) = match ctx.col_field[ci] {
            None => (Some(""), true),
            Some(fi) => {
                let span = rec.fields[fi];
                let utf8 = match (rec.text, record_text) {
                    (Some(t), _) => t.get(span.start..span.end),
                    (None, Some(t)) => {
                        t.get(span.start - rec.span.start..span.end - rec.span.start)
                    }
                    (None, None) => {
                        let bytes = rec.field(fi);
                        if encoding == Encoding::Utf8 || bytes.is_ascii() {
                            std::str::from_utf8(bytes).ok()
                        } else {
                            None
                        }
                    }
                };
                if utf8.is_none() {
                    field.clear();
                    decode_field(rec.field(fi), encoding, field).map_err(|_| RowError {
                        reason: RowReason::InvalidEncoding,
                        detail: format!(
                            "{}: bytes that are not valid {}",
                            spec.name,
                            encoding.label()
                        ),
                    })?;
                }
                (utf8, span.clean)
            }
        };
        // Cleaned text; `kept` when it is a slice of the record itself.
        let cleaned;
        let (text, kept): (&str, Option<&'r str>) = match direct {
            Some(raw) if clean => {
                let t = raw.trim_ascii();
                (t, Some(t))
            }
            Some(raw) => match clean_text(raw) {
                Cow::Borrowed(t) => (t, Some(t)),
                Cow::Owned(t) => {
                    cleaned = t;
                    (cleaned.as_str(), None)
                }
            },
            None => {
                cleaned = clean_text(field.as_str()).into_owned();
                (cleaned.as_str(), None)
            }
        };
        if text.is_empty() {
            if spec.required {
                return Err(RowError {
                    reason: RowReason::MissingRequired(spec.name),
                    detail: format!("{} is required and empty", spec.name),
                });
            }
            vals.push(Val::Null);
            if spec.kind == ColumnKind::NameWithNormalized {
                vals.push(Val::Null);
            }
            continue;
        }
        match spec.kind {
            ColumnKind::Text => {
                if Some(ci) == ctx.key_col {
                    key = Some(xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
                }
                vals.push(match kept {
                    Some(t) => Val::Str(t),
                    None => push_str(scratch, text),
                });
            }
            ColumnKind::NameWithNormalized => {
                vals.push(match kept {
                    Some(t) => Val::Str(t),
                    None => push_str(scratch, text),
                });
                let n = normalized_name(text);
                vals.push(push_str(scratch, &n));
            }
            ColumnKind::Enum(values) => {
                let canon = &ctx.enum_folded[ci];
                let seen = &mut spellings[ci];
                let found = seen.recent(text).or_else(|| {
                    let i = values
                        .iter()
                        .position(|v| v.eq_ignore_ascii_case(text))
                        .or_else(|| {
                            seen.long
                                .iter()
                                .find(|(s, _)| **s == *text)
                                .map(|(_, i)| *i)
                        })
                        .or_else(|| {
                            let f = fold_enum(text);
                            let i = canon.iter().position(|c| *c == f)?;
                            // Remember this spelling ("Eólica", "HIDROELÉCTRICA"): exports
                            // repeat them.
                            if seen.long.len() < 64 {
                                seen.long.push((text.into(), i));
                            }
                            Some(i)
                        })?;
                    seen.remember(text, i);
                    Some(i)
                });
                match found {
                    Some(i) => vals.push(Val::Str(values[i])),
                    None => {
                        return Err(RowError {
                            reason: RowReason::InvalidEnum(spec.name),
                            detail: format!(
                                "{}: '{}' is not one of {}",
                                spec.name,
                                shown(text),
                                values.join(", ")
                            ),
                        })
                    }
                }
            }
            ColumnKind::Decimal {
                precision,
                scale,
                min_exclusive,
            } => {
                let m = decimal_value(ctx, spec.name, text, precision, scale, min_exclusive)?;
                if let Some(inputs) = &ctx.product {
                    for (k, &col) in inputs.columns.iter().enumerate() {
                        if col == ci {
                            factors[k] = Some(m);
                        }
                    }
                }
                vals.push(Val::Dec(m));
            }
            ColumnKind::Date => match parse_date_days(text) {
                Some(d) => {
                    if Some(ci) == ctx.key_col {
                        key = Some(date_key(d));
                    }
                    if let Some(at) = ctx.interval {
                        for (k, &col) in at.iter().enumerate() {
                            if col == ci {
                                bounds[k] = Some(d);
                            }
                        }
                    }
                    vals.push(Val::Date(d))
                }
                None => {
                    return Err(RowError {
                        reason: RowReason::InvalidDate(spec.name),
                        detail: format!("{}: '{}' is not a date", spec.name, shown(text)),
                    })
                }
            },
            ColumnKind::Timestamp => match parse_timestamp_micros(text) {
                Some(t) => vals.push(Val::Ts(t)),
                None => {
                    return Err(RowError {
                        reason: RowReason::InvalidDate(spec.name),
                        detail: format!(
                            "{}: '{}' is not a date or timestamp",
                            spec.name,
                            shown(text)
                        ),
                    })
                }
            },
            ColumnKind::HashedPii => {
                let h = pii_hash(&ctx.salt, text);
                vals.push(push_str(scratch, &h));
            }
            ColumnKind::MaskedEmail => {
                if !is_valid_email(text) {
                    return Err(RowError {
                        reason: RowReason::InvalidEmail,
                        detail: format!("{}: not a valid e-mail address", spec.name),
                    });
                }
                let m = mask_email(text);
                vals.push(push_str(scratch, &m));
            }
        }
    }
    if let Some(product) = &ctx.contract.computed {
        vals.push(Val::Dec(computed_product(ctx, product, factors)?));
    }
    let interval = match (&ctx.contract.interval, bounds) {
        (Some(rule), [Some(from), Some(to)]) if from > to => {
            return Err(RowError {
                reason: RowReason::InvalidInterval,
                detail: format!(
                    "{} {} is after {} {}",
                    rule.from,
                    shown_day(from),
                    rule.to,
                    shown_day(to)
                ),
            })
        }
        (Some(_), [Some(from), Some(to)]) => Some((from, to)),
        _ => None,
    };
    Ok(Validated { key, interval })
}

/// A day number as an ISO date, for reject details.
pub(super) fn shown_day(days: i32) -> String {
    date_from_days(days).map_or_else(|| days.to_string(), |d| d.to_string())
}

/// The contract's computed column from its two factors, rounded half away from zero.
fn computed_product(
    ctx: &FileContext,
    product: &ComputedProduct,
    factors: [Option<i128>; 2],
) -> Result<i128, RowError> {
    let [a, b] = product.factors;
    let (Some(inputs), [Some(x), Some(y)]) = (&ctx.product, factors) else {
        let missing = if factors[0].is_none() { a } else { b };
        return Err(RowError {
            reason: RowReason::MissingRequired(missing),
            detail: format!("{} needs {a} and {b}", product.name),
        });
    };
    let [xs, ys] = inputs.scales;
    match mul_round(x, xs, y, ys, u32::from(product.scale)) {
        Some(t)
            if POW10
                .get(usize::from(product.precision))
                .is_some_and(|&max| t.abs() < max) =>
        {
            Ok(t)
        }
        _ => Err(RowError {
            reason: RowReason::OutOfRange(product.name),
            detail: format!(
                "{} = {a} × {b} does not fit DECIMAL({},{})",
                product.name, product.precision, product.scale
            ),
        }),
    }
}

fn decimal_value(
    ctx: &FileContext,
    name: &'static str,
    text: &str,
    precision: u8,
    scale: u8,
    min_exclusive: bool,
) -> Result<i128, RowError> {
    let sep = ctx.decimal.decimal() as char;
    let (mut m, mut have) = parse_decimal_parts(text, ctx.decimal).map_err(|e| match e {
        NumberError::Invalid => RowError {
            reason: RowReason::InvalidNumber(name),
            detail: format!(
                "{name}: '{}' is not a number (decimal separator '{sep}')",
                shown(text)
            ),
        },
        NumberError::TooLarge => RowError {
            reason: RowReason::OutOfRange(name),
            detail: format!("{name}: '{}' has too many digits", shown(text)),
        },
    })?;
    if m < 0 || (min_exclusive && m == 0) {
        return Err(RowError {
            reason: RowReason::OutOfRange(name),
            detail: format!(
                "{name}: '{}' must be {} 0",
                shown(text),
                if min_exclusive { ">" } else { "≥" }
            ),
        });
    }
    let scale = u32::from(scale);
    // Trailing zeros past the column's scale carry no information (`1.50000`).
    while have > scale && m % 10 == 0 {
        m /= 10;
        have -= 1;
    }
    if have > scale {
        return Err(RowError {
            reason: RowReason::InvalidNumber(name),
            detail: format!(
                "{name}: '{}' has more than {scale} decimal places",
                shown(text)
            ),
        });
    }
    let factor = POW10[(scale - have) as usize];
    // In 64 bits when the value and the factor fit there (nearly always): an overflow check
    // of a 128-bit product costs several multiplications.
    let scaled = match (i64::try_from(m), i64::try_from(factor)) {
        (Ok(a), Ok(b)) => a.checked_mul(b).map(i128::from),
        _ => None,
    };
    let m = scaled
        .or_else(|| m.checked_mul(factor))
        .filter(|m| *m < POW10[usize::from(precision)]);
    m.ok_or_else(|| RowError {
        reason: RowReason::OutOfRange(name),
        detail: format!(
            "{name}: '{}' has more than {} integer digits",
            shown(text),
            u32::from(precision) - scale
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    #[test]
    fn total_rounds_half_away_from_zero() {
        // 1.005 kWh × 1.0000 COP = 1.005 → 1.01
        assert_eq!(mul_round(1005, 3, 10000, 4, 2), Some(101));
        // 0.004 × 1 = 0.004 → 0.00
        assert_eq!(mul_round(4, 3, 10000, 4, 2), Some(0));
        assert_eq!(mul_round(-1005, 3, 10000, 4, 2), Some(-101));
    }

    proptest! {
        #[test]
        fn total_matches_exact_decimal_arithmetic(c in 1i64..1_000_000_000_000, p in 0i64..100_000_000) {
            let exact = Decimal::new(c, 3) * Decimal::new(p, 4);
            let expected = exact.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
            let got = mul_round(i128::from(c), 3, i128::from(p), 4, 2);
            prop_assert_eq!(got.map(|t| Decimal::from_i128_with_scale(t, 2)), Some(expected));
        }
    }
}
