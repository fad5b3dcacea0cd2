//! Detection of a file's dialect: compression, byte-order mark, delimiter, encoding and decimal
//! separator.
//!
//! The encoding needs no restart: UTF-8 and Windows-1252 agree on ASCII, so the decision is taken
//! at the first chunk that holds a non-ASCII byte, by looking at that whole chunk, and everything
//! before it was the same in both. After the decision a record that does not fit the chosen
//! encoding is rejected as `invalid_encoding` instead of being decoded into something else.

use serde::{Deserialize, Serialize};

use crate::parse::{separator_evidence, DecimalSep};

/// Text encoding of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
}

impl Encoding {
    pub fn label(&self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1252 => "windows-1252",
        }
    }
}

pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
pub const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];

/// Delimiters tried, in order of preference on ties.
const CANDIDATES: [u8; 4] = [b',', b';', b'|', b'\t'];

/// Picks the delimiter whose count per line (outside quotes) is the most consistent and non-zero
/// over the first lines of the sample.
pub fn sniff_delimiter(sample: &[u8]) -> u8 {
    let lines = split_logical_lines(sample, 50);
    let mut best = (b',', 0usize, 0usize); // (delimiter, consistent lines, count in header)
    for &d in &CANDIDATES {
        let counts: Vec<usize> = lines.iter().map(|l| count_outside_quotes(l, d)).collect();
        let Some(&head) = counts.first() else {
            continue;
        };
        if head == 0 {
            continue;
        }
        let consistent = counts.iter().filter(|&&c| c == head).count();
        if consistent > best.1 || (consistent == best.1 && head > best.2) {
            best = (d, consistent, head);
        }
    }
    best.0
}

/// Lines of the sample, not splitting inside quoted fields; at most `max`.
fn split_logical_lines(sample: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, &c) in sample.iter().enumerate() {
        if c == b'"' {
            in_quotes = !in_quotes;
        } else if c == b'\n' && !in_quotes {
            let line = &sample[start..i];
            if !line.iter().all(|b| b.is_ascii_whitespace()) {
                out.push(line);
            }
            start = i + 1;
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

fn count_outside_quotes(line: &[u8], d: u8) -> usize {
    let mut in_quotes = false;
    let mut n = 0;
    for &c in line {
        if c == b'"' {
            in_quotes = !in_quotes;
        } else if c == d && !in_quotes {
            n += 1;
        }
    }
    n
}

/// Decides the decimal separator from values of numeric columns seen in the sample; `;` files
/// default to a decimal comma (Excel in Spanish), the others to a point.
pub fn decide_decimal_sep<'a>(
    delimiter: u8,
    numeric_values: impl Iterator<Item = &'a str>,
) -> DecimalSep {
    let (mut point, mut comma) = (0usize, 0usize);
    for v in numeric_values {
        match separator_evidence(v) {
            Some(DecimalSep::Point) => point += 1,
            Some(DecimalSep::Comma) => comma += 1,
            None => {}
        }
    }
    let default = if delimiter == b';' {
        DecimalSep::Comma
    } else {
        DecimalSep::Point
    };
    match point.cmp(&comma) {
        std::cmp::Ordering::Greater => DecimalSep::Point,
        std::cmp::Ordering::Less => DecimalSep::Comma,
        std::cmp::Ordering::Equal => default,
    }
}

/// Decides the encoding from the first chunk holding non-ASCII bytes: UTF-8 when it has valid
/// multi-byte sequences at least as often as invalid bytes, Windows-1252 otherwise.
pub fn decide_encoding(chunk: &[u8]) -> Encoding {
    let (mut valid, mut invalid) = (0usize, 0usize);
    let mut rest = chunk;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                valid += s.bytes().filter(|b| *b >= 0xc0).count();
                break;
            }
            Err(e) => {
                let (ok, bad) = rest.split_at(e.valid_up_to());
                valid += ok.iter().filter(|b| **b >= 0xc0).count();
                invalid += 1;
                let skip = e.error_len().unwrap_or(bad.len()).max(1);
                rest = &bad[skip.min(bad.len())..];
                if rest.is_empty() {
                    break;
                }
            }
        }
    }
    // Valid multi-byte UTF-8 practically never occurs in Windows-1252 text, while a stray bad
    // byte does occur in UTF-8 files: ties go to UTF-8.
    if valid > 0 && valid >= invalid {
        Encoding::Utf8
    } else {
        Encoding::Windows1252
    }
}

/// A field whose bytes are not valid in the file's encoding (`invalid_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bytes that are not valid in the file's encoding")]
pub struct InvalidEncoding;

/// Windows-1252 bytes 0x80–0x9F; `None` marks the five bytes the code page leaves undefined.
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// Decodes one field of a Windows-1252 file. Fails on the undefined bytes, and on text that is
/// valid multi-byte UTF-8 (mojibake in the making: a UTF-8 value inside a Windows-1252 file).
pub fn decode_cp1252(bytes: &[u8], out: &mut String) -> Result<(), InvalidEncoding> {
    if bytes.is_ascii() {
        // SAFETY-free path: ASCII is valid UTF-8.
        out.push_str(std::str::from_utf8(bytes).map_err(|_| InvalidEncoding)?);
        return Ok(());
    }
    if std::str::from_utf8(bytes).is_ok() {
        return Err(InvalidEncoding);
    }
    for &b in bytes {
        let c = match b {
            0x00..=0x7f => b as char,
            0x80..=0x9f => CP1252_HIGH[usize::from(b - 0x80)].ok_or(InvalidEncoding)?,
            _ => char::from(b), // 0xA0–0xFF are Latin-1
        };
        out.push(c);
    }
    Ok(())
}

/// Decodes one field in the file's encoding into `out`; `Err` means `invalid_encoding`.
pub fn decode_field(
    bytes: &[u8],
    encoding: Encoding,
    out: &mut String,
) -> Result<(), InvalidEncoding> {
    match encoding {
        Encoding::Utf8 => {
            out.push_str(std::str::from_utf8(bytes).map_err(|_| InvalidEncoding)?);
            Ok(())
        }
        Encoding::Windows1252 => decode_cp1252(bytes, out),
    }
}

/// Best-effort text of a record for the rejected zone: decoded in the file's encoding, with
/// U+FFFD for what cannot be decoded.
pub fn lossy_text(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Windows1252 => bytes
            .iter()
            .map(|&b| match b {
                0x80..=0x9f => CP1252_HIGH[usize::from(b - 0x80)].unwrap_or('\u{fffd}'),
                _ => char::from(b),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_is_the_consistent_one() {
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n4,5,6\n"), b',');
        assert_eq!(sniff_delimiter(b"a;b;c\r\n1,5;2;3\r\n4;5,5;6\r\n"), b';');
        assert_eq!(sniff_delimiter(b"a|b\n1|2\n"), b'|');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n1\t2\t3\n"), b'\t');
        // A comma inside quotes does not count.
        assert_eq!(sniff_delimiter(b"a;b\n\"x, y\";2\n\"p, q\";3\n"), b';');
    }

    #[test]
    fn semicolon_files_default_to_decimal_comma() {
        let none: [&str; 0] = [];
        assert_eq!(
            decide_decimal_sep(b';', none.iter().copied()),
            DecimalSep::Comma
        );
        assert_eq!(
            decide_decimal_sep(b',', none.iter().copied()),
            DecimalSep::Point
        );
        assert_eq!(
            decide_decimal_sep(b';', ["12.5", "1.234", "7.25"].into_iter()),
            DecimalSep::Point
        );
        assert_eq!(
            decide_decimal_sep(b',', ["1234,5", "1.234"].into_iter()),
            DecimalSep::Comma
        );
    }

    #[test]
    fn encoding_is_decided_by_the_chunk() {
        assert_eq!(
            decide_encoding("Bogotá,Medellín\n".as_bytes()),
            Encoding::Utf8
        );
        assert_eq!(
            decide_encoding(b"Bogot\xe1,Medell\xedn\n"),
            Encoding::Windows1252
        );
        // One corrupt byte in a UTF-8 file does not flip the decision.
        assert_eq!(
            decide_encoding(b"Bogot\xc3\xa1,Medell\xc3\xadn,Ibagu\xc3\xa9\n\xff\n"),
            Encoding::Utf8
        );
    }

    #[test]
    fn cp1252_decodes_and_refuses_undefined_bytes_and_utf8() {
        let mut s = String::new();
        assert!(decode_cp1252(b"Energ\xeda \x80 \x93x\x94", &mut s).is_ok());
        assert_eq!(s, "Energía € “x”");
        assert!(decode_cp1252(b"a\x81b", &mut String::new()).is_err());
        assert!(decode_cp1252("Energía".as_bytes(), &mut String::new()).is_err());
    }
}
