//! The writer side of the transform: keeps chunks in input order, applies "first key wins",
//! writes Parquet parts row group by row group, and rejected rows as NDJSON.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::contract::{Dataset, OutType, RowReason};
use crate::dialect::lossy_text;
use crate::lake::{LakeError, LakeStore, ObjectSink};

use super::chunker::Buffers;
use super::intervals::IntervalSet;
use super::keys::KeySet;
use super::manifest::{OutputObject, StageTimes};
use super::rows::{ChunkResult, FileContext, OkRow, Reject};
use super::validate::shown_day;
use super::{Names, TransformError, TransformOptions};

/// What the writer produced.
pub struct WriterResult {
    pub rows_in: u64,
    pub rows_ok: u64,
    pub rows_rejected: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub processed: Vec<OutputObject>,
    pub rejected: Option<OutputObject>,
    /// Busy time of the stages after reading (`read_ms` is the reader's).
    pub stages: StageTimes,
}

/// One line of the rejected NDJSON.
#[derive(serde::Serialize)]
struct RejectedLine<'a> {
    line: u64,
    reason: String,
    detail: &'a str,
    record: &'a str,
    source_key: &'a str,
}

struct Part {
    writer: ArrowWriter<Box<dyn ObjectSink>>,
    key: String,
    rows: u64,
}

pub struct OutputWriter<'a> {
    lake: &'a dyn LakeStore,
    schema: arrow_schema::SchemaRef,
    props: WriterProperties,
    processed_prefix: String,
    rejected_key: String,
    source_key: String,
    key_column: Option<&'static str>,
    part_size: u64,
    row_group_bytes: usize,
    keys: Option<KeySet>,
    /// Under an interval rule, the intervals of the rows accepted so far, and its columns.
    intervals: Option<(IntervalSet, [&'static str; 2])>,
    /// A chunk's key fingerprints, and whether each was new (buffers kept across chunks).
    fps: Vec<u128>,
    fresh: Vec<bool>,
    pending: HashMap<u64, ChunkResult>,
    next_seq: u64,
    part: Option<Part>,
    parts: Vec<OutputObject>,
    rejected: Option<(Box<dyn ObjectSink>, u64)>,
    rejected_line: Vec<u8>,
    rows_in: u64,
    rows_ok: u64,
    by_reason: BTreeMap<RowReason, u64>,
    written: Vec<String>,
    validate_time: Duration,
    keys_time: Duration,
    parquet_time: Duration,
    rejects_time: Duration,
    /// Where a chunk's input buffer goes once its rows are written.
    buffers: Option<Buffers>,
}

impl<'a> OutputWriter<'a> {
    pub fn new(
        lake: &'a dyn LakeStore,
        ctx: &FileContext,
        names: &Names,
        opts: &TransformOptions,
        _dataset: Dataset,
    ) -> OutputWriter<'a> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(4 << 20))
            .set_max_row_group_bytes(Some(opts.row_group_bytes.max(1 << 20)))
            .set_created_by(format!("lago {}", env!("CARGO_PKG_VERSION")));
        // Dictionaries pay off for repeated values (enums, names, lineage), not for keys,
        // amounts, timestamps and line numbers: skip the work of trying them there.
        let key = ctx.key_col.map(|i| ctx.contract.columns[i].name);
        for c in ctx.contract.output_columns() {
            let unique_ish = matches!(
                c.ty,
                OutType::Decimal(..) | OutType::TimestampUtc | OutType::Int64
            ) || Some(c.name.as_str()) == key
                || c.name.ends_with("_hash");
            if unique_ish {
                props =
                    props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), false);
            }
        }
        // Min/max of free text (names, addresses) and of hashes never prune a row group — any
        // row group spans nearly the whole alphabet — and cost two comparisons per value.
        for c in ctx.contract.output_columns().iter().filter(|c| c.free_text) {
            props = props.set_column_statistics_enabled(
                ColumnPath::from(c.name.as_str()),
                EnabledStatistics::None,
            );
        }
        let props = props.build();
        OutputWriter {
            lake,
            schema: ctx.schema.clone(),
            props,
            processed_prefix: names.processed.clone(),
            rejected_key: format!("{}.ndjson", names.rejected),
            source_key: ctx.source_key.clone(),
            key_column: ctx.key_col.map(|i| ctx.contract.columns[i].name),
            part_size: opts.part_size.max(1 << 20),
            row_group_bytes: opts.row_group_bytes.max(1 << 20),
            keys: ctx.key_col.map(|_| KeySet::new(opts.key_memory)),
            intervals: ctx
                .contract
                .interval
                .as_ref()
                .map(|rule| (IntervalSet::new(), [rule.from, rule.to])),
            fps: Vec::new(),
            fresh: Vec::new(),
            pending: HashMap::new(),
            next_seq: 0,
            part: None,
            parts: Vec::new(),
            rejected: None,
            rejected_line: Vec::with_capacity(1024),
            rows_in: 0,
            rows_ok: 0,
            by_reason: BTreeMap::new(),
            written: Vec::new(),
            validate_time: Duration::ZERO,
            keys_time: Duration::ZERO,
            parquet_time: Duration::ZERO,
            rejects_time: Duration::ZERO,
            buffers: None,
        }
    }

    /// Hands every chunk's input buffer to `buffers` once the chunk is written.
    pub fn recycle_into(&mut self, buffers: Buffers) {
        self.buffers = Some(buffers);
    }

    pub fn rows_in(&self) -> u64 {
        self.rows_in
    }

    /// Takes a chunk's result; results may arrive in any order and are applied in input order.
    pub fn accept(&mut self, r: ChunkResult) -> Result<(), TransformError> {
        if r.seq != self.next_seq {
            self.pending.insert(r.seq, r);
            return Ok(());
        }
        self.apply(r)?;
        while let Some(next) = self.pending.remove(&self.next_seq) {
            self.apply(next)?;
        }
        Ok(())
    }

    fn apply(&mut self, r: ChunkResult) -> Result<(), TransformError> {
        self.next_seq = r.seq + 1;
        self.rows_in += r.rows_in;
        self.validate_time += r.busy;
        let ChunkResult {
            batch,
            ok,
            mut rejects,
            bytes,
            encoding,
            ..
        } = r;
        let started = Instant::now();
        // Rows arrive here in input order, whatever thread validated them, so "the first row
        // wins" is decided here, once.
        let refused = if self.intervals.is_some() {
            self.claim_one_by_one(&ok)?
        } else {
            self.claim_keys(&ok)?
        };
        let mut keep: Option<Vec<bool>> = None;
        for (i, reason, detail) in refused {
            let row = &ok[i];
            keep.get_or_insert_with(|| vec![true; ok.len()])[i] = false;
            rejects.push(Reject {
                line: row.line,
                reason,
                detail,
                record: lossy_text(&bytes[row.start as usize..row.end as usize], encoding),
            });
        }
        let batch = match (batch, keep) {
            (Some(batch), Some(mask)) => Some(
                arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(mask))
                    .map_err(|e| TransformError::Parquet(e.into()))?,
            ),
            (batch, _) => batch,
        };
        let checked = Instant::now();
        self.keys_time += checked - started;
        if !rejects.is_empty() {
            rejects.sort_by_key(|r| r.line);
            self.write_rejects(&rejects)?;
        }
        let rejected = Instant::now();
        self.rejects_time += rejected - checked;
        if let Some(batch) = batch {
            self.write_batch(&batch)?;
            self.parquet_time += rejected.elapsed();
        }
        if let Some(buffers) = &self.buffers {
            buffers.give(bytes);
        }
        Ok(())
    }

    /// Claims the keys of a chunk's valid rows in one batch; returns the rows refused (index,
    /// reason, detail).
    fn claim_keys(
        &mut self,
        ok: &[OkRow],
    ) -> Result<Vec<(usize, RowReason, String)>, TransformError> {
        let mut refused = Vec::new();
        let Some(keys) = self.keys.as_mut() else {
            return Ok(refused);
        };
        self.fps.clear();
        self.fps.extend(ok.iter().filter_map(|row| row.key));
        self.fresh.clear();
        keys.insert_batch(&self.fps, &mut self.fresh)
            .map_err(TransformError::KeySet)?;
        let keyed = ok.iter().enumerate().filter(|(_, row)| row.key.is_some());
        for ((i, _), fresh) in keyed.zip(&self.fresh) {
            if !fresh {
                refused.push((i, RowReason::DuplicateKey, self.duplicate_detail()));
            }
        }
        Ok(refused)
    }

    /// Under an interval rule, checks each valid row of a chunk in turn: its key first, then
    /// its interval; only a row that passes both claims them, so a refused row never stands in
    /// the way of a later one.
    fn claim_one_by_one(
        &mut self,
        ok: &[OkRow],
    ) -> Result<Vec<(usize, RowReason, String)>, TransformError> {
        let mut refused = Vec::new();
        for (i, row) in ok.iter().enumerate() {
            if let (Some(keys), Some(fp)) = (self.keys.as_mut(), row.key) {
                if keys.contains(fp).map_err(TransformError::KeySet)? {
                    refused.push((i, RowReason::DuplicateKey, self.duplicate_detail()));
                    continue;
                }
            }
            if let (Some((intervals, [from_col, to_col])), Some((from, to))) =
                (self.intervals.as_mut(), row.interval)
            {
                if let Err((first, last)) = intervals.insert(from, to) {
                    let detail = format!(
                        "{from_col}..{to_col} {}..{} shares days with {}..{}, accepted earlier \
                         in this file; the first row wins",
                        shown_day(from),
                        shown_day(to),
                        shown_day(first),
                        shown_day(last)
                    );
                    refused.push((i, RowReason::OverlappingInterval, detail));
                    continue;
                }
            }
            if let (Some(keys), Some(fp)) = (self.keys.as_mut(), row.key) {
                keys.insert(fp).map_err(TransformError::KeySet)?;
            }
        }
        Ok(refused)
    }

    fn duplicate_detail(&self) -> String {
        format!(
            "{} already accepted earlier in this file; the first row wins",
            self.key_column.unwrap_or("key")
        )
    }

    fn write_rejects(&mut self, rejects: &[Reject]) -> Result<(), TransformError> {
        if self.rejected.is_none() {
            let sink = self.lake.create(&self.rejected_key)?;
            self.written.push(self.rejected_key.clone());
            self.rejected = Some((sink, 0));
        }
        let Some((sink, rows)) = self.rejected.as_mut() else {
            return Ok(());
        };
        for r in rejects {
            self.rejected_line.clear();
            let doc = RejectedLine {
                line: r.line,
                reason: r.reason.code(),
                detail: &r.detail,
                record: &r.record,
                source_key: &self.source_key,
            };
            serde_json::to_writer(&mut self.rejected_line, &doc)?;
            self.rejected_line.push(b'\n');
            sink.write_all(&self.rejected_line)
                .map_err(|source| LakeError::Io {
                    key: self.rejected_key.clone(),
                    source,
                })?;
            *rows += 1;
            *self.by_reason.entry(r.reason).or_insert(0) += 1;
        }
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), TransformError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.part.is_none() {
            let key = format!("{}-{:05}.parquet", self.processed_prefix, self.parts.len());
            let sink = self.lake.create(&key)?;
            self.written.push(key.clone());
            let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))?;
            self.part = Some(Part {
                writer,
                key,
                rows: 0,
            });
        }
        let Some(part) = self.part.as_mut() else {
            return Ok(());
        };
        part.writer.write(batch)?;
        part.rows += batch.num_rows() as u64;
        self.rows_ok += batch.num_rows() as u64;
        if part.writer.in_progress_size() >= self.row_group_bytes {
            part.writer.flush()?;
        }
        if part.writer.bytes_written() as u64 + part.writer.in_progress_size() as u64
            >= self.part_size
        {
            self.close_part()?;
        }
        Ok(())
    }

    fn close_part(&mut self) -> Result<(), TransformError> {
        if let Some(part) = self.part.take() {
            let sink = part.writer.into_inner()?;
            let written = sink.finish()?;
            self.parts
                .push(OutputObject::written(part.key, part.rows, written));
        }
        Ok(())
    }

    /// Completes every output.
    pub fn finish(mut self) -> Result<WriterResult, TransformError> {
        if !self.pending.is_empty() {
            return Err(TransformError::Invariant(format!(
                "{} chunks never applied",
                self.pending.len()
            )));
        }
        let closing = Instant::now();
        self.close_part()?;
        let closed = Instant::now();
        self.parquet_time += closed - closing;
        // Completing the rejected object (the last upload, on S3) is rejects work too.
        let rejected = match self.rejected.take() {
            Some((sink, rows)) => Some(OutputObject::written(
                self.rejected_key.clone(),
                rows,
                sink.finish()?,
            )),
            None => None,
        };
        self.rejects_time += closed.elapsed();
        let rows_rejected = rejected.as_ref().map_or(0, |r| r.rows);
        Ok(WriterResult {
            rows_in: self.rows_in,
            rows_ok: self.rows_ok,
            rows_rejected,
            by_reason: self.by_reason.iter().map(|(r, n)| (r.code(), *n)).collect(),
            processed: std::mem::take(&mut self.parts),
            rejected,
            stages: StageTimes {
                read_ms: 0,
                validate_ms: StageTimes::ms(self.validate_time),
                keys_ms: StageTimes::ms(self.keys_time),
                parquet_ms: StageTimes::ms(self.parquet_time),
                rejects_ms: StageTimes::ms(self.rejects_time),
            },
        })
    }

    /// Drops everything written so far (objects in progress are never made visible).
    pub fn abort(&mut self) {
        self.part = None;
        self.rejected = None;
        for key in self.parts.drain(..).map(|p| p.key) {
            let _ = self.lake.delete(&key);
        }
        self.written.clear();
    }
}
