//! Splitting a chunk into CSV records (RFC 4180): a byte-class fast path for records without
//! quotes, `csv_core` for the rest.

use super::chunker::Chunk;

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
    pub(super) buf: &'a [u8],
    /// `buf` as text, when it is known to be valid UTF-8.
    pub(super) text: Option<&'a str>,
    /// The part of `buf` that holds this record's fields.
    pub(super) span: std::ops::Range<usize>,
    pub(super) fields: &'a [FieldSpan],
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

/// Calls `f` for each record of `bytes` (RFC 4180 with the given delimiter), `bytes` being the
/// start of the input.
pub fn for_each_record(
    bytes: &[u8],
    delimiter: u8,
    first_line: u64,
    f: impl FnMut(RawRecord<'_>) -> bool,
) {
    for_each_record_in(bytes, None, delimiter, first_line, true, f)
}

impl Chunk {
    /// Calls `f` for each record of the chunk, as they are in the whole input: a byte-order
    /// mark is only dropped at the start of the input, not at the start of a later chunk.
    pub fn for_each_record(&self, delimiter: u8, f: impl FnMut(RawRecord<'_>) -> bool) {
        for_each_record_in(
            &self.bytes,
            None,
            delimiter,
            self.first_line,
            self.seq == 0,
            f,
        )
    }

    /// Whether the chunk holds a record at all, not only blank lines (which the parser skips).
    pub fn holds_record(&self) -> bool {
        let bytes = &self.bytes[..];
        let bytes = match bytes.strip_prefix(&crate::dialect::UTF8_BOM) {
            Some(rest) if self.seq == 0 => rest,
            _ => bytes,
        };
        bytes.iter().any(|&b| b != b'\n' && b != b'\r')
    }
}

/// Like [`for_each_record`]; `text`, when given, is `bytes` already checked to be UTF-8;
/// `at_start`, whether `bytes` are the start of the input (where a byte-order mark is dropped).
///
/// Records without quotes, lone carriage returns or a leading byte-order mark are split in
/// place; the others go through `csv_core`, which sees them exactly as it would have seen them
/// reading the whole input.
pub(super) fn for_each_record_in(
    bytes: &[u8],
    text: Option<&str>,
    delimiter: u8,
    first_line: u64,
    at_start: bool,
    mut f: impl FnMut(RawRecord<'_>) -> bool,
) {
    let classes = byte_classes(delimiter);
    let delimiters = ONES * u64::from(delimiter);
    let fast = !matches!(delimiter, b'"' | b'\n' | b'\r');
    let mut slow = SlowReader::new(delimiter, at_start);
    let mut fields: Vec<FieldSpan> = Vec::with_capacity(64);
    let mut line = first_line;
    let mut pos = 0usize;
    let n = bytes.len();
    // csv_core drops a byte-order mark at the start of its input.
    let mut needs_slow = !fast || (at_start && bytes.starts_with(&crate::dialect::UTF8_BOM));
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
    /// Whether the buffer is the start of the input.
    at_start: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl SlowReader {
    fn new(delimiter: u8, at_start: bool) -> SlowReader {
        SlowReader {
            rdr: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            used: false,
            at_start,
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
            if pos > 0 || !self.at_start {
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
                    // The byte-order mark the parser dropped is no part of the record.
                    if rec_start == 0 && self.at_start {
                        if let Some(rest) = raw.strip_prefix(&crate::dialect::UTF8_BOM) {
                            raw = rest;
                            start += crate::dialect::UTF8_BOM.len();
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::clean_text;
    use proptest::prelude::*;

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
                    if rec_start == 0 {
                        if let Some(rest) = raw.strip_prefix(&crate::dialect::UTF8_BOM) {
                            raw = rest;
                            start += 3;
                        }
                    }
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
    fn the_dropped_byte_order_mark_is_no_part_of_the_first_record() {
        // GIVEN a byte-order mark, a blank line, then a record
        let data = b"\xef\xbb\xbf\n\"c\",d\n";
        let mut seen = Vec::new();
        for_each_record(data, b',', 1, |r| {
            seen.push((r.line, r.start, r.raw.to_vec()));
            true
        });
        // THEN the record starts on line 2, after the mark and the line feed
        assert_eq!(seen, vec![(2, 4, b"\"c\",d".to_vec())]);
    }

    #[test]
    fn a_byte_order_mark_is_dropped_only_at_the_start_of_the_input() {
        // GIVEN a byte-order mark, a quote and a line feed, at the start of a chunk
        let records = |seq| {
            let chunk = Chunk {
                seq,
                bytes: b"\xef\xbb\xbf\"a\nb\"\n".to_vec(),
                first_line: 1,
                lines: 2,
            };
            let mut n = 0;
            chunk.for_each_record(b',', |_| {
                n += 1;
                true
            });
            n
        };
        // THEN at the start of the input the mark is dropped and the quote opens a field over
        // both lines; later in the input the mark is data, the quote a literal, each line a record
        assert_eq!(records(0), 1);
        assert_eq!(records(1), 2);
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
    }
}
