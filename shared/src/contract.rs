//! Data contracts of the energy lake, declared as data.
//!
//! One [`Contract`] per dataset lists its columns, their types, whether they are required, the
//! header aliases accepted and how PII is stored. Everything downstream — header matching, row
//! validation, the Arrow/Parquet schema and the warehouse DDL — is driven from these tables, so a
//! column is added in one place.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::text::fold_key;

/// Version of the processed schema; bumped when a contract changes shape.
pub const SCHEMA_VERSION: u32 = 1;

/// The datasets of the energy lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Clientes,
    Proveedores,
    Transacciones,
    /// The official COP per USD exchange rate (Tasa Representativa del Mercado), as the
    /// financial regulator publishes it on the national open-data portal.
    Trm,
}

impl Dataset {
    pub const ALL: [Dataset; 4] = [
        Dataset::Clientes,
        Dataset::Proveedores,
        Dataset::Transacciones,
        Dataset::Trm,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Dataset::Clientes => "clientes",
            Dataset::Proveedores => "proveedores",
            Dataset::Transacciones => "transacciones",
            Dataset::Trm => "trm",
        }
    }

    pub fn contract(&self) -> &'static Contract {
        match self {
            Dataset::Clientes => &CLIENTES,
            Dataset::Proveedores => &PROVEEDORES,
            Dataset::Transacciones => &TRANSACCIONES,
            Dataset::Trm => &TRM,
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown dataset {0:?} (expected clientes, proveedores, transacciones or trm)")]
pub struct UnknownDataset(pub String);

impl FromStr for Dataset {
    type Err = UnknownDataset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_key(s).as_str() {
            "clientes" => Ok(Dataset::Clientes),
            "proveedores" => Ok(Dataset::Proveedores),
            "transacciones" => Ok(Dataset::Transacciones),
            "trm" => Ok(Dataset::Trm),
            _ => Err(UnknownDataset(s.to_string())),
        }
    }
}

/// Energy sources, shared by `proveedores` and `transacciones`.
pub const TIPOS_ENERGIA: &[&str] = &[
    "eolica",
    "hidroelectrica",
    "nuclear",
    "solar",
    "termica",
    "biomasa",
    "geotermica",
];

/// How a raw column becomes processed column(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Trimmed text, inner whitespace collapsed.
    Text,
    /// Text that also yields `nombre_normalizado` (upper case, accents removed).
    NameWithNormalized,
    /// One of a closed set of values, matched case- and accent-insensitively, stored canonical.
    Enum(&'static [&'static str]),
    /// Decimal with the given scale (digits after the point); `min` is inclusive unless `min_exclusive`.
    Decimal {
        precision: u8,
        scale: u8,
        min_exclusive: bool,
    },
    /// Calendar date.
    Date,
    /// Date or timestamp, stored as a UTC timestamp in microseconds.
    Timestamp,
    /// PII: only `<name>_hash` (hex SHA-256 of salt + value) is stored.
    HashedPii,
    /// PII e-mail: validated, only `email_masked` is stored.
    MaskedEmail,
}

/// One column of a contract.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: ColumnKind,
    pub required: bool,
    pub aliases: &'static [&'static str],
    /// Columns holding PII never reach `processed/` in clear; analysts never see the derived ones.
    pub pii: bool,
}

const fn col(name: &'static str, kind: ColumnKind, required: bool) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        required,
        aliases: &[],
        pii: false,
    }
}

const fn aliased(
    name: &'static str,
    kind: ColumnKind,
    required: bool,
    aliases: &'static [&'static str],
) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        required,
        aliases,
        pii: false,
    }
}

const fn pii(name: &'static str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        required: false,
        aliases: &[],
        pii: true,
    }
}

/// A dataset's contract.
#[derive(Debug)]
pub struct Contract {
    pub dataset: Dataset,
    pub columns: &'static [ColumnSpec],
    /// Column whose first occurrence wins; later rows with the same value are `duplicate_key`.
    pub key: Option<&'static str>,
    /// A column the transform derives from two of the contract's decimal columns (transacciones:
    /// `total = cantidad_comprada × precio`).
    pub computed: Option<ComputedProduct>,
    /// Two date columns that bound the interval a row is in force (trm: a rate from
    /// `vigenciadesde` to `vigenciahasta`).
    pub interval: Option<IntervalRule>,
    /// Columns the warehouse distributes and sorts on.
    pub dist_key: Option<&'static str>,
    pub sort_key: &'static [&'static str],
}

const MW: ColumnKind = ColumnKind::Decimal {
    precision: 12,
    scale: 3,
    min_exclusive: false,
};

pub static PROVEEDORES: Contract = Contract {
    dataset: Dataset::Proveedores,
    columns: &[
        aliased(
            "nombre_proveedor",
            ColumnKind::Text,
            true,
            &["proveedor", "nombre"],
        ),
        col("tipo_energia", ColumnKind::Enum(TIPOS_ENERGIA), true),
        col("id_proveedor", ColumnKind::Text, false),
        col("capacidad_mw", MW, false),
        col("ciudad", ColumnKind::Text, false),
    ],
    key: Some("nombre_proveedor"),
    computed: None,
    interval: None,
    dist_key: None,
    sort_key: &["nombre_proveedor"],
};

pub static CLIENTES: Contract = Contract {
    dataset: Dataset::Clientes,
    columns: &[
        col("id_cliente", ColumnKind::Text, true),
        aliased(
            "nombre_cliente",
            ColumnKind::NameWithNormalized,
            true,
            &["nombre"],
        ),
        aliased(
            "segmento",
            ColumnKind::Enum(&["residencial", "comercial", "industrial"]),
            true,
            &["tipo_cliente"],
        ),
        col(
            "tipo_identificacion",
            ColumnKind::Enum(&["CC", "CE", "NIT", "PA", "TI"]),
            false,
        ),
        pii("numero_identificacion", ColumnKind::HashedPii),
        pii("email", ColumnKind::MaskedEmail),
        col("ciudad", ColumnKind::Text, false),
        col("fecha_registro", ColumnKind::Date, false),
    ],
    key: Some("id_cliente"),
    computed: None,
    interval: None,
    dist_key: Some("id_cliente"),
    sort_key: &["id_cliente"],
};

pub static TRANSACCIONES: Contract = Contract {
    dataset: Dataset::Transacciones,
    columns: &[
        col("id_transaccion", ColumnKind::Text, false),
        col("fecha_transaccion", ColumnKind::Timestamp, false),
        col(
            "tipo_transaccion",
            ColumnKind::Enum(&["compra", "venta"]),
            true,
        ),
        aliased(
            "nombre_cliente_proveedor",
            ColumnKind::Text,
            true,
            &["contraparte"],
        ),
        aliased(
            "cantidad_comprada",
            ColumnKind::Decimal {
                precision: 18,
                scale: 3,
                min_exclusive: true,
            },
            true,
            &["cantidad", "cantidad_kwh"],
        ),
        aliased(
            "precio",
            ColumnKind::Decimal {
                precision: 18,
                scale: 4,
                min_exclusive: false,
            },
            true,
            &["precio_kwh"],
        ),
        col("tipo_energia", ColumnKind::Enum(TIPOS_ENERGIA), true),
    ],
    key: Some("id_transaccion"),
    computed: Some(ComputedProduct {
        name: "total",
        factors: ["cantidad_comprada", "precio"],
        precision: 18,
        scale: 2,
    }),
    interval: None,
    dist_key: None,
    sort_key: &["fecha_transaccion"],
};

/// The official exchange rate: one row per published rate, in force on every day of its
/// `[vigenciadesde, vigenciahasta]` interval (a Friday's rate usually covers Saturday to Monday).
pub static TRM: Contract = Contract {
    dataset: Dataset::Trm,
    columns: &[
        col(
            "valor",
            ColumnKind::Decimal {
                precision: 12,
                scale: 2,
                min_exclusive: true,
            },
            true,
        ),
        col("unidad", ColumnKind::Enum(&["COP"]), true),
        col("vigenciadesde", ColumnKind::Date, true),
        col("vigenciahasta", ColumnKind::Date, true),
    ],
    key: Some("vigenciadesde"),
    computed: None,
    interval: Some(IntervalRule {
        from: "vigenciadesde",
        to: "vigenciahasta",
    }),
    dist_key: None,
    sort_key: &["vigenciadesde"],
};

/// Two date columns of a contract bounding, inclusively, the days a row is in force. A row
/// whose `from` is after its `to` is `invalid_interval`; a row whose interval shares a day with
/// one accepted earlier in the file is `overlapping_interval` (the first row wins, as with keys).
#[derive(Debug)]
pub struct IntervalRule {
    pub from: &'static str,
    pub to: &'static str,
}

/// A processed column that is the product of two decimal columns of the same contract, rounded
/// half away from zero to `scale` places; a row whose product does not fit `precision` digits is
/// rejected as `out_of_range:<name>`.
#[derive(Debug)]
pub struct ComputedProduct {
    pub name: &'static str,
    pub factors: [&'static str; 2],
    pub precision: u8,
    pub scale: u8,
}

/// Lineage columns carried by every processed row.
pub const LINEAGE: [&str; 3] = ["_source_key", "_source_line", "_load_date"];

/// Logical type of a processed column, from which Arrow and SQL types are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    Text,
    Decimal(u8, u8),
    Date,
    TimestampUtc,
    Int64,
}

impl OutType {
    /// The Glue / Hive type name.
    pub fn hive(&self) -> String {
        match self {
            OutType::Text => "string".into(),
            OutType::Decimal(p, s) => format!("decimal({p},{s})"),
            OutType::Date => "date".into(),
            OutType::TimestampUtc => "timestamp".into(),
            OutType::Int64 => "bigint".into(),
        }
    }

    pub fn arrow(&self) -> DataType {
        match self {
            OutType::Text => DataType::Utf8,
            OutType::Decimal(p, s) => DataType::Decimal128(*p, *s as i8),
            OutType::Date => DataType::Date32,
            OutType::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            OutType::Int64 => DataType::Int64,
        }
    }
}

/// A column of the processed (Parquet / warehouse) table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutColumn {
    pub name: String,
    pub ty: OutType,
    pub nullable: bool,
    /// Derived from PII: excluded from the analysts' grants.
    pub pii: bool,
    /// Free text or a hash (not a key, not an enum): min/max of it never prune a row group.
    pub free_text: bool,
}

impl Contract {
    /// The processed columns, in order: contract columns (PII replaced by its protected form),
    /// computed columns, then lineage.
    pub fn output_columns(&self) -> Vec<OutColumn> {
        let mut out = Vec::new();
        let mut push = |name: &str, ty: OutType, nullable: bool, pii: bool, free_text: bool| {
            out.push(OutColumn {
                name: name.to_string(),
                ty,
                nullable,
                pii,
                free_text,
            })
        };
        let key = self.key_index();
        for (i, c) in self.columns.iter().enumerate() {
            let nullable = !c.required;
            match c.kind {
                ColumnKind::Text => push(c.name, OutType::Text, nullable, false, Some(i) != key),
                ColumnKind::Enum(_) => push(c.name, OutType::Text, nullable, false, false),
                ColumnKind::NameWithNormalized => {
                    push(c.name, OutType::Text, nullable, false, true);
                    push("nombre_normalizado", OutType::Text, nullable, false, true);
                }
                ColumnKind::Decimal {
                    precision, scale, ..
                } => push(
                    c.name,
                    OutType::Decimal(precision, scale),
                    nullable,
                    false,
                    false,
                ),
                ColumnKind::Date => push(c.name, OutType::Date, nullable, false, false),
                ColumnKind::Timestamp => {
                    push(c.name, OutType::TimestampUtc, nullable, false, false)
                }
                ColumnKind::HashedPii => {
                    push(&format!("{}_hash", c.name), OutType::Text, true, true, true)
                }
                ColumnKind::MaskedEmail => push("email_masked", OutType::Text, true, true, true),
            }
        }
        if let Some(product) = &self.computed {
            push(
                product.name,
                OutType::Decimal(product.precision, product.scale),
                false,
                false,
                false,
            );
        }
        push("_source_key", OutType::Text, false, false, false);
        push("_source_line", OutType::Int64, false, false, false);
        push("_load_date", OutType::Date, false, false, false);
        out
    }

    /// Arrow schema of the processed Parquet files.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let fields: Vec<Field> = self
            .output_columns()
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), c.nullable))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Index of the contract column a header cell names, if any (names and aliases are compared
    /// ignoring case, accents, and spaces versus underscores).
    pub fn match_header(&self, header: &str) -> Option<usize> {
        let h = fold_key(header);
        self.columns
            .iter()
            .position(|c| c.name == h || c.aliases.iter().any(|a| *a == h))
    }

    pub fn key_index(&self) -> Option<usize> {
        let key = self.key?;
        self.columns.iter().position(|c| c.name == key)
    }
}

/// Stable reject reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowReason {
    MissingRequired(&'static str),
    InvalidNumber(&'static str),
    OutOfRange(&'static str),
    InvalidEnum(&'static str),
    InvalidDate(&'static str),
    InvalidEmail,
    RaggedRow,
    DuplicateKey,
    InvalidEncoding,
    InvalidInterval,
    OverlappingInterval,
}

impl RowReason {
    pub fn code(&self) -> String {
        match self {
            RowReason::MissingRequired(c) => format!("missing_required:{c}"),
            RowReason::InvalidNumber(c) => format!("invalid_number:{c}"),
            RowReason::OutOfRange(c) => format!("out_of_range:{c}"),
            RowReason::InvalidEnum(c) => format!("invalid_enum:{c}"),
            RowReason::InvalidDate(c) => format!("invalid_date:{c}"),
            RowReason::InvalidEmail => "invalid_email".into(),
            RowReason::RaggedRow => "ragged_row".into(),
            RowReason::DuplicateKey => "duplicate_key".into(),
            RowReason::InvalidEncoding => "invalid_encoding".into(),
            RowReason::InvalidInterval => "invalid_interval".into(),
            RowReason::OverlappingInterval => "overlapping_interval".into(),
        }
    }
}

/// Reasons a whole file is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileReason {
    MissingColumns,
    EmptyFile,
    Unreadable,
}

impl FileReason {
    pub fn code(&self) -> &'static str {
        match self {
            FileReason::MissingColumns => "missing_columns",
            FileReason::EmptyFile => "empty_file",
            FileReason::Unreadable => "unreadable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_names_and_aliases_ignoring_case_accents_and_spaces() {
        let c = Dataset::Transacciones.contract();
        assert_eq!(c.match_header("Cantidad KWh"), Some(4));
        assert_eq!(c.match_header(" Contraparte "), Some(3));
        assert_eq!(c.match_header("TIPO ENERGÍA"), Some(6));
        assert_eq!(c.match_header("Precio_kWh"), Some(5));
        assert_eq!(c.match_header("observaciones"), None);
        let p = Dataset::Proveedores.contract();
        assert_eq!(p.match_header("Nombre"), Some(0));
    }

    #[test]
    fn pii_never_reaches_processed_in_clear() {
        let cols = Dataset::Clientes.contract().output_columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert!(!names.contains(&"email"));
        assert!(!names.contains(&"numero_identificacion"));
        assert!(names.contains(&"email_masked"));
        assert!(names.contains(&"numero_identificacion_hash"));
        assert!(names.contains(&"nombre_normalizado"));
        assert_eq!(&names[names.len() - 3..], &LINEAGE);
    }

    #[test]
    fn transacciones_carry_total_as_decimal_18_2() {
        let schema = Dataset::Transacciones.contract().arrow_schema();
        let total = schema
            .field_with_name("total")
            .map(|f| f.data_type().clone());
        assert_eq!(total.ok(), Some(DataType::Decimal128(18, 2)));
    }

    #[test]
    fn computed_columns_multiply_two_decimal_columns_of_their_contract() {
        for d in Dataset::ALL {
            let contract = d.contract();
            let Some(product) = &contract.computed else {
                continue;
            };
            for factor in product.factors {
                let kind = contract
                    .columns
                    .iter()
                    .find(|c| c.name == factor)
                    .map(|c| c.kind);
                assert!(
                    matches!(kind, Some(ColumnKind::Decimal { .. })),
                    "{d:?}: factor {factor} of {} is not a decimal column",
                    product.name
                );
            }
            assert!(usize::from(product.precision) < 20 && product.scale <= product.precision);
        }
    }

    #[test]
    fn interval_rules_bound_rows_by_two_required_date_columns_of_their_contract() {
        for d in Dataset::ALL {
            let contract = d.contract();
            let Some(rule) = &contract.interval else {
                continue;
            };
            for bound in [rule.from, rule.to] {
                let spec = contract.columns.iter().find(|c| c.name == bound);
                assert!(
                    spec.is_some_and(|c| c.kind == ColumnKind::Date && c.required),
                    "{d:?}: interval bound {bound} is not a required date column"
                );
            }
        }
    }

    #[test]
    fn trm_is_keyed_by_the_first_day_a_rate_is_in_force() {
        let trm = Dataset::Trm.contract();
        assert_eq!(trm.key, Some("vigenciadesde"));
        assert_eq!(trm.match_header("VIGENCIADESDE"), Some(2));
        assert_eq!(trm.match_header("VigenciaHasta"), Some(3));
        let names: Vec<String> = trm.output_columns().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "valor",
                "unidad",
                "vigenciadesde",
                "vigenciahasta",
                "_source_key",
                "_source_line",
                "_load_date"
            ]
        );
        let valor = trm.arrow_schema().field(0).data_type().clone();
        assert_eq!(valor, DataType::Decimal128(12, 2));
    }

    #[test]
    fn reason_codes_are_stable() {
        assert_eq!(RowReason::InvalidInterval.code(), "invalid_interval");
        assert_eq!(
            RowReason::OverlappingInterval.code(),
            "overlapping_interval"
        );
        assert_eq!(
            RowReason::InvalidEnum("unidad").code(),
            "invalid_enum:unidad"
        );
    }

    #[test]
    fn dataset_names_parse_back() {
        for d in Dataset::ALL {
            assert_eq!(d.name().parse::<Dataset>().ok(), Some(d));
        }
        assert!("ventas".parse::<Dataset>().is_err());
        assert_eq!("TRM".parse::<Dataset>().ok(), Some(Dataset::Trm));
    }
}
