//! Splits a byte stream into chunks of whole CSV records, so chunks can be parsed in parallel.
//!
//! A record ends at a line feed outside quotes. Quotes only open at the start of a field (a quote
//! inside an unquoted field is a literal, as RFC 4180 readers treat it), and `""` inside quotes
//! is an escaped quote; the state carries over from one chunk to the next. A lone carriage
//! return ends a record too for the parser (`\r`, `\n` and `\r\n` all do), so a quote after it
//! opens a field; chunks are still only cut after line feeds. A byte-order mark at the start of
//! the input is no part of the first field, as the parser drops it.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote seen inside a quoted field: either the closing one or the first of `""`.
    QuoteInQuoted,
}

/// A chunk of whole records.
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// Line number (1-based) on which the chunk's first record starts.
    pub first_line: u64,
    /// Line feeds in the chunk.
    pub lines: u64,
}

/// The least the chunker asks of the input at once.
pub(crate) const MIN_READ: usize = 64 * 1024;

/// Chunk buffers handed back once their chunk is done with, for later chunks to fill again: a
/// buffer that was used before costs no allocation, no page faults and no zero-fill, and is
/// likely still in cache. Holds at most `keep` buffers, none much larger than a chunk.
#[derive(Clone)]
pub struct Buffers {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    keep: usize,
    largest: usize,
}

impl Buffers {
    /// A pool of at most `keep` buffers for chunks of about `target` bytes.
    pub fn new(keep: usize, target: usize) -> Buffers {
        Buffers {
            free: Arc::new(Mutex::new(Vec::with_capacity(keep))),
            keep,
            largest: target.max(MIN_READ).saturating_mul(2),
        }
    }

    /// Hands a chunk's buffer back (dropped when the pool is full or the buffer outsized).
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() > self.largest {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.free.lock().ok()?.pop()
    }
}

/// Reads whole-record chunks of about `target` bytes (larger when one record is larger).
pub struct Chunker<R> {
    input: R,
    delimiter: u8,
    target: usize,
    /// Bytes read but not yet handed out (a partial record), and the scan state at its end.
    carry: Vec<u8>,
    carry_state: State,
    next_line: u64,
    seq: u64,
    eof: bool,
    /// Nothing scanned yet: a byte-order mark may still start the input.
    at_start: bool,
    /// Largest record accepted: a quote that never closes must not swallow the whole file.
    max_record: usize,
    buffers: Option<Buffers>,
}

impl<R: Read> Chunker<R> {
    pub fn new(input: R, delimiter: u8, target: usize, first_line: u64) -> Chunker<R> {
        Chunker {
            input,
            delimiter,
            target: target.max(4096),
            carry: Vec::new(),
            carry_state: State::FieldStart,
            next_line: first_line,
            seq: 0,
            eof: false,
            at_start: true,
            max_record: 64 << 20,
            buffers: None,
        }
    }

    /// Fills buffers handed back to `buffers` before allocating new ones.
    pub fn with_buffers(mut self, buffers: Buffers) -> Self {
        self.buffers = Some(buffers);
        self
    }

    /// Sets the largest record accepted (default 64 MiB).
    pub fn with_max_record(mut self, max: usize) -> Self {
        self.max_record = max;
        self
    }

    /// Scans `buf[from..]` starting in `state`; returns the end (exclusive) of the last complete
    /// record, and the state at the end of the buffer.
    fn scan(&self, buf: &[u8], from: usize, mut state: State) -> (Option<usize>, State) {
        let d = self.delimiter;
        let n = buf.len();
        let mut last_end = None;
        let mut i = from;
        while i < n {
            match state {
                State::FieldStart | State::Unquoted => {
                    // Outside quotes only a quote can change more than where the last record
                    // ends: jump to the next one.
                    let stop = memchr::memchr(b'"', &buf[i..]).map_or(n, |off| i + off);
                    if let Some(off) = memchr::memrchr(b'\n', &buf[i..stop]) {
                        last_end = Some(i + off + 1);
                    }
                    if stop > i {
                        let c = buf[stop - 1];
                        state = if c == b'\n' || c == b'\r' || c == d {
                            State::FieldStart
                        } else {
                            State::Unquoted
                        };
                    }
                    if stop < n && state == State::FieldStart {
                        state = State::Quoted;
                    }
                    // A quote inside an unquoted field is a literal.
                    i = stop + 1;
                }
                State::Quoted => match memchr::memchr(b'"', &buf[i..]) {
                    Some(off) => {
                        i += off + 1;
                        state = State::QuoteInQuoted;
                    }
                    None => i = n,
                },
                State::QuoteInQuoted => {
                    let c = buf[i];
                    if c == b'"' {
                        state = State::Quoted;
                    } else if c == b'\n' {
                        last_end = Some(i + 1);
                        state = State::FieldStart;
                    } else if c == d || c == b'\r' {
                        state = State::FieldStart;
                    } else {
                        state = State::Unquoted;
                    }
                    i += 1;
                }
            }
        }
        (last_end, state)
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        // `buf[..filled]` holds the input; a reused buffer may hold old bytes past it, which
        // are overwritten before they are read.
        let mut buf = match self.buffers.as_ref().and_then(Buffers::take) {
            Some(buf) => buf,
            // Room for a chunk and the partial record carried over (unless that record is
            // unusually long), so reading does not reallocate.
            None => {
                let read = self.target.max(MIN_READ);
                Vec::with_capacity(read + read / 8)
            }
        };
        let mut filled = self.carry.len();
        if buf.len() < filled {
            buf.resize(filled, 0);
        }
        buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        // The carry was scanned already and holds no record end: scanning goes on after it, in
        // the state it ended in (scanning it again from that state would read its quotes the
        // wrong way round).
        let mut scanned = filled;
        let mut state = self.carry_state;
        loop {
            if filled > scanned {
                let bom = &crate::dialect::UTF8_BOM;
                if std::mem::take(&mut self.at_start) && buf[..filled].starts_with(bom) {
                    scanned = bom.len();
                }
                let (end, st) = self.scan(&buf[..filled], scanned, state);
                scanned = filled;
                if let Some(end) = end {
                    // Re-scan the tail after `end` from a record start to get its state.
                    let (_, tail_state) = self.scan(&buf[..filled], end, State::FieldStart);
                    if filled >= self.target || self.eof {
                        self.carry.extend_from_slice(&buf[end..filled]);
                        self.carry_state = tail_state;
                        buf.truncate(end);
                        return Ok(Some(self.emit(buf)));
                    }
                }
                state = st;
            }
            if self.eof {
                if filled == 0 {
                    if let Some(buffers) = &self.buffers {
                        buffers.give(buf);
                    }
                    return Ok(None);
                }
                // The last record has no line feed.
                self.carry_state = State::FieldStart;
                buf.truncate(filled);
                return Ok(Some(self.emit(buf)));
            }
            if filled > self.max_record + self.target {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "no record boundary within {} (a record longer than that, an unclosed \
                         quote, or not a CSV file)",
                        size_label(self.max_record)
                    ),
                ));
            }
            // Grow by half (few reallocations), but never past the largest record and a chunk
            // after it: a file of one endless line holds at most that much, whatever its size.
            let grow = self.target.max(filled / 2).max(MIN_READ);
            let need = (filled + grow).min(self.max_record + self.target + MIN_READ);
            let want = need - filled;
            if buf.len() < need {
                buf.reserve_exact(need - buf.len());
                buf.resize(need, 0);
            }
            let n = read_full(&mut self.input, &mut buf[filled..need])?;
            filled += n;
            if n < want {
                self.eof = true;
            }
        }
    }

    fn emit(&mut self, bytes: Vec<u8>) -> Chunk {
        let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        let chunk = Chunk {
            seq: self.seq,
            bytes,
            first_line: self.next_line,
            lines,
        };
        self.seq += 1;
        self.next_line += lines;
        chunk
    }
}

/// `64 MiB`, `64 KiB` or `100 bytes`, as a size is said in a message.
fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads until `buf` is full or the input ends.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(input: &[u8], target: usize) -> io::Result<Vec<Chunk>> {
        let mut c = Chunker::new(input, b',', target, 2);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk()? {
            out.push(ch);
        }
        Ok(out)
    }

    #[test]
    fn chunks_end_on_record_boundaries_even_inside_quoted_newlines() -> io::Result<()> {
        let mut input = Vec::new();
        for i in 0..50_000 {
            input.extend_from_slice(
                format!("{i},\"multi\nline, \"\"quoted\"\"\",x 5\" pipe\n").as_bytes(),
            );
        }
        let out = chunks(&input, 4096)?;
        assert!(out.len() > 10);
        let joined: Vec<u8> = out.iter().flat_map(|c| c.bytes.iter().copied()).collect();
        assert_eq!(joined, input);
        let mut line = 2;
        for (k, c) in out.iter().enumerate() {
            assert_eq!(c.seq, k as u64);
            assert_eq!(c.first_line, line);
            assert!(c.bytes.ends_with(b"pipe\n"));
            // Each record spans two lines, so a chunk of whole records has an even count.
            let lines = c.bytes.iter().filter(|b| **b == b'\n').count() as u64;
            assert_eq!(c.lines, lines);
            assert_eq!(lines % 2, 0);
            line += lines;
        }
        Ok(())
    }

    #[test]
    fn reused_buffers_yield_the_chunks_fresh_ones_do_whatever_they_held() -> io::Result<()> {
        let mut input = Vec::new();
        for i in 0..20_000 {
            let quoted = if i % 7 == 0 {
                "\"a\nb, \"\"c\"\"\""
            } else {
                "plain"
            };
            input.extend_from_slice(format!("{i},{quoted},{}\n", "x".repeat(i % 300)).as_bytes());
        }
        input.extend_from_slice(b"last,without,newline");
        let fresh = chunks(&input, 4096)?;
        let buffers = Buffers::new(3, 4096);
        let mut c = Chunker::new(&input[..], b',', 4096, 2).with_buffers(buffers.clone());
        let mut reused = Vec::new();
        while let Some(ch) = c.next_chunk()? {
            reused.push((ch.seq, ch.bytes.clone(), ch.first_line, ch.lines));
            // What a buffer held before must never be read again: poison it with record ends.
            let mut old = ch.bytes;
            old.fill(b'\n');
            buffers.give(old);
        }
        let fresh: Vec<_> = fresh
            .into_iter()
            .map(|ch| (ch.seq, ch.bytes, ch.first_line, ch.lines))
            .collect();
        assert!(fresh.len() > 30);
        assert_eq!(reused, fresh);
        // The buffers were kept for reuse, not dropped as outsized.
        assert!(buffers.take().is_some());
        Ok(())
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_chunk_sized_buffers() {
        let buffers = Buffers::new(2, 4096);
        for _ in 0..5 {
            buffers.give(Vec::with_capacity(4096));
        }
        buffers.give(Vec::with_capacity(64 << 10));
        let kept: Vec<Vec<u8>> = std::iter::from_fn(|| buffers.take()).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|b| b.capacity() <= 8192));
    }

    /// The scan as a byte-by-byte state machine.
    fn scan_bytewise(d: u8, buf: &[u8], from: usize, mut state: State) -> (Option<usize>, State) {
        let mut last_end = None;
        let mut i = from;
        while i < buf.len() {
            let c = buf[i];
            match state {
                State::FieldStart | State::Unquoted => {
                    if state == State::FieldStart && c == b'"' {
                        state = State::Quoted;
                    } else if c == b'\n' {
                        last_end = Some(i + 1);
                        state = State::FieldStart;
                    } else if c == d || c == b'\r' {
                        state = State::FieldStart;
                    } else {
                        // Skip ahead to the next byte that can change the state.
                        state = State::Unquoted;
                        match memchr::memchr3(b'\n', b'\r', d, &buf[i + 1..]) {
                            Some(off) => {
                                i += off + 1;
                                continue;
                            }
                            None => {
                                i = buf.len();
                                continue;
                            }
                        }
                    }
                }
                State::Quoted => match memchr::memchr(b'"', &buf[i..]) {
                    Some(off) => {
                        i += off;
                        state = State::QuoteInQuoted;
                    }
                    None => {
                        i = buf.len();
                        continue;
                    }
                },
                State::QuoteInQuoted => {
                    if c == b'"' {
                        state = State::Quoted;
                    } else if c == b'\n' {
                        last_end = Some(i + 1);
                        state = State::FieldStart;
                    } else if c == d || c == b'\r' {
                        state = State::FieldStart;
                    } else {
                        state = State::Unquoted;
                    }
                }
            }
            i += 1;
        }
        (last_end, state)
    }

    proptest::proptest! {
        #[test]
        fn scan_agrees_with_the_bytewise_state_machine(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                &b"a"[..], b"bc", b",", b";", b"\"", b"\"\"", b"\n", b"\r\n", b"\r", b" ",
            ]), 0..80),
            from in 0usize..8,
            start in 0usize..4,
        ) {
            let buf = parts.concat();
            let from = from.min(buf.len());
            let state = [State::FieldStart, State::Unquoted, State::Quoted, State::QuoteInQuoted][start];
            let c = Chunker::new(&b""[..], b',', 4096, 1);
            proptest::prop_assert_eq!(
                c.scan(&buf, from, state),
                scan_bytewise(b',', &buf, from, state)
            );
        }
    }

    #[test]
    fn a_quoted_field_still_open_at_the_end_of_a_read_is_not_cut() -> io::Result<()> {
        // GIVEN a quoted field holding line feeds that opens just before the end of the first
        // read (64 KiB) and closes far into the next
        let mut input = b"f\n".repeat(32_760);
        let record = input.len();
        input.extend_from_slice(b"a,\"x\n");
        for _ in 0..10_000 {
            input.extend_from_slice(b"still quoted\n");
        }
        input.extend_from_slice(b"\"\nb,c\n");
        // WHEN it is cut into chunks
        let out = chunks(&input, 4096)?;
        // THEN no chunk ends inside the quotes
        let mut at = 0;
        for c in &out {
            at += c.bytes.len();
            assert!(
                at <= record || at == input.len() - 4 || at == input.len(),
                "cut at {at}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_quote_after_a_byte_order_mark_at_the_start_opens_a_field() -> io::Result<()> {
        // GIVEN a byte-order mark, then a quoted field holding a line feed, never closed
        let input = b"\xef\xbb\xbf\"\n:";
        // WHEN it is cut into chunks
        let out = chunks(input, 4096)?;
        // THEN it is one record (the parser drops the mark), so one chunk
        assert_eq!(out.len(), 1);
        Ok(())
    }

    #[test]
    fn a_quote_after_a_lone_carriage_return_opens_a_field() {
        // GIVEN records ended by a lone carriage return (a terminator to the CSV parser), then
        // a quoted field holding a line feed
        let c = Chunker::new(&b""[..], b',', 4096, 1);
        for buf in [&b"a\r\"x\ny"[..], b"\"a\"\r\"x\ny"] {
            // WHEN scanned, THEN that line feed ends no record: the quotes are still open
            assert_eq!(
                c.scan(buf, 0, State::FieldStart),
                (None, State::Quoted),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn last_record_without_newline_is_kept() -> io::Result<()> {
        let out = chunks(b"a,b\nc,d", 4096)?;
        let joined: Vec<u8> = out.iter().flat_map(|c| c.bytes.iter().copied()).collect();
        assert_eq!(joined, b"a,b\nc,d");
        Ok(())
    }

    #[test]
    fn an_unclosed_quote_is_an_error_not_a_hang() {
        let mut input = b"a,\"never closed\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200_000));
        let mut c = Chunker::new(&input[..], b',', 4096, 2).with_max_record(64 * 1024);
        let mut result = Ok(None);
        for _ in 0..100 {
            result = c.next_chunk();
            if !matches!(result, Ok(Some(_))) {
                break;
            }
        }
        assert!(result.is_err() || matches!(result, Ok(None)));
    }

    #[test]
    fn an_endless_line_fails_naming_the_cap_and_holds_no_more_than_the_cap_and_a_chunk() {
        // GIVEN one line of 4 MiB with a cap of 1 MiB and chunks of 4 KiB
        let input = vec![b'x'; 4 << 20];
        let mut reader = CountingReader {
            inner: &input[..],
            read: 0,
        };
        let mut c = Chunker::new(&mut reader, b',', 4096, 2).with_max_record(1 << 20);
        // WHEN it is chunked THEN it fails, saying how long a record may be
        let Err(e) = c.next_chunk() else {
            panic!("an endless line was chunked");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("within 1 MiB"), "{e}");
        // AND it read no more than the cap, a chunk and one read past them (growing by half
        // each time regardless of the cap, it read 1.4 MiB)
        assert!(
            reader.read <= (1 << 20) + 4096 + MIN_READ,
            "{}",
            reader.read
        );
    }

    struct CountingReader<'a> {
        inner: &'a [u8],
        read: usize,
    }

    impl Read for CountingReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }
}
