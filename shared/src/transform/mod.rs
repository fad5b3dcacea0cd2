//! The streaming CSV → Parquet transform of one source file.
//!
//! ```text
//!  source ─► (gunzip) ─► sniff dialect + header ─► chunker ──► workers: parse, validate, build Arrow
//!                                                    │                         │ (in any order)
//!                                                    └── reorder ◄─────────────┘
//!                                                          ▼
//!                                   writer: first key wins, Parquet parts, rejected NDJSON, manifest
//! ```
//! Memory is bounded by the chunk size × chunks in flight, one row group, and the key set's budget;
//! never by the size of the input. With one thread everything runs inline on the caller's thread.

mod chunker;
mod intervals;
mod keys;
pub mod manifest;
mod output;
mod records;
mod rows;
mod validate;

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use xxhash_rust::xxh3::Xxh3;

use crate::contract::{ColumnKind, Contract, Dataset, FileReason, SCHEMA_VERSION};
use crate::dialect::{self, Encoding, GZIP_MAGIC, UTF8_BOM};
use crate::lake::{self, LakeError, LakeStore, Zone};
use crate::parse::DecimalSep;

#[cfg(any(test, feature = "local"))]
pub(crate) use chunker::MIN_READ;
pub use chunker::{Buffers, Chunk, Chunker};
pub use intervals::IntervalSet;
pub use keys::KeySet;
pub use manifest::{Manifest, OutputObject, Outputs, SourceInfo, StageTimes, Status};
pub use records::{for_each_record, RawRecord};
pub use validate::mul_round;

use output::OutputWriter;
use rows::{process_chunk, ChunkResult, FileContext};

/// How the caller identifies the source object (S3: key, size and ETag; local: path, size and
/// content hash). Output names derive from it, so a replay overwrites its own outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    pub key: String,
    pub size: u64,
    pub version: SourceVersion,
}

/// The version part of a source's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVersion {
    /// Known before reading: an S3 version id or ETag, or a content hash computed beforehand.
    Known(String),
    /// The xxh3-128 of the stored bytes, computed while the transform reads them, so a local
    /// file is read once. Outputs are written under staged names (`_<stem>-…`, which catalog
    /// crawlers and query engines skip) and renamed when the run commits, so the lake must
    /// support [`LakeStore::rename`]. The names come out exactly as with [`Self::Known`] and the
    /// same hash.
    Content,
}

impl SourceIdentity {
    /// 8 hex characters identifying the source, used in every output name. For a version still
    /// to be learnt from the content, the tag of the staged names.
    pub fn tag(&self) -> String {
        let mut h = Xxh3::new();
        h.update(self.key.as_bytes());
        h.update(&[0]);
        h.update(self.version.known().as_bytes());
        format!("{:016x}", h.digest())[..8].to_string()
    }

    /// The identity of a local file: its path as key and the xxh3-128 of its bytes as version,
    /// read here in full.
    pub fn of_local_file(path: &std::path::Path, key: &str) -> io::Result<SourceIdentity> {
        let (digest, size) = hash_all(&mut std::fs::File::open(path)?, |e| e, |_| Ok(()))?;
        Ok(SourceIdentity {
            key: key.to_string(),
            size,
            version: SourceVersion::Known(content_version(digest)),
        })
    }

    /// The identity of a local file whose content hash the transform computes as it reads it
    /// ([`SourceVersion::Content`]): the same output names as [`Self::of_local_file`], without
    /// reading the file twice.
    pub fn of_local_file_by_content(
        path: &std::path::Path,
        key: &str,
    ) -> io::Result<SourceIdentity> {
        Ok(SourceIdentity {
            key: key.to_string(),
            size: std::fs::metadata(path)?.len(),
            version: SourceVersion::Content,
        })
    }
}

impl SourceVersion {
    /// The version when known, else empty.
    pub fn known(&self) -> &str {
        match self {
            SourceVersion::Known(v) => v,
            SourceVersion::Content => "",
        }
    }
}

/// The version string of content whose xxh3-128 is `digest`.
fn content_version(digest: u128) -> String {
    format!("{digest:032x}")
}

/// What to transform.
#[derive(Debug, Clone)]
pub struct TransformRequest {
    pub dataset: Dataset,
    pub load_date: NaiveDate,
    pub source: SourceIdentity,
}

/// How to transform it.
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// Worker threads; 1 runs everything on the caller's thread.
    pub threads: usize,
    /// Target size of one Parquet part (COPY loads parts in parallel).
    pub part_size: u64,
    /// A row group is flushed when its buffered size reaches this.
    pub row_group_bytes: usize,
    /// Bytes of CSV per unit of parallel work.
    pub chunk_size: usize,
    /// Keys kept in memory before the key set spills to disk.
    pub key_memory: usize,
    /// The longest record accepted: a file with a longer one (an unclosed quote, one endless
    /// line, not a CSV at all) is rejected whole as `unreadable` after reading this much of it,
    /// so memory stays bounded whatever the file holds.
    pub max_record: usize,
    /// Salt for hashing PII.
    pub pii_salt: Vec<u8>,
    /// Fail with [`TransformError::DeadlineExceeded`] rather than run past this.
    pub deadline: Option<Instant>,
}

impl Default for TransformOptions {
    fn default() -> Self {
        TransformOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            part_size: 128 << 20,
            row_group_bytes: 16 << 20,
            chunk_size: 1 << 20,
            // The most keys a 2^18-slot table holds (4 MiB of fingerprints, five eighths
            // full): one more and the table would double to 8 MiB.
            key_memory: 163_840,
            max_record: 64 << 20,
            pii_salt: Vec::new(),
            deadline: None,
        }
    }
}

/// Where the raw bytes come from; opened again to copy a rejected file whole.
pub trait RawSource: Sync {
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;

    /// The checksum the store keeps with the object (S3's, from the upload), once `open` has
    /// read it; a store that keeps none has none.
    fn stored_checksum(&self) -> Option<crate::integrity::ObjectChecksum> {
        None
    }
}

/// A file on the local disk.
#[derive(Debug, Clone)]
pub struct LocalFile(pub PathBuf);

impl RawSource for LocalFile {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(&self.0)?))
    }
}

/// Why a transform could not finish. A file that is bad is not an error: it is rejected, with a
/// manifest. These are the failures to retry or to report.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("reading the source object failed: {0}")]
    Source(#[source] io::Error),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("writing Parquet failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("the deadline was reached after {rows} rows; the file was not committed")]
    DeadlineExceeded { rows: u64 },
    #[error("the key set failed: {0}")]
    KeySet(#[source] io::Error),
    #[error("serializing the manifest failed: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("internal invariant broken: {0}")]
    Invariant(String),
}

/// Reads the source, counting and hashing the stored bytes, and remembering whether an error
/// came from the source itself (retryable) rather than from decoding its content.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
    hash: Xxh3,
    source_failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.source_failed.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

/// Shares the hasher state with the caller once reading is over.
struct HashTap<R> {
    inner: Counted<R>,
    out: Arc<std::sync::Mutex<Option<u128>>>,
    done: bool,
}

impl<R: Read> Read for HashTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !self.done {
            self.done = true;
            if let Ok(mut g) = self.out.lock() {
                *g = Some(self.inner.hash.digest128());
            }
        }
        Ok(n)
    }
}

/// The start of a file read to sniff its dialect and match its header.
pub(crate) const SAMPLE: usize = 64 * 1024;
/// The most the sample grows to hold the whole header (after blank lines, or a header longer
/// than [`SAMPLE`]).
const MAX_SAMPLE: usize = 16 * SAMPLE;

/// The encoding of a file, once decided.
struct DecidedEncoding {
    encoding: Option<Encoding>,
}

/// Transforms one source file into the lake. Returns the manifest that was written.
///
/// The stages, each a method of [`Run`]: open the source (compression by magic bytes), sniff its
/// start (byte-order mark, delimiter, encoding), match the header against the contract (and
/// decide the decimal separator), then either reject the file whole (empty, unreadable, required
/// columns missing) or convert its records through the parallel pipeline, and commit.
pub fn transform(
    source: &dyn RawSource,
    req: &TransformRequest,
    opts: &TransformOptions,
    lake_store: &dyn LakeStore,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Manifest, TransformError> {
    let run = Run::new(source, req, opts, lake_store);
    let mut base = run.new_manifest();
    let mut decoded = run.open(&mut base)?;
    let sniffed = match run.sniff(&mut decoded, &mut base) {
        Ok(Some(sniffed)) => sniffed,
        Ok(None) => {
            let detail = "the file has no header and no records".to_string();
            return run.reject(&mut base, FileReason::EmptyFile, detail, 0);
        }
        Err(e) => return run.fail_read(e, &mut base, 0),
    };
    let contract = req.dataset.contract();
    let matched = match_header(contract, &sniffed, &mut base);
    let Sniffed {
        sample,
        delimiter,
        encoding,
    } = sniffed;
    let input = Cursor::new(sample).chain(decoded);
    if !matched.missing.is_empty() {
        return run.reject_missing_columns(input, delimiter, &matched, &mut base);
    }
    let ctx = FileContext {
        contract,
        n_fields: matched.header.len(),
        col_field: matched.col_field,
        delimiter,
        decimal: matched.decimal,
        salt: opts.pii_salt.clone(),
        source_key: req.source.key.clone(),
        load_date_days: crate::parse::days_since_epoch(req.load_date),
        enum_folded: FileContext::enums(contract),
        key_col: contract.key_index(),
        schema: contract.arrow_schema(),
        product: FileContext::product_inputs(contract),
        interval: FileContext::interval_bounds(contract),
    };
    run.convert(input, &ctx, DecidedEncoding { encoding }, progress, base)
}

/// One run of [`transform`]: what every stage, and every way out of it, needs.
struct Run<'a> {
    source: &'a dyn RawSource,
    req: &'a TransformRequest,
    opts: &'a TransformOptions,
    lake_store: &'a dyn LakeStore,
    names: Names,
    started: Instant,
    started_at: String,
    /// Stored bytes read so far.
    raw_bytes: Arc<AtomicU64>,
    /// Whether a read error came from the source itself (retryable) rather than its content.
    source_failed: Arc<AtomicBool>,
    /// The stored bytes' hash, once they have been read to their end.
    digest: Arc<std::sync::Mutex<Option<u128>>>,
}

/// The start of a file, read once to decide how to read all of it.
struct Sniffed {
    sample: Vec<u8>,
    delimiter: u8,
    /// `None` while the sample is ASCII: the first chunk that is not decides.
    encoding: Option<Encoding>,
}

/// The file's header matched against its contract.
struct HeaderMatch {
    header: Vec<String>,
    /// For each contract column, the header field that holds it.
    col_field: Vec<Option<usize>>,
    /// Required columns the header lacks.
    missing: Vec<&'static str>,
    decimal: DecimalSep,
}

impl<'a> Run<'a> {
    fn new(
        source: &'a dyn RawSource,
        req: &'a TransformRequest,
        opts: &'a TransformOptions,
        lake_store: &'a dyn LakeStore,
    ) -> Run<'a> {
        Run {
            source,
            req,
            opts,
            lake_store,
            names: Names::new(req, &req.source),
            started: Instant::now(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            raw_bytes: Arc::new(AtomicU64::new(0)),
            source_failed: Arc::new(AtomicBool::new(false)),
            digest: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The manifest as far as the request tells it.
    fn new_manifest(&self) -> Manifest {
        let req = self.req;
        Manifest {
            schema_version: SCHEMA_VERSION,
            dataset: req.dataset,
            load_date: req.load_date,
            source: SourceInfo {
                key: req.source.key.clone(),
                size: req.source.size,
                version: req.source.version.known().to_string(),
                checksum: String::new(),
                stored_checksum: None,
                compression: None,
                encoding: None,
                delimiter: None,
                decimal_separator: None,
                bom: false,
            },
            status: Status::Ok,
            file_reason: None,
            file_detail: None,
            rows_in: 0,
            rows_ok: 0,
            rows_rejected: 0,
            rejects_by_reason: BTreeMap::new(),
            ignored_columns: Vec::new(),
            missing_optional_columns: Vec::new(),
            outputs: Outputs {
                manifest: self.names.manifest.clone(),
                ..Outputs::default()
            },
            started_at: self.started_at.clone(),
            duration_ms: 0,
            stages: StageTimes::default(),
            threads: self.opts.threads.max(1),
        }
    }

    /// The source's content, counted and hashed as stored, gunzipped when its magic bytes say so.
    fn open(&self, base: &mut Manifest) -> Result<Box<dyn Read + Send>, TransformError> {
        let raw = self.source.open().map_err(TransformError::Source)?;
        let mut counted = HashTap {
            inner: Counted {
                inner: raw,
                bytes: self.raw_bytes.clone(),
                hash: Xxh3::new(),
                source_failed: self.source_failed.clone(),
            },
            out: self.digest.clone(),
            done: false,
        };
        let mut magic = [0u8; 2];
        let got = chunker::read_full(&mut counted, &mut magic).map_err(TransformError::Source)?;
        let prefix = Cursor::new(magic[..got].to_vec());
        let gz = got == 2 && magic == GZIP_MAGIC;
        base.source.compression = gz.then(|| "gzip".to_string());
        Ok(if gz {
            Box::new(flate2::read::MultiGzDecoder::new(prefix.chain(counted)))
        } else {
            Box::new(prefix.chain(counted))
        })
    }

    /// Reads the first [`SAMPLE`] bytes (more, up to [`MAX_SAMPLE`], until they hold the whole
    /// header) and decides the delimiter and, when the sample shows it, the encoding; `None`
    /// for a file with nothing but white space.
    fn sniff(&self, decoded: &mut impl Read, base: &mut Manifest) -> io::Result<Option<Sniffed>> {
        let mut sample = Vec::new();
        loop {
            let start = sample.len();
            sample.resize(start + SAMPLE, 0);
            let n = chunker::read_full(decoded, &mut sample[start..])?;
            sample.truncate(start + n);
            if n < SAMPLE || sample.len() >= MAX_SAMPLE || holds_header(&sample) {
                break;
            }
        }
        let bom = sample.starts_with(&UTF8_BOM);
        if bom {
            sample.drain(..3);
        }
        if sample.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        let delimiter = dialect::sniff_delimiter(&sample);
        let encoding = if bom {
            Some(Encoding::Utf8)
        } else if !sample.is_ascii() {
            Some(dialect::decide_encoding(&sample))
        } else {
            None
        };
        base.source.bom = bom;
        base.source.delimiter = Some((delimiter as char).to_string());
        if let Some(e) = encoding {
            base.source.encoding = Some(e.label().to_string());
        }
        Ok(Some(Sniffed {
            sample,
            delimiter,
            encoding,
        }))
    }

    /// A read error: the source's own (retryable) fails the run; undecodable content rejects
    /// the file.
    fn fail_read(
        &self,
        e: io::Error,
        base: &mut Manifest,
        rows: u64,
    ) -> Result<Manifest, TransformError> {
        if self.source_failed.load(Ordering::Relaxed) {
            return Err(TransformError::Source(e));
        }
        let detail = format!("the content could not be read after {rows} records: {e}");
        self.reject(base, FileReason::Unreadable, detail, rows)
    }

    /// Rejects a file whose header lacks required columns, after counting its records so the
    /// manifest still accounts for every one of them.
    fn reject_missing_columns(
        &self,
        input: impl Read + Send,
        delimiter: u8,
        matched: &HeaderMatch,
        base: &mut Manifest,
    ) -> Result<Manifest, TransformError> {
        let mut chunks = Chunker::new(input, delimiter, self.opts.chunk_size, 1)
            .with_max_record(self.opts.max_record);
        let mut rows = 0u64;
        let mut first = true;
        loop {
            match chunks.next_chunk() {
                Ok(Some(c)) => c.for_each_record(delimiter, |_| {
                    if first {
                        first = false;
                    } else {
                        rows += 1;
                    }
                    true
                }),
                Ok(None) => break,
                Err(e) => return self.fail_read(e, base, rows),
            }
        }
        let header = matched.header.join(&(delimiter as char).to_string());
        let detail = format!(
            "required columns missing: {} (header: {})",
            matched.missing.join(", "),
            clip(&header, MAX_HEADER_IN_DETAIL)
        );
        self.reject(base, FileReason::MissingColumns, detail, rows)
    }

    /// Converts every record through the pipeline, then commits the outputs and the manifest.
    fn convert(
        &self,
        input: impl Read + Send,
        ctx: &FileContext,
        mut dialect: DecidedEncoding,
        progress: Option<&(dyn Fn(u64) + Sync)>,
        mut base: Manifest,
    ) -> Result<Manifest, TransformError> {
        let (req, opts) = (self.req, self.opts);
        let mut writer = OutputWriter::new(self.lake_store, ctx, &self.names, opts, req.dataset);
        let run = run_pipeline(
            input,
            ctx,
            opts,
            &mut dialect,
            &mut writer,
            &self.raw_bytes,
            progress,
        );
        let reading = match run {
            Ok(reading) => reading,
            Err(PipelineError::Read(e, rows)) => {
                writer.abort();
                return self.fail_read(e, &mut base, rows);
            }
            Err(PipelineError::Deadline(rows)) => {
                writer.abort();
                return Err(TransformError::DeadlineExceeded { rows });
            }
            Err(PipelineError::Transform(e)) => {
                writer.abort();
                return Err(e);
            }
        };
        let encoding = dialect.encoding.unwrap_or(Encoding::Utf8);
        base.source.encoding = Some(encoding.label().to_string());
        if writer.rows_in() == 0 {
            writer.abort();
            let detail = "the file has a header but no records".to_string();
            return self.reject(&mut base, FileReason::EmptyFile, detail, 0);
        }
        let result = writer.finish()?;
        base.rows_in = result.rows_in;
        base.rows_ok = result.rows_ok;
        base.rows_rejected = result.rows_rejected;
        base.rejects_by_reason = result.by_reason;
        base.stages = StageTimes {
            read_ms: StageTimes::ms(reading),
            ..result.stages
        };
        base.outputs.processed = result.processed;
        base.outputs.rejected = result.rejected;
        base.source.size = self.raw_bytes.load(Ordering::Relaxed);
        let digest = match (
            self.digest.lock().ok().and_then(|g| *g),
            &req.source.version,
        ) {
            (Some(d), _) => Some(d),
            // The content was decoded to its end before the stored bytes were read to theirs
            // (bytes after a gzip stream): the name needs their hash, so read them as stored.
            (None, SourceVersion::Content) => Some(hash_source(self.source, |_| Ok(()))?),
            (None, SourceVersion::Known(_)) => None,
        };
        if let Some(d) = digest {
            base.source.checksum = format!("xxh3-128:{d:032x}");
        }
        base.source.stored_checksum = self.source.stored_checksum();
        commit(
            self.lake_store,
            req,
            &self.names,
            base,
            digest,
            self.started,
        )
    }

    /// Rejects the file whole: its stored bytes are copied to `rejected/` and the manifest says
    /// why, accounting `rows` records to the file's reason.
    fn reject(
        &self,
        base: &mut Manifest,
        reason: FileReason,
        detail: String,
        rows: u64,
    ) -> Result<Manifest, TransformError> {
        let key = format!(
            "{}{}",
            self.names.rejected,
            lake::original_extension(&self.req.source.key)
        );
        let mut sink = self.lake_store.create(&key)?;
        let digest = hash_source(self.source, |bytes| {
            io::Write::write_all(&mut sink, bytes).map_err(|source| {
                TransformError::Lake(LakeError::Io {
                    key: key.clone(),
                    source,
                })
            })
        })?;
        let written = sink.finish()?;
        let bytes = written.bytes;
        let mut m = base.clone();
        m.status = Status::Rejected;
        m.file_reason = Some(reason.code().to_string());
        m.file_detail = Some(detail);
        m.rows_in = rows;
        m.rows_ok = 0;
        m.rows_rejected = rows;
        m.rejects_by_reason = if rows > 0 {
            BTreeMap::from([(reason.code().to_string(), rows)])
        } else {
            BTreeMap::new()
        };
        m.outputs.processed = Vec::new();
        m.outputs.rejected = Some(OutputObject::written(key.clone(), rows, written));
        m.source.checksum = format!("xxh3-128:{digest:032x}");
        m.source.stored_checksum = self.source.stored_checksum();
        m.source.size = bytes;
        commit(
            self.lake_store,
            self.req,
            &self.names,
            m,
            Some(digest),
            self.started,
        )
    }
}

/// The most of a header a rejection's detail (or of a column name the manifest's ignored
/// columns) quotes: a file that is no CSV (one endless line, NUL bytes) has a "header" up to
/// [`MAX_SAMPLE`] long, which the manifest need not repeat.
const MAX_HEADER_IN_DETAIL: usize = 256;

/// `text`, cut to its first `max` characters with how long it was when longer.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

/// Whether `sample` (the start of a file) holds its header whole: a record, after any blank
/// lines, that ends within it. Matching a header cut short would take its last column for
/// another, or miss it.
fn holds_header(sample: &[u8]) -> bool {
    let sample = sample.strip_prefix(&UTF8_BOM).unwrap_or(sample);
    if sample.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    let mut ends_inside = false;
    for_each_record(sample, dialect::sniff_delimiter(sample), 1, |header| {
        ends_inside = header.start + header.raw.len() < sample.len();
        false
    });
    ends_inside
}

/// Matches the header of the sample against `contract` (ignored and missing columns go to the
/// manifest) and decides the decimal separator from the sample's numeric columns.
fn match_header(contract: &Contract, sniffed: &Sniffed, base: &mut Manifest) -> HeaderMatch {
    let Sniffed {
        sample,
        delimiter,
        encoding,
    } = sniffed;
    let mut header: Vec<String> = Vec::new();
    let mut sample_rows: Vec<Vec<String>> = Vec::new();
    for_each_record(sample, *delimiter, 1, |rec| {
        let fields: Vec<String> = (0..rec.len())
            .map(|i| dialect::lossy_text(rec.field(i), encoding.unwrap_or(Encoding::Utf8)))
            .collect();
        if header.is_empty() {
            header = fields;
        } else {
            sample_rows.push(fields);
        }
        sample_rows.len() < 2000
    });
    let mut col_field: Vec<Option<usize>> = vec![None; contract.columns.len()];
    for (fi, h) in header.iter().enumerate() {
        match contract.match_header(h) {
            Some(ci) if col_field[ci].is_none() => col_field[ci] = Some(fi),
            _ => base
                .ignored_columns
                .push(clip(h.trim(), MAX_HEADER_IN_DETAIL)),
        }
    }
    let missing: Vec<&'static str> = contract
        .columns
        .iter()
        .zip(&col_field)
        .filter(|(c, f)| c.required && f.is_none())
        .map(|(c, _)| c.name)
        .collect();
    base.missing_optional_columns = contract
        .columns
        .iter()
        .zip(&col_field)
        .filter(|(c, f)| !c.required && f.is_none())
        .map(|(c, _)| c.name.to_string())
        .collect();
    let numeric: Vec<usize> = contract
        .columns
        .iter()
        .zip(&col_field)
        .filter(|(c, _)| matches!(c.kind, ColumnKind::Decimal { .. }))
        .filter_map(|(_, f)| *f)
        .collect();
    let decimal = dialect::decide_decimal_sep(
        *delimiter,
        sample_rows
            .iter()
            .flat_map(|r| numeric.iter().filter_map(|&i| r.get(i).map(String::as_str))),
    );
    base.source.decimal_separator = Some((decimal.decimal() as char).to_string());
    HeaderMatch {
        header,
        col_field,
        missing,
        decimal,
    }
}

/// The xxh3-128 of a source's stored bytes, read again from the start; `each` sees every read.
fn hash_source(
    source: &dyn RawSource,
    each: impl FnMut(&[u8]) -> Result<(), TransformError>,
) -> Result<u128, TransformError> {
    let mut raw = source.open().map_err(TransformError::Source)?;
    hash_all(&mut raw, TransformError::Source, each).map(|(digest, _)| digest)
}

/// The xxh3-128 and the length of everything `r` yields; `each` sees every read.
fn hash_all<E>(
    r: &mut dyn Read,
    read_error: impl Fn(io::Error) -> E,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(u128, u64), E> {
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(&read_error)?;
        if n == 0 {
            return Ok((hash.digest128(), len));
        }
        len += n as u64;
        hash.update(&buf[..n]);
        each(&buf[..n])?;
    }
}

/// Runs `f`, adding the time it took to `acc`.
fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    *acc += started.elapsed();
    out
}

/// The key of the manifest the transform of `req` writes (its commit marker): what tells a
/// processed file from one still to process.
pub fn manifest_key(req: &TransformRequest) -> String {
    Names::new(req, &req.source).manifest
}

/// Output name prefixes of one source file.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub processed: String,
    pub rejected: String,
    pub manifest: String,
}

impl Names {
    /// `<zone>/<dataset>/year=…/<stem>-<tag>`; staged (`_<stem>-<tag>`) while the version is
    /// still to be learnt from the content.
    fn new(req: &TransformRequest, source: &SourceIdentity) -> Names {
        let staged = if source.version == SourceVersion::Content {
            "_"
        } else {
            ""
        };
        let base = format!(
            "{staged}{}-{}",
            lake::output_stem(&source.key),
            source.tag()
        );
        let prefix = |zone| lake::partition_prefix(zone, req.dataset, req.load_date);
        Names {
            processed: format!("{}{base}", prefix(Zone::Processed)),
            rejected: format!("{}{base}", prefix(Zone::Rejected)),
            manifest: format!("{}{base}.json", prefix(Zone::Manifests)),
        }
    }

    /// The name `key` (written under `self`) takes under `to`.
    fn moved(&self, key: &str, to: &Names) -> Option<String> {
        [
            (&self.processed, &to.processed),
            (&self.rejected, &to.rejected),
        ]
        .into_iter()
        .find_map(|(from, to)| {
            key.strip_prefix(from.as_str())
                .map(|rest| format!("{to}{rest}"))
        })
    }
}

fn remove_stale(lake_store: &dyn LakeStore, names: &Names, keep: &[&str]) -> Result<(), LakeError> {
    for prefix in [&names.processed, &names.rejected] {
        for key in lake_store.list(prefix)? {
            if !keep.contains(&key.as_str()) {
                lake_store.delete(&key)?;
            }
        }
    }
    Ok(())
}

/// Commits a run: gives outputs written under staged names their final names (the content hash
/// `digest` is known now), removes what an earlier run of the same source left and this one did
/// not write, and writes the manifest last.
fn commit(
    lake_store: &dyn LakeStore,
    req: &TransformRequest,
    names: &Names,
    mut m: Manifest,
    digest: Option<u128>,
    started: Instant,
) -> Result<Manifest, TransformError> {
    let names = if req.source.version == SourceVersion::Content {
        let Some(digest) = digest else {
            return Err(TransformError::Invariant(
                "a source named after its content was not hashed".into(),
            ));
        };
        let version = content_version(digest);
        let known = SourceIdentity {
            version: SourceVersion::Known(version.clone()),
            ..req.source.clone()
        };
        let to = Names::new(req, &known);
        let outputs = &mut m.outputs;
        for o in outputs
            .processed
            .iter_mut()
            .chain(outputs.rejected.as_mut())
        {
            let Some(key) = names.moved(&o.key, &to) else {
                return Err(TransformError::Invariant(format!(
                    "output {} is not under the staged names",
                    o.key
                )));
            };
            lake_store.rename(&o.key, &key)?;
            o.key = key;
        }
        outputs.manifest = to.manifest.clone();
        m.source.version = version;
        // Staged objects an interrupted run left behind.
        remove_stale(lake_store, names, &[])?;
        to
    } else {
        names.clone()
    };
    let keep: Vec<&str> = m
        .outputs
        .processed
        .iter()
        .map(|o| o.key.as_str())
        .chain(m.outputs.rejected.iter().map(|o| o.key.as_str()))
        .collect();
    remove_stale(lake_store, &names, &keep)?;
    write_manifest(lake_store, m, started)
}

fn write_manifest(
    lake_store: &dyn LakeStore,
    mut m: Manifest,
    started: Instant,
) -> Result<Manifest, TransformError> {
    m.duration_ms = started.elapsed().as_millis() as u64;
    if !m.balanced() {
        return Err(TransformError::Invariant(format!(
            "rows_in {} != rows_ok {} + rows_rejected {} (or outputs disagree)",
            m.rows_in, m.rows_ok, m.rows_rejected
        )));
    }
    let body = serde_json::to_vec_pretty(&m)?;
    lake_store.put(&m.outputs.manifest, &body)?;
    Ok(m)
}

enum PipelineError {
    /// The input could not be read (source failure or undecodable content), after `rows` records.
    Read(io::Error, u64),
    Deadline(u64),
    Transform(TransformError),
}

impl From<TransformError> for PipelineError {
    fn from(e: TransformError) -> Self {
        PipelineError::Transform(e)
    }
}

/// Decides the encoding at the first chunk that needs it; returns the chunk's encoding.
fn chunk_encoding(dialect: &mut DecidedEncoding, chunk: &Chunk) -> Encoding {
    if let Some(e) = dialect.encoding {
        return e;
    }
    if chunk.bytes.is_ascii() {
        // Undecided, and nothing here needs deciding: ASCII reads the same either way.
        return Encoding::Utf8;
    }
    let e = dialect::decide_encoding(&chunk.bytes);
    dialect.encoding = Some(e);
    e
}

/// Chunks waiting for a worker, and results waiting for the writer.
const QUEUE_DEPTH: usize = 2;

/// Which chunk's first record is the header, decided chunk by chunk in input order.
#[derive(Default)]
struct HeaderSkip {
    seen: bool,
}

impl HeaderSkip {
    /// Whether `chunk` starts with the header: it is the first chunk to hold a record.
    fn skips(&mut self, chunk: &Chunk) -> bool {
        let skip = !self.seen && chunk.holds_record();
        self.seen |= skip;
        skip
    }
}

fn run_pipeline<R: Read + Send>(
    input: R,
    ctx: &FileContext,
    opts: &TransformOptions,
    dialect: &mut DecidedEncoding,
    writer: &mut OutputWriter<'_>,
    raw_bytes: &AtomicU64,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Duration, PipelineError> {
    let threads = opts.threads.max(1);
    // As many buffers as chunks can be on their way (queued, parsed, waiting for the writer).
    let buffers = Buffers::new(threads + 2 * QUEUE_DEPTH + 2, opts.chunk_size);
    writer.recycle_into(buffers.clone());
    let mut chunks = Chunker::new(input, ctx.delimiter, opts.chunk_size, 1)
        .with_max_record(opts.max_record)
        .with_buffers(buffers);
    // Time spent waiting on the source and cutting it into chunks.
    let mut reading = Duration::ZERO;
    let check = |rows: u64| -> Result<(), PipelineError> {
        if let Some(p) = progress {
            p(raw_bytes.load(Ordering::Relaxed));
        }
        match opts.deadline {
            Some(d) if Instant::now() >= d => Err(PipelineError::Deadline(rows)),
            _ => Ok(()),
        }
    };
    // The header is the file's first record, in the first chunk that holds one: chunks of
    // nothing but blank lines may come before it.
    let mut header = HeaderSkip::default();
    if threads == 1 {
        loop {
            check(writer.rows_in())?;
            let chunk = match timed(&mut reading, || chunks.next_chunk()) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(reading),
                Err(e) => return Err(PipelineError::Read(e, writer.rows_in())),
            };
            let enc = chunk_encoding(dialect, &chunk);
            let skip = header.skips(&chunk);
            writer.accept(process_chunk(ctx, chunk, enc, skip))?;
        }
    }

    // Short queues, whatever the thread count: the reader outpaces the workers and the writer
    // is the slowest stage, so deeper queues only hold more chunks in memory (each queued
    // result is a chunk and its Arrow batch, a few MiB).
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(Chunk, Encoding, bool)>(QUEUE_DEPTH);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<ChunkResult>(QUEUE_DEPTH);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for (chunk, enc, skip) in work_rx {
                    if done_tx.send(process_chunk(ctx, chunk, enc, skip)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        drop(work_rx);
        let writer_thread = s.spawn(move || -> Result<(), TransformError> {
            let mut failed = None;
            for r in done_rx {
                if failed.is_none() {
                    if let Err(e) = writer.accept(r) {
                        failed = Some(e);
                    }
                }
                // After a failure keep draining so producers never block.
            }
            failed.map_or(Ok(()), Err)
        });
        let mut rows_estimate = 0u64;
        let read_result = loop {
            if let Err(e) = check(rows_estimate) {
                break Err(e);
            }
            match timed(&mut reading, || chunks.next_chunk()) {
                Ok(Some(c)) => {
                    rows_estimate += c.lines;
                    let enc = chunk_encoding(dialect, &c);
                    let skip = header.skips(&c);
                    if work_tx.send((c, enc, skip)).is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(PipelineError::Read(e, rows_estimate)),
            }
        };
        drop(work_tx);
        let write_result = writer_thread.join().unwrap_or_else(|_| {
            Err(TransformError::Invariant(
                "the writer thread panicked".into(),
            ))
        });
        read_result?;
        write_result.map_err(PipelineError::Transform)?;
        Ok(reading)
    })
}
