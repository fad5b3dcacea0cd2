//! The invariants the fuzz targets of `fuzz/` check, as plain functions of the input bytes, so
//! that the ordinary tests replay the committed corpus (`fuzz/corpus/<target>/`) with exactly the
//! same checks ([`replay_corpus`]).
//!
//! Each function returns quietly when every invariant holds and panics, naming the invariant,
//! when one breaks; an input a target cannot use (too short for its control byte) is no failure.
//! A panic is the point here: it is what the fuzzer records as a crash.
//!
//! Input formats:
//! - [`transform_csv`]: a control byte, then the file. Control bits 0–1 pick the dataset
//!   ([`Dataset::ALL`]), bit 2 gzips the file, bits 3–5 repeat it 2ⁿ times (at most
//!   [`MAX_TRANSFORM_INPUT`] bytes), so a small input still makes the transform cut several
//!   chunks and run its parallel pipeline.
//! - [`chunker`]: a control byte, then the bytes. Bits 0–1 pick the delimiter, bit 2 puts filler
//!   records before the bytes so that the chunker's first read ends inside them, bits 3–4 repeat
//!   them, bit 5 caps a record at 1 KiB, bits 6–7 pick how many bytes each read returns.
//! - [`trade_decoder`]: the bytes of one record, as [`Trade::parse`] receives them.
//! - [`kinesis_event`]: a Kinesis event as JSON; other bytes are a control byte and a KPL
//!   aggregate's content (see there).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::contract::Dataset;
use crate::dialect::{self, GZIP_MAGIC, UTF8_BOM};
use crate::ingest::memory::{MemoryLake, MemorySource};
use crate::integrity::Written;
use crate::trades::kinesis::{Expanded, KinesisTradeEvent};
use crate::trades::kpl;
use crate::trades::trade::{Interner, MAX_ID_CHARS, RATE_DECIMALS, USD_DECIMALS};
use crate::trades::{InvalidReason, Record, RecordData, Trade};
use crate::transform::{
    for_each_record, transform, Buffers, Chunk, Chunker, Manifest, RawRecord, SourceIdentity,
    SourceVersion, Status, TransformOptions, TransformRequest, MIN_READ, SAMPLE,
};

/// The largest file [`transform_csv`] builds from its input (by repetition or decompression).
pub const MAX_TRANSFORM_INPUT: usize = 256 << 10;

/// Runs `check` on every file of the corpus directory `dir`, and fails naming every input that
/// broke an invariant. A directory that holds no input fails too: a corpus that went missing
/// must not pass as one that was replayed.
pub fn replay_corpus(dir: &Path, check: fn(&[u8])) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => panic!("the corpus {} cannot be read: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if entry.path().is_file() => files.push(entry.path()),
            Ok(_) => {}
            Err(e) => panic!("the corpus {} cannot be listed: {e}", dir.display()),
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus {} holds no input",
        dir.display()
    );
    let mut broken = Vec::new();
    for path in &files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => panic!("the corpus input {} cannot be read: {e}", path.display()),
        };
        if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
            broken.push(path.display().to_string());
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {} inputs of {} broke an invariant (see the panics above): {}",
        broken.len(),
        files.len(),
        dir.display(),
        broken.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// transform_csv

/// The transform of a file, on one thread and on two, against the lake in memory:
///
/// - it never panics, and never fails: a bad file is rejected with a manifest. With the source
///   and the lake in memory and no deadline, none of the transform's errors can happen (the
///   source and the lake do not fail, the key set stays in memory, Parquet and the manifest
///   serialize whatever was validated), so any error is a bug;
/// - the manifest is balanced, is the one stored in the lake, and lists every object the run
///   left in the lake, with its size and checksum; the lake holds nothing else;
/// - Parquet parts hold the rows the manifest gives them (read back by the parquet crate's own
///   reader), the rejected NDJSON one line per rejected row, and a file rejected whole is kept
///   byte for byte;
/// - every record of the file (as [`for_each_record`] splits the whole decoded file, not chunk
///   by chunk) is accounted for: the header, then one row in `rows_in` per record, or the whole
///   file rejected for a reason the content gives (`empty_file`, `missing_columns`,
///   `unreadable` only for a gzip stream that does not decode);
/// - one thread and two write the same outputs, byte for byte.
pub fn transform_csv(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let dataset = Dataset::ALL[usize::from(control & 3)];
    let copies =
        (1usize << ((control >> 3) & 7)).min((MAX_TRANSFORM_INPUT / body.len().max(1)).max(1));
    let content = body.repeat(copies);
    let stored = if control & 4 != 0 {
        gzip(&content)
    } else {
        content
    };
    let Some(expected) = CsvExpectation::of(&stored) else {
        // A gzip stream that inflates beyond the bound: too slow to be worth a run.
        return;
    };
    let one = run_transform(dataset, &stored, 1);
    let two = run_transform(dataset, &stored, 2);
    for (threads, (lake, m)) in [(1, &one), (2, &two)] {
        let run = CsvRun {
            threads,
            lake,
            m,
            stored: &stored,
        };
        run.check_outputs();
        run.check_accounting(&expected);
    }
    same_outputs(&one, &two);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    match gz.write_all(bytes).and_then(|()| gz.finish()) {
        Ok(out) => out,
        Err(e) => panic!("transform_csv: gzip in memory failed: {e}"),
    }
}

fn run_transform(dataset: Dataset, stored: &[u8], threads: usize) -> (MemoryLake, Manifest) {
    let lake = MemoryLake::default();
    let req = TransformRequest {
        dataset,
        load_date: NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default(),
        source: SourceIdentity {
            key: format!("raw/{}/year=2025/month=05/day=10/fuzz.csv", dataset.name()),
            size: stored.len() as u64,
            version: SourceVersion::Known("fuzz".into()),
        },
    };
    // The smallest sizes the transform accepts: chunks, parts and row groups as small as they
    // go, so the pipeline's ordering and part rolling run on small inputs.
    let opts = TransformOptions {
        threads,
        part_size: 1,
        row_group_bytes: 1,
        chunk_size: 1,
        pii_salt: b"fuzz".to_vec(),
        deadline: None,
        ..TransformOptions::default()
    };
    let source = MemorySource(Arc::new(stored.to_vec()));
    match transform(&source, &req, &opts, &lake, None) {
        Ok(m) => (lake, m),
        Err(e) => panic!("transform_csv: the transform failed on {threads} thread(s): {e}"),
    }
}

/// What the content of a stored file makes of it, worked out without the transform.
enum CsvExpectation {
    /// A gzip stream that does not decode.
    Unreadable,
    /// Nothing but white space (after a byte-order mark).
    Empty,
    /// Records: the header and `data_rows` more, split on `delimiter`.
    Records { delimiter: u8, data_rows: u64 },
}

impl CsvExpectation {
    /// `None` when the file inflates beyond [`MAX_TRANSFORM_INPUT`].
    fn of(stored: &[u8]) -> Option<CsvExpectation> {
        let decoded = if stored.starts_with(&GZIP_MAGIC) {
            let mut out = Vec::new();
            let limit = MAX_TRANSFORM_INPUT as u64 + 1;
            let mut gz = flate2::read::MultiGzDecoder::new(stored).take(limit);
            if gz.read_to_end(&mut out).is_err() {
                return Some(CsvExpectation::Unreadable);
            }
            if out.len() > MAX_TRANSFORM_INPUT {
                return None;
            }
            out
        } else {
            stored.to_vec()
        };
        let sample = &decoded[..decoded.len().min(SAMPLE)];
        let sample = sample.strip_prefix(&UTF8_BOM).unwrap_or(sample);
        let content = decoded.strip_prefix(&UTF8_BOM).unwrap_or(&decoded);
        if content.iter().all(u8::is_ascii_whitespace) {
            return Some(CsvExpectation::Empty);
        }
        let delimiter = dialect::sniff_delimiter(sample);
        let mut records = 0u64;
        for_each_record(content, delimiter, 1, |_| {
            records += 1;
            true
        });
        Some(CsvExpectation::Records {
            delimiter,
            data_rows: records.saturating_sub(1),
        })
    }
}

/// One run of the transform and what it left.
struct CsvRun<'a> {
    threads: usize,
    lake: &'a MemoryLake,
    m: &'a Manifest,
    stored: &'a [u8],
}

impl CsvRun<'_> {
    fn object(&self, key: &str) -> Vec<u8> {
        match self.lake.get(key) {
            Some(body) => body,
            None => panic!(
                "transform_csv ({} thread(s)): the manifest lists {key}, which is not in the lake",
                self.threads
            ),
        }
    }

    /// The manifest against the objects in the lake.
    fn check_outputs(&self) {
        let (m, threads) = (self.m, self.threads);
        assert!(
            m.balanced(),
            "transform_csv ({threads} thread(s)): the manifest is not balanced: {m:?}"
        );
        assert_eq!(
            m.rows_in,
            m.rows_ok + m.rows_rejected,
            "transform_csv ({threads} thread(s)): rows_in != rows_ok + rows_rejected"
        );
        let stored: Manifest = match serde_json::from_slice(&self.object(&m.outputs.manifest)) {
            Ok(stored) => stored,
            Err(e) => panic!("transform_csv ({threads} thread(s)): the stored manifest: {e}"),
        };
        assert_eq!(
            &stored, m,
            "transform_csv ({threads} thread(s)): the stored manifest is not the one returned"
        );
        let mut listed = vec![m.outputs.manifest.clone()];
        for o in m.outputs.processed.iter().chain(&m.outputs.rejected) {
            let body = self.object(&o.key);
            let written = Written::of(&body);
            assert_eq!(
                o.bytes, written.bytes,
                "transform_csv ({threads} thread(s)): {} has another size than listed",
                o.key
            );
            assert!(
                o.checksum.as_ref().is_none_or(|c| *c == written.checksum),
                "transform_csv ({threads} thread(s)): {} has another checksum than listed",
                o.key
            );
            listed.push(o.key.clone());
        }
        listed.sort();
        assert_eq!(
            self.lake.keys(),
            listed,
            "transform_csv ({threads} thread(s)): the lake holds objects the manifest does not list"
        );
        for part in &m.outputs.processed {
            assert_eq!(
                parquet_rows(&self.object(&part.key)),
                part.rows,
                "transform_csv ({threads} thread(s)): {} holds another number of rows than listed",
                part.key
            );
        }
        let Some(rejected) = &m.outputs.rejected else {
            return;
        };
        let body = self.object(&rejected.key);
        match m.status {
            Status::Rejected => {
                assert!(
                    m.outputs.processed.is_empty(),
                    "transform_csv ({threads} thread(s)): a rejected file has processed parts"
                );
                assert!(
                    body == self.stored,
                    "transform_csv ({threads} thread(s)): a file rejected whole is not kept as is"
                );
            }
            Status::Ok => {
                let mut lines = 0u64;
                for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let parsed: Result<Value, _> = serde_json::from_slice(line);
                    assert!(
                        parsed.is_ok_and(|v| v["line"].is_u64() && v["reason"].is_string()),
                        "transform_csv ({threads} thread(s)): rejected line without line or reason"
                    );
                    lines += 1;
                }
                assert_eq!(
                    lines, rejected.rows,
                    "transform_csv ({threads} thread(s)): rejected NDJSON lines != rejected rows"
                );
            }
        }
    }

    /// The manifest against the records of the file.
    fn check_accounting(&self, expected: &CsvExpectation) {
        let (m, threads) = (self.m, self.threads);
        let reason = m.file_reason.as_deref();
        match (expected, &m.status, reason) {
            (CsvExpectation::Unreadable, Status::Rejected, Some("unreadable")) => {}
            (CsvExpectation::Empty, Status::Rejected, Some("empty_file")) => assert_eq!(
                m.rows_in, 0,
                "transform_csv ({threads} thread(s)): an empty file with rows"
            ),
            (
                CsvExpectation::Records {
                    delimiter,
                    data_rows,
                },
                status,
                reason,
            ) => {
                assert_eq!(
                    m.source.delimiter.as_deref(),
                    Some((*delimiter as char).to_string().as_str()),
                    "transform_csv ({threads} thread(s)): another delimiter than the sample's"
                );
                match (status, reason) {
                    (Status::Ok, None) => assert!(
                        *data_rows > 0,
                        "transform_csv ({threads} thread(s)): a file without records accepted"
                    ),
                    (Status::Rejected, Some("missing_columns")) => {}
                    (Status::Rejected, Some("empty_file")) => assert_eq!(
                        *data_rows, 0,
                        "transform_csv ({threads} thread(s)): {data_rows} records rejected as empty"
                    ),
                    (status, reason) => panic!(
                        "transform_csv ({threads} thread(s)): readable, yet {status:?} ({reason:?})"
                    ),
                }
                assert_eq!(
                    m.rows_in, *data_rows,
                    "transform_csv ({threads} thread(s)): rows_in != records after the header"
                );
            }
            (_, status, reason) => panic!(
                "transform_csv ({threads} thread(s)): {status:?} ({reason:?}) for this content"
            ),
        }
    }
}

/// The rows of a Parquet file, as its footer gives them.
fn parquet_rows(body: &[u8]) -> u64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    match SerializedFileReader::new(bytes::Bytes::copy_from_slice(body)) {
        Ok(reader) => u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0),
        Err(e) => panic!("transform_csv: a Parquet part does not read back: {e}"),
    }
}

/// The runs on one thread and on two agree on everything but timings.
fn same_outputs((lake1, m1): &(MemoryLake, Manifest), (lake2, m2): &(MemoryLake, Manifest)) {
    let what = |m: &Manifest| {
        (
            m.status.clone(),
            m.file_reason.clone(),
            (m.rows_in, m.rows_ok, m.rows_rejected),
            m.rejects_by_reason.clone(),
            (
                m.ignored_columns.clone(),
                m.missing_optional_columns.clone(),
            ),
            m.source.clone(),
            m.outputs.clone(),
        )
    };
    assert_eq!(
        what(m1),
        what(m2),
        "transform_csv: one thread and two disagree"
    );
    for o in m1.outputs.processed.iter().chain(&m1.outputs.rejected) {
        assert!(
            lake1.get(&o.key) == lake2.get(&o.key),
            "transform_csv: one thread and two wrote {} differently",
            o.key
        );
    }
}

// ---------------------------------------------------------------------------------------------
// chunker

/// The chunker's guarantees (`transform/chunker.rs`): the chunks, in order, are exactly the
/// input; numbered from 0, each holds whole records and says on which line it starts and how
/// many line feeds it holds; each ends at the end of the input or where a record ends by the
/// module's rules: a line feed outside quotes, where quotes open only at the start of a field
/// (after a delimiter, a line feed, a carriage return, or a byte-order mark starting the input)
/// and `""` inside them is a quote. The records read chunk by chunk
/// ([`Chunk::for_each_record`]) are the ones [`for_each_record`] reads in the whole input, and
/// buffers handed back change nothing. With a cap on records, an error comes only when no record
/// ends within the cap.
pub fn chunker(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let delimiter = [b',', b';', b'\t', b'|'][usize::from(control & 3)];
    let mut input = Vec::new();
    if control & 4 != 0 {
        // Filler records so that the first read (at least MIN_READ bytes) ends a quarter of
        // the way into the fuzzed bytes, where the first cut is looked for. Long records: few
        // to read.
        let filler = MIN_READ.saturating_sub(body.len() / 4);
        let mut record = [b'f'; 64];
        record[63] = b'\n';
        input.extend(record.repeat(filler / 64));
        if !filler.is_multiple_of(64) {
            input.extend_from_slice(&record[64 - filler % 64..]);
        }
    }
    for _ in 0..1 + ((control >> 3) & 3) {
        input.extend_from_slice(body);
    }
    let max_record = (control & 0x20 != 0).then_some(1024);
    let piece = [usize::MAX, 13, 1000, 4097][usize::from(control >> 6)];
    let ends = record_ends(&input, delimiter);

    let fresh = chunk_all(&input, delimiter, max_record, piece, None);
    let buffers = Buffers::new(3, 4096);
    let reused = chunk_all(&input, delimiter, max_record, piece, Some(&buffers));
    assert!(
        fresh == reused,
        "chunker: reused buffers yield other chunks than fresh ones"
    );
    let (chunks, error) = fresh;
    let mut at = 0usize;
    let mut line = 1u64;
    for (k, (seq, bytes, first_line, lines)) in chunks.iter().enumerate() {
        assert_eq!(*seq, k as u64, "chunker: chunk {k} is numbered {seq}");
        assert!(!bytes.is_empty(), "chunker: chunk {k} is empty");
        assert!(
            input.get(at..at + bytes.len()) == Some(bytes.as_slice()),
            "chunker: chunk {k} is not the input's next {} bytes",
            bytes.len()
        );
        assert_eq!(
            *first_line, line,
            "chunker: chunk {k} starts on another line"
        );
        let feeds = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(*lines, feeds, "chunker: chunk {k} miscounts its line feeds");
        at += bytes.len();
        line += feeds;
        assert!(
            at == input.len() || ends.binary_search(&at).is_ok(),
            "chunker: chunk {k} ends at byte {at}, inside a record"
        );
    }
    match error {
        None => {
            assert_eq!(
                at,
                input.len(),
                "chunker: the chunks stop short of the input's end"
            );
            let mut whole = Vec::new();
            for_each_record(&input, delimiter, 1, |r| {
                whole.push(record_seen(&r));
                true
            });
            let mut by_chunk = Vec::new();
            for (seq, bytes, first_line, lines) in chunks {
                let chunk = Chunk {
                    seq,
                    bytes,
                    first_line,
                    lines,
                };
                chunk.for_each_record(delimiter, |r| {
                    by_chunk.push(record_seen(&r));
                    true
                });
            }
            assert!(
                whole == by_chunk,
                "chunker: the records read chunk by chunk are not those of the whole input"
            );
        }
        Some(kind) => {
            let Some(cap) = max_record else {
                panic!("chunker: failed ({kind:?}) without a cap on records");
            };
            assert_eq!(
                kind,
                io::ErrorKind::InvalidData,
                "chunker: failed with {kind:?}"
            );
            let window = at..(at + cap + CHUNK_TARGET + 1).min(input.len());
            assert!(
                !ends.iter().any(|e| window.contains(e) && *e > at),
                "chunker: failed though a record ends within {cap} bytes of byte {at}"
            );
        }
    }
}

/// The chunker's smallest chunk target, which every chunk size below it becomes.
const CHUNK_TARGET: usize = 4096;

/// A chunk as compared: (seq, bytes, first line, line feeds).
type ChunkSeen = (u64, Vec<u8>, u64, u64);

/// Every chunk of `input`, and the kind of error that ended them early, if one did.
fn chunk_all(
    input: &[u8],
    delimiter: u8,
    max_record: Option<usize>,
    piece: usize,
    buffers: Option<&Buffers>,
) -> (Vec<ChunkSeen>, Option<io::ErrorKind>) {
    let reader = Pieces { rest: input, piece };
    let mut c = Chunker::new(reader, delimiter, 1, 1);
    if let Some(max) = max_record {
        c = c.with_max_record(max);
    }
    if let Some(buffers) = buffers {
        c = c.with_buffers(buffers.clone());
    }
    let mut out = Vec::new();
    loop {
        match c.next_chunk() {
            Ok(Some(Chunk {
                seq,
                bytes,
                first_line,
                lines,
            })) => {
                out.push((seq, bytes.clone(), first_line, lines));
                if let Some(buffers) = buffers {
                    // What a buffer held must never be read again: poison it with line feeds.
                    let mut old = bytes;
                    old.fill(b'\n');
                    buffers.give(old);
                }
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

/// A reader that returns at most `piece` bytes a call.
struct Pieces<'a> {
    rest: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// Where records end by the chunker's rules, byte by byte: the offsets just after each line
/// feed outside quotes, ascending (a carriage return ends a record too, but is no place to cut;
/// a byte-order mark starting the input is skipped).
fn record_ends(input: &[u8], delimiter: u8) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut ends = Vec::new();
    let mut at = At::FieldStart;
    let skip = if input.starts_with(&UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    for (i, &c) in input.iter().enumerate().skip(skip) {
        at = match at {
            At::FieldStart if c == b'"' => At::Quoted,
            At::Quoted if c == b'"' => At::QuoteInQuoted,
            At::Quoted => At::Quoted,
            At::QuoteInQuoted if c == b'"' => At::Quoted,
            _ if c == b'\n' => {
                ends.push(i + 1);
                At::FieldStart
            }
            _ if c == delimiter || c == b'\r' => At::FieldStart,
            _ => At::Unquoted,
        };
    }
    ends
}

/// A record as compared: (line, raw bytes, fields).
type RecordSeen = (u64, Vec<u8>, Vec<Vec<u8>>);

fn record_seen(r: &RawRecord<'_>) -> RecordSeen {
    let fields = (0..r.len()).map(|i| r.field(i).to_vec()).collect();
    (r.line, r.raw.to_vec(), fields)
}

// ---------------------------------------------------------------------------------------------
// trade_decoder

/// [`Trade::parse`] on one record's bytes (`trades/trade.rs`):
///
/// - it never panics, and gives the same result with a batch's string interner;
/// - bytes that are not UTF-8 are `invalid_encoding`; UTF-8 that is not a JSON object is
///   `invalid_json`;
/// - an accepted trade holds what its JSON says (read again by serde_json alone): the ids,
///   non-empty and at most 64 characters; the side; amounts > 0 at exactly 2 (`usd_amount`) and
///   4 (`rate`) decimal places, equal to the JSON's decimal strings; `executed_at` as chrono
///   reads the RFC 3339 string; a non-empty channel or none;
/// - its JSON line spells the amounts as decimal strings and parses back to the same trade.
pub fn trade_decoder(data: &[u8]) {
    let parsed = Trade::parse(data);
    let interned = Trade::parse_interned(data, &mut Interner::with_capacity(4));
    assert!(
        parsed == interned,
        "trade_decoder: the interned parse differs: {parsed:?} vs {interned:?}"
    );
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(
            matches!(&parsed, Err(e) if e.reason == InvalidReason::InvalidEncoding),
            "trade_decoder: bytes that are not UTF-8 gave {parsed:?}"
        );
        return;
    };
    // The object's fields as JSON text: numbers are never read through f64, which would refuse
    // a valid JSON number out of its range.
    let json: Option<HashMap<String, &RawValue>> = serde_json::from_str(text).ok();
    let trade = match parsed {
        Ok(trade) => trade,
        Err(e) => {
            assert!(
                json.is_some() || e.reason == InvalidReason::InvalidJson,
                "trade_decoder: UTF-8 that is not a JSON object gave {}",
                e.code()
            );
            assert!(!e.code().is_empty(), "trade_decoder: an empty reason code");
            return;
        }
    };
    let Some(json) = json else {
        panic!("trade_decoder: accepted {text:?}, which serde_json does not read as an object");
    };
    check_trade(&trade, &json);
    let line = trade.to_json();
    let usd = format!("\"usd_amount\":\"{}\"", trade.usd_amount);
    let rate = format!("\"rate\":\"{}\"", trade.rate);
    assert!(
        line.contains(&usd) && line.contains(&rate),
        "trade_decoder: the JSON line does not spell the amounts as decimal strings: {line}"
    );
    match Trade::parse(line.as_bytes()) {
        Ok(again) => assert_eq!(
            again, trade,
            "trade_decoder: the JSON line reads back otherwise"
        ),
        Err(e) => panic!("trade_decoder: the JSON line {line} does not read back: {e}"),
    }
}

/// An accepted trade against its JSON object, field by field.
fn check_trade(t: &Trade, json: &HashMap<String, &RawValue>) {
    let raw = |field: &str| json.get(field).map(|v| v.get());
    let text = |field: &str| raw(field).and_then(|v| serde_json::from_str::<String>(v).ok());
    for (field, id) in [("trade_id", &t.trade_id), ("user_id", &t.user_id)] {
        assert_eq!(
            text(field).as_deref(),
            Some(&**id),
            "trade_decoder: {field} is not the JSON's"
        );
        assert!(
            !id.trim().is_empty() && id.chars().count() <= MAX_ID_CHARS,
            "trade_decoder: {field} {id:?} is empty or too long"
        );
    }
    assert_eq!(
        text("side").map(|s| s.to_ascii_uppercase()).as_deref(),
        Some(t.side.as_str()),
        "trade_decoder: the side is not the JSON's"
    );
    for (field, amount, decimals) in [
        ("usd_amount", t.usd_amount, USD_DECIMALS),
        ("rate", t.rate, RATE_DECIMALS),
    ] {
        assert!(
            amount > Decimal::ZERO && amount.scale() == decimals,
            "trade_decoder: {field} {amount} is not positive at {decimals} decimal places"
        );
        if let Some(s) = text(field) {
            assert!(
                Decimal::from_str(&s).is_ok_and(|d| d == amount),
                "trade_decoder: {field} {amount} is not the JSON's {s:?}"
            );
        }
    }
    let Some(at) = text("executed_at") else {
        panic!("trade_decoder: accepted an executed_at that is not a string");
    };
    assert!(
        DateTime::parse_from_rfc3339(&at).is_ok_and(|d| d.with_timezone(&Utc) == t.executed_at),
        "trade_decoder: executed_at {} is not chrono's reading of {at:?}",
        t.executed_at
    );
    let channel = match raw("channel") {
        None | Some("null") => None,
        Some(_) => text("channel").filter(|c| !c.is_empty()),
    };
    assert_eq!(
        t.channel.as_deref(),
        channel.as_deref(),
        "trade_decoder: the channel is not the JSON's"
    );
}

// ---------------------------------------------------------------------------------------------
// kinesis_event

/// Partition keys of the user records [`kinesis_event`] aggregates.
const PARTITION_KEYS: [&str; 3] = ["user-1", "user-2", "user-3"];

/// The Kinesis event of the trades-stream function (`trades/kinesis.rs`) and its records for the
/// processor:
///
/// - reading an event and expanding it never panics;
/// - every Kinesis record becomes, in order, either one processor record (its base64 text, or
///   refused with a KPL reason when it is an aggregate that cannot be read) or one per user
///   record of its aggregate, numbered 0, 1, … — never none; each carries its record's shard,
///   sequence number and arrival time; a record that decodes to the KPL magic is never passed
///   on as plain base64;
/// - [`Expanded::user_records`] counts the processor records.
///
/// Input that is not JSON is made into an aggregate: with control bit 0 clear, the bytes are
/// the aggregate's protobuf body (with its correct digest, so the body is what gets read); set,
/// they are user records separated by line feeds, aggregated by [`kpl::aggregate`], which must
/// come back exactly.
pub fn kinesis_event(data: &[u8]) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        if let Ok(event) = serde_json::from_slice::<KinesisTradeEvent>(data) {
            check_kinesis(&event, &event.expand());
        }
        return;
    }
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let users: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let aggregate = if control & 1 == 0 {
        let mut bytes = kpl::MAGIC.to_vec();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(body));
        bytes
    } else {
        kpl::aggregate(
            users
                .iter()
                .enumerate()
                .map(|(i, d)| (PARTITION_KEYS[i % PARTITION_KEYS.len()], *d)),
        )
    };
    let json = serde_json::json!({"Records": [{
        "eventID": "shardId-000000000001:49656733331405069471539893837530498733542391530190258178",
        "kinesis": {"data": BASE64.encode(&aggregate), "sequenceNumber": "4965673333140506947"},
    }]});
    let event: KinesisTradeEvent = match serde_json::from_value(json) {
        Ok(event) => event,
        Err(e) => panic!("kinesis_event: an event of one aggregate does not read: {e}"),
    };
    let expanded = event.expand();
    let records = check_kinesis(&event, &expanded);
    if control & 1 != 0 {
        let data: Vec<&[u8]> = records
            .iter()
            .map(|r| match r.data {
                RecordData::Bytes(bytes) => bytes,
                other => panic!("kinesis_event: an aggregate of user records gave {other:?}"),
            })
            .collect();
        assert!(
            data == users,
            "kinesis_event: the user records aggregated do not come back as they went in"
        );
    }
}

/// Checks the processor records of `event` (`expanded` is its expansion) against it; returns
/// them.
fn check_kinesis<'a>(event: &'a KinesisTradeEvent, expanded: &'a Expanded) -> Vec<Record<'a>> {
    let records = expanded.records(event);
    assert_eq!(
        records.len(),
        expanded.user_records(),
        "kinesis_event: user_records() miscounts the processor records"
    );
    let mut rest = records.as_slice();
    for (k, r) in event.records.iter().enumerate() {
        let decoded = BASE64.decode(&r.kinesis.data).ok();
        let aggregated = decoded.as_deref().is_some_and(kpl::is_aggregated);
        let mine = match rest.first().map(|p| p.sub_sequence) {
            None => panic!("kinesis_event: record {k}: no processor record"),
            Some(None) => 1,
            Some(Some(_)) => rest
                .iter()
                .enumerate()
                .take_while(|(i, p)| p.sub_sequence == u32::try_from(*i).ok())
                .count(),
        };
        let (these, after) = rest.split_at(mine);
        rest = after;
        for p in these {
            assert!(
                p.shard_id == r.shard_id()
                    && p.sequence_number == r.kinesis.sequence_number
                    && p.arrived_at == r.kinesis.arrived_at(),
                "kinesis_event: record {k}: a processor record lost its shard, sequence or arrival"
            );
        }
        match (these, decoded.as_deref()) {
            ([one], _) if one.sub_sequence.is_none() => match one.data {
                RecordData::Base64(text) => assert!(
                    text == r.kinesis.data && !aggregated,
                    "kinesis_event: record {k}: other base64 passed on, or an aggregate undecoded"
                ),
                RecordData::Refused { reason, base64, .. } => {
                    let expected = decoded.as_deref().map(kpl::layout);
                    assert!(
                        aggregated
                            && base64 == r.kinesis.data
                            && matches!(&expected, Some(Err(e)) if reason.to_string() == e.code()),
                        "kinesis_event: record {k}: refused ({reason}), yet no unreadable aggregate"
                    );
                }
                RecordData::Bytes(_) => {
                    panic!("kinesis_event: record {k}: bytes without a sub-sequence")
                }
            },
            (users, Some(bytes)) => {
                let expected = match kpl::deaggregate(bytes) {
                    Ok(expected) => expected,
                    Err(e) => panic!("kinesis_event: record {k}: expanded, yet {e}"),
                };
                let data: Vec<Option<&[u8]>> = users
                    .iter()
                    .map(|p| match p.data {
                        RecordData::Bytes(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                let want: Vec<Option<&[u8]>> = expected.iter().map(|u| Some(u.data)).collect();
                assert!(
                    aggregated && data == want,
                    "kinesis_event: record {k}: expanded into other user records than it holds"
                );
            }
            (_, None) => panic!("kinesis_event: record {k}: expanded, yet not base64"),
        }
    }
    assert!(
        rest.is_empty(),
        "kinesis_event: processor records left over after the event's records"
    );
    records
}
