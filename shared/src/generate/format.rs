//! Writing values into a record as the exports spell them: numbers with either decimal mark and
//! thousands separators, dates, NITs, quoted text, and Windows-1252 encoding.

use encoding_rs::{EncoderResult, WINDOWS_1252};
use rand::Rng;

use std::io;

use super::vocab::{BAD_NUMBER_WORDS, NICKNAMES, SITES};
use super::{Fmt, GenerateError, DAY0, DAY_SPAN, POW10};

pub(super) fn pick<'a, R: Rng>(rng: &mut R, table: &[&'a str]) -> &'a str {
    table[rng.random_range(0..table.len() as u32) as usize]
}

/// Like `pick`, restricted to values with a non-ASCII character (the table must have some).
pub(super) fn pick_non_ascii<'a, R: Rng>(rng: &mut R, table: &[&'a str]) -> &'a str {
    loop {
        let v = pick(rng, table);
        if !v.is_ascii() {
            return v;
        }
    }
}

/// An empty required cell; sometimes only blanks, which trimming turns into empty.
pub(super) fn push_blank<R: Rng>(rng: &mut R, line: &mut String) {
    if rng.random_range(0..4u32) == 0 {
        line.push_str("  ");
    }
}

/// Appends a text field, quoting it (RFC 4180) when it holds the delimiter, a quote or a line break.
pub(super) fn push_text(line: &mut String, s: &str, delim: char) {
    let needs_quotes = s
        .bytes()
        .any(|b| b == delim as u8 || b == b'"' || b == b'\n' || b == b'\r');
    if !needs_quotes {
        line.push_str(s);
        return;
    }
    line.push('"');
    for (i, part) in s.split('"').enumerate() {
        if i > 0 {
            line.push_str("\"\"");
        }
        line.push_str(part);
    }
    line.push('"');
}

/// Makes a clean name need quoting: embedded delimiter, embedded quotes or an in-cell line break
/// (Excel writes those as a bare LF, whatever the record terminator).
pub(super) fn add_special<R: Rng>(rng: &mut R, name: &mut String, delim: char) {
    match rng.random_range(0..3u32) {
        0 => {
            name.push(delim);
            if delim != '\t' {
                name.push(' ');
            }
            name.push_str(pick(rng, SITES));
        }
        1 => {
            name.push_str(" \"");
            name.push_str(pick(rng, NICKNAMES));
            name.push('"');
        }
        _ => {
            name.push('\n');
            name.push_str(pick(rng, SITES));
        }
    }
}

/// Number of fields of a record, honouring quotes.
pub(super) fn count_fields(line: &str, delim: char) -> usize {
    let mut n = 1;
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if c == delim && !quoted {
            n += 1;
        }
    }
    n
}

pub(super) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

pub(super) fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut digits = 1;
    let mut t = v / 10;
    while t > 0 {
        digits += 1;
        t /= 10;
    }
    for _ in digits..width {
        out.push('0');
    }
    push_u64(out, v);
}

pub(super) fn push_grouped(out: &mut String, v: u64, sep: char) {
    if v < 1_000 {
        push_u64(out, v);
        return;
    }
    push_grouped(out, v / 1_000, sep);
    out.push(sep);
    push_padded(out, v % 1_000, 3);
}

/// Appends `mantissa / 10^digits` in the file's convention: decimal point, or decimal comma for
/// `;` files; optionally with thousands grouping, which always comes with a decimal part so the
/// value cannot be read 1000× off.
pub(super) fn push_decimal(
    line: &mut String,
    fmt: Fmt,
    negative: bool,
    mantissa: u64,
    digits: u32,
    group: bool,
) {
    let p = POW10[digits as usize];
    let (int, frac) = (mantissa / p, mantissa % p);
    let (dec, thousands) = if fmt.dec_comma {
        (',', '.')
    } else {
        ('.', ',')
    };
    let grouped = group && int >= 1_000;
    let quote = grouped && thousands == fmt.delim;
    if quote {
        line.push('"');
    }
    if negative {
        line.push('-');
    }
    if grouped {
        push_grouped(line, int, thousands);
    } else {
        push_u64(line, int);
    }
    if digits > 0 {
        line.push(dec);
        push_padded(line, frac, digits as usize);
    } else if grouped {
        line.push(dec);
        line.push_str("00");
    }
    if quote {
        line.push('"');
    }
}

pub(super) fn push_bad_number<R: Rng>(rng: &mut R, line: &mut String, fmt: Fmt) {
    if rng.random_bool(0.5) {
        // A typo inside an otherwise plausible number: `12a.5` / `12a,5`.
        push_u64(line, rng.random_range(1..1_000u64));
        line.push(['a', 'o', 'x'][rng.random_range(0..3u32) as usize]);
        line.push(if fmt.dec_comma { ',' } else { '.' });
        push_u64(line, rng.random_range(0..10u64));
    } else {
        let w = pick(rng, BAD_NUMBER_WORDS);
        push_text(line, w, fmt.delim);
    }
}

/// Howard Hinnant's days-to-civil conversion.
pub(super) fn civil_from_days(days: i64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as u64, d as u64)
}

/// A date in 2023..=2026 in one of the accepted formats; `timestamp` allows the UTC timestamp form.
pub(super) fn push_date<R: Rng>(rng: &mut R, line: &mut String, timestamp: bool) {
    let (y, m, d) = civil_from_days(DAY0 + i64::from(rng.random_range(0..DAY_SPAN)));
    let r = rng.random_range(0..100u32);
    let (iso_until, ts_until, dmy_until) = if timestamp {
        (35, 70, 90)
    } else {
        (50, 50, 85)
    };
    if r < ts_until {
        push_u64(line, y);
        line.push('-');
        push_padded(line, m, 2);
        line.push('-');
        push_padded(line, d, 2);
        if r >= iso_until {
            line.push('T');
            push_padded(line, rng.random_range(0..24u64), 2);
            line.push(':');
            push_padded(line, rng.random_range(0..60u64), 2);
            line.push(':');
            push_padded(line, rng.random_range(0..60u64), 2);
            line.push('Z');
        }
    } else if r < dmy_until {
        push_padded(line, d, 2);
        line.push('/');
        push_padded(line, m, 2);
        line.push('/');
        push_u64(line, y);
    } else {
        push_u64(line, y);
        line.push('/');
        push_padded(line, m, 2);
        line.push('/');
        push_padded(line, d, 2);
    }
}

pub(super) fn push_bad_date<R: Rng>(rng: &mut R, line: &mut String, timestamp: bool) {
    let y = rng.random_range(2023..=2026u64);
    let variants = if timestamp { 7 } else { 6 };
    match rng.random_range(0..variants) {
        0 => {
            push_u64(line, y);
            line.push_str("-13-");
            push_padded(line, rng.random_range(1..=28u64), 2);
        }
        1 => {
            line.push_str("31/02/");
            push_u64(line, y);
        }
        2 => {
            push_u64(line, y);
            line.push_str("/02/30");
        }
        3 => {
            push_u64(line, y);
            line.push_str("-04-31");
        }
        4 => line.push_str("ayer"),
        5 => line.push_str("sin fecha"),
        _ => {
            push_u64(line, y);
            line.push_str("-05-10T25:61:00Z");
        }
    }
}

/// NIT with its DIAN check digit, e.g. `900123456-7` or `900.123.456-7`.
pub(super) fn push_nit(line: &mut String, nit: u64, dotted: bool) {
    const WEIGHTS: [u64; 15] = [3, 7, 13, 17, 19, 23, 29, 37, 41, 43, 47, 53, 59, 67, 71];
    let mut sum = 0;
    let mut n = nit;
    for w in WEIGHTS {
        if n == 0 {
            break;
        }
        sum += (n % 10) * w;
        n /= 10;
    }
    let r = sum % 11;
    let dv = if r >= 2 { 11 - r } else { r };
    if dotted {
        push_grouped(line, nit, '.');
    } else {
        push_u64(line, nit);
    }
    line.push('-');
    push_u64(line, dv);
}

/// Lower-case ASCII letters and digits of `s`, accents folded, at most `max` bytes.
pub(super) fn push_slug(out: &mut String, s: &str, max: usize) {
    let start = out.len();
    for c in s.chars() {
        if out.len() - start >= max {
            break;
        }
        let c = match c {
            'á' | 'Á' => 'a',
            'é' | 'É' => 'e',
            'í' | 'Í' => 'i',
            'ó' | 'Ó' => 'o',
            'ú' | 'Ú' | 'ü' | 'Ü' => 'u',
            'ñ' | 'Ñ' => 'n',
            c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
            _ => continue,
        };
        out.push(c);
    }
}

pub(super) fn encode_1252(src: &str, dst: &mut Vec<u8>) -> Result<(), GenerateError> {
    let mut encoder = WINDOWS_1252.new_encoder();
    let mut rest = src;
    loop {
        // Single-byte encoding: the output never exceeds the UTF-8 input.
        dst.reserve(rest.len() + 1);
        let (result, read) = encoder.encode_from_utf8_to_vec_without_replacement(rest, dst, true);
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return Ok(()),
            EncoderResult::OutputFull => continue,
            EncoderResult::Unmappable(c) => {
                return Err(GenerateError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("generated text {c:?} is not representable in Windows-1252"),
                )))
            }
        }
    }
}
