//! Deterministic synthetic CSV generator for the `clientes`, `proveedores`, `transacciones` and
//! `trm` datasets.
//!
//! Tests, demos and benchmarks need input files that look like the real exports the lake receives
//! (Spanish-language Excel and ERP dumps from a Colombian energy trader) and whose expected outcome
//! is known in advance. [`generate`] streams such a file to any writer and returns a
//! [`GenerateReport`] that is the oracle for the engine: how many records must be accepted and how
//! many must be rejected under each stable reason code.
//!
//! Properties the rest of the crate relies on:
//! * the same [`GenerateOptions`] always produce the same bytes (ChaCha8 seeded from `seed`);
//! * memory stays constant whatever `rows` is (only a small ring of recent keys is kept, to build
//!   `duplicate_key` rows);
//! * every dirty record carries exactly one defect and is otherwise valid, so its reject reason is
//!   unambiguous; clean keys are unique and dirty records never reuse a key, except on purpose for
//!   `duplicate_key`;
//! * the dialect follows the options: `;` files use decimal comma, Windows-1252 files use CRLF,
//!   UTF-8 files use LF, and ≈1 % of clean text values need RFC 4180 quoting;
//! * the first data record always holds a non-ASCII character, so encoding detection has evidence
//!   from the start (and never sees an `invalid_encoding` byte first) — except in `trm`, whose
//!   records are ASCII like the portal's (see `trm.rs` for its calendar and dialect).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::contract::Dataset;

mod clientes;
mod format;
mod proveedores;
mod transacciones;
mod trm;
mod vocab;

use clientes::{CLIENTES_DEFECTS, CLIENTES_HEADER};
use format::*;
use proveedores::{PROVEEDORES_DEFECTS, PROVEEDORES_HEADER};
use transacciones::{TRANSACCIONES_DEFECTS, TRANSACCIONES_HEADER};
use trm::{TrmState, TRM_DEFECTS, TRM_HEADER, TRM_MAX_ROWS};
use vocab::*;

/// Character encoding of the generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Windows1252,
}

impl std::str::FromStr for TextEncoding {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(TextEncoding::Utf8),
            "windows-1252" | "windows1252" | "cp1252" | "latin1" | "latin-1" => {
                Ok(TextEncoding::Windows1252)
            }
            other => Err(GenerateError::InvalidOption(format!(
                "unknown encoding {other:?} (expected utf-8 or windows-1252)"
            ))),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub dataset: Dataset,
    /// Data records to write (the header is not counted).
    pub rows: u64,
    pub seed: u64,
    /// 0.0..=100.0: share of records that carry exactly one defect.
    pub dirty_pct: f64,
    pub encoding: TextEncoding,
    /// `b','`, `b';'`, `b'|'` or `b'\t'`; `;` means decimal-comma numbers.
    pub delimiter: u8,
}

impl GenerateOptions {
    /// Clean UTF-8, comma-delimited, seed 42.
    pub fn new(dataset: Dataset, rows: u64) -> Self {
        GenerateOptions {
            dataset,
            rows,
            seed: 42,
            dirty_pct: 0.0,
            encoding: TextEncoding::Utf8,
            delimiter: b',',
        }
    }
}

/// What was written: the expected outcome of ingesting the file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GenerateReport {
    /// Records written.
    pub rows: u64,
    /// Records that must be accepted.
    pub clean: u64,
    /// Expected reject reason code -> count.
    pub dirty_by_reason: BTreeMap<String, u64>,
    /// Bytes written, header included.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("I/O error while writing generated CSV: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid generate option: {0}")]
    InvalidOption(String),
}

/// Writes `opts.rows` records of `opts.dataset` (plus a header) to `out`.
pub fn generate<W: Write>(opts: &GenerateOptions, out: W) -> Result<GenerateReport, GenerateError> {
    if !opts.dirty_pct.is_finite() || !(0.0..=100.0).contains(&opts.dirty_pct) {
        return Err(GenerateError::InvalidOption(format!(
            "dirty percentage must be within 0..=100, got {}",
            opts.dirty_pct
        )));
    }
    if !matches!(opts.delimiter, b',' | b';' | b'|' | b'\t') {
        return Err(GenerateError::InvalidOption(format!(
            "delimiter must be ',', ';', '|' or TAB, got {:?}",
            opts.delimiter as char
        )));
    }
    if opts.dataset == Dataset::Trm && opts.rows > TRM_MAX_ROWS {
        return Err(GenerateError::InvalidOption(format!(
            "trm has one record a business day: at most {TRM_MAX_ROWS} rows, got {}",
            opts.rows
        )));
    }

    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut g = Gen::new(opts);
    let defects = defects_for(opts.dataset);
    let mut counts = vec![0u64; defects.len()];
    let eol = match opts.encoding {
        TextEncoding::Utf8 => "\n",
        TextEncoding::Windows1252 => "\r\n",
    };

    let mut bytes = 0u64;
    let head = match opts.dataset {
        Dataset::Trm => {
            let (bom, head) = g.trm_file_style(opts.encoding);
            if bom {
                w.write_all(&crate::dialect::UTF8_BOM)?;
                bytes += crate::dialect::UTF8_BOM.len() as u64;
            }
            head
        }
        d => header(d),
    };
    for (i, col) in head.iter().enumerate() {
        if i > 0 {
            g.line.push(g.fmt.delim);
        }
        g.line.push_str(col);
    }
    g.line.push_str(eol);
    bytes += g.emit(&mut w, None)?;

    // Exactly round(rows × pct) dirty records, at uniformly random positions, decided while
    // streaming: each remaining record is dirty with probability dirty_left / remaining.
    let mut dirty_left = (opts.rows as f64 * opts.dirty_pct / 100.0).round() as u64;
    let mut clean = 0u64;
    for i in 0..opts.rows {
        let dirty = dirty_left > 0 && g.rng.random_range(0..opts.rows - i) < dirty_left;
        let picked = if dirty {
            dirty_left -= 1;
            Some(g.pick_defect(defects, i))
        } else {
            None
        };
        let defect = picked.map(|k| defects[k].0);
        g.line.clear();
        let bad_at = match opts.dataset {
            Dataset::Proveedores => g.proveedor(i, defect),
            Dataset::Clientes => g.cliente(i, defect),
            Dataset::Transacciones => g.transaccion(i, defect),
            Dataset::Trm => g.trm(defect),
        };
        g.line.push_str(eol);
        bytes += g.emit(&mut w, bad_at)?;
        match picked {
            Some(k) => counts[k] += 1,
            None => {
                clean += 1;
                g.keys.remember(&g.key);
            }
        }
    }
    w.flush()?;

    let dirty_by_reason = defects
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n > 0)
        .map(|((_, code), n)| ((*code).to_owned(), *n))
        .collect();
    Ok(GenerateReport {
        rows: opts.rows,
        clean,
        dirty_by_reason,
        bytes,
    })
}

fn header(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Proveedores => PROVEEDORES_HEADER,
        Dataset::Clientes => CLIENTES_HEADER,
        Dataset::Transacciones => TRANSACCIONES_HEADER,
        Dataset::Trm => TRM_HEADER,
    }
}

/// Columns a defect can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    NombreProveedor,
    TipoEnergia,
    CapacidadMw,
    IdCliente,
    NombreCliente,
    Segmento,
    TipoIdentificacion,
    FechaRegistro,
    FechaTransaccion,
    TipoTransaccion,
    Contraparte,
    Cantidad,
    Precio,
    Valor,
    Unidad,
    VigenciaDesde,
    VigenciaHasta,
}

/// The single defect of a dirty record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    Missing(Col),
    InvalidNumber(Col),
    OutOfRange(Col),
    InvalidEnum(Col),
    InvalidDate(Col),
    InvalidEmail,
    Ragged,
    DuplicateKey,
    InvalidEncoding,
    InvalidInterval,
    OverlappingInterval,
}

fn defects_for(dataset: Dataset) -> &'static [(Defect, &'static str)] {
    match dataset {
        Dataset::Proveedores => PROVEEDORES_DEFECTS,
        Dataset::Clientes => CLIENTES_DEFECTS,
        Dataset::Transacciones => TRANSACCIONES_DEFECTS,
        Dataset::Trm => TRM_DEFECTS,
    }
}

const POW10: [u64; 6] = [1, 10, 100, 1_000, 10_000, 100_000];
/// Days since 1970-01-01 of 2023-01-01; generated dates span 2023-01-01..=2026-12-31.
const DAY0: i64 = 19_358;
const DAY_SPAN: u32 = 1_461;
/// Recent clean keys kept for `duplicate_key` records (bounded, so memory stays constant).
const KEY_RING: usize = 1_024;

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Fmt {
    delim: char,
    dec_comma: bool,
}

/// Bounded memory of keys of clean records.
struct KeyRing {
    slots: Vec<String>,
    next: usize,
}

impl KeyRing {
    fn remember(&mut self, key: &str) {
        if self.slots.len() < KEY_RING {
            self.slots.push(key.to_owned());
        } else {
            let slot = &mut self.slots[self.next];
            slot.clear();
            slot.push_str(key);
        }
        self.next = (self.next + 1) % KEY_RING;
    }
}

struct Gen {
    rng: ChaCha8Rng,
    fmt: Fmt,
    encoding: TextEncoding,
    /// The record being built, always valid UTF-8; encoded when emitted.
    line: String,
    /// Key of the record being built (for the ring of clean keys).
    key: String,
    /// Name of the record being built (person, business or plant).
    name: String,
    /// ASCII slug for e-mail local parts and domains.
    slug: String,
    encoded: Vec<u8>,
    keys: KeyRing,
    trm: TrmState,
}

impl Gen {
    fn new(opts: &GenerateOptions) -> Self {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            fmt: Fmt {
                delim: opts.delimiter as char,
                dec_comma: opts.delimiter == b';',
            },
            encoding: opts.encoding,
            line: String::with_capacity(512),
            key: String::with_capacity(64),
            name: String::with_capacity(128),
            slug: String::with_capacity(64),
            encoded: Vec::with_capacity(512),
            keys: KeyRing {
                slots: Vec::new(),
                next: 0,
            },
            trm: TrmState::new(),
        }
    }

    fn pick_defect(&mut self, defects: &[(Defect, &str)], index: u64) -> usize {
        let mut k = self.rng.random_range(0..defects.len() as u32) as usize;
        loop {
            let possible = match defects[k].0 {
                Defect::DuplicateKey => !self.keys.slots.is_empty(),
                Defect::OverlappingInterval => self.trm.can_overlap(),
                // The first record is the encoding detector's first evidence: keep it decodable.
                Defect::InvalidEncoding => index > 0,
                _ => true,
            };
            if possible {
                return k;
            }
            k = (k + 1) % defects.len();
        }
    }

    /// Encodes and writes the current line; `bad_at` is where to put the invalid byte.
    fn emit<W: Write>(&mut self, w: &mut W, bad_at: Option<usize>) -> Result<u64, GenerateError> {
        let line = self.line.as_str();
        match self.encoding {
            TextEncoding::Utf8 => match bad_at {
                None => {
                    w.write_all(line.as_bytes())?;
                    Ok(line.len() as u64)
                }
                Some(at) => {
                    w.write_all(&line.as_bytes()[..at])?;
                    w.write_all(&[0xFF])?;
                    w.write_all(&line.as_bytes()[at..])?;
                    Ok(line.len() as u64 + 1)
                }
            },
            TextEncoding::Windows1252 => {
                self.encoded.clear();
                match bad_at {
                    None => encode_1252(line, &mut self.encoded)?,
                    Some(at) => {
                        encode_1252(&line[..at], &mut self.encoded)?;
                        self.encoded.push(0x81);
                        encode_1252(&line[at..], &mut self.encoded)?;
                    }
                }
                w.write_all(&self.encoded)?;
                Ok(self.encoded.len() as u64)
            }
        }
    }

    fn sep(&mut self) {
        self.line.push(self.fmt.delim);
    }

    /// Appends a value picked from `table`.
    fn push_pick(&mut self, table: &[&str]) {
        let v = pick(&mut self.rng, table);
        self.line.push_str(v);
    }

    /// Writes `self.name` as a text field, or the defect that replaces it. Returns where an
    /// invalid byte goes when the defect is `InvalidEncoding`.
    fn name_field(&mut self, defect: Option<Defect>, col: Col, special: bool) -> Option<usize> {
        match defect {
            Some(Defect::Missing(c)) if c == col => {
                push_blank(&mut self.rng, &mut self.line);
                None
            }
            Some(Defect::InvalidEncoding) => {
                // Names come from the vocabulary, so the field is never quoted: the byte lands
                // inside the value, right after the first word.
                let offset = self
                    .name
                    .find(' ')
                    .unwrap_or_else(|| self.name.chars().next().map_or(0, char::len_utf8));
                let at = self.line.len() + offset;
                self.line.push_str(&self.name);
                Some(at)
            }
            Some(Defect::Ragged) if self.rng.random_range(0..3u32) == 0 => {
                // The classic broken export: a name with the delimiter, left unquoted.
                self.line.push_str(&self.name);
                self.line.push(self.fmt.delim);
                if self.fmt.delim != '\t' {
                    self.line.push(' ');
                }
                self.line.push_str(pick(&mut self.rng, SITES));
                None
            }
            _ => {
                if special {
                    add_special(&mut self.rng, &mut self.name, self.fmt.delim);
                }
                push_text(&mut self.line, &self.name, self.fmt.delim);
                None
            }
        }
    }

    /// ≈1 % of clean records get a name that needs quoting.
    fn special(&mut self, defect: Option<Defect>) -> bool {
        defect.is_none() && self.rng.random_range(0..100u32) == 0
    }

    fn city_field(&mut self, first: bool, optional_pct: u32) {
        if first {
            let c = pick_non_ascii(&mut self.rng, CITIES);
            push_text(&mut self.line, c, self.fmt.delim);
        } else if self.rng.random_range(0..100u32) >= optional_pct {
            let c = pick(&mut self.rng, CITIES);
            push_text(&mut self.line, c, self.fmt.delim);
        }
    }

    fn energy_field(&mut self, defect: Option<Defect>, tipo: usize, first: bool) {
        match defect {
            Some(Defect::Missing(Col::TipoEnergia)) => {}
            Some(Defect::InvalidEnum(Col::TipoEnergia)) => {
                let v = pick(&mut self.rng, BAD_ENERGY);
                self.line.push_str(v);
            }
            _ => {
                let spellings = ENERGY_SPELLINGS[tipo];
                let v = if first {
                    pick_non_ascii(&mut self.rng, spellings)
                } else {
                    pick(&mut self.rng, spellings)
                };
                self.line.push_str(v);
            }
        }
    }

    fn energy_type(&mut self, first: bool) -> usize {
        loop {
            let r = self.rng.random_range(0..100u32);
            let t = ENERGY_CUMULATIVE.iter().position(|&c| r < c).unwrap_or(0);
            // The first record must show an accent, so pick a type that has accented spellings.
            if !first || !ENERGY_SPELLINGS[t][0].is_ascii() {
                return t;
            }
        }
    }

    /// Leaves the key of record `index` (or of an earlier clean record) in `self.key`.
    fn numbered_key(&mut self, prefix: &str, index: u64, width: usize, defect: Option<Defect>) {
        self.key.clear();
        if defect == Some(Defect::DuplicateKey) && self.recall_key() {
            return;
        }
        self.key.push_str(prefix);
        push_padded(&mut self.key, index + 1, width);
    }

    fn recall_key(&mut self) -> bool {
        let n = self.keys.slots.len();
        if n == 0 {
            return false;
        }
        let k = self.rng.random_range(0..n as u32) as usize;
        self.key.push_str(&self.keys.slots[k]);
        true
    }

    fn ragged(&mut self, defect: Option<Defect>, last_sep: usize, header_len: usize) {
        if defect != Some(Defect::Ragged) {
            return;
        }
        // Count fields outside quotes: if the name already split the record, leave it.
        if count_fields(&self.line, self.fmt.delim) != header_len {
            return;
        }
        if self.rng.random_bool(0.5) {
            self.line.truncate(last_sep);
        } else {
            self.sep();
            let extra = pick(&mut self.rng, RAGGED_EXTRA);
            self.line.push_str(extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use encoding_rs::WINDOWS_1252;

    const ALL: [Dataset; 4] = [
        Dataset::Proveedores,
        Dataset::Clientes,
        Dataset::Transacciones,
        Dataset::Trm,
    ];

    /// The datasets whose records carry accents (all but the portal's ASCII TRM).
    const ACCENTED: [Dataset; 3] = [
        Dataset::Proveedores,
        Dataset::Clientes,
        Dataset::Transacciones,
    ];

    fn opts(dataset: Dataset, rows: u64) -> GenerateOptions {
        GenerateOptions::new(dataset, rows)
    }

    fn run(o: &GenerateOptions) -> (Vec<u8>, GenerateReport) {
        let mut out = Vec::new();
        let report = generate(o, &mut out).expect("generation succeeds");
        (out, report)
    }

    /// The bytes after a UTF-8 byte-order mark, if there is one.
    fn without_bom(bytes: &[u8]) -> &[u8] {
        bytes
            .strip_prefix(&crate::dialect::UTF8_BOM)
            .unwrap_or(bytes)
    }

    fn reader(bytes: &[u8], delim: u8) -> csv::Reader<&[u8]> {
        csv::ReaderBuilder::new()
            .delimiter(delim)
            .flexible(true)
            .from_reader(without_bom(bytes))
    }

    /// Whether a generated header is the dataset's, whatever its case.
    fn same_header(names: &[impl AsRef<str>], dataset: Dataset) -> bool {
        let head = header(dataset);
        names.len() == head.len()
            && names
                .iter()
                .zip(head)
                .all(|(n, h)| n.as_ref().eq_ignore_ascii_case(h))
    }

    fn dirty_total(r: &GenerateReport) -> u64 {
        r.dirty_by_reason.values().sum()
    }

    // ---- a reference checker of the contract, independent of the generator -----------------

    fn fold(s: &str) -> String {
        s.trim()
            .chars()
            .map(|c| match c {
                'á' | 'Á' => 'a',
                'é' | 'É' => 'e',
                'í' | 'Í' => 'i',
                'ó' | 'Ó' => 'o',
                'ú' | 'Ú' | 'ü' | 'Ü' => 'u',
                'ñ' | 'Ñ' => 'n',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    }

    fn parse_number(s: &str, dec_comma: bool) -> Option<f64> {
        let s = s.trim();
        let (dec, thousands) = if dec_comma { (',', '.') } else { ('.', ',') };
        let (int, frac) = match s.split_once(dec) {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let (neg, int) = match int.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, int),
        };
        let groups: Vec<&str> = int.split(thousands).collect();
        if groups.len() > 1 {
            let ok = !groups[0].is_empty()
                && groups[0].len() <= 3
                && groups[1..].iter().all(|g| g.len() == 3);
            if !ok {
                return None;
            }
        }
        let digits: String = groups.concat();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        let text = format!("{digits}.{}", frac.unwrap_or("0"));
        let v: f64 = text.parse().ok()?;
        Some(if neg { -v } else { v })
    }

    fn valid_ymd(y: u32, m: u32, d: u32) -> bool {
        let leap = matches!((y % 4, y % 100, y % 400), (0, 1.., _) | (_, _, 0));
        let days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        (1..=12).contains(&m) && d >= 1 && d <= days[(m - 1) as usize]
    }

    fn parse_date(s: &str, timestamp: bool) -> bool {
        let s = s.trim();
        let num = |t: &str| -> Option<u32> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        let (date, time) = match s.split_once('T') {
            Some((d, t)) if timestamp => (d, Some(t)),
            Some(_) => return false,
            None => (s, None),
        };
        let ymd = if let [y, m, d] = date.split('-').collect::<Vec<_>>()[..] {
            (y.len() == 4).then(|| (num(y), num(m), num(d)))
        } else if let [a, b, c] = date.split('/').collect::<Vec<_>>()[..] {
            if a.len() == 4 {
                Some((num(a), num(b), num(c)))
            } else if time.is_none() && c.len() == 4 {
                Some((num(c), num(b), num(a)))
            } else {
                None
            }
        } else {
            None
        };
        let Some((Some(y), Some(m), Some(d))) = ymd else {
            return false;
        };
        if !valid_ymd(y, m, d) {
            return false;
        }
        match time {
            None => true,
            Some(t) => {
                let Some(t) = t.strip_suffix('Z') else {
                    return false;
                };
                match t.split(':').map(num).collect::<Vec<_>>()[..] {
                    [Some(h), Some(mi), Some(se)] => h < 24 && mi < 60 && se < 60,
                    _ => false,
                }
            }
        }
    }

    /// Days since 1970-01-01 of a TRM date (`2025-05-10`, `2025-05-10T00:00:00.000`,
    /// `10/05/2025`), through chrono.
    fn trm_day(s: &str) -> Option<i64> {
        let s = s.trim();
        let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .or_else(|_| chrono::NaiveDate::parse_from_str(s, "%d/%m/%Y"))
            .ok()
            .or_else(|| {
                let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f").ok()?;
                (t.time() == chrono::NaiveTime::MIN).then(|| t.date())
            })?;
        Some(i64::from(crate::parse::days_since_epoch(date)))
    }

    /// What a file's accepted records have claimed so far.
    #[derive(Default)]
    struct Seen {
        keys: HashSet<String>,
        intervals: Vec<(i64, i64)>,
    }

    fn valid_email(s: &str) -> bool {
        let s = s.trim();
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        !local.is_empty()
            && !s.contains(' ')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }

    /// The reason the engine must give for a record, or None when it must accept it.
    fn check(
        dataset: Dataset,
        rec: &csv::ByteRecord,
        enc: TextEncoding,
        dec_comma: bool,
        seen: &mut Seen,
    ) -> Option<String> {
        let mut fields = Vec::new();
        for f in rec.iter() {
            let text = match enc {
                TextEncoding::Utf8 => match std::str::from_utf8(f) {
                    Ok(t) => t.to_owned(),
                    Err(_) => return Some("invalid_encoding".into()),
                },
                TextEncoding::Windows1252 => {
                    if f.contains(&0x81) {
                        return Some("invalid_encoding".into());
                    }
                    WINDOWS_1252.decode_without_bom_handling(f).0.into_owned()
                }
            };
            fields.push(text);
        }
        let head = header(dataset);
        if fields.len() != head.len() {
            return Some("ragged_row".into());
        }
        let get = |name: &str| -> &str {
            let i = head
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .expect("known column");
            fields[i].trim()
        };
        let energies = [
            "eolica",
            "hidroelectrica",
            "nuclear",
            "solar",
            "termica",
            "biomasa",
            "geotermica",
        ];
        let required: &[&str] = match dataset {
            Dataset::Proveedores => &["nombre_proveedor", "tipo_energia"],
            Dataset::Clientes => &["id_cliente", "nombre_cliente", "segmento"],
            Dataset::Transacciones => &[
                "tipo_transaccion",
                "nombre_cliente_proveedor",
                "cantidad_comprada",
                "precio",
                "tipo_energia",
            ],
            Dataset::Trm => &["valor", "unidad", "vigenciadesde", "vigenciahasta"],
        };
        for col in required {
            if get(col).is_empty() {
                return Some(format!("missing_required:{col}"));
            }
        }
        let enum_ok = |col: &str, allowed: &[&str]| {
            let v = get(col);
            v.is_empty() || allowed.contains(&fold(v).as_str())
        };
        let mut interval = None;
        let key = match dataset {
            Dataset::Proveedores => {
                if !enum_ok("tipo_energia", &energies) {
                    return Some("invalid_enum:tipo_energia".into());
                }
                let cap = get("capacidad_mw");
                if !cap.is_empty() {
                    match parse_number(cap, dec_comma) {
                        None => return Some("invalid_number:capacidad_mw".into()),
                        Some(v) if v < 0.0 => return Some("out_of_range:capacidad_mw".into()),
                        Some(_) => {}
                    }
                }
                get("nombre_proveedor").to_owned()
            }
            Dataset::Clientes => {
                if !enum_ok("segmento", &["residencial", "comercial", "industrial"]) {
                    return Some("invalid_enum:segmento".into());
                }
                if !enum_ok("tipo_identificacion", &["cc", "ce", "nit", "pa", "ti"]) {
                    return Some("invalid_enum:tipo_identificacion".into());
                }
                let email = get("email");
                if !email.is_empty() && !valid_email(email) {
                    return Some("invalid_email".into());
                }
                let fecha = get("fecha_registro");
                if !fecha.is_empty() && !parse_date(fecha, false) {
                    return Some("invalid_date:fecha_registro".into());
                }
                get("id_cliente").to_owned()
            }
            Dataset::Transacciones => {
                if !enum_ok("tipo_transaccion", &["compra", "venta"]) {
                    return Some("invalid_enum:tipo_transaccion".into());
                }
                if !enum_ok("tipo_energia", &energies) {
                    return Some("invalid_enum:tipo_energia".into());
                }
                match parse_number(get("cantidad_comprada"), dec_comma) {
                    None => return Some("invalid_number:cantidad_comprada".into()),
                    Some(v) if v <= 0.0 => return Some("out_of_range:cantidad_comprada".into()),
                    Some(_) => {}
                }
                match parse_number(get("precio"), dec_comma) {
                    None => return Some("invalid_number:precio".into()),
                    Some(v) if v < 0.0 => return Some("out_of_range:precio".into()),
                    Some(_) => {}
                }
                let fecha = get("fecha_transaccion");
                if !fecha.is_empty() && !parse_date(fecha, true) {
                    return Some("invalid_date:fecha_transaccion".into());
                }
                get("id_transaccion").to_owned()
            }
            Dataset::Trm => {
                match parse_number(get("valor"), dec_comma) {
                    None => return Some("invalid_number:valor".into()),
                    Some(v) if v <= 0.0 => return Some("out_of_range:valor".into()),
                    Some(_) => {}
                }
                if !enum_ok("unidad", &["cop"]) {
                    return Some("invalid_enum:unidad".into());
                }
                let Some(from) = trm_day(get("vigenciadesde")) else {
                    return Some("invalid_date:vigenciadesde".into());
                };
                let Some(to) = trm_day(get("vigenciahasta")) else {
                    return Some("invalid_date:vigenciahasta".into());
                };
                if from > to {
                    return Some("invalid_interval".into());
                }
                interval = Some((from, to));
                from.to_string()
            }
        };
        if seen.keys.contains(&key) {
            return Some("duplicate_key".into());
        }
        if let Some((from, to)) = interval {
            if seen.intervals.iter().any(|(f, t)| *f <= to && from <= *t) {
                return Some("overlapping_interval".into());
            }
            seen.intervals.push((from, to));
        }
        seen.keys.insert(key);
        None
    }

    /// Runs the reference checker over a generated file and returns what it expects.
    fn expected(o: &GenerateOptions, bytes: &[u8]) -> GenerateReport {
        let mut rdr = reader(bytes, o.delimiter);
        let head = rdr.byte_headers().expect("header").clone();
        let names: Vec<&str> = head
            .iter()
            .map(|h| std::str::from_utf8(h).expect("ascii header"))
            .collect();
        assert!(same_header(&names, o.dataset), "{names:?}");
        let mut seen = Seen::default();
        let mut report = GenerateReport {
            bytes: bytes.len() as u64,
            ..Default::default()
        };
        for rec in rdr.byte_records() {
            let rec = rec.expect("parsable record");
            report.rows += 1;
            let dec_comma = o.delimiter == b';';
            match check(o.dataset, &rec, o.encoding, dec_comma, &mut seen) {
                None => report.clean += 1,
                Some(reason) => *report.dirty_by_reason.entry(reason).or_default() += 1,
            }
        }
        report
    }

    #[test]
    fn same_seed_same_bytes_and_other_seed_other_bytes() {
        for ds in ALL {
            let mut o = opts(ds, 2_000);
            o.dirty_pct = 10.0;
            let (a, ra) = run(&o);
            let (b, rb) = run(&o);
            assert_eq!(a, b);
            assert_eq!(ra, rb);
            o.seed = 43;
            let (c, _) = run(&o);
            assert_ne!(a, c);
        }
    }

    #[test]
    fn writes_the_requested_rows_with_the_dataset_header() {
        for ds in ALL {
            for delim in [b',', b';', b'|', b'\t'] {
                let mut o = opts(ds, 1_500);
                o.delimiter = delim;
                let (bytes, report) = run(&o);
                assert_eq!(report.rows, 1_500);
                assert_eq!(report.bytes, bytes.len() as u64);
                let mut rdr = csv::ReaderBuilder::new()
                    .delimiter(delim)
                    .from_reader(without_bom(&bytes));
                let head: Vec<String> = rdr
                    .headers()
                    .expect("header")
                    .iter()
                    .map(str::to_owned)
                    .collect();
                assert!(same_header(&head, ds), "{head:?}");
                // not flexible: a clean file has no ragged records
                let mut n = 0;
                for rec in rdr.records() {
                    rec.expect("valid record");
                    n += 1;
                }
                assert_eq!(n, 1_500, "{} {}", ds.name(), delim as char);
            }
        }
    }

    #[test]
    fn report_adds_up_and_matches_an_independent_check() {
        for ds in ALL {
            for (enc, delim) in [
                (TextEncoding::Utf8, b','),
                (TextEncoding::Windows1252, b';'),
                (TextEncoding::Utf8, b'\t'),
            ] {
                let mut o = opts(ds, 5_000);
                o.dirty_pct = 20.0;
                o.encoding = enc;
                o.delimiter = delim;
                o.seed = 7;
                let (bytes, report) = run(&o);
                assert_eq!(report.clean + dirty_total(&report), report.rows);
                assert_eq!(dirty_total(&report), 1_000);
                assert_eq!(expected(&o, &bytes), report, "{} {enc:?}", ds.name());
                // every reason of the dataset shows up in a file this size
                assert_eq!(report.dirty_by_reason.len(), defects_for(ds).len());
            }
        }
    }

    #[test]
    fn all_dirty_still_has_exactly_one_defect_per_record() {
        for ds in ALL {
            let mut o = opts(ds, 300);
            o.dirty_pct = 100.0;
            let (bytes, report) = run(&o);
            assert_eq!(report.clean, 0);
            assert_eq!(dirty_total(&report), 300);
            // with no clean record there is nothing to duplicate
            assert!(!report.dirty_by_reason.contains_key("duplicate_key"));
            assert_eq!(expected(&o, &bytes), report);
        }
    }

    #[test]
    fn zero_dirty_means_no_defects() {
        for ds in ALL {
            for enc in [TextEncoding::Utf8, TextEncoding::Windows1252] {
                let mut o = opts(ds, 3_000);
                o.encoding = enc;
                let (bytes, report) = run(&o);
                assert_eq!(report.clean, 3_000);
                assert!(report.dirty_by_reason.is_empty());
                assert_eq!(expected(&o, &bytes), report);
            }
        }
    }

    #[test]
    fn first_record_has_a_non_ascii_character() {
        for ds in ACCENTED {
            for seed in 0..20 {
                for pct in [0.0, 100.0] {
                    let mut o = opts(ds, 1);
                    o.seed = seed;
                    o.dirty_pct = pct;
                    let (bytes, _) = run(&o);
                    let body = bytes
                        .splitn(2, |b| *b == b'\n')
                        .nth(1)
                        .expect("a record after the header");
                    let text = std::str::from_utf8(body).expect("first record is valid UTF-8");
                    assert!(!text.is_ascii(), "{} seed {seed}: {text}", ds.name());
                }
            }
        }
    }

    #[test]
    fn windows_1252_output_is_single_byte_with_crlf() {
        for ds in ACCENTED {
            let mut o = opts(ds, 3_000);
            o.encoding = TextEncoding::Windows1252;
            let (bytes, _) = run(&o);
            assert!(std::str::from_utf8(&bytes).is_err(), "must not be UTF-8");
            // no UTF-8 multi-byte sequence: lead byte followed by a continuation byte
            let multibyte = bytes
                .windows(2)
                .any(|w| (0xC2..=0xF4).contains(&w[0]) && (0x80..=0xBF).contains(&w[1]));
            assert!(!multibyte);
            let (text, had_errors) = WINDOWS_1252.decode_without_bom_handling(&bytes);
            assert!(!had_errors);
            assert!(text.contains('é') || text.contains('á') || text.contains('ñ'));
            // every record terminator is CRLF (in-cell breaks are bare LF inside quotes)
            let mut rdr = reader(&bytes, b',');
            let quoted_breaks: usize = rdr
                .byte_records()
                .map(|r| {
                    r.expect("record")
                        .iter()
                        .map(|f| f.iter().filter(|b| **b == b'\n').count())
                        .sum::<usize>()
                })
                .sum();
            let lf = bytes.iter().filter(|b| **b == b'\n').count();
            let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
            assert_eq!(crlf, 3_001);
            assert_eq!(lf, crlf + quoted_breaks);
        }
    }

    #[test]
    fn utf8_output_uses_lf() {
        let (bytes, _) = run(&opts(Dataset::Clientes, 500));
        assert!(!bytes.contains(&b'\r'));
        assert!(std::str::from_utf8(&bytes).is_ok());
    }

    #[test]
    fn invalid_encoding_bytes_match_the_encoding() {
        for (enc, bad) in [
            (TextEncoding::Utf8, 0xFF),
            (TextEncoding::Windows1252, 0x81),
        ] {
            let mut o = opts(Dataset::Transacciones, 2_000);
            o.encoding = enc;
            o.dirty_pct = 50.0;
            let (bytes, report) = run(&o);
            let n = bytes.iter().filter(|b| **b == bad).count() as u64;
            assert!(n > 0);
            assert_eq!(Some(&n), report.dirty_by_reason.get("invalid_encoding"));
        }
    }

    #[test]
    fn semicolon_files_use_decimal_comma() {
        let mut o = opts(Dataset::Transacciones, 2_000);
        o.delimiter = b';';
        let (bytes, _) = run(&o);
        let mut rdr = reader(&bytes, b';');
        let (mut comma, mut grouped) = (0, 0);
        for rec in rdr.records() {
            let rec = rec.expect("record");
            for col in [4, 5] {
                let v = &rec[col];
                if let Some(dot) = v.find('.') {
                    // a dot is only ever a thousands separator: a decimal comma follows
                    assert!(v[dot..].contains(','), "{v}");
                    grouped += 1;
                }
                comma += usize::from(v.contains(','));
                assert!(parse_number(v, true).is_some_and(|x| x > 0.0), "{v}");
            }
        }
        assert!(comma > 1_000);
        assert!(grouped > 0);
    }

    #[test]
    fn comma_files_use_decimal_point_and_quote_grouped_numbers() {
        let (bytes, _) = run(&opts(Dataset::Transacciones, 2_000));
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let mut rdr = reader(&bytes, b',');
        let mut grouped = 0;
        for rec in rdr.records() {
            let rec = rec.expect("record");
            assert_eq!(rec.len(), 7);
            for col in [4, 5] {
                let v = &rec[col];
                if v.contains(',') {
                    grouped += 1;
                    assert!(text.contains(&format!("\"{v}\"")));
                }
                assert!(parse_number(v, false).is_some_and(|x| x > 0.0), "{v}");
            }
        }
        assert!(grouped > 0);
    }

    #[test]
    fn some_clean_values_need_quoting() {
        let mut o = opts(Dataset::Clientes, 5_000);
        o.delimiter = b';';
        let (bytes, _) = run(&o);
        let mut rdr = reader(&bytes, b';');
        let (mut delim, mut quote, mut newline) = (0, 0, 0);
        for rec in rdr.records() {
            let rec = rec.expect("record");
            let name = &rec[1];
            delim += usize::from(name.contains(';'));
            quote += usize::from(name.contains('"'));
            newline += usize::from(name.contains('\n'));
        }
        assert!(delim > 0 && quote > 0 && newline > 0);
    }

    #[test]
    fn keys_look_as_documented_and_are_unique_when_clean() {
        for ds in ALL {
            let (bytes, _) = run(&opts(ds, 3_000));
            let mut rdr = reader(&bytes, b',');
            let mut keys = HashSet::new();
            for rec in rdr.records() {
                let rec = rec.expect("record");
                let key = match ds {
                    Dataset::Trm => trm_day(&rec[2]).expect("vigenciadesde").to_string(),
                    _ => rec[0].to_owned(),
                };
                match ds {
                    Dataset::Clientes => assert!(key.starts_with("CL-") && key.len() == 10),
                    Dataset::Transacciones => assert!(key.starts_with("TX-") && key.len() == 11),
                    Dataset::Proveedores | Dataset::Trm => assert!(!key.is_empty()),
                }
                assert!(keys.insert(fold(&key)), "{key}");
            }
        }
    }

    #[test]
    fn values_are_realistic() {
        let (bytes, _) = run(&opts(Dataset::Transacciones, 3_000));
        let mut rdr = reader(&bytes, b',');
        for rec in rdr.records() {
            let rec = rec.expect("record");
            let qty = parse_number(&rec[4], false).expect("cantidad");
            let price = parse_number(&rec[5], false).expect("precio");
            assert!((1.0..=500_000.0).contains(&qty), "{qty}");
            assert!((150.0..=1_200.0).contains(&price), "{price}");
            for col in [4, 5] {
                let decimals = rec[col].split_once('.').map_or(0, |(_, f)| f.len());
                assert!(decimals <= if col == 4 { 3 } else { 4 });
            }
            let fecha = &rec[1];
            if !fecha.is_empty() {
                let year: String = if fecha.as_bytes()[2] == b'/' {
                    fecha[6..10].to_owned()
                } else {
                    fecha[..4].to_owned()
                };
                assert!(("2023"..="2026").contains(&year.as_str()), "{fecha}");
            }
        }
    }

    /// The clean TRM records of a file, as (valor, desde, hasta) in hundredths and days.
    fn trm_rows(bytes: &[u8], delim: u8) -> Vec<(f64, i64, i64)> {
        let mut rdr = reader(bytes, delim);
        rdr.records()
            .map(|rec| {
                let rec = rec.expect("record");
                let valor = parse_number(&rec[0], delim == b';').expect("valor");
                let from = trm_day(&rec[2]).expect("vigenciadesde");
                let to = trm_day(&rec[3]).expect("vigenciahasta");
                (valor, from, to)
            })
            .collect()
    }

    #[test]
    fn trm_rates_tile_the_calendar_from_business_day_to_business_day() {
        // GIVEN a clean file of three years of rates
        let (bytes, report) = run(&opts(Dataset::Trm, 760));
        let rows = trm_rows(&bytes, b',');
        assert_eq!(report.clean, 760);
        // THEN the first is the rate of 2024-12-31, in force over New Year's Day
        let day = |y, m, d| {
            crate::parse::days_since_epoch(chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date"))
                as i64
        };
        assert_eq!((rows[0].1, rows[0].2), (day(2025, 1, 1), day(2025, 1, 2)));
        // AND each starts the day after the previous ends, and ends on a business day
        for pair in rows.windows(2) {
            assert_eq!(pair[1].1, pair[0].2 + 1);
        }
        for (_, from, to) in &rows {
            assert!(from <= to);
            assert!(trm::is_business_day(*to));
            assert!((*from..*to).all(|d| !trm::is_business_day(d)));
        }
        // AND Easter week 2025 (Thursday and Friday off): Wednesday's rate runs to Monday
        let easter = rows
            .iter()
            .find(|r| r.1 == day(2025, 4, 17))
            .expect("the rate in force on Holy Thursday");
        assert_eq!(easter.2, day(2025, 4, 21));
    }

    #[test]
    fn trm_values_walk_within_the_band_with_two_decimals() {
        for (seed, delim) in [(1, b','), (2, b';'), (3, b'|')] {
            let mut o = opts(Dataset::Trm, 2_000);
            o.seed = seed;
            o.delimiter = delim;
            let (bytes, _) = run(&o);
            let rows = trm_rows(&bytes, delim);
            for (v, _, _) in &rows {
                assert!((3_900.0..=4_300.0).contains(v), "{v}");
            }
            for pair in rows.windows(2) {
                assert!((pair[1].0 - pair[0].0).abs() <= 30.0 + 1e-9);
            }
            let mut rdr = reader(&bytes, delim);
            for rec in rdr.records() {
                let rec = rec.expect("record");
                let dec = if delim == b';' { ',' } else { '.' };
                let decimals = rec[0].rsplit_once(dec).map_or(0, |(_, f)| f.len());
                assert_eq!(decimals, 2, "{}", &rec[0]);
            }
        }
    }

    #[test]
    fn trm_files_vary_their_dialect_with_the_seed() {
        let (mut bom, mut cases, mut forms) = (0, HashSet::new(), HashSet::new());
        for seed in 0..24 {
            let mut o = opts(Dataset::Trm, 50);
            o.seed = seed;
            let (bytes, _) = run(&o);
            bom += usize::from(bytes.starts_with(&crate::dialect::UTF8_BOM));
            let text = std::str::from_utf8(without_bom(&bytes)).expect("utf-8");
            let head = text.lines().next().unwrap_or_default();
            cases.insert(head.to_owned());
            for line in text.lines().skip(1) {
                let desde = line.split(',').nth(2).unwrap_or_default();
                forms.insert(match (desde.len(), desde.as_bytes().get(2)) {
                    (23, _) => "midnight",
                    (10, Some(b'/')) => "day first",
                    _ => "iso",
                });
            }
        }
        assert!(bom > 0 && bom < 24, "{bom}");
        assert_eq!(cases.len(), 3, "{cases:?}");
        assert_eq!(forms.len(), 3, "{forms:?}");
        // Windows-1252 files never get a UTF-8 mark.
        let mut o = opts(Dataset::Trm, 10);
        o.encoding = TextEncoding::Windows1252;
        for seed in 0..8 {
            o.seed = seed;
            assert!(!run(&o).0.starts_with(&crate::dialect::UTF8_BOM));
        }
    }

    #[test]
    fn trm_row_count_is_bounded_by_the_calendar() {
        let o = opts(Dataset::Trm, TRM_MAX_ROWS + 1);
        assert!(matches!(
            generate(&o, Vec::new()),
            Err(GenerateError::InvalidOption(_))
        ));
    }

    #[test]
    fn rejects_bad_options() {
        let mut o = opts(Dataset::Clientes, 10);
        o.dirty_pct = 101.0;
        assert!(matches!(
            generate(&o, Vec::new()),
            Err(GenerateError::InvalidOption(_))
        ));
        o.dirty_pct = f64::NAN;
        assert!(matches!(
            generate(&o, Vec::new()),
            Err(GenerateError::InvalidOption(_))
        ));
        o.dirty_pct = 0.0;
        o.delimiter = b'x';
        assert!(matches!(
            generate(&o, Vec::new()),
            Err(GenerateError::InvalidOption(_))
        ));
    }

    #[test]
    fn zero_rows_writes_only_the_header() {
        let (bytes, report) = run(&opts(Dataset::Proveedores, 0));
        assert_eq!(
            bytes,
            b"nombre_proveedor,tipo_energia,id_proveedor,capacidad_mw,ciudad\n"
        );
        assert_eq!(report.rows, 0);
        assert_eq!(report.clean, 0);
    }

    #[test]
    fn vocabulary_is_windows_1252_and_never_needs_quoting() {
        let tables: &[&[&str]] = &[
            FEMALE_NAMES,
            MALE_NAMES,
            SURNAMES,
            CITIES,
            PLACES,
            LEGAL_PROVIDER,
            BUSINESS_KINDS,
            BUSINESS_NAMES,
            LEGAL_BUSINESS,
            BAD_ENERGY,
            BAD_SEGMENT,
            BAD_TRADE_KIND,
            BAD_NUMBER_WORDS,
            SITES,
            NICKNAMES,
            CURRENCY_SPELLINGS,
            BAD_CURRENCY,
        ];
        let spellings = ENERGY_SPELLINGS.iter().chain(PLANT_PREFIXES.iter());
        for v in tables.iter().chain(spellings).flat_map(|t| t.iter()) {
            let (_, _, unmappable) = WINDOWS_1252.encode(v);
            assert!(!unmappable, "{v}");
            // `Bogotá, D.C.` is the one value allowed a comma: it is quoted in comma files.
            let delims = if *v == "Bogotá, D.C." {
                ";|\t\"\n\r"
            } else {
                ",;|\t\"\n\r"
            };
            assert!(!v.contains(|c| delims.contains(c)), "{v:?}");
        }
    }

    #[test]
    fn text_encoding_parses_cli_spellings() {
        assert_eq!(
            "utf-8".parse::<TextEncoding>().ok(),
            Some(TextEncoding::Utf8)
        );
        assert_eq!(
            "Windows-1252".parse::<TextEncoding>().ok(),
            Some(TextEncoding::Windows1252)
        );
        assert!("ebcdic".parse::<TextEncoding>().is_err());
    }
}
