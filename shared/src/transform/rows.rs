//! Parsing, validation and normalisation of the records of one chunk into an Arrow batch.

use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::contract::{ColumnKind, Contract, OutType, RowReason};
use crate::dialect::{decode_field, lossy_text, Encoding};
use crate::parse::{
    days_since_epoch, parse_date, parse_decimal_parts, parse_timestamp_micros, DecimalSep,
    NumberError,
};
use crate::text::{clean_text, fold_enum, is_valid_email, mask_email, normalized_name, pii_hash};

use super::chunker::Chunk;

/// What is fixed for a whole file.
pub struct FileContext {
    pub contract: &'static Contract,
    /// For each contract column, the header field that holds it.
    pub col_field: Vec<Option<usize>>,
    pub n_fields: usize,
    pub delimiter: u8,
    pub decimal: DecimalSep,
    pub salt: Vec<u8>,
    pub source_key: String,
    pub load_date_days: i32,
    /// Folded canonical values of enum columns.
    pub enum_folded: Vec<Vec<String>>,
    pub key_col: Option<usize>,
    pub schema: SchemaRef,
    /// Columns of `cantidad_comprada` and `precio`, and their scales, when `total` is computed.
    pub total_inputs: Option<(usize, usize)>,
    pub total_scales: (u32, u32),
}

impl FileContext {
    /// Positions and scales of the inputs of `total`.
    pub fn total_inputs(contract: &Contract) -> (Option<(usize, usize)>, (u32, u32)) {
        let find = |name: &str| {
            contract
                .columns
                .iter()
                .position(|c| c.name == name)
                .map(|i| {
                    let scale = match contract.columns[i].kind {
                        ColumnKind::Decimal { scale, .. } => u32::from(scale),
                        _ => 0,
                    };
                    (i, scale)
                })
        };
        match (
            contract.computes_total,
            find("cantidad_comprada"),
            find("precio"),
        ) {
            (true, Some((c, cs)), Some((p, ps))) => (Some((c, p)), (cs, ps)),
            _ => (None, (0, 0)),
        }
    }

    pub fn enums(contract: &Contract) -> Vec<Vec<String>> {
        contract
            .columns
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Enum(values) => values.iter().map(|v| fold_enum(v)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

/// A rejected record.
#[derive(Debug, Clone)]
pub struct Reject {
    pub line: u64,
    pub reason: RowReason,
    pub detail: String,
    pub record: String,
}

/// Span and identity of an accepted row, kept until its key has been checked.
#[derive(Debug, Clone, Copy)]
pub struct OkRow {
    pub start: u32,
    pub end: u32,
    pub line: u64,
    pub key: Option<u128>,
}

/// What one chunk became.
pub struct ChunkResult {
    pub seq: u64,
    pub batch: Option<RecordBatch>,
    pub ok: Vec<OkRow>,
    pub rejects: Vec<Reject>,
    pub bytes: Vec<u8>,
    pub encoding: Encoding,
    pub rows_in: u64,
}

/// One parsed record: its raw span, its line, and its fields (offsets into `fields`).
pub struct RawRecord<'a> {
    pub raw: &'a [u8],
    pub start: usize,
    pub line: u64,
    pub fields: &'a [u8],
    pub ends: &'a [usize],
}

impl RawRecord<'_> {
    pub fn field(&self, i: usize) -> &[u8] {
        &self.fields[self.field_range(i)]
    }
    pub fn field_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Calls `f` for each record of `bytes` (RFC 4180 with the given delimiter).
pub fn for_each_record(
    bytes: &[u8],
    delimiter: u8,
    first_line: u64,
    mut f: impl FnMut(RawRecord<'_>) -> bool,
) {
    use csv_core::ReadRecordResult as R;
    let mut rdr = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    let mut out = vec![0u8; 4096];
    let mut ends = vec![0usize; 64];
    let (mut pos, mut outlen, mut nends, mut rec_start) = (0usize, 0usize, 0usize, 0usize);
    let mut line = first_line;
    loop {
        let (res, nin, nout, nend) =
            rdr.read_record(&bytes[pos..], &mut out[outlen..], &mut ends[nends..]);
        pos += nin;
        outlen += nout;
        nends += nend;
        match res {
            R::InputEmpty => {}
            R::OutputFull => out.resize(out.len() * 2, 0),
            R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            R::Record => {
                let mut raw = &bytes[rec_start..pos];
                let mut start = rec_start;
                // Blank lines before a record are skipped by the parser: count them as lines.
                while let Some((&c, rest)) = raw.split_first() {
                    if c == b'\n' || c == b'\r' {
                        if c == b'\n' {
                            line += 1;
                        }
                        raw = rest;
                        start += 1;
                    } else {
                        break;
                    }
                }
                // Short slices: a plain loop beats a SIMD search's set-up.
                let newlines = raw.iter().filter(|&&c| c == b'\n').count() as u64;
                let trimmed = trim_terminator(raw);
                let keep_going = f(RawRecord {
                    raw: trimmed,
                    start,
                    line,
                    fields: &out[..outlen],
                    ends: &ends[..nends],
                });
                line += newlines;
                outlen = 0;
                nends = 0;
                rec_start = pos;
                if !keep_going {
                    return;
                }
            }
            R::End => return,
        }
    }
}

fn trim_terminator(mut raw: &[u8]) -> &[u8] {
    while let Some((&c, rest)) = raw.split_last() {
        if c == b'\n' || c == b'\r' {
            raw = rest;
        } else {
            break;
        }
    }
    raw
}

enum Val {
    Null,
    Str(u32, u32),
    Dec(i128),
    Date(i32),
    Ts(i64),
}

enum ColBuilder {
    Str(StringBuilder),
    Dec(Decimal128Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    I64(Int64Builder),
}

impl ColBuilder {
    fn new(ty: OutType, rows: usize) -> ColBuilder {
        match ty {
            OutType::Text => ColBuilder::Str(StringBuilder::with_capacity(rows, rows * 16)),
            OutType::Decimal(p, s) => ColBuilder::Dec(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(p, s as i8)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(rows)),
            ),
            OutType::Date => ColBuilder::Date(Date32Builder::with_capacity(rows)),
            OutType::TimestampUtc => ColBuilder::Ts(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            OutType::Int64 => ColBuilder::I64(Int64Builder::with_capacity(rows)),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Dec(b) => Arc::new(b.finish()),
            ColBuilder::Date(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
            ColBuilder::I64(b) => Arc::new(b.finish()),
        }
    }
}

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
    let p = a.checked_mul(b)?;
    let from = a_scale + b_scale;
    if from <= to {
        return p.checked_mul(*POW10.get((to - from) as usize)?);
    }
    let div = *POW10.get((from - to) as usize)?;
    let (q, r) = (p / div, p % div);
    Some(if r.abs() * 2 >= div {
        q + p.signum()
    } else {
        q
    })
}

struct RowError {
    reason: RowReason,
    detail: String,
}

fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(80).collect();
    if v.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// Validates and converts the records of one chunk.
pub fn process_chunk(
    ctx: &FileContext,
    chunk: Chunk,
    encoding: Encoding,
    skip_header: bool,
) -> ChunkResult {
    let cols = ctx.contract.output_columns();
    let estimated = chunk.bytes.len() / 64 + 16;
    let mut builders: Vec<ColBuilder> = cols
        .iter()
        .map(|c| ColBuilder::new(c.ty, estimated))
        .collect();
    let mut ok = Vec::with_capacity(estimated);
    let mut rejects = Vec::new();
    let mut rows_in = 0u64;
    let mut first = skip_header;
    let mut scratch = String::with_capacity(1024);
    let mut field_buf = String::with_capacity(256);
    let mut vals: Vec<Val> = Vec::with_capacity(cols.len());
    let mut spellings: Vec<Vec<(Box<str>, usize)>> = vec![Vec::new(); ctx.contract.columns.len()];
    let key_col = ctx.key_col;
    for_each_record(&chunk.bytes, ctx.delimiter, chunk.first_line, |rec| {
        if first {
            first = false;
            return true;
        }
        rows_in += 1;
        scratch.clear();
        vals.clear();
        match validate(
            ctx,
            &rec,
            encoding,
            &mut scratch,
            &mut field_buf,
            &mut vals,
            &mut spellings,
        ) {
            Ok(key) => {
                let key = key.map(|(s, e)| {
                    xxhash_rust::xxh3::xxh3_128(&scratch.as_bytes()[s as usize..e as usize])
                });
                for (b, v) in builders.iter_mut().zip(vals.iter()) {
                    append(b, v, &scratch);
                }
                // Lineage.
                let n = builders.len();
                if let ColBuilder::Str(b) = &mut builders[n - 3] {
                    b.append_value(&ctx.source_key);
                }
                if let ColBuilder::I64(b) = &mut builders[n - 2] {
                    b.append_value(rec.line as i64);
                }
                if let ColBuilder::Date(b) = &mut builders[n - 1] {
                    b.append_value(ctx.load_date_days);
                }
                ok.push(OkRow {
                    start: rec.start as u32,
                    end: (rec.start + rec.raw.len()) as u32,
                    line: rec.line,
                    key: if key_col.is_some() { key } else { None },
                });
            }
            Err(e) => rejects.push(Reject {
                line: rec.line,
                reason: e.reason,
                detail: e.detail,
                record: lossy_text(rec.raw, encoding),
            }),
        }
        true
    });
    let batch = if ok.is_empty() {
        None
    } else {
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(ColBuilder::finish).collect();
        RecordBatch::try_new(ctx.schema.clone(), arrays).ok()
    };
    ChunkResult {
        seq: chunk.seq,
        batch,
        ok,
        rejects,
        bytes: chunk.bytes,
        encoding,
        rows_in,
    }
}

fn append(b: &mut ColBuilder, v: &Val, scratch: &str) {
    match (b, v) {
        (ColBuilder::Str(b), Val::Str(s, e)) => b.append_value(&scratch[*s as usize..*e as usize]),
        (ColBuilder::Str(b), Val::Null) => b.append_null(),
        (ColBuilder::Dec(b), Val::Dec(m)) => b.append_value(*m),
        (ColBuilder::Dec(b), Val::Null) => b.append_null(),
        (ColBuilder::Date(b), Val::Date(d)) => b.append_value(*d),
        (ColBuilder::Date(b), Val::Null) => b.append_null(),
        (ColBuilder::Ts(b), Val::Ts(t)) => b.append_value(*t),
        (ColBuilder::Ts(b), Val::Null) => b.append_null(),
        (ColBuilder::I64(b), Val::Null) => b.append_null(),
        // Shapes are fixed by the contract; any other pairing cannot be built.
        (ColBuilder::Str(b), _) => b.append_null(),
        (ColBuilder::Dec(b), _) => b.append_null(),
        (ColBuilder::Date(b), _) => b.append_null(),
        (ColBuilder::Ts(b), _) => b.append_null(),
        (ColBuilder::I64(b), _) => b.append_null(),
    }
}

fn push_str(scratch: &mut String, s: &str) -> Val {
    let start = scratch.len() as u32;
    scratch.push_str(s);
    Val::Str(start, scratch.len() as u32)
}

/// Validates one record into `vals` (output columns except lineage). Returns the span of the
/// key text in `scratch`, when the dataset is keyed and the key is present.
fn validate(
    ctx: &FileContext,
    rec: &RawRecord<'_>,
    encoding: Encoding,
    scratch: &mut String,
    field: &mut String,
    vals: &mut Vec<Val>,
    spellings: &mut [Vec<(Box<str>, usize)>],
) -> Result<Option<(u32, u32)>, RowError> {
    if rec.len() != ctx.n_fields {
        return Err(RowError {
            reason: RowReason::RaggedRow,
            detail: format!("{} fields where the header has {}", rec.len(), ctx.n_fields),
        });
    }
    // One UTF-8 check for the whole record; fields are then sliced from it. Field boundaries
    // are where ASCII delimiters and quotes were, so they are always char boundaries.
    let record_text = if encoding == Encoding::Utf8 || rec.fields.is_ascii() {
        std::str::from_utf8(rec.fields).ok()
    } else {
        None
    };
    let mut key_span = None;
    let mut cantidad: Option<i128> = None;
    let mut precio: Option<i128> = None;
    for (ci, spec) in ctx.contract.columns.iter().enumerate() {
        let raw: &str = match ctx.col_field[ci] {
            None => "",
            Some(fi) => {
                let bytes = rec.field(fi);
                let utf8 = match record_text {
                    Some(t) => t.get(rec.field_range(fi)),
                    None if encoding == Encoding::Utf8 || bytes.is_ascii() => {
                        std::str::from_utf8(bytes).ok()
                    }
                    None => None,
                };
                match utf8 {
                    Some(s) => s,
                    None => {
                        field.clear();
                        decode_field(bytes, encoding, field).map_err(|_| RowError {
                            reason: RowReason::InvalidEncoding,
                            detail: format!(
                                "{}: bytes that are not valid {}",
                                spec.name,
                                encoding.label()
                            ),
                        })?;
                        field.as_str()
                    }
                }
            }
        };
        let text = clean_text(raw);
        let text: &str = &text;
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
                let v = push_str(scratch, text);
                if Some(ci) == ctx.key_col {
                    if let Val::Str(s, e) = v {
                        key_span = Some((s, e));
                    }
                }
                vals.push(v);
            }
            ColumnKind::NameWithNormalized => {
                vals.push(push_str(scratch, text));
                let n = normalized_name(text);
                vals.push(push_str(scratch, &n));
            }
            ColumnKind::Enum(values) => {
                let canon = &ctx.enum_folded[ci];
                let seen = &mut spellings[ci];
                let found = values
                    .iter()
                    .position(|v| v.eq_ignore_ascii_case(text))
                    .or_else(|| seen.iter().find(|(s, _)| **s == *text).map(|(_, i)| *i))
                    .or_else(|| {
                        let f = fold_enum(text);
                        let i = canon.iter().position(|c| *c == f)?;
                        // Remember this spelling ("Eólica", "HIDROELÉCTRICA"): exports repeat them.
                        if seen.len() < 64 {
                            seen.push((text.into(), i));
                        }
                        Some(i)
                    });
                match found {
                    Some(i) => vals.push(push_str(scratch, values[i])),
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
                if Some(ci) == ctx.total_inputs.map(|t| t.0) {
                    cantidad = Some(m);
                } else if Some(ci) == ctx.total_inputs.map(|t| t.1) {
                    precio = Some(m);
                }
                vals.push(Val::Dec(m));
            }
            ColumnKind::Date => match parse_date(text) {
                Some(d) => vals.push(Val::Date(days_since_epoch(d))),
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
    if ctx.contract.computes_total {
        let (Some(c), Some(p)) = (cantidad, precio) else {
            return Err(RowError {
                reason: RowReason::MissingRequired("cantidad_comprada"),
                detail: "total needs cantidad_comprada and precio".into(),
            });
        };
        let (cs, ps) = ctx.total_scales;
        match mul_round(c, cs, p, ps, u32::from(crate::contract::TOTAL_SCALE)) {
            Some(t) if t.abs() < POW10[crate::contract::TOTAL_PRECISION as usize] => {
                vals.push(Val::Dec(t))
            }
            _ => {
                return Err(RowError {
                    reason: RowReason::OutOfRange("total"),
                    detail: "total = cantidad_comprada × precio does not fit DECIMAL(18,2)".into(),
                })
            }
        }
    }
    Ok(key_span)
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
    let m = m
        .checked_mul(POW10[(scale - have) as usize])
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
    use std::str::FromStr;

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

    #[test]
    fn records_keep_lines_raw_text_and_fields() {
        let data = b"a,\"b\nc\",d\r\n\r\nx,y,z\n";
        let mut seen = Vec::new();
        for_each_record(data, b',', 10, |r| {
            let fields: Vec<String> = (0..r.len())
                .map(|i| String::from_utf8_lossy(r.field(i)).into_owned())
                .collect();
            seen.push((r.line, String::from_utf8_lossy(r.raw).into_owned(), fields));
            true
        });
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 10);
        assert_eq!(seen[0].1, "a,\"b\nc\",d");
        assert_eq!(seen[0].2, vec!["a", "b\nc", "d"]);
        assert_eq!(seen[1].0, 13);
        assert_eq!(seen[1].2, vec!["x", "y", "z"]);
        let _ = Decimal::from_str("1");
    }
}
