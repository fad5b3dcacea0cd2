//! The warehouse load: DDL generated from the contracts, and the [`LoadPlan`] that loads the
//! processed Parquet parts of one source file — one plan, rendered for two dialects.
//!
//! Redshift runs the rendering with the Data API's `BatchExecuteStatement` (the list is one
//! transaction there); the local twin runs the DuckDB rendering inside `BEGIN … COMMIT`. Steps:
//!
//! 1. a temporary staging table like the target;
//! 2. the Parquet parts into it (Redshift: one `COPY … FORMAT AS PARQUET` over the parts' own key
//!    prefix when it holds them alone, which loads them in parallel, else one per part; DuckDB:
//!    `INSERT … SELECT … FROM read_parquet([…])`);
//! 3. `clientes` / `proveedores`: delete the target rows whose key is in the stage with a load date
//!    no newer than the stage's, then insert the stage rows whose key is not (still) in the
//!    target — an upsert where the latest load date wins whatever order files are loaded in;
//!    `transacciones`: delete the target rows of this `_source_key`, then insert the stage — a
//!    reload replaces the file's facts instead of duplicating them;
//! 4. drop the stage.
//!
//! The KPI views ([`kpi_views`]) are defined once over these tables and rendered for both
//! dialects too; [`warehouse_setup`] is the schema, every table, then the views.
//!
//! Every identifier is a validated [`Ident`] and every literal goes through
//! [`SqlDialect::literal`]; each statement is checked against [`MAX_STATEMENT_BYTES`].

mod ddl;
mod plan;
pub mod sql;
mod views;

pub use ddl::{
    column_idents, sql_type, table_ddl, table_name, warehouse_ddl, warehouse_setup, Table,
};
pub use plan::{s3_uri, LoadPlan, LoadRequest, LoadStep, LoadStrategy, RenderedStep, TableLoad};
pub use sql::{Ident, RedshiftCopy, SqlDialect, TableName};
pub use views::{kpi_views, ALL_REASONS, KPI_VIEWS};

/// The Redshift Data API refuses a SQL statement longer than this; the plan keeps DuckDB's
/// statements under it too, so what is tested locally is what Redshift would accept.
pub const MAX_STATEMENT_BYTES: usize = 100_000;

/// `BatchExecuteStatement` takes at most this many statements (the transaction of one load).
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// Why a load plan or the DDL could not be built or rendered. All are input or configuration
/// errors: retrying the same request gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0:?} is not a valid SQL identifier (allowed: [a-z_][a-z0-9_]*, at most 127 bytes)")]
    InvalidIdentifier(String),
    #[error("{0:?} cannot be a SQL string literal (it contains a NUL character)")]
    InvalidLiteral(String),
    #[error("{0:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")]
    InvalidIamRole(String),
    #[error("{0:?} is not an AWS region name")]
    InvalidRegion(String),
    #[error("{0:?} is not a valid S3 bucket name")]
    InvalidBucket(String),
    #[error("the part {part:?} is not under the prefix {prefix:?} it is to be loaded through")]
    NotUnderPrefix { part: String, prefix: String },
    #[error("Redshift COPY reads from S3: {0:?} is not an s3:// URI")]
    NotAnS3Uri(String),
    #[error("{0:?} contains a glob character (* ? [) that DuckDB's read_parquet would expand")]
    GlobInPath(String),
    #[error("{0:?} is not a warehouse table lago loads")]
    UnknownTable(String),
    #[error("{0:?} is not where the {1} table's Parquet is")]
    NotTheTablesLocation(String, ddl::Table),
    #[error("nothing to load for {source_key:?}: {reason}")]
    NothingToLoad { source_key: String, reason: String },
    #[error("a generated statement is {bytes} bytes, over the {limit}-byte limit")]
    StatementTooLarge { bytes: usize, limit: usize },
    #[error("the load needs {statements} statements, over the {limit} of one Redshift batch")]
    TooManyStatements { statements: usize, limit: usize },
}

pub(crate) fn check_size(statement: &str) -> Result<(), LoadError> {
    if statement.len() > MAX_STATEMENT_BYTES {
        return Err(LoadError::StatementTooLarge {
            bytes: statement.len(),
            limit: MAX_STATEMENT_BYTES,
        });
    }
    Ok(())
}

/// The Redshift dialect the unit tests render with.
#[cfg(test)]
pub(crate) fn test_redshift() -> Result<SqlDialect, LoadError> {
    Ok(SqlDialect::Redshift(RedshiftCopy::new(
        "arn:aws:iam::123456789012:role/lago-copy",
        None,
    )?))
}
