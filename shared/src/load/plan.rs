//! The load plan of one source file: a list of dialect-neutral steps, rendered to SQL per
//! dialect. Only staging and reading Parquet differ between Redshift and DuckDB; the upsert and
//! the replace are the same SQL in both.

use crate::contract::Dataset;
use crate::transform::{Manifest, Status};

use super::ddl::{column_idents, table_name, Table};
use super::sql::{Ident, SqlDialect, TableName};
use super::{check_size, LoadError, MAX_BATCH_STATEMENTS, MAX_STATEMENT_BYTES};

/// How a dataset's rows reach the target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStrategy {
    /// Dimensions: one row per key; the row with the latest `_load_date` wins.
    UpsertByKey(Ident),
    /// Facts: the rows of a source file replace that file's previous rows (`_source_key`).
    ReplaceSourceFile,
    /// The trade history: one row per key, and a trade's decision (`status` other than
    /// `duplicate`) is never replaced — it replaces a `duplicate` row of its trade, and among
    /// the staged rows of one key the first decision (by `_source_key`, `_source_line`) wins.
    FirstDecisionWins(Ident),
    /// Derived tables rebuilt whole (the features): the stage replaces every row.
    ReplaceTable,
}

impl LoadStrategy {
    pub fn of(table: impl Into<Table>) -> Result<LoadStrategy, LoadError> {
        let dataset = match table.into() {
            Table::Dataset(d) => d,
            Table::TradesHistory => {
                return Ok(LoadStrategy::FirstDecisionWins(Ident::new("trade_id")?))
            }
            Table::UserFeatures => return Ok(LoadStrategy::ReplaceTable),
        };
        // An explicit match, so a new dataset has to choose how it loads.
        Ok(match dataset {
            // A rate published again (a correction) replaces the one loaded before.
            Dataset::Clientes | Dataset::Proveedores | Dataset::Trm => {
                let key = dataset
                    .contract()
                    .key
                    .ok_or_else(|| LoadError::InvalidIdentifier(format!("{dataset} has no key")))?;
                LoadStrategy::UpsertByKey(Ident::new(key)?)
            }
            Dataset::Transacciones => LoadStrategy::ReplaceSourceFile,
        })
    }
}

/// One step of a load. Each carries everything needed to render it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStep {
    /// A temporary table shaped like the target.
    CreateStage {
        stage: Ident,
        target: TableName,
    },
    /// Read the Parquet parts (S3 URIs for Redshift, file paths for DuckDB) into the stage. A
    /// part ending in `/` is a folder: every Parquet object in it (a day of the trade history).
    LoadParts {
        stage: Ident,
        columns: Vec<Ident>,
        parts: Vec<String>,
        /// An S3 key prefix under which the parts are the only objects (see
        /// [`LoadPlan::with_parts_prefix`]): Redshift then loads them with one COPY, every file
        /// in parallel across the slices, instead of one COPY per part in sequence.
        prefix: Option<String>,
    },
    /// Delete target rows that the stage supersedes: same key, load date not newer.
    DeleteSupersededKeys {
        target: TableName,
        stage: Ident,
        key: Ident,
    },
    /// Delete the target rows a previous load of this source file left.
    DeleteSourceRows {
        target: TableName,
        source_key: String,
    },
    /// Insert the stage rows whose key is not in the target (after the delete: new keys, and
    /// keys whose target row is older).
    InsertNewKeys {
        target: TableName,
        stage: Ident,
        columns: Vec<Ident>,
        key: Ident,
    },
    /// Delete every row of the target (in the load's transaction: readers see the old rows
    /// until the new ones are in).
    DeleteAllRows {
        target: TableName,
    },
    /// Delete the target's `duplicate` rows whose trade the stage has a decision for.
    DeleteDuplicatesDecided {
        target: TableName,
        stage: Ident,
        key: Ident,
    },
    /// Insert, per key not in the target, the stage's first decision (or first row).
    InsertFirstDecisions {
        target: TableName,
        stage: Ident,
        columns: Vec<Ident>,
        key: Ident,
    },
    /// Give the target's rows without an official rate (`trm` null: none was published when they
    /// were written) the rate in force on their `local_date`, and their `spread_cop`: among
    /// overlapping intervals the one that starts last, then the latest loaded.
    FillMissingRates {
        target: TableName,
        rates: TableName,
    },
    /// Insert every stage row.
    InsertAll {
        target: TableName,
        stage: Ident,
        columns: Vec<Ident>,
    },
    DropStage {
        stage: Ident,
    },
}

/// What to load: the processed parts of one source file of a dataset (or of one run of the
/// trade history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest {
    pub table: Table,
    /// Target schema.
    pub schema: Ident,
    /// The raw object's key, as in the rows' `_source_key`.
    pub source_key: String,
    /// Where each Parquet part is, as the warehouse reads it (`s3://…` or a local path).
    pub parts: Vec<String>,
}

/// One derived table to load from Parquet parts or folders (`…/`): what the trade history's
/// task hands the warehouse load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableLoad {
    pub table: Table,
    pub parts: Vec<String>,
}

/// The ordered statements that load one source file, as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub table: Table,
    pub source_key: String,
    pub steps: Vec<LoadStep>,
}

impl LoadPlan {
    pub fn new(req: LoadRequest) -> Result<LoadPlan, LoadError> {
        if req.parts.is_empty() {
            return Err(LoadError::NothingToLoad {
                source_key: req.source_key,
                reason: "no processed parts".into(),
            });
        }
        let target = table_name(&req.schema, req.table)?;
        // Temporary tables live in a per-session schema, so the fixed name cannot collide with
        // another load; it is dropped at the end to leave the session reusable.
        let stage = Ident::new(&format!("lago_stage_{}", req.table.name()))?;
        let columns = column_idents(req.table)?;
        let mut steps = vec![
            LoadStep::CreateStage {
                stage: stage.clone(),
                target: target.clone(),
            },
            LoadStep::LoadParts {
                stage: stage.clone(),
                columns: columns.clone(),
                parts: req.parts,
                prefix: None,
            },
        ];
        match LoadStrategy::of(req.table)? {
            LoadStrategy::UpsertByKey(key) => {
                steps.push(LoadStep::DeleteSupersededKeys {
                    target: target.clone(),
                    stage: stage.clone(),
                    key: key.clone(),
                });
                steps.push(LoadStep::InsertNewKeys {
                    target,
                    stage: stage.clone(),
                    columns,
                    key,
                });
            }
            LoadStrategy::FirstDecisionWins(key) => {
                steps.push(LoadStep::DeleteDuplicatesDecided {
                    target: target.clone(),
                    stage: stage.clone(),
                    key: key.clone(),
                });
                steps.push(LoadStep::InsertFirstDecisions {
                    target: target.clone(),
                    stage: stage.clone(),
                    columns,
                    key,
                });
                // A rate published after the trades were archived reaches them with the next load.
                steps.push(LoadStep::FillMissingRates {
                    target,
                    rates: table_name(&req.schema, Dataset::Trm)?,
                });
            }
            LoadStrategy::ReplaceTable => {
                steps.push(LoadStep::DeleteAllRows {
                    target: target.clone(),
                });
                steps.push(LoadStep::InsertAll {
                    target,
                    stage: stage.clone(),
                    columns,
                });
            }
            LoadStrategy::ReplaceSourceFile => {
                steps.push(LoadStep::DeleteSourceRows {
                    target: target.clone(),
                    source_key: req.source_key.clone(),
                });
                steps.push(LoadStep::InsertAll {
                    target,
                    stage: stage.clone(),
                    columns,
                });
            }
        }
        steps.push(LoadStep::DropStage { stage });
        Ok(LoadPlan {
            table: req.table,
            source_key: req.source_key,
            steps,
        })
    }

    /// The plan for a transform manifest; `locate` turns a part's lake key into the location the
    /// warehouse reads (e.g. [`s3_uri`] for Redshift, a path under the lake folder for DuckDB).
    pub fn for_manifest(
        manifest: &Manifest,
        schema: &Ident,
        locate: impl Fn(&str) -> Result<String, LoadError>,
    ) -> Result<LoadPlan, LoadError> {
        if manifest.status != Status::Ok || manifest.rows_ok == 0 {
            return Err(LoadError::NothingToLoad {
                source_key: manifest.source.key.clone(),
                reason: format!(
                    "status {:?} with {} rows ok",
                    manifest.status, manifest.rows_ok
                ),
            });
        }
        let parts = manifest
            .outputs
            .processed
            .iter()
            .map(|p| locate(&p.key))
            .collect::<Result<Vec<_>, _>>()?;
        LoadPlan::new(LoadRequest {
            table: manifest.dataset.into(),
            schema: schema.clone(),
            source_key: manifest.source.key.clone(),
            parts,
        })
    }

    /// Loads the parts through `prefix` (`s3://bucket/…`), a key prefix the caller has checked
    /// holds exactly the parts and nothing else (a listing of it equal to the parts): Redshift's
    /// COPY reads every object under a prefix, in parallel across the slices. Refused when a
    /// part is not under it. DuckDB's rendering is unchanged: it reads the parts by name.
    pub fn with_parts_prefix(mut self, prefix: &str) -> Result<LoadPlan, LoadError> {
        for step in &mut self.steps {
            if let LoadStep::LoadParts {
                parts, prefix: p, ..
            } = step
            {
                if !prefix.starts_with("s3://") {
                    return Err(LoadError::NotAnS3Uri(prefix.to_string()));
                }
                if let Some(outside) = parts.iter().find(|part| !part.starts_with(prefix)) {
                    return Err(LoadError::NotUnderPrefix {
                        part: outside.clone(),
                        prefix: prefix.to_string(),
                    });
                }
                *p = Some(prefix.to_string());
            }
        }
        Ok(self)
    }

    /// The SQL statements, in order. Each is one statement under [`MAX_STATEMENT_BYTES`];
    /// a Redshift plan has at most [`MAX_BATCH_STATEMENTS`].
    pub fn render(&self, dialect: &SqlDialect) -> Result<Vec<String>, LoadError> {
        Ok(self
            .render_steps(dialect)?
            .into_iter()
            .flat_map(|r| r.sql)
            .collect())
    }

    /// The same statements grouped by the step they come from, for executors that report what
    /// each step did (rows staged, replaced, inserted).
    pub fn render_steps(&self, dialect: &SqlDialect) -> Result<Vec<RenderedStep<'_>>, LoadError> {
        let mut out = Vec::with_capacity(self.steps.len());
        let mut statements = 0;
        for step in &self.steps {
            let mut sql = Vec::new();
            render_step(step, dialect, &mut sql)?;
            for s in &sql {
                check_size(s)?;
            }
            statements += sql.len();
            out.push(RenderedStep { step, sql });
        }
        if matches!(dialect, SqlDialect::Redshift(_)) && statements > MAX_BATCH_STATEMENTS {
            return Err(LoadError::TooManyStatements {
                statements,
                limit: MAX_BATCH_STATEMENTS,
            });
        }
        Ok(out)
    }
}

/// A step of a plan and its SQL: one statement, or several when DuckDB's part list is split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedStep<'a> {
    pub step: &'a LoadStep,
    pub sql: Vec<String>,
}

/// `s3://<bucket>/<key>`, with the bucket checked against S3's naming rules. The key is left as
/// is: it is escaped when rendered.
pub fn s3_uri(bucket: &str, key: &str) -> Result<String, LoadError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(LoadError::InvalidBucket(bucket.to_string()));
    }
    if key.is_empty() {
        return Err(LoadError::NothingToLoad {
            source_key: String::new(),
            reason: "empty part key".into(),
        });
    }
    Ok(format!("s3://{bucket}/{key}"))
}

fn list(columns: &[Ident], alias: Option<&str>) -> String {
    let prefix = alias.map(|a| format!("{a}.")).unwrap_or_default();
    columns
        .iter()
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_step(step: &LoadStep, d: &SqlDialect, out: &mut Vec<String>) -> Result<(), LoadError> {
    match step {
        LoadStep::CreateStage { stage, target } => out.push(match d {
            SqlDialect::Redshift(_) => format!("CREATE TEMP TABLE {stage} (LIKE {target})"),
            SqlDialect::DuckDb => {
                format!("CREATE TEMP TABLE {stage} AS SELECT * FROM {target} LIMIT 0")
            }
        }),
        LoadStep::LoadParts {
            stage,
            columns,
            parts,
            prefix,
        } => match d {
            // One COPY over the parts' own prefix when the caller checked that it holds them
            // alone: Redshift loads the files in parallel, and a file of any number of parts is
            // one statement. Otherwise one COPY per part, rather than a COPY manifest object (no
            // extra object to write, no write permission for the loader): the files are exactly
            // the manifest's. The column order is the target's, created from the same contract
            // as the Parquet schema.
            SqlDialect::Redshift(copy) => {
                let sources = match prefix {
                    Some(prefix) => std::slice::from_ref(prefix),
                    None => parts.as_slice(),
                };
                for source in sources {
                    if !source.starts_with("s3://") {
                        return Err(LoadError::NotAnS3Uri(source.clone()));
                    }
                    let mut sql = format!(
                        "COPY {stage} FROM {} IAM_ROLE {} FORMAT AS PARQUET",
                        d.literal(source)?,
                        d.literal(copy.iam_role_arn())?
                    );
                    if let Some(region) = copy.region() {
                        sql.push_str(&format!(" REGION {}", d.literal(region)?));
                    }
                    out.push(sql);
                }
            }
            // DuckDB reads many files in one statement; the list is split only when it would
            // pass the statement size limit.
            SqlDialect::DuckDb => {
                let cols = list(columns, None);
                let head = format!("INSERT INTO {stage} ({cols}) SELECT {cols} FROM read_parquet([");
                let tail = "])";
                let mut current: Vec<String> = Vec::new();
                let mut len = head.len() + tail.len();
                for part in parts {
                    if part.contains(['*', '?', '[']) {
                        return Err(LoadError::GlobInPath(part.clone()));
                    }
                    let lit = if part.ends_with('/') {
                        d.literal(&format!("{part}*.parquet"))?
                    } else {
                        d.literal(part)?
                    };
                    let extra = lit.len() + if current.is_empty() { 0 } else { 2 };
                    if !current.is_empty() && len + extra > MAX_STATEMENT_BYTES {
                        out.push(format!("{head}{}{tail}", current.join(", ")));
                        current.clear();
                        len = head.len() + tail.len();
                    }
                    len += lit.len() + if current.is_empty() { 0 } else { 2 };
                    current.push(lit);
                }
                out.push(format!("{head}{}{tail}", current.join(", ")));
            }
        },
        LoadStep::DeleteSupersededKeys { target, stage, key } => {
            let t = &target.table;
            out.push(format!(
                "DELETE FROM {target} USING {stage} WHERE {t}.{key} = {stage}.{key} AND {t}._load_date <= {stage}._load_date"
            ));
        }
        LoadStep::DeleteSourceRows { target, source_key } => out.push(format!(
            "DELETE FROM {target} WHERE _source_key = {}",
            d.literal(source_key)?
        )),
        LoadStep::InsertNewKeys {
            target,
            stage,
            columns,
            key,
        } => out.push(format!(
            "INSERT INTO {target} ({}) SELECT {} FROM {stage} AS s LEFT JOIN {target} AS t ON t.{key} = s.{key} WHERE t.{key} IS NULL",
            list(columns, None),
            list(columns, Some("s")),
        )),
        LoadStep::DeleteAllRows { target } => out.push(format!("DELETE FROM {target}")),
        LoadStep::DeleteDuplicatesDecided { target, stage, key } => {
            let t = &target.table;
            out.push(format!(
                "DELETE FROM {target} USING {stage} WHERE {t}.{key} = {stage}.{key} AND {t}.status = {dup} AND {stage}.status <> {dup}",
                dup = d.literal("duplicate")?
            ));
        }
        LoadStep::InsertFirstDecisions {
            target,
            stage,
            columns,
            key,
        } => out.push(format!(
            "INSERT INTO {target} ({}) SELECT {} FROM (SELECT {}, ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY CASE WHEN status = {dup} THEN 1 ELSE 0 END, _source_key, _source_line) AS lago_rank FROM {stage}) AS s LEFT JOIN {target} AS t ON t.{key} = s.{key} WHERE t.{key} IS NULL AND s.lago_rank = 1",
            list(columns, None),
            list(columns, Some("s")),
            list(columns, None),
            dup = d.literal("duplicate")?
        )),
        LoadStep::FillMissingRates { target, rates } => {
            let t = &target.table;
            out.push(format!(
                "UPDATE {target} SET trm = f.valor, spread_cop = {t}.rate - f.valor FROM (SELECT h.trade_id, r.valor, ROW_NUMBER() OVER (PARTITION BY h.trade_id ORDER BY r.vigenciadesde DESC, r._load_date DESC) AS n FROM {target} AS h JOIN {rates} AS r ON h.local_date BETWEEN r.vigenciadesde AND r.vigenciahasta WHERE h.trm IS NULL) AS f WHERE {t}.trade_id = f.trade_id AND f.n = 1"
            ));
        }
        LoadStep::InsertAll {
            target,
            stage,
            columns,
        } => {
            let cols = list(columns, None);
            out.push(format!(
                "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
            ));
        }
        LoadStep::DropStage { stage } => out.push(format!("DROP TABLE {stage}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::sql::RedshiftCopy;

    const ROLE: &str = "arn:aws:iam::123456789012:role/lago-redshift-copy";
    const TX_COLS: &str = "id_transaccion, fecha_transaccion, tipo_transaccion, nombre_cliente_proveedor, cantidad_comprada, precio, tipo_energia, total, _source_key, _source_line, _load_date";
    const CLI_COLS: &str = "id_cliente, nombre_cliente, nombre_normalizado, segmento, tipo_identificacion, numero_identificacion_hash, email_masked, ciudad, fecha_registro, _source_key, _source_line, _load_date";
    const CLI_S_COLS: &str = "s.id_cliente, s.nombre_cliente, s.nombre_normalizado, s.segmento, s.tipo_identificacion, s.numero_identificacion_hash, s.email_masked, s.ciudad, s.fecha_registro, s._source_key, s._source_line, s._load_date";
    const PROV_COLS: &str =
        "nombre_proveedor, tipo_energia, id_proveedor, capacidad_mw, ciudad, _source_key, _source_line, _load_date";
    const PROV_S_COLS: &str = "s.nombre_proveedor, s.tipo_energia, s.id_proveedor, s.capacidad_mw, s.ciudad, s._source_key, s._source_line, s._load_date";

    fn redshift() -> Result<SqlDialect, LoadError> {
        Ok(SqlDialect::Redshift(RedshiftCopy::new(ROLE, None)?))
    }

    fn plan(dataset: Dataset, source_key: &str, parts: &[&str]) -> Result<LoadPlan, LoadError> {
        LoadPlan::new(LoadRequest {
            table: dataset.into(),
            schema: Ident::new("lago")?,
            source_key: source_key.to_string(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
        })
    }

    #[test]
    fn trades_history_keeps_the_first_decision_of_each_trade_in_both_dialects(
    ) -> Result<(), LoadError> {
        let plan = LoadPlan::new(LoadRequest {
            table: Table::TradesHistory,
            schema: Ident::new("lago")?,
            source_key: "trades history".into(),
            parts: vec!["s3://lake/processed/trades/year=2026/month=11/day=28/b.parquet".into()],
        })?;
        assert_eq!(
            LoadStrategy::of(Table::TradesHistory)?,
            LoadStrategy::FirstDecisionWins(Ident::new("trade_id")?)
        );
        let cols = column_idents(Table::TradesHistory)?
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>();
        let (plain, prefixed) = (
            cols.join(", "),
            cols.iter()
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let redshift = plan.render(&redshift()?)?;
        assert_eq!(redshift.len(), 6);
        assert_eq!(
            redshift[1],
            format!("COPY lago_stage_trades_history FROM 's3://lake/processed/trades/year=2026/month=11/day=28/b.parquet' IAM_ROLE '{ROLE}' FORMAT AS PARQUET")
        );
        let delete = "DELETE FROM lago.trades_history USING lago_stage_trades_history WHERE trades_history.trade_id = lago_stage_trades_history.trade_id AND trades_history.status = 'duplicate' AND lago_stage_trades_history.status <> 'duplicate'";
        let insert = format!("INSERT INTO lago.trades_history ({plain}) SELECT {prefixed} FROM (SELECT {plain}, ROW_NUMBER() OVER (PARTITION BY trade_id ORDER BY CASE WHEN status = 'duplicate' THEN 1 ELSE 0 END, _source_key, _source_line) AS lago_rank FROM lago_stage_trades_history) AS s LEFT JOIN lago.trades_history AS t ON t.trade_id = s.trade_id WHERE t.trade_id IS NULL AND s.lago_rank = 1");
        let rates = "UPDATE lago.trades_history SET trm = f.valor, spread_cop = trades_history.rate - f.valor FROM (SELECT h.trade_id, r.valor, ROW_NUMBER() OVER (PARTITION BY h.trade_id ORDER BY r.vigenciadesde DESC, r._load_date DESC) AS n FROM lago.trades_history AS h JOIN lago.trm AS r ON h.local_date BETWEEN r.vigenciadesde AND r.vigenciahasta WHERE h.trm IS NULL) AS f WHERE trades_history.trade_id = f.trade_id AND f.n = 1";
        assert_eq!(redshift[2], delete);
        assert_eq!(redshift[3], insert);
        assert_eq!(redshift[4], rates);
        let duck = plan.render(&SqlDialect::DuckDb)?;
        assert_eq!(
            (duck[2].as_str(), duck[3].as_str(), duck[4].as_str()),
            (delete, insert.as_str(), rates)
        );
        Ok(())
    }

    #[test]
    fn user_features_are_replaced_whole() -> Result<(), LoadError> {
        let plan = LoadPlan::new(LoadRequest {
            table: Table::UserFeatures,
            schema: Ident::new("lago")?,
            source_key: "features".into(),
            parts: vec!["/lake/processed/features/user_features/user_features.parquet".into()],
        })?;
        let sql = plan.render(&SqlDialect::DuckDb)?;
        assert_eq!(sql.len(), 5);
        assert_eq!(sql[2], "DELETE FROM lago.user_features");
        assert!(sql[3]
            .starts_with("INSERT INTO lago.user_features (user_id, feature_date, trades_7d, "));
        Ok(())
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const TX_KEY: &str = "raw/transacciones/year=2025/month=05/day=10/tx.csv";
    const TX_PART_0: &str =
        "processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00000.parquet";
    const TX_PART_1: &str =
        "processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00001.parquet";

    #[test]
    fn transacciones_in_redshift_copy_each_part_then_replace_the_source_file(
    ) -> Result<(), LoadError> {
        // GIVEN a source file whose transform wrote two parts to S3
        let parts = [
            s3_uri("lago-lake", TX_PART_0)?,
            s3_uri("lago-lake", TX_PART_1)?,
        ];
        let p = plan(
            Dataset::Transacciones,
            TX_KEY,
            &[parts[0].as_str(), parts[1].as_str()],
        )?;
        // WHEN the plan is rendered for Redshift
        let sql = p.render(&redshift()?)?;
        // THEN it stages, copies each part, replaces the file's rows and drops the stage
        assert_eq!(
            sql,
            s(&[
                "CREATE TEMP TABLE lago_stage_transacciones (LIKE lago.transacciones)",
                "COPY lago_stage_transacciones FROM 's3://lago-lake/processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00000.parquet' IAM_ROLE 'arn:aws:iam::123456789012:role/lago-redshift-copy' FORMAT AS PARQUET",
                "COPY lago_stage_transacciones FROM 's3://lago-lake/processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00001.parquet' IAM_ROLE 'arn:aws:iam::123456789012:role/lago-redshift-copy' FORMAT AS PARQUET",
                "DELETE FROM lago.transacciones WHERE _source_key = 'raw/transacciones/year=2025/month=05/day=10/tx.csv'",
                &format!("INSERT INTO lago.transacciones ({TX_COLS}) SELECT {TX_COLS} FROM lago_stage_transacciones"),
                "DROP TABLE lago_stage_transacciones",
            ])
        );
        Ok(())
    }

    #[test]
    fn transacciones_in_duckdb_read_all_parts_at_once_then_replace_the_source_file(
    ) -> Result<(), LoadError> {
        // GIVEN the same file in a local lake
        let p = plan(
            Dataset::Transacciones,
            TX_KEY,
            &[&format!("/lake/{TX_PART_0}"), &format!("/lake/{TX_PART_1}")],
        )?;
        // WHEN it is rendered for DuckDB
        let sql = p.render(&SqlDialect::DuckDb)?;
        // THEN only staging and reading differ from Redshift
        assert_eq!(
            sql,
            s(&[
                "CREATE TEMP TABLE lago_stage_transacciones AS SELECT * FROM lago.transacciones LIMIT 0",
                &format!("INSERT INTO lago_stage_transacciones ({TX_COLS}) SELECT {TX_COLS} FROM read_parquet(['/lake/processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00000.parquet', '/lake/processed/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d-00001.parquet'])"),
                "DELETE FROM lago.transacciones WHERE _source_key = 'raw/transacciones/year=2025/month=05/day=10/tx.csv'",
                &format!("INSERT INTO lago.transacciones ({TX_COLS}) SELECT {TX_COLS} FROM lago_stage_transacciones"),
                "DROP TABLE lago_stage_transacciones",
            ])
        );
        Ok(())
    }

    const CLI_KEY: &str = "raw/clientes/year=2025/month=05/day=11/clientes.csv";
    const CLI_UPSERT: [&str; 2] = [
        "DELETE FROM lago.clientes USING lago_stage_clientes WHERE clientes.id_cliente = lago_stage_clientes.id_cliente AND clientes._load_date <= lago_stage_clientes._load_date",
        "INSERT INTO lago.clientes (COLS) SELECT S_COLS FROM lago_stage_clientes AS s LEFT JOIN lago.clientes AS t ON t.id_cliente = s.id_cliente WHERE t.id_cliente IS NULL",
    ];

    fn cli_upsert() -> Vec<String> {
        CLI_UPSERT
            .iter()
            .map(|q| q.replace("S_COLS", CLI_S_COLS).replace("COLS", CLI_COLS))
            .collect()
    }

    #[test]
    fn clientes_in_redshift_upsert_by_id_cliente() -> Result<(), LoadError> {
        let part = s3_uri(
            "lago-lake",
            "processed/clientes/year=2025/month=05/day=11/clientes-0badcafe-00000.parquet",
        )?;
        let sql = plan(Dataset::Clientes, CLI_KEY, &[&part])?.render(&redshift()?)?;
        let mut expected = s(&[
            "CREATE TEMP TABLE lago_stage_clientes (LIKE lago.clientes)",
            "COPY lago_stage_clientes FROM 's3://lago-lake/processed/clientes/year=2025/month=05/day=11/clientes-0badcafe-00000.parquet' IAM_ROLE 'arn:aws:iam::123456789012:role/lago-redshift-copy' FORMAT AS PARQUET",
        ]);
        expected.extend(cli_upsert());
        expected.push("DROP TABLE lago_stage_clientes".into());
        assert_eq!(sql, expected);
        Ok(())
    }

    #[test]
    fn clientes_in_duckdb_upsert_by_id_cliente() -> Result<(), LoadError> {
        let sql = plan(Dataset::Clientes, CLI_KEY, &["/lake/c-00000.parquet"])?
            .render(&SqlDialect::DuckDb)?;
        let mut expected = s(&[
            "CREATE TEMP TABLE lago_stage_clientes AS SELECT * FROM lago.clientes LIMIT 0",
            &format!("INSERT INTO lago_stage_clientes ({CLI_COLS}) SELECT {CLI_COLS} FROM read_parquet(['/lake/c-00000.parquet'])"),
        ]);
        expected.extend(cli_upsert());
        expected.push("DROP TABLE lago_stage_clientes".into());
        assert_eq!(sql, expected);
        Ok(())
    }

    const PROV_UPSERT: [&str; 2] = [
        "DELETE FROM lago.proveedores USING lago_stage_proveedores WHERE proveedores.nombre_proveedor = lago_stage_proveedores.nombre_proveedor AND proveedores._load_date <= lago_stage_proveedores._load_date",
        "INSERT INTO lago.proveedores (COLS) SELECT S_COLS FROM lago_stage_proveedores AS s LEFT JOIN lago.proveedores AS t ON t.nombre_proveedor = s.nombre_proveedor WHERE t.nombre_proveedor IS NULL",
    ];

    fn prov_upsert() -> Vec<String> {
        PROV_UPSERT
            .iter()
            .map(|q| q.replace("S_COLS", PROV_S_COLS).replace("COLS", PROV_COLS))
            .collect()
    }

    #[test]
    fn proveedores_in_redshift_upsert_by_nombre_proveedor_with_a_region() -> Result<(), LoadError> {
        let d = SqlDialect::Redshift(RedshiftCopy::new(ROLE, Some("us-east-1"))?);
        let sql = plan(
            Dataset::Proveedores,
            "raw/proveedores/p.csv",
            &["s3://lago-lake/processed/proveedores/p-00000.parquet"],
        )?
        .render(&d)?;
        let mut expected = s(&[
            "CREATE TEMP TABLE lago_stage_proveedores (LIKE lago.proveedores)",
            "COPY lago_stage_proveedores FROM 's3://lago-lake/processed/proveedores/p-00000.parquet' IAM_ROLE 'arn:aws:iam::123456789012:role/lago-redshift-copy' FORMAT AS PARQUET REGION 'us-east-1'",
        ]);
        expected.extend(prov_upsert());
        expected.push("DROP TABLE lago_stage_proveedores".into());
        assert_eq!(sql, expected);
        Ok(())
    }

    #[test]
    fn proveedores_in_duckdb_upsert_by_nombre_proveedor() -> Result<(), LoadError> {
        let sql = plan(
            Dataset::Proveedores,
            "raw/proveedores/p.csv",
            &["/lake/p-00000.parquet"],
        )?
        .render(&SqlDialect::DuckDb)?;
        let mut expected = s(&[
            "CREATE TEMP TABLE lago_stage_proveedores AS SELECT * FROM lago.proveedores LIMIT 0",
            &format!("INSERT INTO lago_stage_proveedores ({PROV_COLS}) SELECT {PROV_COLS} FROM read_parquet(['/lake/p-00000.parquet'])"),
        ]);
        expected.extend(prov_upsert());
        expected.push("DROP TABLE lago_stage_proveedores".into());
        assert_eq!(sql, expected);
        Ok(())
    }

    #[test]
    fn trm_upserts_by_the_first_day_a_rate_is_in_force() -> Result<(), LoadError> {
        // GIVEN the TRM, whose corrected rates are published again under the same first day
        assert_eq!(
            LoadStrategy::of(Dataset::Trm)?,
            LoadStrategy::UpsertByKey(Ident::new("vigenciadesde")?)
        );
        // WHEN a file is loaded THEN a newer row replaces the older one of the same day
        let sql = plan(Dataset::Trm, "raw/trm/t.csv", &["/lake/t-00000.parquet"])?
            .render(&SqlDialect::DuckDb)?;
        assert_eq!(
            sql[2],
            "DELETE FROM lago.trm USING lago_stage_trm WHERE trm.vigenciadesde = lago_stage_trm.vigenciadesde AND trm._load_date <= lago_stage_trm._load_date"
        );
        Ok(())
    }

    #[test]
    fn a_hostile_source_key_and_part_path_stay_data_in_every_statement() -> Result<(), LoadError> {
        // GIVEN keys built to break out of a literal in either dialect
        let hostile_key =
            "raw/transacciones/x\\'; DROP TABLE lago.clientes; --\n'); COMMIT; --.csv";
        let hostile_part = "s3://lago-lake/processed/x\\'; DROP TABLE lago.clientes; --.parquet";
        let local_part = "/lake/x\\'; DROP TABLE lago.clientes; --.parquet";
        for (d, part) in [
            (redshift()?, hostile_part),
            (SqlDialect::DuckDb, local_part),
        ] {
            // WHEN the plan is rendered
            let sql = plan(Dataset::Transacciones, hostile_key, &[part])?.render(&d)?;
            // THEN every statement lexes as one statement, and its literals are exactly the
            // values we put in (plus the role for COPY)
            let mut seen = Vec::new();
            for stmt in &sql {
                let lits = d.single_statement_literals(stmt);
                assert!(lits.is_some(), "{}: not one statement: {stmt}", d.name());
                seen.extend(lits.unwrap_or_default());
            }
            assert!(seen.contains(&hostile_key.to_string()), "{}", d.name());
            assert!(seen.contains(&part.to_string()), "{}", d.name());
            assert!(seen
                .iter()
                .all(|l| l == hostile_key || l == part || l == ROLE));
            // AND the plan has exactly its own five statements
            assert_eq!(sql.len(), 5, "{}", d.name());
        }
        Ok(())
    }

    #[test]
    fn duckdb_splits_a_long_part_list_to_stay_under_the_statement_limit() -> Result<(), LoadError> {
        // GIVEN 3 000 parts with long paths (≈ 300 KB of literals)
        let parts: Vec<String> = (0..3000)
            .map(|i| format!("/a/rather/long/lake/folder/processed/transacciones/year=2025/month=05/day=10/a-very-long-export-name-1a2b3c4d-{i:05}.parquet"))
            .collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        // WHEN the plan is rendered for DuckDB
        let sql = plan(Dataset::Transacciones, TX_KEY, &refs)?.render(&SqlDialect::DuckDb)?;
        // THEN the parts are read by several INSERTs, each under the limit, none lost or repeated
        let inserts: Vec<&String> = sql
            .iter()
            .filter(|q| q.starts_with("INSERT INTO lago_stage_transacciones"))
            .collect();
        assert!(inserts.len() >= 3, "{} inserts", inserts.len());
        assert!(sql.iter().all(|q| q.len() <= MAX_STATEMENT_BYTES));
        let mut read = Vec::new();
        for q in inserts {
            read.extend(
                SqlDialect::DuckDb
                    .single_statement_literals(q)
                    .unwrap_or_default(),
            );
        }
        assert_eq!(read, parts);
        Ok(())
    }

    #[test]
    fn a_statement_that_cannot_fit_is_an_error() -> Result<(), LoadError> {
        // GIVEN one part location longer than the limit by itself
        let huge = format!("s3://lago-lake/{}", "k".repeat(MAX_STATEMENT_BYTES));
        // WHEN it is rendered THEN the size is reported, not sent
        for d in [redshift()?, SqlDialect::DuckDb] {
            let loc = if d == SqlDialect::DuckDb {
                huge.trim_start_matches("s3:/").to_string()
            } else {
                huge.clone()
            };
            let err = plan(Dataset::Transacciones, TX_KEY, &[&loc])?.render(&d);
            assert!(
                matches!(err, Err(LoadError::StatementTooLarge { limit, .. }) if limit == MAX_STATEMENT_BYTES),
                "{}: {err:?}",
                d.name()
            );
        }
        Ok(())
    }

    #[test]
    fn a_redshift_batch_over_forty_statements_is_an_error() -> Result<(), LoadError> {
        // GIVEN 37 parts: 37 COPYs + 4 other statements = 41
        let parts: Vec<String> = (0..37)
            .map(|i| format!("s3://lago-lake/processed/t-{i:05}.parquet"))
            .collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let p = plan(Dataset::Transacciones, TX_KEY, &refs)?;
        assert!(matches!(
            p.render(&redshift()?),
            Err(LoadError::TooManyStatements {
                statements: 41,
                limit: 40
            })
        ));
        // AND 36 parts fit exactly
        let p36 = plan(Dataset::Transacciones, TX_KEY, &refs[..36])?;
        assert_eq!(p36.render(&redshift()?)?.len(), 40);
        Ok(())
    }

    #[test]
    fn parts_alone_under_their_prefix_are_one_copy_and_duckdb_reads_them_as_before(
    ) -> Result<(), LoadError> {
        // GIVEN a file of 37 parts (one COPY each would pass the Data API's 40 statements)
        let parts: Vec<String> = (0..37)
            .map(|i| format!("s3://lago-lake/processed/transacciones/t-1a2b-{i:05}.parquet"))
            .collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let prefix = "s3://lago-lake/processed/transacciones/t-1a2b-";
        let p = plan(Dataset::Transacciones, TX_KEY, &refs)?.with_parts_prefix(prefix)?;
        // WHEN it is rendered for Redshift
        let sql = p.render(&redshift()?)?;
        // THEN the parts are one COPY over the prefix: 5 statements in all
        assert_eq!(sql.len(), 5);
        let copies: Vec<&String> = sql.iter().filter(|s| s.starts_with("COPY")).collect();
        assert_eq!(copies.len(), 1);
        assert!(
            copies[0].starts_with(&format!(
                "COPY lago_stage_transacciones FROM '{prefix}' IAM_ROLE"
            )),
            "{}",
            copies[0]
        );
        // AND DuckDB still reads exactly the parts, as without the prefix
        let plain = plan(Dataset::Transacciones, TX_KEY, &refs)?;
        assert_eq!(
            p.render(&SqlDialect::DuckDb)?,
            plain.render(&SqlDialect::DuckDb)?
        );
        // AND a prefix that does not hold every part, or is no S3 URI, is refused
        let other = plan(Dataset::Transacciones, TX_KEY, &refs)?
            .with_parts_prefix("s3://lago-lake/processed/transacciones/t-9999-");
        assert!(matches!(other, Err(LoadError::NotUnderPrefix { .. })));
        let local = plan(Dataset::Transacciones, TX_KEY, &refs)?.with_parts_prefix("/lake/");
        assert!(matches!(local, Err(LoadError::NotAnS3Uri(_))));
        Ok(())
    }

    #[test]
    fn parts_in_the_wrong_place_for_the_dialect_are_refused() -> Result<(), LoadError> {
        let local = plan(Dataset::Clientes, CLI_KEY, &["/lake/c-00000.parquet"])?;
        assert!(matches!(
            local.render(&redshift()?),
            Err(LoadError::NotAnS3Uri(_))
        ));
        let globbed = plan(Dataset::Clientes, CLI_KEY, &["/lake/*.parquet"])?;
        assert!(matches!(
            globbed.render(&SqlDialect::DuckDb),
            Err(LoadError::GlobInPath(_))
        ));
        assert!(matches!(
            s3_uri("Lago_Lake", "k"),
            Err(LoadError::InvalidBucket(_))
        ));
        assert!(matches!(
            s3_uri("lago-lake'", "k"),
            Err(LoadError::InvalidBucket(_))
        ));
        Ok(())
    }

    fn manifest(status: &str, rows_ok: u64) -> Result<Manifest, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "dataset": "transacciones",
            "load_date": "2025-05-10",
            "source": {
                "key": TX_KEY, "size": 10, "version": "v", "checksum": "c",
                "compression": null, "encoding": null, "delimiter": null,
                "decimal_separator": null, "bom": false
            },
            "status": status,
            "file_reason": null, "file_detail": null,
            "rows_in": rows_ok, "rows_ok": rows_ok, "rows_rejected": 0,
            "rejects_by_reason": {}, "ignored_columns": [], "missing_optional_columns": [],
            "outputs": {
                "processed": [{"key": TX_PART_0, "rows": rows_ok, "bytes": 100}],
                "rejected": null,
                "manifest": "manifests/transacciones/year=2025/month=05/day=10/tx-1a2b3c4d.json"
            },
            "started_at": "2025-05-10T00:00:00.000Z", "duration_ms": 1, "threads": 1
        }))
    }

    #[test]
    fn a_manifest_plans_its_parts_where_the_locator_puts_them(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // GIVEN the manifest of a transformed file
        let m = manifest("ok", 3)?;
        // WHEN it is planned for the lake bucket
        let p = LoadPlan::for_manifest(&m, &Ident::new("lago")?, |k| s3_uri("lago-lake", k))?;
        // THEN the plan loads that source's parts from S3
        assert_eq!(p.source_key, TX_KEY);
        assert_eq!(
            p.steps[1],
            LoadStep::LoadParts {
                stage: Ident::new("lago_stage_transacciones")?,
                columns: column_idents(Dataset::Transacciones)?,
                parts: vec![format!("s3://lago-lake/{TX_PART_0}")],
                prefix: None,
            }
        );
        // AND a rejected or empty file has nothing to load
        for m in [manifest("rejected", 0)?, manifest("ok", 0)?] {
            let r = LoadPlan::for_manifest(&m, &Ident::new("lago")?, |k| Ok(k.to_string()));
            assert!(matches!(r, Err(LoadError::NothingToLoad { .. })));
        }
        Ok(())
    }

    #[test]
    fn a_folder_part_reads_every_parquet_object_in_it() -> Result<(), LoadError> {
        let day = "processed/trades/year=2026/month=12/day=07/";
        let plan = |part: String| {
            LoadPlan::new(LoadRequest {
                table: Table::TradesHistory,
                schema: Ident::new("lago")?,
                source_key: "trades_history".into(),
                parts: vec![part],
            })
        };
        let duck = plan(format!("/lake/{day}"))?.render(&SqlDialect::DuckDb)?;
        assert!(
            duck[1].ends_with(&format!("FROM read_parquet(['/lake/{day}*.parquet'])")),
            "{}",
            duck[1]
        );
        let redshift =
            plan(format!("s3://lago-lake/{day}"))?.render(&crate::load::test_redshift()?)?;
        assert!(redshift[1].starts_with(&format!(
            "COPY lago_stage_trades_history FROM 's3://lago-lake/{day}' IAM_ROLE"
        )));
        Ok(())
    }

    #[test]
    fn tables_are_named_as_the_warehouse_names_them() -> Result<(), serde_json::Error> {
        let load: TableLoad = serde_json::from_str(
            r#"{"table":"user_features","parts":["s3://l/processed/features/user_features/u.parquet"]}"#,
        )?;
        assert_eq!(load.table, Table::UserFeatures);
        for t in [
            Table::TradesHistory,
            Table::UserFeatures,
            Table::Dataset(Dataset::Trm),
        ] {
            let json = serde_json::to_value(t)?;
            assert_eq!(json, serde_json::json!(t.name()));
            assert_eq!(serde_json::from_value::<Table>(json)?, t);
        }
        assert!(serde_json::from_str::<Table>(r#""trades""#).is_err());
        Ok(())
    }

    #[test]
    fn a_plan_needs_parts() {
        assert!(matches!(
            plan(Dataset::Clientes, CLI_KEY, &[]),
            Err(LoadError::NothingToLoad { .. })
        ));
    }
}
