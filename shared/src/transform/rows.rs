//! Parsing, validation and normalisation of the records of one chunk into an Arrow batch.

use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef;

use crate::contract::{ColumnKind, Contract, OutType, RowReason};
use crate::dialect::{lossy_text, Encoding};
use crate::parse::DecimalSep;
use crate::text::fold_enum;

use super::chunker::Chunk;
use super::records::for_each_record_in;
use super::validate::{validate, Spellings, Validated};

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
    /// Where the factors of the contract's computed column are, when it has one.
    pub product: Option<ProductInputs>,
    /// The contract columns bounding a row's interval (from, to), when it has an interval rule.
    pub interval: Option<[usize; 2]>,
}

impl FileContext {
    /// Positions and scales of the factors of the contract's computed column; `None` when it
    /// has none, or when a factor is not a decimal column of the contract (a contract test rules
    /// that out).
    pub fn product_inputs(contract: &Contract) -> Option<ProductInputs> {
        let product = contract.computed.as_ref()?;
        let factor = |name: &str| {
            let i = contract.columns.iter().position(|c| c.name == name)?;
            match contract.columns[i].kind {
                ColumnKind::Decimal { scale, .. } => Some((i, u32::from(scale))),
                _ => None,
            }
        };
        let (a, a_scale) = factor(product.factors[0])?;
        let (b, b_scale) = factor(product.factors[1])?;
        Some(ProductInputs {
            columns: [a, b],
            scales: [a_scale, b_scale],
        })
    }

    /// Positions of the bounds of the contract's interval rule; `None` when it has none, or when
    /// a bound is not a column of the contract (a contract test rules that out).
    pub fn interval_bounds(contract: &Contract) -> Option<[usize; 2]> {
        let rule = contract.interval.as_ref()?;
        let at = |name: &str| contract.columns.iter().position(|c| c.name == name);
        Some([at(rule.from)?, at(rule.to)?])
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

/// Positions (contract columns) and scales of the two factors of a computed column.
#[derive(Debug, Clone, Copy)]
pub struct ProductInputs {
    pub columns: [usize; 2],
    pub scales: [u32; 2],
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
    /// First and last day (days since 1970-01-01) the row is in force, under an interval rule.
    pub interval: Option<(i32, i32)>,
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

/// One output value of a record. Text borrows from the record or the contract when it can, and
/// lives in the record's scratch buffer otherwise.
pub(super) enum Val<'r> {
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

/// An empty vector of values for the next record, reusing the allocation of the last one.
fn recycle<'b>(mut vals: Vec<Val<'_>>) -> Vec<Val<'b>> {
    vals.clear();
    vals.into_iter().map(|_| Val::Null).collect()
}

/// Validates and converts the records of one chunk; `skip_header`: its first record is the
/// file's header.
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
    let mut spellings: Vec<Spellings> = vec![Spellings::default(); ctx.contract.columns.len()];
    let key_col = ctx.key_col;
    // One UTF-8 check for the whole chunk; fields are then sliced from it. Field boundaries are
    // where ASCII delimiters and quotes were, so they are always char boundaries.
    let text = if encoding == Encoding::Utf8 || chunk.bytes.is_ascii() {
        simdutf8::basic::from_utf8(&chunk.bytes).ok()
    } else {
        None
    };
    // A byte-order mark is data anywhere but at the start of the input.
    let (bytes, first_line, at_start) = (&chunk.bytes, chunk.first_line, chunk.seq == 0);
    for_each_record_in(bytes, text, ctx.delimiter, first_line, at_start, |rec| {
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
            Ok(Validated { key, interval }) => {
                for (b, v) in builders.iter_mut().zip(vals.iter()) {
                    append(b, v, &scratch);
                }
                ok.push(OkRow {
                    start: rec.start as u32,
                    end: (rec.start + rec.raw.len()) as u32,
                    line: rec.line,
                    key: if key_col.is_some() { key } else { None },
                    interval,
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

pub(super) fn push_str<'r>(scratch: &mut String, s: &str) -> Val<'r> {
    let start = scratch.len() as u32;
    scratch.push_str(s);
    Val::Scratch(start, scratch.len() as u32)
}
