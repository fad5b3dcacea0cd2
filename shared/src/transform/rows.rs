//! Parsing, validation and normalisation of the records of one chunk into an Arrow batch.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef;

use crate::contract::{ColumnKind, Contract, OutType, RowReason};
use crate::dialect::{decode_field, lossy_text, Encoding};
use crate::parse::{
    parse_date_days, parse_decimal_parts, parse_timestamp_micros, DecimalSep, NumberError,
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
    /// Time spent producing this result.
    pub busy: std::time::Duration,
}

/// Where one field of a record lies in its record's buffer.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpan {
    pub start: usize,
    pub end: usize,
    /// Read straight from the input, and holding no control byte, no byte that may start a
    /// Unicode space, and no two spaces in a row: cleaning it only trims spaces at its ends.
    pub clean: bool,
}

/// One parsed record: its raw span, its line, and its fields.
pub struct RawRecord<'a> {
    pub raw: &'a [u8],
    pub start: usize,
    pub line: u64,
    /// The buffer the fields lie in: the chunk itself, or the unquoted copy of a quoted record.
    buf: &'a [u8],
    /// `buf` as text, when it is known to be valid UTF-8.
    text: Option<&'a str>,
    /// The part of `buf` that holds this record's fields.
    span: std::ops::Range<usize>,
    fields: &'a [FieldSpan],
}

impl<'a> RawRecord<'a> {
    pub fn field(&self, i: usize) -> &'a [u8] {
        let f = self.fields[i];
        &self.buf[f.start..f.end]
    }
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Byte classes of the unquoted fast path of [`for_each_record`].
const PLAIN: u8 = 0;
const DELIM: u8 = 1;
const NEWLINE: u8 = 2;
const QUOTE: u8 = 3;
const CR: u8 = 4;
const SPACE: u8 = 5;
/// A control byte, DEL, or a lead byte that may start a Unicode space (see `text::clean_text`).
const DIRTY: u8 = 6;

fn byte_classes(delimiter: u8) -> [u8; 256] {
    let mut t = [PLAIN; 256];
    for c in t.iter_mut().take(0x20) {
        *c = DIRTY;
    }
    for b in [0x7f, 0xc2, 0xe1, 0xe2, 0xe3] {
        t[b] = DIRTY;
    }
    t[usize::from(b' ')] = SPACE;
    t[usize::from(b'"')] = QUOTE;
    t[usize::from(b'\r')] = CR;
    t[usize::from(b'\n')] = NEWLINE;
    t[usize::from(delimiter)] = DELIM;
    t
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (high bit of the byte) the bytes of a little-endian word that are not `PLAIN`: below
/// 0x21, a quote, the delimiter (`delimiters` is it in every byte), DEL, 0xC2 or 0xE0–0xE3 (0xE0
/// is plain: a false alarm, looked at and passed). Each test may also flag bytes above one it
/// rightly flagged, never below, so the lowest flagged byte is always worth a look.
fn needs_look(x: u64, delimiters: u64) -> u64 {
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGHS;
    let below_0x21 = x.wrapping_sub(ONES * 0x21) & !x & HIGHS;
    below_0x21
        | zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ delimiters)
        | zero(x ^ (ONES * 0x7f))
        | zero(x ^ (ONES * 0xc2))
        | zero((x & (ONES * 0xfc)) ^ (ONES * 0xe0))
}

/// Calls `f` for each record of `bytes` (RFC 4180 with the given delimiter).
pub fn for_each_record(
    bytes: &[u8],
    delimiter: u8,
    first_line: u64,
    f: impl FnMut(RawRecord<'_>) -> bool,
) {
    for_each_record_in(bytes, None, delimiter, first_line, f)
}

/// Like [`for_each_record`]; `text`, when given, is `bytes` already checked to be UTF-8.
///
/// Records without quotes, lone carriage returns or a leading byte-order mark are split in
/// place; the others go through `csv_core`, which sees them exactly as it would have seen them
/// reading the whole of `bytes`.
fn for_each_record_in(
    bytes: &[u8],
    text: Option<&str>,
    delimiter: u8,
    first_line: u64,
    mut f: impl FnMut(RawRecord<'_>) -> bool,
) {
    let classes = byte_classes(delimiter);
    let delimiters = ONES * u64::from(delimiter);
    let fast = !matches!(delimiter, b'"' | b'\n' | b'\r');
    let mut slow = SlowReader::new(delimiter);
    let mut fields: Vec<FieldSpan> = Vec::with_capacity(64);
    let mut line = first_line;
    let mut pos = 0usize;
    let n = bytes.len();
    // csv_core drops a byte-order mark at the start of its input.
    let mut needs_slow = !fast || bytes.starts_with(&crate::dialect::UTF8_BOM);
    while pos < n {
        if !needs_slow {
            fields.clear();
            let (mut i, mut field_start) = (pos, pos);
            let mut clean = true;
            // (end of the record's text, start of the next record)
            let mut found = None;
            loop {
                // Most bytes are plain: skip them eight at a time, then one by one.
                while let Some(word) = bytes[i..].first_chunk::<8>() {
                    let flagged = needs_look(u64::from_le_bytes(*word), delimiters);
                    if flagged != 0 {
                        i += (flagged.trailing_zeros() / 8) as usize;
                        break;
                    }
                    i += 8;
                }
                while i < n && classes[usize::from(bytes[i])] == PLAIN {
                    i += 1;
                }
                if i == n {
                    break;
                }
                match classes[usize::from(bytes[i])] {
                    SPACE => clean &= bytes.get(i + 1) != Some(&b' '),
                    DELIM => {
                        fields.push(FieldSpan {
                            start: field_start,
                            end: i,
                            clean,
                        });
                        field_start = i + 1;
                        clean = true;
                    }
                    NEWLINE => {
                        found = Some((i, i + 1));
                        break;
                    }
                    CR if bytes.get(i + 1) == Some(&b'\n') => {
                        found = Some((i, i + 2));
                        break;
                    }
                    QUOTE | CR => break,
                    _ => clean = false,
                }
                i += 1;
            }
            let (end, next) = match found {
                Some(e) => e,
                None if i == n => (n, n),
                None => {
                    needs_slow = true;
                    continue;
                }
            };
            if end == pos {
                // A blank line: the parser skips it.
                line += 1;
                pos = next;
                continue;
            }
            fields.push(FieldSpan {
                start: field_start,
                end,
                clean,
            });
            let keep_going = f(RawRecord {
                raw: &bytes[pos..end],
                start: pos,
                line,
                buf: bytes,
                text,
                span: pos..end,
                fields: &fields,
            });
            if next > end {
                line += 1;
            }
            pos = next;
            if !keep_going {
                return;
            }
            continue;
        }
        needs_slow = false;
        match slow.record(bytes, pos, &mut line, &mut fields, &mut f) {
            Some(next) => pos = next,
            None => return,
        }
    }
}

/// `csv_core` for the records the fast path leaves to it; one reader per buffer, as if it had
/// read every record.
struct SlowReader {
    rdr: csv_core::Reader,
    used: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl SlowReader {
    fn new(delimiter: u8) -> SlowReader {
        SlowReader {
            rdr: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            used: false,
            out: vec![0u8; 4096],
            ends: vec![0usize; 64],
        }
    }

    /// Reads the record at `pos` and calls `f` with it; returns where the next record starts, or
    /// `None` when there are no more records or `f` asked to stop.
    fn record(
        &mut self,
        bytes: &[u8],
        mut pos: usize,
        line: &mut u64,
        fields: &mut Vec<FieldSpan>,
        f: &mut impl FnMut(RawRecord<'_>) -> bool,
    ) -> Option<usize> {
        use csv_core::ReadRecordResult as R;
        if !self.used {
            self.used = true;
            if pos > 0 {
                // A reader that has read before no longer drops a byte-order mark: a blank
                // line leaves it at the start of a record with nothing else changed.
                let _ = self.rdr.read_record(b"\n", &mut self.out, &mut self.ends);
            }
        }
        let rec_start = pos;
        let (mut outlen, mut nends) = (0usize, 0usize);
        loop {
            let (res, nin, nout, nend) = self.rdr.read_record(
                &bytes[pos..],
                &mut self.out[outlen..],
                &mut self.ends[nends..],
            );
            pos += nin;
            outlen += nout;
            nends += nend;
            match res {
                R::InputEmpty => {}
                R::OutputFull => self.out.resize(self.out.len() * 2, 0),
                R::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                R::Record => {
                    let mut raw = &bytes[rec_start..pos];
                    let mut start = rec_start;
                    // Blank lines before a record are skipped by the parser: count them as lines.
                    while let Some((&c, rest)) = raw.split_first() {
                        if c == b'\n' || c == b'\r' {
                            if c == b'\n' {
                                *line += 1;
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
                    fields.clear();
                    let mut field_start = 0;
                    for &e in &self.ends[..nends] {
                        fields.push(FieldSpan {
                            start: field_start,
                            end: e,
                            clean: false,
                        });
                        field_start = e;
                    }
                    let keep_going = f(RawRecord {
                        raw: trimmed,
                        start,
                        line: *line,
                        buf: &self.out,
                        text: None,
                        span: 0..outlen,
                        fields,
                    });
                    *line += newlines;
                    return keep_going.then_some(pos);
                }
                R::End => return None,
            }
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

/// One output value of a record. Text borrows from the record or the contract when it can, and
/// lives in the record's scratch buffer otherwise.
enum Val<'r> {
    Null,
    Str(&'r str),
    Scratch(u32, u32),
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

/// An empty vector of values for the next record, reusing the allocation of the last one.
fn recycle<'b>(mut vals: Vec<Val<'_>>) -> Vec<Val<'b>> {
    vals.clear();
    vals.into_iter().map(|_| Val::Null).collect()
}

/// Validates and converts the records of one chunk.
pub fn process_chunk(
    ctx: &FileContext,
    chunk: Chunk,
    encoding: Encoding,
    skip_header: bool,
) -> ChunkResult {
    let started = std::time::Instant::now();
    let cols = ctx.contract.output_columns();
    // The lineage columns (the last three) are the same for every row: built at the end.
    let data_cols = cols.len().saturating_sub(3);
    let estimated = chunk.bytes.len() / 64 + 16;
    let mut builders: Vec<ColBuilder> = cols[..data_cols]
        .iter()
        .map(|c| ColBuilder::new(c.ty, estimated))
        .collect();
    let mut ok = Vec::with_capacity(estimated);
    let mut rejects = Vec::new();
    let mut rows_in = 0u64;
    let mut first = skip_header;
    let mut scratch = String::with_capacity(1024);
    let mut field_buf = String::with_capacity(256);
    let mut spare: Vec<Val<'static>> = Vec::with_capacity(cols.len());
    let mut spellings: Vec<Vec<(Box<str>, usize)>> = vec![Vec::new(); ctx.contract.columns.len()];
    let key_col = ctx.key_col;
    // One UTF-8 check for the whole chunk; fields are then sliced from it. Field boundaries are
    // where ASCII delimiters and quotes were, so they are always char boundaries.
    let text = if encoding == Encoding::Utf8 || chunk.bytes.is_ascii() {
        simdutf8::basic::from_utf8(&chunk.bytes).ok()
    } else {
        None
    };
    for_each_record_in(&chunk.bytes, text, ctx.delimiter, chunk.first_line, |rec| {
        if first {
            first = false;
            return true;
        }
        rows_in += 1;
        scratch.clear();
        let mut vals = recycle(std::mem::take(&mut spare));
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
                for (b, v) in builders.iter_mut().zip(vals.iter()) {
                    append(b, v, &scratch);
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
        spare = recycle(vals);
        true
    });
    let batch = if ok.is_empty() {
        None
    } else {
        let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(ColBuilder::finish).collect();
        arrays.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(ctx.source_key.as_str(), ok.len()),
        )));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            ok.iter().map(|r| r.line as i64),
        )));
        arrays.push(Arc::new(Date32Array::from(vec![
            ctx.load_date_days;
            ok.len()
        ])));
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
        busy: started.elapsed(),
    }
}

fn append(b: &mut ColBuilder, v: &Val<'_>, scratch: &str) {
    match (b, v) {
        (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
        (ColBuilder::Str(b), Val::Scratch(s, e)) => {
            b.append_value(&scratch[*s as usize..*e as usize])
        }
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

fn push_str<'r>(scratch: &mut String, s: &str) -> Val<'r> {
    let start = scratch.len() as u32;
    scratch.push_str(s);
    Val::Scratch(start, scratch.len() as u32)
}

/// Validates one record into `vals` (output columns except lineage). Returns the fingerprint of
/// the key, when the dataset is keyed and the key is present.
fn validate<'r>(
    ctx: &FileContext,
    rec: &RawRecord<'r>,
    encoding: Encoding,
    scratch: &mut String,
    field: &mut String,
    vals: &mut Vec<Val<'r>>,
    spellings: &mut [Vec<(Box<str>, usize)>],
) -> Result<Option<u128>, RowError> {
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
    let mut cantidad: Option<i128> = None;
    let mut precio: Option<i128> = None;
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
                if Some(ci) == ctx.total_inputs.map(|t| t.0) {
                    cantidad = Some(m);
                } else if Some(ci) == ctx.total_inputs.map(|t| t.1) {
                    precio = Some(m);
                }
                vals.push(Val::Dec(m));
            }
            ColumnKind::Date => match parse_date_days(text) {
                Some(d) => vals.push(Val::Date(d)),
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
    Ok(key)
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
    use crate::text::clean_text;
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

    /// Records as `csv_core` alone reads them: (line, start, raw, fields).
    type Seen = Vec<(u64, usize, Vec<u8>, Vec<Vec<u8>>)>;

    fn reference(bytes: &[u8], delimiter: u8, first_line: u64) -> Seen {
        use csv_core::ReadRecordResult as R;
        let mut rdr = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        let (mut out, mut ends) = (vec![0u8; 1 << 16], vec![0usize; 1 << 10]);
        let (mut pos, mut outlen, mut nends, mut rec_start) = (0, 0, 0, 0);
        let mut line = first_line;
        let mut seen = Vec::new();
        loop {
            let (res, nin, nout, nend) =
                rdr.read_record(&bytes[pos..], &mut out[outlen..], &mut ends[nends..]);
            pos += nin;
            outlen += nout;
            nends += nend;
            match res {
                R::InputEmpty => {}
                R::OutputFull | R::OutputEndsFull => unreachable!("buffers sized for the tests"),
                R::Record => {
                    let mut raw = &bytes[rec_start..pos];
                    let mut start = rec_start;
                    while let Some((&c, rest)) = raw.split_first() {
                        if c != b'\n' && c != b'\r' {
                            break;
                        }
                        line += u64::from(c == b'\n');
                        raw = rest;
                        start += 1;
                    }
                    let mut fields = Vec::new();
                    let mut s = 0;
                    for &e in &ends[..nends] {
                        fields.push(out[s..e].to_vec());
                        s = e;
                    }
                    seen.push((line, start, trim_terminator(raw).to_vec(), fields));
                    line += raw.iter().filter(|&&c| c == b'\n').count() as u64;
                    (outlen, nends, rec_start) = (0, 0, pos);
                }
                R::End => return seen,
            }
        }
    }

    fn split(bytes: &[u8], delimiter: u8, first_line: u64) -> Seen {
        let mut seen = Vec::new();
        for_each_record(bytes, delimiter, first_line, |r| {
            let fields = (0..r.len()).map(|i| r.field(i).to_vec()).collect();
            seen.push((r.line, r.start, r.raw.to_vec(), fields));
            true
        });
        seen
    }

    proptest! {
        #[test]
        fn records_are_split_as_the_csv_parser_splits_them(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                &b"a"[..], b"bc ", b",", b";", b"\t", b"\"", b"\n", b"\r", b"\r\n", b" ",
                b"\xef\xbb\xbf", "é".as_bytes(), "\u{a0}".as_bytes(), b"\xff", b"\x0b",
                b"abcdefghijk", "\u{800}".as_bytes(), b"\x7f", b"!#",
            ]), 0..60),
            delimiter in prop_oneof![Just(b','), Just(b';'), Just(b'\t')],
        ) {
            let bytes = parts.concat();
            prop_assert_eq!(split(&bytes, delimiter, 7), reference(&bytes, delimiter, 7));
        }

        #[test]
        fn clean_fields_only_need_their_spaces_trimmed(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "a", " ", ",", "\t", "é", "\u{a0}", "\u{2003}", "\u{3000}", "\u{85}",
                "\u{1680}", "\u{205f}", "\x0b", "\x7f", "€", "\n", "abcdefghijk", "\u{800}",
                "  ",
            ]), 0..40),
        ) {
            let text = parts.concat();
            for_each_record(text.as_bytes(), b',', 1, |r| {
                for f in r.fields {
                    let field = &text[f.start..f.end];
                    if f.clean {
                        assert_eq!(clean_text(field), field.trim_ascii(), "{field:?}");
                    }
                }
                true
            });
        }
    }

    #[test]
    fn needs_look_flags_first_the_first_byte_that_is_not_plain() {
        for delimiter in [b',', b';', b'|', b'\t'] {
            let classes = byte_classes(delimiter);
            let delimiters = ONES * u64::from(delimiter);
            for b in 0..=255u8 {
                for pos in 0..8 {
                    for filler in [b'a', b'0', 0xc3, 0x80] {
                        let mut word = [filler; 8];
                        word[pos] = b;
                        let flagged = needs_look(u64::from_le_bytes(word), delimiters);
                        let first = (flagged != 0).then(|| flagged.trailing_zeros() as usize / 8);
                        let special = classes[usize::from(b)] != PLAIN;
                        if special {
                            assert_eq!(first, Some(pos), "byte {b:#x} at {pos}");
                        } else if let Some(p) = first {
                            assert!(p == pos && b == 0xe0, "byte {b:#x} at {pos}: {p}");
                        }
                    }
                }
            }
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
