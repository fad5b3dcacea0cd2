//! Deterministic synthetic CSV generator for the `clientes`, `proveedores` and `transacciones`
//! datasets.
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
//!   from the start (and never sees an `invalid_encoding` byte first).

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};

use encoding_rs::{EncoderResult, WINDOWS_1252};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::contract::Dataset;

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

    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut g = Gen::new(opts);
    let defects = defects_for(opts.dataset);
    let mut counts = vec![0u64; defects.len()];
    let eol = match opts.encoding {
        TextEncoding::Utf8 => "\n",
        TextEncoding::Windows1252 => "\r\n",
    };

    let mut bytes = 0u64;
    for (i, col) in header(opts.dataset).iter().enumerate() {
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

const PROVEEDORES_HEADER: &[&str] = &[
    "nombre_proveedor",
    "tipo_energia",
    "id_proveedor",
    "capacidad_mw",
    "ciudad",
];
const CLIENTES_HEADER: &[&str] = &[
    "id_cliente",
    "nombre_cliente",
    "segmento",
    "tipo_identificacion",
    "numero_identificacion",
    "email",
    "ciudad",
    "fecha_registro",
];
const TRANSACCIONES_HEADER: &[&str] = &[
    "id_transaccion",
    "fecha_transaccion",
    "tipo_transaccion",
    "nombre_cliente_proveedor",
    "cantidad_comprada",
    "precio",
    "tipo_energia",
];

fn header(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Proveedores => PROVEEDORES_HEADER,
        Dataset::Clientes => CLIENTES_HEADER,
        Dataset::Transacciones => TRANSACCIONES_HEADER,
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
}

const PROVEEDORES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::NombreProveedor),
        "missing_required:nombre_proveedor",
    ),
    (
        Defect::Missing(Col::TipoEnergia),
        "missing_required:tipo_energia",
    ),
    (
        Defect::InvalidNumber(Col::CapacidadMw),
        "invalid_number:capacidad_mw",
    ),
    (
        Defect::OutOfRange(Col::CapacidadMw),
        "out_of_range:capacidad_mw",
    ),
    (
        Defect::InvalidEnum(Col::TipoEnergia),
        "invalid_enum:tipo_energia",
    ),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

const CLIENTES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::IdCliente),
        "missing_required:id_cliente",
    ),
    (
        Defect::Missing(Col::NombreCliente),
        "missing_required:nombre_cliente",
    ),
    (Defect::Missing(Col::Segmento), "missing_required:segmento"),
    (Defect::InvalidEnum(Col::Segmento), "invalid_enum:segmento"),
    (
        Defect::InvalidEnum(Col::TipoIdentificacion),
        "invalid_enum:tipo_identificacion",
    ),
    (
        Defect::InvalidDate(Col::FechaRegistro),
        "invalid_date:fecha_registro",
    ),
    (Defect::InvalidEmail, "invalid_email"),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

const TRANSACCIONES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::TipoTransaccion),
        "missing_required:tipo_transaccion",
    ),
    (
        Defect::Missing(Col::Contraparte),
        "missing_required:nombre_cliente_proveedor",
    ),
    (
        Defect::Missing(Col::Cantidad),
        "missing_required:cantidad_comprada",
    ),
    (Defect::Missing(Col::Precio), "missing_required:precio"),
    (
        Defect::Missing(Col::TipoEnergia),
        "missing_required:tipo_energia",
    ),
    (
        Defect::InvalidNumber(Col::Cantidad),
        "invalid_number:cantidad_comprada",
    ),
    (Defect::InvalidNumber(Col::Precio), "invalid_number:precio"),
    (
        Defect::OutOfRange(Col::Cantidad),
        "out_of_range:cantidad_comprada",
    ),
    (Defect::OutOfRange(Col::Precio), "out_of_range:precio"),
    (
        Defect::InvalidEnum(Col::TipoTransaccion),
        "invalid_enum:tipo_transaccion",
    ),
    (
        Defect::InvalidEnum(Col::TipoEnergia),
        "invalid_enum:tipo_energia",
    ),
    (
        Defect::InvalidDate(Col::FechaTransaccion),
        "invalid_date:fecha_transaccion",
    ),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

fn defects_for(dataset: Dataset) -> &'static [(Defect, &'static str)] {
    match dataset {
        Dataset::Proveedores => PROVEEDORES_DEFECTS,
        Dataset::Clientes => CLIENTES_DEFECTS,
        Dataset::Transacciones => TRANSACCIONES_DEFECTS,
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary. Every string must be representable in Windows-1252 and must not contain a
// delimiter, quote or line break (quoting cases are produced on purpose, see `SPECIAL_*`).
// ---------------------------------------------------------------------------------------------

const FEMALE_NAMES: &[&str] = &[
    "María",
    "Ana",
    "Sofía",
    "Valentina",
    "Daniela",
    "Lucía",
    "Ángela",
    "Mónica",
    "Verónica",
    "Natalia",
    "Diana",
    "Paola",
    "Isabella",
    "Mariana",
    "Gabriela",
    "Leidy",
    "Inés",
    "Beatriz",
    "Gloria",
    "Luz Marina",
    "Ximena",
    "Catalina",
    "Yesenia",
    "Nelly",
    "Luz Dary",
    "María José",
    "Ana María",
    "Marcela",
];

const MALE_NAMES: &[&str] = &[
    "José",
    "Juan",
    "Luis",
    "Carlos",
    "Andrés",
    "Julián",
    "Camilo",
    "Sebastián",
    "Nicolás",
    "Ramón",
    "Martín",
    "Tomás",
    "Simón",
    "Jesús",
    "Alejandro",
    "Felipe",
    "Santiago",
    "Mateo",
    "Óscar",
    "Héctor",
    "Rubén",
    "Germán",
    "Fabián",
    "Iván",
    "Efraín",
    "Jhon",
    "Wílmer",
    "Édgar",
    "Esteban",
    "Jorge",
    "Hernán",
    "Álvaro",
    "Róbinson",
    "Miguel Ángel",
    "Juan David",
    "Jhon Jairo",
];

const SURNAMES: &[&str] = &[
    "Muñoz",
    "Peña",
    "Núñez",
    "Gómez",
    "Rodríguez",
    "Martínez",
    "García",
    "López",
    "González",
    "Hernández",
    "Pérez",
    "Sánchez",
    "Ramírez",
    "Torres",
    "Díaz",
    "Vargas",
    "Rojas",
    "Castro",
    "Jiménez",
    "Moreno",
    "Gutiérrez",
    "Ortiz",
    "Suárez",
    "Restrepo",
    "Ospina",
    "Cardona",
    "Zapata",
    "Giraldo",
    "Álvarez",
    "Quintero",
    "Córdoba",
    "Mejía",
    "Londoño",
    "Valencia",
    "Castaño",
    "Agudelo",
    "Arango",
    "Bermúdez",
    "Patiño",
    "Ibáñez",
    "Ordóñez",
    "Benítez",
    "Durán",
    "Cárdenas",
    "Beltrán",
    "Ríos",
    "Acosta",
    "Salazar",
    "Ocampo",
    "Montoya",
    "Echeverri",
    "Galeano",
    "Mosquera",
    "Palacios",
    "Buitrago",
    "Cuéllar",
];

const CITIES: &[&str] = &[
    "Bogotá",
    "Bogotá",
    "Bogotá D.C.",
    "Bogotá, D.C.",
    "BOGOTÁ",
    "Medellín",
    "Medellín",
    "MEDELLÍN",
    "Cali",
    "Santiago de Cali",
    "Barranquilla",
    "Cartagena",
    "Cartagena de Indias",
    "Cúcuta",
    "Bucaramanga",
    "Ibagué",
    "Montería",
    "Popayán",
    "Pereira",
    "Manizales",
    "Santa Marta",
    "Villavicencio",
    "Pasto",
    "Neiva",
    "Armenia",
    "Valledupar",
    "Sincelejo",
    "Tunja",
    "Riohacha",
    "Florencia",
    "Quibdó",
    "Yopal",
    "Leticia",
    "San Andrés",
    "Soacha",
    "Bello",
    "Itagüí",
    "Envigado",
    "Palmira",
    "Buenaventura",
    "Tuluá",
    "Sogamoso",
    "Duitama",
    "Girardot",
    "Zipaquirá",
    "Chía",
    "Facatativá",
    "Apartadó",
    "Rionegro",
    "Barrancabermeja",
    "Fusagasugá",
    "Ciénaga",
    "Maicao",
    "Uribia",
];

/// Canonical tipo_energia values (index = `ENERGY_SPELLINGS` row).
const ENERGY_SPELLINGS: &[&[&str]] = &[
    &["Eólica", "eólica", "EÓLICA", "eolica", "Eolica", "EOLICA"],
    &[
        "Hidroeléctrica",
        "hidroeléctrica",
        "HIDROELÉCTRICA",
        "hidroelectrica",
        "Hidroelectrica",
        "HIDROELECTRICA",
    ],
    &["Nuclear", "nuclear", "NUCLEAR"],
    &["Solar", "solar", "SOLAR"],
    &[
        "Térmica", "térmica", "TÉRMICA", "termica", "Termica", "TERMICA",
    ],
    &["Biomasa", "biomasa", "BIOMASA"],
    &[
        "Geotérmica",
        "geotérmica",
        "GEOTÉRMICA",
        "geotermica",
        "Geotermica",
    ],
];
/// Cumulative weights (out of 100) of the energy types above: hydro-heavy, like the Colombian grid.
const ENERGY_CUMULATIVE: [u32; 7] = [12, 42, 44, 69, 87, 95, 100];

/// Plant-name prefixes per energy type (same order as `ENERGY_SPELLINGS`).
const PLANT_PREFIXES: &[&[&str]] = &[
    &["Parque Eólico", "Vientos", "Eólica", "Energía Eólica"],
    &[
        "Hidroeléctrica",
        "Central Hidroeléctrica",
        "Generadora Hídrica",
        "Hidroenergía",
    ],
    &["Nucleoeléctrica", "Energía Nuclear"],
    &["Granja Solar", "Energía Solar", "Solar", "Parque Solar"],
    &["Termoeléctrica", "Térmica", "Termo", "Generación Térmica"],
    &["Bioenergía", "Biomasa", "Ingenio", "Bioeléctrica"],
    &["Geotérmica", "Energía Geotérmica", "Geoenergía"],
];

const PLACES: &[&str] = &[
    "del Caribe",
    "del Valle",
    "de la Sabana",
    "del Magdalena",
    "del Sinú",
    "de Urabá",
    "del Cauca",
    "de los Andes",
    "del Pacífico",
    "de Oriente",
    "del Llano",
    "de La Guajira",
    "de Santander",
    "del Huila",
    "de Boyacá",
    "de Nariño",
    "del Tolima",
    "de Antioquia",
    "Sogamoso",
    "Ituango",
    "Chivor",
    "Betania",
    "Urrá",
    "Porce",
    "Guavio",
    "Tasajera",
    "Jepírachi",
    "El Paso",
    "Montelíbano",
    "Paipa",
];

const LEGAL_PROVIDER: &[&str] = &["S.A.S. E.S.P.", "S.A. E.S.P.", "E.S.P.", "S.A.S.", "S.A."];

const BUSINESS_KINDS: &[&str] = &[
    "Panadería",
    "Supermercado",
    "Ferretería",
    "Droguería",
    "Hotel",
    "Restaurante",
    "Textiles",
    "Cementos",
    "Lácteos",
    "Metalúrgica",
    "Plásticos",
    "Confecciones",
    "Clínica",
    "Colegio",
    "Inversiones",
    "Distribuidora",
    "Comercializadora",
    "Industrias",
    "Alimentos",
    "Papelería",
    "Cafetería",
    "Constructora",
    "Transportes",
    "Avícola",
    "Cerámicas",
    "Floristería",
    "Frigorífico",
    "Tostadora de Café",
];

const BUSINESS_NAMES: &[&str] = &[
    "La Esperanza",
    "El Porvenir",
    "Santa Lucía",
    "San José",
    "La Montaña",
    "Los Andes",
    "El Dorado",
    "La Sabana",
    "Andina",
    "del Caribe",
    "La Única",
    "El Triunfo",
    "La Estrella",
    "San Martín",
    "Nueva Granada",
    "El Cafetal",
    "La Candelaria",
    "Los Almendros",
    "Monserrate",
    "El Peñón",
];

const LEGAL_BUSINESS: &[&str] = &["S.A.S.", "S.A.S.", "Ltda.", "S.A.", "& Cía. S. en C.", ""];

const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "hotmail.com",
    "outlook.com",
    "yahoo.com",
    "yahoo.es",
    "hotmail.es",
    "une.net.co",
    "etb.net.co",
    "live.com",
];
const EMAIL_ROLES: &[&str] = &["contacto", "facturacion", "gerencia", "compras", "info"];

const SEGMENTS: &[&[&str]] = &[
    &["residencial", "Residencial", "RESIDENCIAL"],
    &["comercial", "Comercial", "COMERCIAL"],
    &["industrial", "Industrial", "INDUSTRIAL"],
];
const TRADE_KINDS: &[&str] = &["compra", "Compra", "COMPRA", "venta", "Venta", "VENTA"];

const BAD_ENERGY: &[&str] = &["carbón", "diésel", "mareomotriz", "petróleo", "gas natural"];
const BAD_SEGMENT: &[&str] = &["gobierno", "oficial", "mixto", "otro"];
const BAD_ID_TYPE: &[&str] = &["XX", "RC", "DNI", "NN"];
const BAD_TRADE_KIND: &[&str] = &["alquiler", "permuta", "devolución", "préstamo"];
const BAD_NUMBER_WORDS: &[&str] = &["abc", "#¡VALOR!", "cien", "doce"];
const SITES: &[&str] = &["Sede Norte", "Sede Sur", "Sede Centro", "Planta Principal"];
const NICKNAMES: &[&str] = &["La Principal", "Don Pepe", "La Esquina", "El Paisa"];
const RAGGED_EXTRA: &[&str] = &["", "observación", "pendiente", "revisar"];

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
        }
    }

    fn pick_defect(&mut self, defects: &[(Defect, &str)], index: u64) -> usize {
        let mut k = self.rng.random_range(0..defects.len() as u32) as usize;
        loop {
            let possible = match defects[k].0 {
                Defect::DuplicateKey => !self.keys.slots.is_empty(),
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

    // ---- proveedores ------------------------------------------------------------------------

    fn proveedor(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        let tipo = self.energy_type(first);

        self.key.clear();
        if defect == Some(Defect::DuplicateKey) && self.recall_key() {
            self.name.clear();
            self.name.push_str(&self.key);
        } else {
            self.name.clear();
            let prefix = pick(&mut self.rng, PLANT_PREFIXES[tipo]);
            self.name.push_str(prefix);
            self.name.push(' ');
            let place = if first {
                pick_non_ascii(&mut self.rng, PLACES)
            } else {
                pick(&mut self.rng, PLACES)
            };
            self.name.push_str(place);
            self.name.push(' ');
            let legal = pick(&mut self.rng, LEGAL_PROVIDER);
            self.name.push_str(legal);
            self.name.push(' ');
            // The number makes clean keys unique even after case/accent folding.
            push_padded(&mut self.name, index + 1, 6);
            if special {
                add_special(&mut self.rng, &mut self.name, self.fmt.delim);
            }
            self.key.push_str(&self.name);
        }
        let bad_at = self.name_field(defect, Col::NombreProveedor, false);
        self.sep();
        self.energy_field(defect, tipo, first);
        self.sep();
        match self.rng.random_range(0..100u32) {
            0..=69 => {
                let nit = self.nit_base();
                push_nit(&mut self.line, nit, self.rng.random_bool(0.3));
            }
            70..=94 => {
                self.line.push_str("PRV-");
                push_padded(&mut self.line, index + 1, 6);
            }
            _ => {}
        }
        self.sep();
        match defect {
            Some(Defect::InvalidNumber(Col::CapacidadMw)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::CapacidadMw)) => {
                let (m, d) = self.capacity();
                push_decimal(&mut self.line, self.fmt, true, m.max(1), d, false);
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 5 {
                    let (m, d) = self.capacity();
                    let group = self.rng.random_range(0..20u32) == 0;
                    push_decimal(&mut self.line, self.fmt, false, m, d, group);
                }
            }
        }
        let last_sep = self.line.len();
        self.sep();
        self.city_field(first, 3);
        self.ragged(defect, last_sep, PROVEEDORES_HEADER.len());
        bad_at
    }

    /// MW, 0.5..=1500 with up to 2 decimals: mostly small plants, a few large dams.
    fn capacity(&mut self) -> (u64, u32) {
        // Bands in hundredths of MW; integer-only so the bytes never depend on the platform's libm.
        const BANDS: [(u64, u64); 4] = [
            (50, 2_000),
            (2_000, 10_000),
            (10_000, 50_000),
            (50_000, 150_000),
        ];
        let (lo, hi) = BANDS[self.rng.random_range(0..BANDS.len() as u32) as usize];
        let hundredths = self.rng.random_range(lo..=hi);
        let d = self.rng.random_range(0..3u32);
        (hundredths / POW10[2 - d as usize], d)
    }

    // ---- clientes ---------------------------------------------------------------------------

    fn cliente(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        self.numbered_key("CL-", index, 7, defect);
        if defect == Some(Defect::Missing(Col::IdCliente)) {
            push_blank(&mut self.rng, &mut self.line);
        } else {
            self.line.push_str(&self.key);
        }
        self.sep();

        let segment = match self.rng.random_range(0..100u32) {
            0..=59 => 0,
            60..=87 => 1,
            _ => 2,
        };
        let person = segment == 0;
        if person {
            self.person_name(first);
        } else {
            self.business_name(first);
        }
        let bad_at = self.name_field(defect, Col::NombreCliente, special);
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Segmento)) => {}
            Some(Defect::InvalidEnum(Col::Segmento)) => {
                let v = pick(&mut self.rng, BAD_SEGMENT);
                self.line.push_str(v);
            }
            _ => {
                let v = pick(&mut self.rng, SEGMENTS[segment]);
                self.line.push_str(v);
            }
        }
        self.sep();

        // tipo_identificacion and numero_identificacion
        let id_type = if person {
            match self.rng.random_range(0..100u32) {
                0..=84 => "CC",
                85..=92 => "CE",
                93..=96 => "PA",
                _ => "TI",
            }
        } else {
            "NIT"
        };
        match defect {
            Some(Defect::InvalidEnum(Col::TipoIdentificacion)) => {
                let v = pick(&mut self.rng, BAD_ID_TYPE);
                self.line.push_str(v);
            }
            _ => match self.rng.random_range(0..100u32) {
                0..=4 => {}
                5..=12 => self.line.push_str(&id_type.to_ascii_lowercase()),
                _ => self.line.push_str(id_type),
            },
        }
        self.sep();
        self.id_number(id_type);
        self.sep();

        // email: derived from the name, so it looks like the person's or the company's
        match defect {
            Some(Defect::InvalidEmail) => self.email(person, true),
            _ => {
                if self.rng.random_range(0..100u32) >= 8 {
                    self.email(person, false);
                }
            }
        }
        self.sep();
        self.city_field(first, 3);
        let last_sep = self.line.len();
        self.sep();
        match defect {
            Some(Defect::InvalidDate(Col::FechaRegistro)) => {
                push_bad_date(&mut self.rng, &mut self.line, false)
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 4 {
                    push_date(&mut self.rng, &mut self.line, false);
                }
            }
        }
        self.ragged(defect, last_sep, CLIENTES_HEADER.len());
        bad_at
    }

    fn person_name(&mut self, force_accent: bool) {
        self.name.clear();
        let names = if self.rng.random_bool(0.5) {
            FEMALE_NAMES
        } else {
            MALE_NAMES
        };
        let first = if force_accent {
            pick_non_ascii(&mut self.rng, names)
        } else {
            pick(&mut self.rng, names)
        };
        self.name.push_str(first);
        if !first.contains(' ') && self.rng.random_range(0..100u32) < 25 {
            let second = pick(&mut self.rng, names);
            if second != first && !second.contains(' ') {
                self.name.push(' ');
                self.name.push_str(second);
            }
        }
        self.name.push(' ');
        let s1 = pick(&mut self.rng, SURNAMES);
        self.name.push_str(s1);
        if self.rng.random_range(0..100u32) < 80 {
            self.name.push(' ');
            let s2 = pick(&mut self.rng, SURNAMES);
            self.name.push_str(s2);
        }
    }

    fn business_name(&mut self, force_accent: bool) {
        self.name.clear();
        let kind = if force_accent {
            pick_non_ascii(&mut self.rng, BUSINESS_KINDS)
        } else {
            pick(&mut self.rng, BUSINESS_KINDS)
        };
        self.name.push_str(kind);
        self.name.push(' ');
        let distinct = if self.rng.random_range(0..100u32) < 40 {
            pick(&mut self.rng, SURNAMES)
        } else {
            pick(&mut self.rng, BUSINESS_NAMES)
        };
        self.name.push_str(distinct);
        let legal = pick(&mut self.rng, LEGAL_BUSINESS);
        if !legal.is_empty() {
            self.name.push(' ');
            self.name.push_str(legal);
        }
    }

    fn id_number(&mut self, id_type: &str) {
        match id_type {
            "NIT" => {
                let nit = self.nit_base();
                push_nit(&mut self.line, nit, self.rng.random_bool(0.2));
            }
            "CE" => {
                let n = self.rng.random_range(100_000..10_000_000u64);
                push_u64(&mut self.line, n);
            }
            "PA" => {
                for _ in 0..2 {
                    let c = (b'A' + self.rng.random_range(0..26u8)) as char;
                    self.line.push(c);
                }
                let n = self.rng.random_range(100_000..10_000_000u64);
                push_padded(&mut self.line, n, 7);
            }
            "TI" => {
                let n = self.rng.random_range(1_000_000_000..1_200_000_000u64);
                push_u64(&mut self.line, n);
            }
            _ => {
                let n = if self.rng.random_bool(0.5) {
                    self.rng.random_range(1_000_000_000..1_130_000_000u64)
                } else {
                    self.rng.random_range(3_000_000..99_999_999u64)
                };
                // Cédulas are often written with thousands dots; it is a text column.
                if self.rng.random_range(0..100u32) < 15 {
                    push_grouped(&mut self.line, n, '.');
                } else {
                    push_u64(&mut self.line, n);
                }
            }
        }
    }

    fn nit_base(&mut self) -> u64 {
        const PREFIXES: [u64; 6] = [800, 830, 860, 890, 900, 901];
        let p = PREFIXES[self.rng.random_range(0..PREFIXES.len() as u32) as usize];
        p * 1_000_000 + self.rng.random_range(0..1_000_000u64)
    }

    fn email(&mut self, person: bool, invalid: bool) {
        // Derive from the plain name, without a quoting suffix added by `add_special`.
        let delim = self.fmt.delim;
        let base = self.name.split(['\n', '"', delim]).next().unwrap_or("");
        self.slug.clear();
        if person {
            let mut words = base.trim_end().split(' ');
            let given = words.next().unwrap_or("cliente");
            let surname = words.next_back().unwrap_or("energia");
            push_slug(&mut self.slug, given, 16);
            self.slug
                .push(if self.rng.random_bool(0.7) { '.' } else { '_' });
            push_slug(&mut self.slug, surname, 16);
            if self.rng.random_bool(0.4) {
                push_u64(&mut self.slug, self.rng.random_range(1..100u64));
            }
        } else {
            self.slug.push_str(pick(&mut self.rng, EMAIL_ROLES));
        }
        let local_len = self.slug.len();
        // domain
        if person {
            self.slug.push_str(pick(&mut self.rng, EMAIL_DOMAINS));
        } else {
            let start = self.slug.len();
            // The trade name only: stop at the legal form (`S.A.S.`, `Ltda.`, `& Cía.`).
            for word in base.split(' ') {
                if word.contains(['.', '&']) {
                    break;
                }
                let budget = 30usize.saturating_sub(self.slug.len() - start);
                push_slug(&mut self.slug, word, budget);
            }
            if self.slug.len() == start {
                self.slug.push_str("empresa");
            }
            self.slug.push_str(if self.rng.random_bool(0.6) {
                ".com.co"
            } else {
                ".com"
            });
        }
        let (local, domain) = self.slug.split_at(local_len);
        if !invalid {
            self.line.push_str(local);
            self.line.push('@');
            self.line.push_str(domain);
            return;
        }
        match self.rng.random_range(0..3u32) {
            0 => {
                self.line.push_str(local);
                self.line.push('@');
            }
            1 => {
                self.line.push_str(local);
                self.line.push('.');
                self.line.push_str(domain);
            }
            _ => {
                self.line.push('@');
                self.line.push_str(domain);
            }
        }
    }

    // ---- transacciones ----------------------------------------------------------------------

    fn transaccion(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        self.numbered_key("TX-", index, 8, defect);
        self.line.push_str(&self.key);
        self.sep();

        match defect {
            Some(Defect::InvalidDate(Col::FechaTransaccion)) => {
                push_bad_date(&mut self.rng, &mut self.line, true)
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 2 {
                    push_date(&mut self.rng, &mut self.line, true);
                }
            }
        }
        self.sep();

        match defect {
            Some(Defect::Missing(Col::TipoTransaccion)) => {}
            Some(Defect::InvalidEnum(Col::TipoTransaccion)) => {
                let v = pick(&mut self.rng, BAD_TRADE_KIND);
                self.line.push_str(v);
            }
            _ => {
                let v = pick(&mut self.rng, TRADE_KINDS);
                self.line.push_str(v);
            }
        }
        self.sep();

        let tipo = self.energy_type(first);
        match self.rng.random_range(0..100u32) {
            _ if first => self.person_name(true),
            0..=44 => self.person_name(false),
            45..=74 => self.business_name(false),
            _ => {
                self.name.clear();
                let prefix = pick(&mut self.rng, PLANT_PREFIXES[tipo]);
                self.name.push_str(prefix);
                self.name.push(' ');
                let place = pick(&mut self.rng, PLACES);
                self.name.push_str(place);
                self.name.push(' ');
                let legal = pick(&mut self.rng, LEGAL_PROVIDER);
                self.name.push_str(legal);
            }
        }
        let bad_at = self.name_field(defect, Col::Contraparte, special);
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Cantidad)) => {}
            Some(Defect::InvalidNumber(Col::Cantidad)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::Cantidad)) => {
                if self.rng.random_bool(0.5) {
                    let zeros = self.rng.random_range(0..4u32);
                    push_decimal(&mut self.line, self.fmt, false, 0, zeros, false);
                } else {
                    let (m, d) = self.quantity();
                    push_decimal(&mut self.line, self.fmt, true, m, d, false);
                }
            }
            _ => {
                let (m, d) = self.quantity();
                let group = self.rng.random_range(0..20u32) == 0;
                push_decimal(&mut self.line, self.fmt, false, m, d, group);
            }
        }
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Precio)) => {}
            Some(Defect::InvalidNumber(Col::Precio)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::Precio)) => {
                let (m, d) = self.price();
                push_decimal(&mut self.line, self.fmt, true, m, d, false);
            }
            _ => {
                let (m, d) = self.price();
                let group = self.rng.random_range(0..20u32) == 0;
                push_decimal(&mut self.line, self.fmt, false, m, d, group);
            }
        }
        let last_sep = self.line.len();
        self.sep();
        self.energy_field(defect, tipo, first);
        self.ragged(defect, last_sep, TRANSACCIONES_HEADER.len());
        bad_at
    }

    /// kWh, 1..=500000 with up to 3 decimals, uniform within a random decade so small and
    /// huge trades are both common (integer-only: no platform-dependent floating point).
    fn quantity(&mut self) -> (u64, u32) {
        let decade = self.rng.random_range(0..6u32);
        let lo = POW10[decade as usize];
        let hi = (lo * 10).min(500_000);
        let d = self.rng.random_range(0..4u32);
        let p = POW10[d as usize];
        (self.rng.random_range(lo * p..=hi * p), d)
    }

    /// COP per kWh, 150..=1200 with up to 4 decimals.
    fn price(&mut self) -> (u64, u32) {
        let d = self.rng.random_range(0..5u32);
        let p = POW10[d as usize];
        (self.rng.random_range(150 * p..=1_200 * p), d)
    }
}

fn pick<'a, R: Rng>(rng: &mut R, table: &[&'a str]) -> &'a str {
    table[rng.random_range(0..table.len() as u32) as usize]
}

/// Like `pick`, restricted to values with a non-ASCII character (the table must have some).
fn pick_non_ascii<'a, R: Rng>(rng: &mut R, table: &[&'a str]) -> &'a str {
    loop {
        let v = pick(rng, table);
        if !v.is_ascii() {
            return v;
        }
    }
}

/// An empty required cell; sometimes only blanks, which trimming turns into empty.
fn push_blank<R: Rng>(rng: &mut R, line: &mut String) {
    if rng.random_range(0..4u32) == 0 {
        line.push_str("  ");
    }
}

/// Appends a text field, quoting it (RFC 4180) when it holds the delimiter, a quote or a line break.
fn push_text(line: &mut String, s: &str, delim: char) {
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
fn add_special<R: Rng>(rng: &mut R, name: &mut String, delim: char) {
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
fn count_fields(line: &str, delim: char) -> usize {
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

fn push_u64(out: &mut String, mut v: u64) {
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

fn push_padded(out: &mut String, v: u64, width: usize) {
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

fn push_grouped(out: &mut String, v: u64, sep: char) {
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
fn push_decimal(
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

fn push_bad_number<R: Rng>(rng: &mut R, line: &mut String, fmt: Fmt) {
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
fn civil_from_days(days: i64) -> (u64, u64, u64) {
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
fn push_date<R: Rng>(rng: &mut R, line: &mut String, timestamp: bool) {
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

fn push_bad_date<R: Rng>(rng: &mut R, line: &mut String, timestamp: bool) {
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
fn push_nit(line: &mut String, nit: u64, dotted: bool) {
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
fn push_slug(out: &mut String, s: &str, max: usize) {
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

fn encode_1252(src: &str, dst: &mut Vec<u8>) -> Result<(), GenerateError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const ALL: [Dataset; 3] = [
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

    fn reader(bytes: &[u8], delim: u8) -> csv::Reader<&[u8]> {
        csv::ReaderBuilder::new()
            .delimiter(delim)
            .flexible(true)
            .from_reader(bytes)
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
        seen: &mut HashSet<String>,
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
            let i = head.iter().position(|h| *h == name).expect("known column");
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
        };
        if !seen.insert(key) {
            return Some("duplicate_key".into());
        }
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
        assert_eq!(names, header(o.dataset));
        let mut seen = HashSet::new();
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
                    .from_reader(&bytes[..]);
                let head: Vec<String> = rdr
                    .headers()
                    .expect("header")
                    .iter()
                    .map(str::to_owned)
                    .collect();
                assert_eq!(head, header(ds));
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
        for ds in ALL {
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
        for ds in ALL {
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
                let key = rec[0].to_owned();
                match ds {
                    Dataset::Clientes => assert!(key.starts_with("CL-") && key.len() == 10),
                    Dataset::Transacciones => assert!(key.starts_with("TX-") && key.len() == 11),
                    Dataset::Proveedores => assert!(!key.is_empty()),
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
