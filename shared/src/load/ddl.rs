//! The warehouse DDL, generated from the contracts: one table per dataset with the processed
//! Parquet columns, in the Parquet order (Redshift's COPY of Parquet maps columns by position).

use crate::contract::{ColumnKind, Contract, Dataset, OutColumn, OutType};

use super::sql::{Ident, SqlDialect, TableName};
use super::{check_size, LoadError};

/// Redshift VARCHAR widths (bytes of UTF-8). A value longer than its column fails the COPY
/// loudly instead of being truncated, so the widths leave room for real data:
/// free text (names, cities, masked e-mails up to RFC 5321's 254) gets 256;
const TEXT_WIDTH: u16 = 256;
/// identifiers and keys from the source systems, and hex SHA-256 hashes (exactly 64);
const KEY_WIDTH: u16 = 64;
/// `_source_key` holds an S3 key, which S3 caps at 1024 bytes.
const SOURCE_KEY_WIDTH: u16 = 1024;

/// `CREATE SCHEMA IF NOT EXISTS` and one `CREATE TABLE IF NOT EXISTS` per dataset: applying it
/// again changes nothing.
pub fn warehouse_ddl(
    dialect: &SqlDialect,
    schema: &Ident,
    datasets: &[Dataset],
) -> Result<Vec<String>, LoadError> {
    let mut out = vec![format!("CREATE SCHEMA IF NOT EXISTS {schema}")];
    for d in datasets {
        out.push(create_table(dialect, schema, *d)?);
    }
    for s in &out {
        check_size(s)?;
    }
    Ok(out)
}

/// Everything the warehouse needs before loads and queries, in order: the schema, the table of
/// every dataset, `trades_history`, `user_features`, then the KPI views over them (a view needs its tables
/// first). Applying it again changes nothing.
pub fn warehouse_setup(dialect: &SqlDialect, schema: &Ident) -> Result<Vec<String>, LoadError> {
    let mut out = warehouse_ddl(dialect, schema, &Dataset::ALL)?;
    out.push(table_ddl(dialect, schema, Table::TradesHistory)?);
    out.push(table_ddl(dialect, schema, Table::UserFeatures)?);
    out.extend(super::views::kpi_views(dialect, schema)?);
    Ok(out)
}

/// A warehouse table lago loads: a dataset's, or the trade history's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Dataset(Dataset),
    /// One row per trade id, from the trade archive (see [`crate::history`]).
    TradesHistory,
    /// One row per user and day, rebuilt whole (see [`crate::history::features`]).
    UserFeatures,
}

impl Table {
    pub fn name(&self) -> &'static str {
        match self {
            Table::Dataset(d) => d.name(),
            Table::TradesHistory => "trades_history",
            Table::UserFeatures => "user_features",
        }
    }

    /// The columns, in Parquet order.
    pub fn columns(&self) -> Vec<OutColumn> {
        match self {
            Table::Dataset(d) => d.contract().output_columns(),
            Table::TradesHistory => crate::history::row::columns().to_vec(),
            Table::UserFeatures => crate::history::features::columns().to_vec(),
        }
    }

    fn dist_key(&self) -> Option<&'static str> {
        match self {
            Table::Dataset(d) => d.contract().dist_key,
            // A user's trades on one slice: per-user windows (features) join locally.
            Table::TradesHistory | Table::UserFeatures => Some("user_id"),
        }
    }

    fn sort_key(&self) -> &'static [&'static str] {
        match self {
            Table::Dataset(d) => d.contract().sort_key,
            Table::TradesHistory => &["local_date", "executed_at"],
            Table::UserFeatures => &["feature_date"],
        }
    }

    /// The lake prefix holding the table's Parquet (`processed/…/`).
    pub fn processed_prefix(&self) -> String {
        match self {
            Table::Dataset(d) => format!("processed/{}/", d.name()),
            Table::TradesHistory => "processed/trades/".into(),
            Table::UserFeatures => "processed/features/user_features/".into(),
        }
    }

    /// Redshift width of a text column, from what the table says the column holds.
    fn varchar_width(&self, name: &str) -> u16 {
        match self {
            Table::Dataset(d) => varchar_width(d.contract(), name),
            Table::TradesHistory | Table::UserFeatures => match name {
                "_source_key" => SOURCE_KEY_WIDTH,
                "side" | "status" => 16,
                _ => TEXT_WIDTH,
            },
        }
    }
}

impl From<Dataset> for Table {
    fn from(d: Dataset) -> Table {
        Table::Dataset(d)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Table {
    type Err = LoadError;

    /// A table by its warehouse name (a dataset's name is its table's).
    fn from_str(s: &str) -> Result<Table, LoadError> {
        match s {
            "trades_history" => Ok(Table::TradesHistory),
            "user_features" => Ok(Table::UserFeatures),
            _ => s
                .parse::<Dataset>()
                .map(Table::Dataset)
                .map_err(|_| LoadError::UnknownTable(s.to_string())),
        }
    }
}

/// A table is written and read as its name, as the task inputs name it.
impl serde::Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Table, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The target table of a dataset (or of any [`Table`]).
pub fn table_name(schema: &Ident, table: impl Into<Table>) -> Result<TableName, LoadError> {
    Ok(TableName {
        schema: schema.clone(),
        table: Ident::new(table.into().name())?,
    })
}

/// The columns of a table as identifiers, in Parquet order.
pub fn column_idents(table: impl Into<Table>) -> Result<Vec<Ident>, LoadError> {
    table
        .into()
        .columns()
        .iter()
        .map(|c| Ident::new(&c.name))
        .collect()
}

/// `CREATE TABLE IF NOT EXISTS` of one table.
pub fn table_ddl(dialect: &SqlDialect, schema: &Ident, table: Table) -> Result<String, LoadError> {
    let sql = create_table(dialect, schema, table)?;
    check_size(&sql)?;
    Ok(sql)
}

fn create_table(
    dialect: &SqlDialect,
    schema: &Ident,
    table: impl Into<Table>,
) -> Result<String, LoadError> {
    let table = table.into();
    let name = table_name(schema, table)?;
    let mut columns = Vec::new();
    for c in table.columns() {
        let column = Ident::new(&c.name)?;
        let ty = match (c.ty, dialect) {
            (OutType::Text, SqlDialect::Redshift(_)) => {
                format!("VARCHAR({})", table.varchar_width(&c.name))
            }
            _ => sql_type_of(dialect, c.ty),
        };
        let null = if c.nullable { "" } else { " NOT NULL" };
        columns.push(format!("  {column} {ty}{null}"));
    }
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {name} (\n{}\n)",
        columns.join(",\n")
    );
    // No PRIMARY KEY in either dialect: Redshift would not enforce it, and the load plan is what
    // keeps keys unique (upsert by key, replace by source file).
    if let SqlDialect::Redshift(_) = dialect {
        match table.dist_key() {
            Some(k) => sql.push_str(&format!("\nDISTSTYLE KEY\nDISTKEY ({})", Ident::new(k)?)),
            None => sql.push_str("\nDISTSTYLE AUTO"),
        }
        let sort_key = table.sort_key();
        if !sort_key.is_empty() {
            let keys = sort_key
                .iter()
                .map(|k| Ident::new(k).map(|i| i.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            sql.push_str(&format!("\nSORTKEY ({})", keys.join(", ")));
        }
    }
    Ok(sql)
}

/// The SQL type of a logical type, text unbounded.
fn sql_type_of(dialect: &SqlDialect, ty: OutType) -> String {
    match (ty, dialect) {
        (OutType::Text, SqlDialect::DuckDb) => "VARCHAR".to_string(),
        (OutType::Text, SqlDialect::Redshift(_)) => format!("VARCHAR({TEXT_WIDTH})"),
        (OutType::Decimal(p, s), _) => format!("DECIMAL({p},{s})"),
        (OutType::Date, _) => "DATE".to_string(),
        (OutType::TimestampUtc, _) => "TIMESTAMPTZ".to_string(),
        (OutType::Int64, _) => "BIGINT".to_string(),
    }
}

/// The SQL type of a processed column: the same logical type as its Parquet column.
pub fn sql_type(dialect: &SqlDialect, contract: &Contract, column: &OutColumn) -> String {
    match (column.ty, dialect) {
        (OutType::Text, SqlDialect::Redshift(_)) => {
            format!("VARCHAR({})", varchar_width(contract, &column.name))
        }
        (ty, _) => sql_type_of(dialect, ty),
    }
}

/// Redshift width of a text column, from what the contract says the column holds.
fn varchar_width(contract: &Contract, name: &str) -> u16 {
    if name == "_source_key" {
        return SOURCE_KEY_WIDTH;
    }
    // Identifiers of the source systems are short codes; `nombre_proveedor` is a key too but
    // it is a name, so it keeps the free-text width.
    if name.ends_with("_hash") || name.starts_with("id_") {
        return KEY_WIDTH;
    }
    let spec = contract.columns.iter().find(|c| c.name == name);
    if let Some(ColumnKind::Enum(values)) = spec.map(|c| c.kind) {
        // Canonical values are short ASCII; round up so a new value rarely needs a migration.
        let longest = values.iter().map(|v| v.len()).max().unwrap_or(0);
        return (longest.div_ceil(16) * 16).clamp(16, TEXT_WIDTH as usize) as u16;
    }
    TEXT_WIDTH
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::load::test_redshift as redshift;

    #[test]
    fn trades_history_is_distributed_by_user_and_sorted_by_day() -> Result<(), LoadError> {
        let schema = Ident::new("lago")?;
        let red = table_ddl(&redshift()?, &schema, Table::TradesHistory)?;
        assert!(red.starts_with("CREATE TABLE IF NOT EXISTS lago.trades_history (\n  trade_id VARCHAR(256) NOT NULL,\n  user_id VARCHAR(256) NOT NULL,\n  side VARCHAR(16) NOT NULL,\n  usd_amount DECIMAL(14,2) NOT NULL,\n  rate DECIMAL(12,4) NOT NULL,\n  executed_at TIMESTAMPTZ NOT NULL,"), "{red}");
        for part in [
            "  trm DECIMAL(12,2),\n",
            "  spread_cop DECIMAL(13,4),\n",
            "  local_hour BIGINT NOT NULL,",
            "  _source_key VARCHAR(1024) NOT NULL,",
        ] {
            assert!(red.contains(part), "{part}");
        }
        assert!(
            red.ends_with(")\nDISTSTYLE KEY\nDISTKEY (user_id)\nSORTKEY (local_date, executed_at)"),
            "{red}"
        );
        let duck = table_ddl(&SqlDialect::DuckDb, &schema, Table::TradesHistory)?;
        assert!(
            duck.contains("  trade_id VARCHAR NOT NULL,")
                && duck.ends_with("_load_date DATE NOT NULL\n)"),
            "{duck}"
        );
        Ok(())
    }

    #[test]
    fn redshift_ddl_sizes_columns_and_distributes_clientes_by_key() -> Result<(), LoadError> {
        // GIVEN the contracts WHEN the Redshift DDL is generated
        let ddl = warehouse_ddl(
            &redshift()?,
            &Ident::new("lago")?,
            &[Dataset::Clientes, Dataset::Transacciones],
        )?;
        // THEN the schema comes first and each table matches its Parquet columns
        assert_eq!(ddl.len(), 3);
        assert_eq!(ddl[0], "CREATE SCHEMA IF NOT EXISTS lago");
        assert_eq!(
            ddl[1],
            "CREATE TABLE IF NOT EXISTS lago.clientes (
  id_cliente VARCHAR(64) NOT NULL,
  nombre_cliente VARCHAR(256) NOT NULL,
  nombre_normalizado VARCHAR(256) NOT NULL,
  segmento VARCHAR(16) NOT NULL,
  tipo_identificacion VARCHAR(16),
  numero_identificacion_hash VARCHAR(64),
  email_masked VARCHAR(256),
  ciudad VARCHAR(256),
  fecha_registro DATE,
  _source_key VARCHAR(1024) NOT NULL,
  _source_line BIGINT NOT NULL,
  _load_date DATE NOT NULL
)
DISTSTYLE KEY
DISTKEY (id_cliente)
SORTKEY (id_cliente)"
        );
        assert_eq!(
            ddl[2],
            "CREATE TABLE IF NOT EXISTS lago.transacciones (
  id_transaccion VARCHAR(64),
  fecha_transaccion TIMESTAMPTZ,
  tipo_transaccion VARCHAR(16) NOT NULL,
  nombre_cliente_proveedor VARCHAR(256) NOT NULL,
  cantidad_comprada DECIMAL(18,3) NOT NULL,
  precio DECIMAL(18,4) NOT NULL,
  tipo_energia VARCHAR(16) NOT NULL,
  total DECIMAL(18,2) NOT NULL,
  _source_key VARCHAR(1024) NOT NULL,
  _source_line BIGINT NOT NULL,
  _load_date DATE NOT NULL
)
DISTSTYLE AUTO
SORTKEY (fecha_transaccion)"
        );
        Ok(())
    }

    #[test]
    fn duckdb_ddl_uses_unbounded_varchar_and_no_distribution() -> Result<(), LoadError> {
        let ddl = warehouse_ddl(
            &SqlDialect::DuckDb,
            &Ident::new("lago")?,
            &[Dataset::Proveedores],
        )?;
        assert_eq!(
            ddl,
            vec![
                "CREATE SCHEMA IF NOT EXISTS lago".to_string(),
                "CREATE TABLE IF NOT EXISTS lago.proveedores (
  nombre_proveedor VARCHAR NOT NULL,
  tipo_energia VARCHAR NOT NULL,
  id_proveedor VARCHAR,
  capacidad_mw DECIMAL(12,3),
  ciudad VARCHAR,
  _source_key VARCHAR NOT NULL,
  _source_line BIGINT NOT NULL,
  _load_date DATE NOT NULL
)"
                .to_string(),
            ]
        );
        Ok(())
    }

    #[test]
    fn trm_table_follows_its_contract_in_both_dialects() -> Result<(), LoadError> {
        let schema = Ident::new("lago")?;
        let duck = warehouse_ddl(&SqlDialect::DuckDb, &schema, &[Dataset::Trm])?;
        assert_eq!(
            duck[1],
            "CREATE TABLE IF NOT EXISTS lago.trm (
  valor DECIMAL(12,2) NOT NULL,
  unidad VARCHAR NOT NULL,
  vigenciadesde DATE NOT NULL,
  vigenciahasta DATE NOT NULL,
  _source_key VARCHAR NOT NULL,
  _source_line BIGINT NOT NULL,
  _load_date DATE NOT NULL
)"
        );
        let red = warehouse_ddl(&redshift()?, &schema, &[Dataset::Trm])?;
        assert!(red[1].contains("  unidad VARCHAR(16) NOT NULL,\n"));
        assert!(red[1].ends_with("\nDISTSTYLE AUTO\nSORTKEY (vigenciadesde)"));
        Ok(())
    }

    #[test]
    fn proveedores_in_redshift_let_the_warehouse_choose_distribution() -> Result<(), LoadError> {
        let ddl = warehouse_ddl(&redshift()?, &Ident::new("lago")?, &[Dataset::Proveedores])?;
        assert!(ddl[1].contains("  nombre_proveedor VARCHAR(256) NOT NULL,\n"));
        assert!(ddl[1].contains("  id_proveedor VARCHAR(64),\n"));
        assert!(ddl[1].ends_with("\nDISTSTYLE AUTO\nSORTKEY (nombre_proveedor)"));
        Ok(())
    }
}
