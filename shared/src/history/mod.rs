//! The trade history: the raw trade archive becomes typed, enriched Parquet — the source of the
//! warehouse's `trades_history` — the same code on S3 and on a local folder.
//!
//! 1. List the archive objects (`raw/trades/year=/month=/day=/<batch>.ndjson.gz`) of the days
//!    asked for, in key order, and skip every object that has a manifest: each object is
//!    processed once, and running again is a no-op.
//! 2. Read the official rates in force ([`RateTable`], from the processed `trm` dataset).
//! 3. Per object, each line is parsed with the stream's own validation, enriched
//!    ([`row::enrich`]) and written to `processed/trades/<same partition>/<batch>.parquet` —
//!    unless this run already wrote its trade: a decision (`applied`, `rejected`) is written
//!    once, a `duplicate` line only when nothing of its trade was written (its decision is in
//!    an object of an earlier run, or was never archived). A line that cannot be read goes to
//!    `rejected/trades/<partition>/<batch>.ndjson` with its reason; an object whose gzip is
//!    corrupt is rejected whole (its manifest says `unreadable`). Nothing is dropped: per
//!    object, `lines = rows + repeats + invalid`.
//! 4. The manifest (`manifests/trades/<partition>/<batch>.json`) is written last, so an object
//!    interrupted half-way is processed again from the start by the next run.
//!
//! Across runs the warehouse keeps one row per `trade_id` (see [`crate::load`]).

pub mod features;
pub mod publish;
pub mod rates;
pub mod row;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use flate2::read::MultiGzDecoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::lake::{LakeError, LakeRead, LakeStore, ObjectSink};
use crate::trades::hash::FastMap;
use crate::trades::trade::Interner;
use crate::trades::{ArchiveStatus, ArchivedTrade};
use crate::transform::OutputObject;

pub use publish::{partition_input, processed_day, warehouse_loads, PartitionInput};
pub use rates::{Rate, RateTable};
pub use row::{enrich, Enriched, RowBuilder};

/// Version of the history's Parquet schema and manifest.
pub const HISTORY_SCHEMA_VERSION: u32 = 1;

/// Rows per Arrow batch (and at most per row group).
const BATCH_ROWS: usize = 8192;

/// Which archive days a run looks at (the archive's `year=/month=/day=` partitions: the UTC
/// date of a batch's first trade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Days {
    /// Every day in the archive.
    All,
    /// These days only.
    Only(Vec<NaiveDate>),
}

#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub days: Days,
    /// `_load_date` of the rows written.
    pub load_date: NaiveDate,
}

/// Why a run stopped. Bad content is never an error (it is rejected, with a manifest): these
/// are the lake failing, to retry.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Lake(LakeError),
    #[error("reading {key} failed")]
    Read {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("writing Parquet for {key} failed")]
    Parquet {
        key: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("building a batch for {key} failed")]
    Arrow {
        key: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{key} cannot be read: {detail}")]
    Unreadable { key: String, detail: String },
    #[error("serializing a manifest failed")]
    Manifest(#[from] serde_json::Error),
}

/// What became of one archive object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryManifest {
    pub schema_version: u32,
    pub source: HistorySource,
    pub load_date: NaiveDate,
    pub status: ObjectStatus,
    /// Why the object was rejected whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Archive lines read (blank lines are not records).
    pub lines: u64,
    /// Rows written to `processed/`.
    pub rows: u64,
    /// Lines whose trade this run had already written from an earlier line.
    pub repeats: u64,
    /// Lines that are not valid archive lines, in `rejected/`.
    pub invalid: u64,
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Rows written, by archived status (`applied`, `rejected`, `duplicate`).
    pub rows_by_status: BTreeMap<String, u64>,
    /// Rows written without an official rate for their local date (`trm` is null).
    pub rows_without_trm: u64,
    pub outputs: HistoryOutputs,
    pub started_at: String,
    pub duration_ms: u64,
}

impl HistoryManifest {
    /// The manifest of an object about to be read: nothing counted yet.
    fn empty(key: &str, names: &Names, load_date: NaiveDate, started_at: String) -> Self {
        HistoryManifest {
            schema_version: HISTORY_SCHEMA_VERSION,
            source: HistorySource {
                key: key.to_string(),
                bytes: 0,
            },
            load_date,
            status: ObjectStatus::Ok,
            detail: None,
            lines: 0,
            rows: 0,
            repeats: 0,
            invalid: 0,
            invalid_by_reason: BTreeMap::new(),
            rows_by_status: BTreeMap::new(),
            rows_without_trm: 0,
            outputs: HistoryOutputs {
                manifest: names.manifest.clone(),
                ..HistoryOutputs::default()
            },
            started_at,
            duration_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySource {
    pub key: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStatus {
    Ok,
    /// The object cannot be decompressed: nothing of it is in `processed/`.
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryOutputs {
    pub processed: Option<OutputObject>,
    pub rejected: Option<OutputObject>,
    pub manifest: String,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryReport {
    /// Archive objects of the days asked for.
    pub objects: u64,
    /// Of those, already processed by an earlier run (they have a manifest).
    pub already_processed: u64,
    /// Rejected whole (unreadable).
    pub unreadable: u64,
    pub lines: u64,
    pub rows: u64,
    pub repeats: u64,
    pub invalid: u64,
    pub rows_by_status: BTreeMap<String, u64>,
    pub rows_without_trm: u64,
    /// Archive objects not started because the run's deadline came: left for the next run.
    pub pending: u64,
    /// Official rates known to the run.
    pub rates: u64,
    /// The Parquet objects written by this run, in key order: what the warehouse loads.
    pub parts: Vec<String>,
    pub manifests: Vec<String>,
    pub duration_ms: u64,
}

/// The Arrow schema of processed columns.
pub(crate) fn arrow_schema(columns: &[crate::contract::OutColumn]) -> arrow_schema::SchemaRef {
    std::sync::Arc::new(arrow_schema::Schema::new(
        columns
            .iter()
            .map(|c| arrow_schema::Field::new(&c.name, c.ty.arrow(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// The batches of the columns `names` of the Parquet object `key`.
pub(crate) fn read_columns<L: LakeRead + ?Sized>(
    lake: &L,
    key: &str,
    names: &[&str],
) -> Result<Vec<arrow_array::RecordBatch>, HistoryError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |detail: String| HistoryError::Unreadable {
        key: key.to_string(),
        detail,
    };
    let bytes = bytes::Bytes::from(lake.read_all(key)?);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(e.to_string()))?;
    let schema = builder.parquet_schema();
    let indices = names
        .iter()
        .map(|name| {
            schema
                .columns()
                .iter()
                .position(|c| c.name() == *name)
                .ok_or_else(|| bad(format!("no column {name}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mask = parquet::arrow::ProjectionMask::leaves(schema, indices);
    builder
        .with_projection(mask)
        .build()
        .map_err(|e| bad(e.to_string()))?
        .map(|batch| batch.map_err(|e| bad(e.to_string())))
        .collect()
}

/// The archive objects of `days`, sorted, with the ones already processed left out.
pub fn pending_objects<L: LakeStore + ?Sized>(
    lake: &L,
    days: &Days,
) -> Result<(Vec<String>, u64), HistoryError> {
    let prefixes: Vec<String> = match days {
        Days::All => vec!["raw/trades/".to_string()],
        Days::Only(days) => days.iter().map(|d| day_prefix("raw", *d)).collect(),
    };
    let mut objects = Vec::new();
    let mut done = std::collections::HashSet::new();
    for prefix in &prefixes {
        objects.extend(
            lake.list(prefix)?
                .into_iter()
                .filter(|k| names(k).is_some()),
        );
        let manifests = prefix.replacen("raw/", "manifests/", 1);
        done.extend(lake.list(&manifests)?);
    }
    objects.sort();
    objects.dedup();
    let before = objects.len() as u64;
    objects.retain(|k| names(k).is_none_or(|n| !done.contains(&n.manifest)));
    Ok((objects.clone(), before - objects.len() as u64))
}

/// Runs the history over the archive objects of `opts.days` that have no manifest yet.
pub fn run<L: LakeStore + LakeRead + ?Sized>(
    lake: &L,
    opts: &HistoryOptions,
) -> Result<HistoryReport, HistoryError> {
    run_until(lake, opts, None)
}

/// [`run`], starting no object once `deadline` has passed. Every object processed is whole
/// (its manifest written last), so stopping between objects loses nothing: the report names
/// the parts written, and the objects not started (`pending`) are the next run's.
pub fn run_until<L: LakeStore + LakeRead + ?Sized>(
    lake: &L,
    opts: &HistoryOptions,
    deadline: Option<Instant>,
) -> Result<HistoryReport, HistoryError> {
    let started = Instant::now();
    let (objects, already) = pending_objects(lake, &opts.days)?;
    let rates = RateTable::from_lake(lake)?;
    let mut seen = SeenTrades::default();
    let mut report = HistoryReport {
        objects: objects.len() as u64 + already,
        already_processed: already,
        rates: rates.len() as u64,
        ..HistoryReport::default()
    };
    for (i, key) in objects.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            report.pending = (objects.len() - i) as u64;
            break;
        }
        let manifest = process_object(lake, key, &rates, &mut seen, opts.load_date)?;
        report.lines += manifest.lines;
        report.rows += manifest.rows;
        report.repeats += manifest.repeats;
        report.invalid += manifest.invalid;
        report.rows_without_trm += manifest.rows_without_trm;
        report.unreadable += u64::from(manifest.status == ObjectStatus::Unreadable);
        for (status, n) in &manifest.rows_by_status {
            *report.rows_by_status.entry(status.clone()).or_default() += n;
        }
        report
            .parts
            .extend(manifest.outputs.processed.as_ref().map(|p| p.key.clone()));
        report.manifests.push(manifest.outputs.manifest.clone());
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    info!(
        objects = report.objects,
        already_processed = report.already_processed,
        pending = report.pending,
        rows = report.rows,
        repeats = report.repeats,
        invalid = report.invalid,
        without_trm = report.rows_without_trm,
        "trade history"
    );
    Ok(report)
}

/// The trades this run has written: a 128-bit hash of the trade id (a collision among a
/// billion ids has a chance of about 1 in 10^20) → whether the row written was a decision.
/// What one object changed is journaled, so an object rejected whole changes nothing.
#[derive(Default)]
struct SeenTrades {
    written: FastMap<u128, bool>,
    journal: Vec<(u128, Option<bool>)>,
}

impl SeenTrades {
    /// Whether `line` is to be written, recording it if so.
    fn admit(&mut self, line: &ArchivedTrade) -> bool {
        let id = xxhash_rust::xxh3::xxh3_128(line.trade.trade_id.as_bytes());
        let decision = line.status != ArchiveStatus::Duplicate;
        let before = self.written.get(&id).copied();
        let admit = match before {
            // A decision beats a duplicate written before it; nothing beats a decision.
            Some(false) => decision,
            Some(true) => false,
            None => true,
        };
        if admit {
            self.journal.push((id, before));
            self.written.insert(id, decision);
        }
        admit
    }

    /// The object's rows are kept: forget the journal.
    fn commit(&mut self) {
        self.journal.clear();
    }

    /// The object's rows are not kept: undo what it recorded.
    fn rollback(&mut self) {
        while let Some((id, before)) = self.journal.pop() {
            match before {
                Some(b) => self.written.insert(id, b),
                None => self.written.remove(&id),
            };
        }
    }
}

/// The keys derived from an archive object's key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    processed: String,
    rejected: String,
    manifest: String,
}

/// `raw/trades/<partition>/<batch>.ndjson.gz` → the outputs' keys; `None` for anything else.
fn names(key: &str) -> Option<Names> {
    let rest = key.strip_prefix("raw/trades/")?;
    let stem = rest.strip_suffix(".ndjson.gz")?;
    if stem.is_empty() || stem.ends_with('/') {
        return None;
    }
    Some(Names {
        processed: format!("processed/trades/{stem}.parquet"),
        rejected: format!("rejected/trades/{stem}.ndjson"),
        manifest: format!("manifests/trades/{stem}.json"),
    })
}

fn day_prefix(zone: &str, d: NaiveDate) -> String {
    format!("{zone}/trades/{}/", d.format("year=%Y/month=%m/day=%d"))
}

fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by(format!("lago {}", env!("CARGO_PKG_VERSION")));
    // Unique per row: dictionaries only cost time there.
    for c in [
        "trade_id",
        "sequence_number",
        "executed_at",
        "arrived_at",
        "_source_line",
    ] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    props.build()
}

/// One archive object through the history, outputs and manifest written.
fn process_object<L: LakeStore + LakeRead + ?Sized>(
    lake: &L,
    key: &str,
    rates: &RateTable,
    seen: &mut SeenTrades,
    load_date: NaiveDate,
) -> Result<HistoryManifest, HistoryError> {
    let started = Instant::now();
    let started_at: DateTime<Utc> = Utc::now();
    let Some(names) = names(key) else {
        return Err(HistoryError::Lake(LakeError::InvalidKey(key.to_string())));
    };
    let mut m = HistoryManifest::empty(key, &names, load_date, started_at.to_rfc3339());
    let mut counted = CountingRead {
        inner: lake.open(key)?,
        bytes: 0,
    };
    let outcome = {
        let mut reader = BufReader::with_capacity(1 << 16, MultiGzDecoder::new(&mut counted));
        let object = ObjectRun {
            lake,
            key,
            names: &names,
            rates,
            load_date,
        };
        write_rows(&object, &mut reader, seen, &mut m)
    };
    m.source.bytes = counted.bytes;
    match outcome {
        Ok(()) => seen.commit(),
        Err(ObjectFailure::Corrupt(e)) => {
            seen.rollback();
            // The object cannot be read whole: it is rejected whole, nothing written counts.
            m = HistoryManifest {
                status: ObjectStatus::Unreadable,
                detail: Some(format!("the object is not a readable gzip stream: {e}")),
                source: m.source,
                started_at: m.started_at,
                ..HistoryManifest::empty(key, &names, load_date, String::new())
            };
        }
        Err(ObjectFailure::Failed(e)) => {
            seen.rollback();
            return Err(e);
        }
    }
    m.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    lake.put(&names.manifest, &serde_json::to_vec_pretty(&m)?)?;
    Ok(m)
}

enum ObjectFailure {
    /// The content is bad (gzip or its framing): reject the object, do not retry.
    Corrupt(io::Error),
    Failed(HistoryError),
}

impl From<HistoryError> for ObjectFailure {
    fn from(e: HistoryError) -> Self {
        ObjectFailure::Failed(e)
    }
}

impl From<LakeError> for ObjectFailure {
    fn from(e: LakeError) -> Self {
        ObjectFailure::Failed(HistoryError::Lake(e))
    }
}

/// Counts the stored bytes read.
struct CountingRead<R> {
    inner: R,
    bytes: u64,
}

impl<R: io::Read> io::Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A Parquet part being written; nothing is visible until it is finished.
struct Part {
    writer: ArrowWriter<Box<dyn ObjectSink>>,
    rows: u64,
}

/// One archive object going through the history.
struct ObjectRun<'a, L: ?Sized> {
    lake: &'a L,
    key: &'a str,
    names: &'a Names,
    rates: &'a RateTable,
    load_date: NaiveDate,
}

/// Reads every line of the object, writing its rows, rejects and counts into `m`.
fn write_rows<L: LakeStore + ?Sized>(
    object: &ObjectRun<'_, L>,
    reader: &mut impl BufRead,
    seen: &mut SeenTrades,
    m: &mut HistoryManifest,
) -> Result<(), ObjectFailure> {
    let &ObjectRun {
        lake,
        key,
        names,
        rates,
        load_date,
    } = object;
    let mut interner = Interner::default();
    let mut builder = RowBuilder::with_capacity(BATCH_ROWS);
    let mut part: Option<Part> = None;
    let mut rejected: Option<(Box<dyn ObjectSink>, u64)> = None;
    let mut line = Vec::with_capacity(512);
    let mut line_no = 0u64;
    let parquet_err = |source| HistoryError::Parquet {
        key: names.processed.clone(),
        source,
    };
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof => ObjectFailure::Corrupt(e),
                _ => ObjectFailure::Failed(HistoryError::Read {
                    key: key.to_string(),
                    source: e,
                }),
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        m.lines += 1;
        let parsed = ArchivedTrade::parse(&line, &mut interner)
            .map_err(|e| (e.code(), e.detail))
            .and_then(|a| {
                let t = &a.trade;
                enrich(t.usd_amount, t.rate, t.executed_at, rates)
                    .map(|e| (a, e))
                    .map_err(|e| (e.code(), e.to_string()))
            });
        let (archived, enriched) = match parsed {
            Ok(ok) => ok,
            Err((reason, detail)) => {
                m.invalid += 1;
                *m.invalid_by_reason.entry(reason.clone()).or_default() += 1;
                let sink = match &mut rejected {
                    Some((sink, rows)) => {
                        *rows += 1;
                        sink
                    }
                    None => &mut rejected.insert((lake.create(&names.rejected)?, 1)).0,
                };
                let record = serde_json::json!({
                    "line": line_no,
                    "reason": reason,
                    "detail": detail,
                    "record": String::from_utf8_lossy(&line),
                });
                serde_json::to_writer(&mut *sink, &record).map_err(HistoryError::Manifest)?;
                sink.write_all(b"\n").map_err(|source| HistoryError::Read {
                    key: names.rejected.clone(),
                    source,
                })?;
                continue;
            }
        };
        if !seen.admit(&archived) {
            m.repeats += 1;
            continue;
        }
        m.rows += 1;
        *m.rows_by_status
            .entry(archived.status.as_str().to_string())
            .or_default() += 1;
        m.rows_without_trm += u64::from(enriched.trm.is_none());
        builder.push(&archived, &enriched, key, line_no, load_date);
        if builder.len() >= BATCH_ROWS {
            flush(lake, names, &mut builder, &mut part).map_err(ObjectFailure::Failed)?;
        }
    }
    flush(lake, names, &mut builder, &mut part).map_err(ObjectFailure::Failed)?;
    if let Some(p) = part {
        let rows = p.rows;
        let sink = p.writer.into_inner().map_err(parquet_err)?;
        let written = sink.finish()?;
        m.outputs.processed = Some(OutputObject::written(
            names.processed.clone(),
            rows,
            written,
        ));
    }
    if let Some((sink, rows)) = rejected {
        let written = sink.finish()?;
        m.outputs.rejected = Some(OutputObject::written(names.rejected.clone(), rows, written));
    }
    Ok(())
}

fn flush<L: LakeStore + ?Sized>(
    lake: &L,
    names: &Names,
    builder: &mut RowBuilder,
    part: &mut Option<Part>,
) -> Result<(), HistoryError> {
    if builder.is_empty() {
        return Ok(());
    }
    let rows = builder.len() as u64;
    let batch = builder.finish().map_err(|source| HistoryError::Arrow {
        key: names.processed.clone(),
        source,
    })?;
    let parquet_err = |source| HistoryError::Parquet {
        key: names.processed.clone(),
        source,
    };
    let p = match part {
        Some(p) => p,
        None => {
            let sink = lake.create(&names.processed)?;
            let writer = ArrowWriter::try_new(sink, row::schema(), Some(writer_properties()))
                .map_err(parquet_err)?;
            part.insert(Part { writer, rows: 0 })
        }
    };
    p.writer.write(&batch).map_err(parquet_err)?;
    p.rows += rows;
    Ok(())
}

#[cfg(test)]
mod tests;
