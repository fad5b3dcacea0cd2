//! lago's local warehouse: DuckDB running the same load plan that Redshift runs.
//!
//! [`load_lake`] reads the manifests of a local lake folder (laid out like the bucket) and loads
//! every processed file into a DuckDB file with the DuckDB rendering of
//! [`lago::load::LoadPlan`], one transaction per source file, so running it again leaves the
//! tables as they were. [`query`] answers SQL against that file for `lago sql`.
//!
//! DuckDB is a 20-minute C++ build: it lives in this crate only, never in `lago-shared` or a
//! Lambda, and the `lago` CLI takes it behind its `warehouse` feature.

mod manifests;
mod query;

use std::path::{Path, PathBuf};
use std::time::Instant;

use duckdb::Connection;
use serde::Serialize;

use lago::contract::Dataset;
use lago::lake::{LakeError, LocalLake};
use lago::load::{
    warehouse_setup, Ident, LoadError, LoadPlan, LoadRequest, LoadStep, SqlDialect, Table,
};
use lago::transform::Manifest;

pub use manifests::{scan_manifests, ManifestScan, Skip, SkipReason};
pub use query::{Cell, QueryResult};

/// Schema of the local warehouse, as the Redshift one is configured.
pub const SCHEMA: &str = "lago";

/// The name the warehouse file is attached under. Attaching under a fixed name, instead of
/// opening the file directly (which names the catalog after the file), keeps `lago.clientes`
/// unambiguous even for a file called `lago.duckdb`.
const CATALOG: &str = "lago_warehouse";

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("DuckDB: {0}")]
    Db(#[from] duckdb::Error),
    #[error("loading {source_key:?} failed at `{statement}`: {source}")]
    Statement {
        source_key: String,
        statement: String,
        #[source]
        source: duckdb::Error,
    },
    #[error("formatting a result: {0}")]
    Format(#[from] duckdb::arrow::error::ArrowError),
    #[error(transparent)]
    Plan(#[from] LoadError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a manifest: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} has no manifests/ folder: transform files into it first (`lago transform` or `lago demo`)")]
    NotALake(PathBuf),
    #[error("the warehouse {0} does not exist: run `lago load` first")]
    NoWarehouse(PathBuf),
    #[error("{0} is not valid UTF-8, which DuckDB needs in a path")]
    NonUtf8Path(PathBuf),
    #[error("one statement at a time: {0:?}")]
    NotOneStatement(String),
}

/// What loading did for one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetLoad {
    pub dataset: Dataset,
    /// Source files loaded (one transaction each).
    pub files_loaded: u64,
    /// Manifests not loaded: rejected files, files with no accepted row, or older versions of a
    /// source file that was transformed again.
    pub files_skipped: u64,
    /// Rows read from Parquet into the stage.
    pub rows_staged: u64,
    /// Target rows deleted because the stage replaces them (same key or same source file).
    pub rows_replaced: u64,
    pub rows_inserted: u64,
    /// Rows in the table after the load.
    pub table_rows: u64,
}

/// What [`load_lake`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadSummary {
    pub warehouse: PathBuf,
    pub datasets: Vec<DatasetLoad>,
    pub skipped: Vec<Skip>,
    pub duration_ms: u64,
}

/// The counts of loading one source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileLoad {
    pub rows_staged: u64,
    pub rows_replaced: u64,
    pub rows_inserted: u64,
    /// Rows already in the table that got the official rate published since they were loaded.
    pub rows_rated: u64,
}

/// A DuckDB warehouse file, attached to an in-memory session.
pub struct Warehouse {
    conn: Connection,
    schema: Ident,
}

impl Warehouse {
    /// Opens (creating it if needed) a warehouse file for loading.
    pub fn open(path: &Path) -> Result<Warehouse, WarehouseError> {
        Warehouse::attach(path, false)
    }

    /// Opens an existing warehouse file for queries only.
    pub fn open_read_only(path: &Path) -> Result<Warehouse, WarehouseError> {
        if !path.is_file() {
            return Err(WarehouseError::NoWarehouse(path.to_path_buf()));
        }
        Warehouse::attach(path, true)
    }

    fn attach(path: &Path, read_only: bool) -> Result<Warehouse, WarehouseError> {
        let text = path
            .to_str()
            .ok_or_else(|| WarehouseError::NonUtf8Path(path.to_path_buf()))?;
        let conn = Connection::open_in_memory()?;
        let mode = if read_only { " (READ_ONLY)" } else { "" };
        conn.execute_batch(&format!(
            "ATTACH {} AS {CATALOG}{mode}; USE {CATALOG}",
            SqlDialect::DuckDb.literal(text)?
        ))?;
        Ok(Warehouse {
            conn,
            schema: Ident::new(SCHEMA)?,
        })
    }

    /// Creates the schema and every table if they are missing (each dataset's and
    /// `trades_history`), then (re)creates the KPI views over them: the same setup Redshift gets.
    pub fn ensure_tables(&mut self) -> Result<(), WarehouseError> {
        let ddl = warehouse_setup(&SqlDialect::DuckDb, &self.schema)?;
        self.run_statements("(ddl)", &ddl)?;
        Ok(())
    }

    /// Runs statements in one transaction, each checked to be exactly one statement first (the
    /// DuckDB driver would otherwise run every statement of a `;`-separated string). Returns the
    /// rows each changed.
    pub fn run_statements(
        &mut self,
        label: &str,
        statements: &[String],
    ) -> Result<Vec<u64>, WarehouseError> {
        for s in statements {
            if SqlDialect::DuckDb.single_statement_literals(s).is_none() {
                return Err(WarehouseError::NotOneStatement(s.clone()));
            }
        }
        let tx = self.conn.transaction()?;
        let mut changed = Vec::with_capacity(statements.len());
        for s in statements {
            let n = tx
                .execute(s, [])
                .map_err(|source| WarehouseError::Statement {
                    source_key: label.to_string(),
                    statement: s.clone(),
                    source,
                })?;
            changed.push(n as u64);
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Loads one transformed source file of `lake` with the DuckDB rendering of its plan.
    pub fn load_file(
        &mut self,
        lake: &LocalLake,
        manifest: &Manifest,
    ) -> Result<FileLoad, WarehouseError> {
        let plan = LoadPlan::for_manifest(manifest, &self.schema, |key| {
            let path = lake.path(key).map_err(|_| LoadError::NothingToLoad {
                source_key: manifest.source.key.clone(),
                reason: format!("part key {key:?} is not a key inside the lake"),
            })?;
            path.to_str()
                .map(str::to_string)
                .ok_or_else(|| LoadError::NothingToLoad {
                    source_key: manifest.source.key.clone(),
                    reason: format!("part path {} is not UTF-8", path.display()),
                })
        })?;
        let load = self.run_plan(&plan, &manifest.source.key)?;
        tracing::info!(
            dataset = %manifest.dataset,
            key = %manifest.source.key,
            rows_staged = load.rows_staged,
            rows_replaced = load.rows_replaced,
            rows_inserted = load.rows_inserted,
            "loaded"
        );
        Ok(load)
    }

    /// Runs a plan's DuckDB rendering as one transaction, counting what each step did.
    fn run_plan(&mut self, plan: &LoadPlan, label: &str) -> Result<FileLoad, WarehouseError> {
        let rendered = plan.render_steps(&SqlDialect::DuckDb)?;
        let statements: Vec<String> = rendered.iter().flat_map(|r| r.sql.clone()).collect();
        let changed = self.run_statements(label, &statements)?;
        // Attribute each statement's row count to the step it came from.
        let mut load = FileLoad::default();
        let mut counts = changed.into_iter();
        for r in &rendered {
            let n: u64 = counts.by_ref().take(r.sql.len()).sum();
            match r.step {
                LoadStep::LoadParts { .. } => load.rows_staged += n,
                LoadStep::DeleteSupersededKeys { .. }
                | LoadStep::DeleteSourceRows { .. }
                | LoadStep::DeleteDuplicatesDecided { .. }
                | LoadStep::DeleteAllRows { .. } => load.rows_replaced += n,
                LoadStep::InsertNewKeys { .. }
                | LoadStep::InsertAll { .. }
                | LoadStep::InsertFirstDecisions { .. } => load.rows_inserted += n,
                LoadStep::FillMissingRates { .. } => load.rows_rated += n,
                LoadStep::CreateStage { .. } | LoadStep::DropStage { .. } => {}
            }
        }
        Ok(load)
    }

    /// Loads Parquet parts (keys of `lake`) of a table of the trade history (`trades_history`,
    /// `user_features`) with the table's load strategy; every table and view is created first
    /// if missing.
    pub fn load_parts(
        &mut self,
        lake: &LocalLake,
        table: Table,
        parts: &[String],
    ) -> Result<FileLoad, WarehouseError> {
        self.ensure_tables()?;
        if parts.is_empty() {
            return Ok(FileLoad::default());
        }
        let paths = parts
            .iter()
            .map(|key| {
                let path = lake.path(key)?;
                path.to_str()
                    .map(str::to_string)
                    .ok_or(WarehouseError::NonUtf8Path(path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = LoadPlan::new(LoadRequest {
            table,
            schema: self.schema.clone(),
            source_key: table.name().into(),
            parts: paths,
        })?;
        let load = self.run_plan(&plan, table.name())?;
        tracing::info!(
            table = table.name(),
            parts = parts.len(),
            rows_staged = load.rows_staged,
            rows_replaced = load.rows_replaced,
            rows_inserted = load.rows_inserted,
            "loaded"
        );
        Ok(load)
    }

    /// Rows in a dataset's table.
    pub fn table_rows(&self, table: impl Into<Table>) -> Result<u64, WarehouseError> {
        let table = lago::load::table_name(&self.schema, table)?;
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Runs one SQL statement and returns its result. Unqualified table names resolve in the
    /// `lago` schema.
    pub fn query(&self, sql: &str) -> Result<QueryResult, WarehouseError> {
        if SqlDialect::DuckDb.single_statement_literals(sql).is_none() {
            return Err(WarehouseError::NotOneStatement(sql.to_string()));
        }
        // Only once the schema exists: DuckDB refuses a search path naming a missing schema.
        let has_schema: i64 = self.conn.query_row(
            "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
            [CATALOG, SCHEMA],
            |r| r.get(0),
        )?;
        if has_schema > 0 {
            self.conn.execute_batch(&format!(
                "SET search_path = '{CATALOG}.{SCHEMA},{CATALOG}.main'"
            ))?;
        }
        query::run(&self.conn, sql)
    }
}

/// Loads every processed file of the lake at `lake_dir` (status ok, at least one row) of the
/// given datasets into the DuckDB file `warehouse_file`, creating it, its tables and the KPI
/// views as needed.
///
/// Files load oldest load date first, one transaction each; when a source file was transformed
/// more than once only its latest manifest is loaded. Running it again leaves every table as it
/// was: keyed datasets are upserted, `transacciones` replace their source file's rows.
pub fn load_lake(
    lake_dir: &Path,
    warehouse_file: &Path,
    datasets: &[Dataset],
) -> Result<LoadSummary, WarehouseError> {
    let started = Instant::now();
    let scan = scan_manifests(lake_dir, datasets)?;
    let lake = LocalLake::new(lake_dir);
    let mut wh = Warehouse::open(warehouse_file)?;
    wh.ensure_tables()?;
    let mut summary: Vec<DatasetLoad> = datasets
        .iter()
        .map(|d| DatasetLoad {
            dataset: *d,
            files_loaded: 0,
            files_skipped: 0,
            rows_staged: 0,
            rows_replaced: 0,
            rows_inserted: 0,
            table_rows: 0,
        })
        .collect();
    for m in &scan.to_load {
        let file = wh.load_file(&lake, m)?;
        if let Some(s) = summary.iter_mut().find(|s| s.dataset == m.dataset) {
            s.files_loaded += 1;
            s.rows_staged += file.rows_staged;
            s.rows_replaced += file.rows_replaced;
            s.rows_inserted += file.rows_inserted;
        }
    }
    for s in &mut summary {
        s.files_skipped = scan
            .skipped
            .iter()
            .filter(|k| k.dataset == s.dataset)
            .count() as u64;
        s.table_rows = wh.table_rows(s.dataset)?;
    }
    Ok(LoadSummary {
        warehouse: warehouse_file.to_path_buf(),
        datasets: summary,
        skipped: scan.skipped,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs one SQL statement against the warehouse file, read-only.
pub fn query(warehouse_file: &Path, sql: &str) -> Result<QueryResult, WarehouseError> {
    Warehouse::open_read_only(warehouse_file)?.query(sql)
}
