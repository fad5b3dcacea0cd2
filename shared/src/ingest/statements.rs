//! The warehouse side of the load branch: the `redshift-load` task's actions run through a small
//! Data API port. `setup` applies the DDL, `submit` runs one source file's [`LoadPlan`] as one
//! batch (one transaction), `status` reports the batch's state for the state machine's poll.
//!
//! The SQL itself comes from [`crate::load`]: one plan, rendered here for Redshift.

use std::future::Future;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::task::{S3Uri, TaskInputError};
use crate::contract::Dataset;
use crate::load::{
    self, Ident, LoadError, LoadPlan, LoadRequest, RedshiftCopy, SqlDialect, Table, TableLoad,
};
use crate::runtime::{BoxError, Classified, ErrorKind};
use crate::transform::{Manifest, Status};

/// The task input of the `redshift-load` function.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LoadTask {
    /// Apply the warehouse DDL (idempotent).
    Setup,
    /// Load the processed parts of one source file, named by its manifest (the transform's
    /// output carries both fields, so the state machine passes it as is).
    Submit { dataset: Dataset, manifest: String },
    /// Load derived tables (the trade history's day folders, the features) as one batch. `run`
    /// names the request (e.g. the execution and its round): a retried task with the same `run`
    /// is the same statement, another run loads again.
    SubmitTables { run: String, tables: Vec<TableLoad> },
    /// The state of a submitted batch.
    Status { statement_id: String },
}

/// A statement's (or batch's) state as the Data API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatementState {
    Submitted,
    Picked,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl StatementState {
    pub fn parse(s: &str) -> Option<StatementState> {
        Some(match s {
            "SUBMITTED" => StatementState::Submitted,
            "PICKED" => StatementState::Picked,
            "STARTED" => StatementState::Started,
            "FINISHED" => StatementState::Finished,
            "FAILED" => StatementState::Failed,
            "ABORTED" => StatementState::Aborted,
            _ => return None,
        })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StatementState::Finished | StatementState::Failed | StatementState::Aborted
        )
    }
}

/// One statement of a batch, as DescribeStatement lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubStatement {
    pub id: String,
    pub state: Option<StatementState>,
    pub error: Option<String>,
}

/// What DescribeStatement says about a statement or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementStatus {
    pub state: StatementState,
    pub error: Option<String>,
    pub sub_statements: Vec<SubStatement>,
}

/// One batch to run as one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub sqls: &'a [String],
    /// Shown in the Redshift console and `SYS_QUERY_HISTORY`.
    pub statement_name: &'a str,
    /// Idempotency token: a retried submit of the same load returns the same statement.
    pub client_token: &'a str,
}

/// Why the Data API call failed.
#[derive(Debug, thiserror::Error)]
pub enum DataApiError {
    #[error("the Redshift Data API is unavailable, throttling, or at its statement limit")]
    Transient(#[source] BoxError),
    #[error("statement {id:?} does not exist")]
    NotFound {
        id: String,
        #[source]
        source: BoxError,
    },
    #[error("the Redshift Data API refused the request")]
    Refused(#[source] BoxError),
    #[error("statement {id:?} has an unknown state {state:?}")]
    UnknownState { id: String, state: String },
}

/// The Redshift Data API, narrowed to what the load needs.
pub trait DataApi: Send + Sync {
    /// Submits the batch; returns its statement id.
    fn batch_execute(
        &self,
        batch: Batch<'_>,
    ) -> impl Future<Output = Result<String, DataApiError>> + Send;
    fn describe(
        &self,
        statement_id: &str,
    ) -> impl Future<Output = Result<StatementStatus, DataApiError>> + Send;
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {uri} does not exist")]
    NotFound {
        uri: String,
        #[source]
        source: BoxError,
    },
    #[error("reading manifest {uri} failed")]
    Transient {
        uri: String,
        #[source]
        source: BoxError,
    },
    #[error("manifest {uri} is larger than {limit} bytes")]
    TooLarge { uri: String, limit: u64 },
    #[error("manifest {uri} is not a lago manifest")]
    Invalid {
        uri: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading manifest {uri} was refused")]
    Refused {
        uri: String,
        #[source]
        source: BoxError,
    },
}

/// Reads the manifests the transform wrote, and lists what is under a processed prefix.
pub trait ManifestReader: Send + Sync {
    fn read_manifest(
        &self,
        uri: &S3Uri,
    ) -> impl Future<Output = Result<Manifest, ManifestError>> + Send;

    /// The keys under `prefix` in `bucket`, up to `limit` of them (S3: one `ListObjectsV2`).
    fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, ManifestError>> + Send;
}

/// The key prefix the transform gave a file's parts, `<stem>-` of `<stem>-00000.parquet`,
/// `<stem>-00001.parquet`, …: `None` unless every part is so named, numbered from 0 in order.
pub fn parts_stem<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut stem = None;
    for (n, key) in keys.into_iter().enumerate() {
        let (head, number) = key.strip_suffix(".parquet")?.rsplit_once('-')?;
        if number.len() != 5 || number.parse::<usize>().ok()? != n {
            return None;
        }
        match &stem {
            None => stem = Some(head),
            Some(s) if *s == head => {}
            Some(_) => return None,
        }
    }
    stem.map(|s| format!("{s}-"))
}

/// `s3://bucket/<stem>-` when the manifest's parts are the only objects under their stem — a
/// listing of it gives exactly them — so one COPY over it loads them all; `None` otherwise (a
/// part left by an earlier run, a listing that failed), and the parts are loaded one by one.
pub async fn exclusive_parts_prefix<M: ManifestReader>(
    manifests: &M,
    bucket: &str,
    manifest: &Manifest,
) -> Option<String> {
    let parts: std::collections::BTreeSet<&str> = manifest
        .outputs
        .processed
        .iter()
        .map(|p| p.key.as_str())
        .collect();
    let stem = parts_stem(manifest.outputs.processed.iter().map(|p| p.key.as_str()))?;
    match manifests.list_keys(bucket, &stem, parts.len() + 1).await {
        Ok(listed) => {
            let listed: std::collections::BTreeSet<&str> =
                listed.iter().map(String::as_str).collect();
            if listed == parts {
                load::s3_uri(bucket, &stem).ok()
            } else {
                let others: Vec<&&str> = listed.difference(&parts).take(3).collect();
                tracing::info!(%stem, ?others, "other objects under the parts' prefix: one COPY per part");
                None
            }
        }
        Err(e) => {
            tracing::warn!(%stem, error = %crate::runtime::error_chain(&e), "the parts' prefix could not be listed: one COPY per part");
            None
        }
    }
}

/// Why a `redshift-load` action failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadTaskError {
    #[error("invalid task input")]
    Input(#[from] TaskInputError),
    #[error("the manifest names dataset {found}, the task {expected}")]
    DatasetMismatch { expected: Dataset, found: Dataset },
    #[error("the load could not be planned")]
    Plan(#[from] LoadError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    DataApi(#[from] DataApiError),
}

impl Classified for LoadTaskError {
    fn kind(&self) -> ErrorKind {
        match self {
            LoadTaskError::Input(_) | LoadTaskError::DatasetMismatch { .. } => {
                ErrorKind::InvalidInput
            }
            LoadTaskError::Plan(
                LoadError::StatementTooLarge { .. } | LoadError::TooManyStatements { .. },
            ) => ErrorKind::LoadFailed,
            LoadTaskError::Plan(_) => ErrorKind::InvalidInput,
            LoadTaskError::Manifest(ManifestError::NotFound { .. }) => ErrorKind::NotFound,
            LoadTaskError::Manifest(ManifestError::Transient { .. }) => ErrorKind::Retryable,
            LoadTaskError::Manifest(_) => ErrorKind::InvalidInput,
            LoadTaskError::DataApi(DataApiError::Transient(_)) => ErrorKind::Retryable,
            LoadTaskError::DataApi(DataApiError::NotFound { .. }) => ErrorKind::NotFound,
            LoadTaskError::DataApi(DataApiError::Refused(_)) => ErrorKind::LoadFailed,
            LoadTaskError::DataApi(DataApiError::UnknownState { .. }) => ErrorKind::Internal,
        }
    }
}

/// Where and how the warehouse loads: the target schema and the COPY settings.
#[derive(Debug, Clone)]
pub struct LoadTarget {
    pub schema: Ident,
    pub dialect: SqlDialect,
}

impl LoadTarget {
    pub fn redshift(schema: &str, copy: RedshiftCopy) -> Result<LoadTarget, LoadError> {
        Ok(LoadTarget {
            schema: Ident::new(schema)?,
            dialect: SqlDialect::Redshift(copy),
        })
    }
}

/// The output of `setup` and `submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOutput {
    /// `None` when there was nothing to load (then `state` is `FINISHED` and `skipped` is set).
    pub statement_id: Option<String>,
    pub statement_name: String,
    pub state: StatementState,
    pub statements: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    /// The tables a `submit_tables` loads.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tables: Vec<Table>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub skipped: bool,
}

/// The output of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutput {
    pub statement_id: String,
    pub state: StatementState,
    /// The batch's error, or the first failed statement's (with its position in the batch).
    pub error: Option<String>,
}

/// A hex digest of parts, for names and idempotency tokens.
fn digest(parts: &[&str], hex_len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = hex::encode(h.finalize());
    d[..hex_len.min(d.len())].to_string()
}

impl SubmitOutput {
    /// A submitted batch.
    fn submitted(id: String, statement_name: String, statements: usize) -> SubmitOutput {
        SubmitOutput {
            statement_id: Some(id),
            statement_name,
            state: StatementState::Submitted,
            statements,
            dataset: None,
            source_key: None,
            tables: Vec::new(),
            skipped: false,
        }
    }

    /// Nothing to load: finished without a statement.
    fn skipped(statement_name: String) -> SubmitOutput {
        SubmitOutput {
            statement_id: None,
            state: StatementState::Finished,
            statements: 0,
            skipped: true,
            ..SubmitOutput::submitted(String::new(), statement_name, 0)
        }
    }
}

/// Submits `sqls` as one batch (one transaction); `token` makes a retry the same statement.
async fn submit_batch<D: DataApi>(
    api: &D,
    sqls: &[String],
    statement_name: String,
    token: &str,
) -> Result<SubmitOutput, LoadTaskError> {
    let id = api
        .batch_execute(Batch {
            sqls,
            statement_name: &statement_name,
            client_token: token,
        })
        .await?;
    Ok(SubmitOutput::submitted(id, statement_name, sqls.len()))
}

/// `setup`: the schema, the table of every dataset and `trades_history`, then the KPI views
/// over them, as one batch.
pub async fn setup<D: DataApi>(api: &D, wh: &LoadTarget) -> Result<SubmitOutput, LoadTaskError> {
    let sqls = load::warehouse_setup(&wh.dialect, &wh.schema)?;
    // The token changes with the DDL, so a changed contract is applied, a retry is not re-run.
    let refs: Vec<&str> = sqls.iter().map(String::as_str).collect();
    let token = digest(&refs, 64);
    let out = submit_batch(api, &sqls, format!("lago-setup-{}", &token[..12]), &token).await?;
    tracing::info!(statement_id = ?out.statement_id, statements = sqls.len(), schema = %wh.schema, "warehouse DDL submitted");
    Ok(out)
}

/// The Redshift statements that load one manifest's parts (exposed for tests and the docs),
/// through `parts_prefix` when it holds them alone ([`exclusive_parts_prefix`]).
pub fn load_statements(
    wh: &LoadTarget,
    manifest_uri: &S3Uri,
    manifest: &Manifest,
    parts_prefix: Option<&str>,
) -> Result<Vec<String>, LoadError> {
    let mut plan = LoadPlan::for_manifest(manifest, &wh.schema, |key| {
        load::s3_uri(&manifest_uri.bucket, key)
    })?;
    if let Some(prefix) = parts_prefix {
        plan = plan.with_parts_prefix(prefix)?;
    }
    plan.render(&wh.dialect)
}

/// `submit`: reads the manifest, renders its load plan and submits it as one batch. A manifest
/// with nothing to load (a rejected file, zero rows ok) is `skipped`, not an error.
pub async fn submit<D: DataApi, M: ManifestReader>(
    api: &D,
    manifests: &M,
    wh: &LoadTarget,
    dataset: Dataset,
    manifest_uri: &str,
) -> Result<SubmitOutput, LoadTaskError> {
    let uri: S3Uri = manifest_uri.parse()?;
    let manifest = manifests.read_manifest(&uri).await?;
    if manifest.dataset != dataset {
        return Err(LoadTaskError::DatasetMismatch {
            expected: dataset,
            found: manifest.dataset,
        });
    }
    let name_tag = digest(&[manifest_uri, &manifest.source.checksum], 16);
    let statement_name = format!("lago-load-{dataset}-{name_tag}");
    let prefix = if manifest.status == Status::Ok && manifest.rows_ok > 0 {
        exclusive_parts_prefix(manifests, &uri.bucket, &manifest).await
    } else {
        None
    };
    let sqls = match load_statements(wh, &uri, &manifest, prefix.as_deref()) {
        Ok(s) => s,
        Err(LoadError::NothingToLoad { source_key, reason }) => {
            tracing::info!(%dataset, key = %source_key, %reason, "nothing to load");
            return Ok(SubmitOutput {
                dataset: Some(dataset),
                source_key: Some(source_key),
                ..SubmitOutput::skipped(statement_name)
            });
        }
        Err(e) => return Err(e.into()),
    };
    // Same manifest, same content, same SQL: a retried submit is the same statement.
    let mut token_parts: Vec<&str> = vec![manifest_uri, &manifest.source.checksum];
    token_parts.extend(sqls.iter().map(String::as_str));
    let token = digest(&token_parts, 64);
    let out = submit_batch(api, &sqls, statement_name, &token).await?;
    tracing::info!(
        %dataset,
        key = %manifest.source.key,
        rows = manifest.rows_ok,
        parts = manifest.outputs.processed.len(),
        one_copy = prefix.is_some(),
        statement_id = ?out.statement_id,
        statements = sqls.len(),
        "load submitted"
    );
    Ok(SubmitOutput {
        dataset: Some(dataset),
        source_key: Some(manifest.source.key),
        ..out
    })
}

/// The Redshift statements that load derived tables, in order: each table's plan over its S3
/// parts or folders, which must lie under the table's `processed/` prefix.
pub fn table_statements(
    wh: &LoadTarget,
    tables: &[TableLoad],
) -> Result<Vec<String>, LoadTaskError> {
    let mut sqls = Vec::new();
    for load in tables {
        if matches!(load.table, Table::Dataset(_)) {
            // A dataset's rows are replaced or upserted per source file: through its manifest.
            return Err(LoadError::UnknownTable(load.table.to_string()).into());
        }
        let prefix = load.table.processed_prefix();
        for part in &load.parts {
            let uri: S3Uri = part.parse()?;
            if !uri.key.starts_with(&prefix) || uri.key.split('/').any(|s| s == "..") {
                return Err(LoadError::NotTheTablesLocation(part.clone(), load.table).into());
            }
        }
        let plan = LoadPlan::new(LoadRequest {
            table: load.table,
            schema: wh.schema.clone(),
            source_key: load.table.name().into(),
            parts: load.parts.clone(),
        })?;
        sqls.extend(plan.render(&wh.dialect)?);
    }
    if sqls.len() > load::MAX_BATCH_STATEMENTS {
        return Err(LoadError::TooManyStatements {
            statements: sqls.len(),
            limit: load::MAX_BATCH_STATEMENTS,
        }
        .into());
    }
    Ok(sqls)
}

/// `submit_tables`: the plans of the derived tables as one batch, so readers see the history and
/// the features of one run together. Nothing to load is `skipped`.
pub async fn submit_tables<D: DataApi>(
    api: &D,
    wh: &LoadTarget,
    run: &str,
    tables: &[TableLoad],
) -> Result<SubmitOutput, LoadTaskError> {
    let tables: Vec<TableLoad> = tables
        .iter()
        .filter(|t| !t.parts.is_empty())
        .cloned()
        .collect();
    let names: Vec<Table> = tables.iter().map(|t| t.table).collect();
    let sqls = table_statements(wh, &tables)?;
    let mut token_parts: Vec<&str> = vec![run];
    token_parts.extend(sqls.iter().map(String::as_str));
    let token = digest(&token_parts, 64);
    let statement_name = format!("lago-load-tables-{}", &token[..16]);
    if sqls.is_empty() {
        tracing::info!(%run, "no table to load");
        return Ok(SubmitOutput {
            tables: names,
            ..SubmitOutput::skipped(statement_name)
        });
    }
    let out = submit_batch(api, &sqls, statement_name, &token).await?;
    tracing::info!(%run, tables = ?names, statement_id = ?out.statement_id, statements = sqls.len(), "table load submitted");
    Ok(SubmitOutput {
        tables: names,
        ..out
    })
}

/// `status`: the batch's state. FAILED and ABORTED are reported, not raised: the state machine
/// decides (it fails the branch with the statement's error).
pub async fn status<D: DataApi>(
    api: &D,
    statement_id: &str,
) -> Result<StatusOutput, LoadTaskError> {
    let s = api.describe(statement_id).await?;
    let error = s.error.clone().or_else(|| {
        s.sub_statements
            .iter()
            .enumerate()
            .find(|(_, sub)| sub.error.is_some())
            .map(|(i, sub)| {
                format!(
                    "statement {} of the batch: {}",
                    i + 1,
                    sub.error.as_deref().unwrap_or_default()
                )
            })
    });
    if matches!(s.state, StatementState::Failed | StatementState::Aborted) {
        tracing::warn!(%statement_id, state = ?s.state, error = ?error, "load statement did not finish");
    } else {
        tracing::info!(%statement_id, state = ?s.state, "load statement status");
    }
    Ok(StatusOutput {
        statement_id: statement_id.to_string(),
        state: s.state,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::memory::{block_on, sample_manifest, MemoryDataApi, MemoryManifests};
    use crate::transform::Status;

    fn warehouse() -> Result<LoadTarget, LoadError> {
        LoadTarget::redshift(
            "energy",
            RedshiftCopy::new("arn:aws:iam::123456789012:role/lago-copy", None)?,
        )
    }

    #[test]
    fn task_inputs_parse_with_their_action() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::from_str::<LoadTask>(r#"{"action":"setup"}"#)?,
            LoadTask::Setup
        );
        let t: LoadTask = serde_json::from_str(
            r#"{"action":"submit","dataset":"clientes","manifest":"s3://l/m.json","rows_ok":3}"#,
        )?;
        assert_eq!(
            t,
            LoadTask::Submit {
                dataset: Dataset::Clientes,
                manifest: "s3://l/m.json".into()
            }
        );
        assert!(serde_json::from_str::<LoadTask>(r#"{"action":"drop"}"#).is_err());
        Ok(())
    }

    #[test]
    fn setup_submits_the_ddl_as_one_batch() -> anyhow::Result<()> {
        let api = MemoryDataApi::default();
        let out = block_on(setup(&api, &warehouse()?))?;
        let batches = api.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0][0], "CREATE SCHEMA IF NOT EXISTS energy");
        assert_eq!(out.statements, batches[0].len());
        // Every table (the datasets', then trades_history and user_features) before the views
        // that read them.
        let tables = Dataset::ALL.len() + 2;
        assert_eq!(batches[0].len(), 1 + tables + load::KPI_VIEWS.len());
        assert!(batches[0].len() <= load::MAX_BATCH_STATEMENTS);
        assert!(batches[0][1..=tables]
            .iter()
            .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS energy.")));
        assert!(
            batches[0][tables - 1].starts_with("CREATE TABLE IF NOT EXISTS energy.trades_history")
        );
        assert!(batches[0][tables].starts_with("CREATE TABLE IF NOT EXISTS energy.user_features"));
        assert!(batches[0][1 + tables..]
            .iter()
            .all(|s| s.starts_with("CREATE OR REPLACE VIEW energy.kpi_")
                && s.ends_with("\nWITH NO SCHEMA BINDING")));
        // A retried setup is the same statement (same idempotency token).
        let again = block_on(setup(&api, &warehouse()?))?;
        assert_eq!(again.statement_id, out.statement_id);
        Ok(())
    }

    #[test]
    fn submit_runs_the_plan_of_the_manifest() -> anyhow::Result<()> {
        // GIVEN a manifest with two parts in the lake
        let m = sample_manifest(Dataset::Transacciones, 2);
        let manifests = MemoryManifests::default();
        let uri = manifests.insert("lake", &m);
        let api = MemoryDataApi::default();
        // WHEN it is submitted
        let out = block_on(submit(
            &api,
            &manifests,
            &warehouse()?,
            Dataset::Transacciones,
            &uri,
        ))?;
        // THEN the batch is the plan rendered for Redshift, with one COPY over the parts'
        // prefix, which holds them alone
        let batches = api.batches();
        assert_eq!(batches.len(), 1);
        let prefix = format!(
            "s3://lake/{}",
            parts_stem(m.outputs.processed.iter().map(|p| p.key.as_str())).unwrap_or_default()
        );
        let expected = load_statements(&warehouse()?, &uri.parse()?, &m, Some(&prefix))?;
        assert_eq!(batches[0], expected);
        let copies: Vec<&String> = batches[0]
            .iter()
            .filter(|s| s.starts_with("COPY "))
            .collect();
        assert_eq!(copies.len(), 1);
        assert!(
            copies[0].contains(&format!("FROM '{prefix}'")),
            "{}",
            copies[0]
        );
        assert_eq!(out.state, StatementState::Submitted);
        assert_eq!(out.statements, expected.len());
        Ok(())
    }

    #[test]
    fn a_part_left_by_an_earlier_run_under_the_prefix_means_one_copy_per_part() -> anyhow::Result<()>
    {
        // GIVEN a two-part manifest, and a third part under the same stem that it does not list
        let m = sample_manifest(Dataset::Transacciones, 2);
        let manifests = MemoryManifests::default();
        let uri = manifests.insert("lake", &m);
        let stale = m.outputs.processed[0]
            .key
            .replace("-00000.parquet", "-00002.parquet");
        manifests.insert_object("lake", &stale);
        let api = MemoryDataApi::default();
        // WHEN it is submitted
        block_on(submit(
            &api,
            &manifests,
            &warehouse()?,
            Dataset::Transacciones,
            &uri,
        ))?;
        // THEN the COPYs name the manifest's two parts, so the third is not loaded
        let batches = api.batches();
        let copies: Vec<&String> = batches[0]
            .iter()
            .filter(|s| s.starts_with("COPY "))
            .collect();
        assert_eq!(copies.len(), 2);
        assert!(copies.iter().all(|c| !c.contains("-00002")));
        Ok(())
    }

    #[test]
    fn only_parts_named_in_order_from_zero_have_a_stem() {
        let stem = |keys: &[&str]| parts_stem(keys.iter().copied());
        assert_eq!(
            stem(&["p/x/t-1a-00000.parquet", "p/x/t-1a-00001.parquet"]),
            Some("p/x/t-1a-".to_string())
        );
        assert_eq!(
            stem(&["p/x/t-1a-00000.parquet"]),
            Some("p/x/t-1a-".to_string())
        );
        for keys in [
            &["p/x/t-1a-00001.parquet"][..],
            &["p/x/t-1a-00000.parquet", "p/x/t-1b-00001.parquet"],
            &["p/x/t-1a-00000.parquet", "p/x/t-1a-00002.parquet"],
            &["p/x/t-1a-0000.parquet"],
            &["p/x/t-1a-00000.csv"],
            &[],
        ] {
            assert_eq!(stem(keys), None, "{keys:?}");
        }
    }

    fn history_loads(days: &[&str]) -> Vec<TableLoad> {
        vec![
            TableLoad {
                table: Table::TradesHistory,
                parts: days
                    .iter()
                    .map(|d| format!("s3://lake/processed/trades/{d}/"))
                    .collect(),
            },
            TableLoad {
                table: Table::UserFeatures,
                parts: vec![format!(
                    "s3://lake/{}",
                    crate::history::features::USER_FEATURES_KEY
                )],
            },
        ]
    }

    #[test]
    fn submit_tables_loads_the_history_then_the_features_in_one_batch() -> anyhow::Result<()> {
        // GIVEN two days of the history and the rebuilt features
        let api = MemoryDataApi::default();
        let tables = history_loads(&["year=2026/month=12/day=06", "year=2026/month=12/day=07"]);
        let json: LoadTask = serde_json::from_value(serde_json::json!({
            "action": "submit_tables", "run": "exec-1/1", "tables": tables,
        }))?;
        assert_eq!(
            json,
            LoadTask::SubmitTables {
                run: "exec-1/1".into(),
                tables: tables.clone()
            }
        );
        // WHEN they are submitted
        let out = block_on(submit_tables(&api, &warehouse()?, "exec-1/1", &tables))?;
        // THEN one batch holds a COPY per day folder into the history's stage, then the features'
        let batches = api.batches();
        assert_eq!(batches.len(), 1);
        let copies: Vec<&String> = batches[0]
            .iter()
            .filter(|s| s.starts_with("COPY "))
            .collect();
        assert_eq!(copies.len(), 3);
        assert!(copies[0].starts_with(
            "COPY lago_stage_trades_history FROM 's3://lake/processed/trades/year=2026/month=12/day=06/'"
        ));
        assert!(copies[2].starts_with("COPY lago_stage_user_features FROM "));
        assert_eq!(out.tables, vec![Table::TradesHistory, Table::UserFeatures]);
        assert_eq!(out.statements, batches[0].len());
        // A retry of the same run is the same statement; another run submits again.
        let again = block_on(submit_tables(&api, &warehouse()?, "exec-1/1", &tables))?;
        assert_eq!(again.statement_id, out.statement_id);
        let next = block_on(submit_tables(&api, &warehouse()?, "exec-2/1", &tables))?;
        assert_ne!(next.statement_id, out.statement_id);
        // Nothing to load is skipped without a batch.
        let empty = vec![TableLoad {
            table: Table::TradesHistory,
            parts: vec![],
        }];
        let skipped = block_on(submit_tables(&api, &warehouse()?, "exec-3/1", &empty))?;
        assert!(skipped.skipped && skipped.statement_id.is_none());
        Ok(())
    }

    #[test]
    fn submit_tables_loads_only_derived_tables_from_their_own_prefix() -> anyhow::Result<()> {
        let wh = warehouse()?;
        let load = |table: Table, part: &str| {
            table_statements(
                &wh,
                &[TableLoad {
                    table,
                    parts: vec![part.into()],
                }],
            )
        };
        for (table, part) in [
            (
                Table::TradesHistory,
                "s3://lake/processed/clientes/year=2026/",
            ),
            (Table::TradesHistory, "s3://lake/raw/trades/year=2026/"),
            (
                Table::TradesHistory,
                "s3://lake/processed/trades/../../raw/",
            ),
            (Table::UserFeatures, "s3://lake/processed/trades/year=2026/"),
        ] {
            let e = load(table, part);
            assert!(
                matches!(
                    e,
                    Err(LoadTaskError::Plan(LoadError::NotTheTablesLocation(..)))
                ),
                "{part}: {e:?}"
            );
            assert_eq!(e.err().map(|e| e.kind()), Some(ErrorKind::InvalidInput));
        }
        let e = load(Table::TradesHistory, "/lake/processed/trades/");
        assert!(matches!(e, Err(ref e) if e.kind() == ErrorKind::InvalidInput));
        let e = load(
            Table::Dataset(Dataset::Clientes),
            "s3://lake/processed/clientes/",
        );
        assert!(matches!(
            e,
            Err(LoadTaskError::Plan(LoadError::UnknownTable(_)))
        ));
        // More day folders than one batch holds is refused, not cut.
        let days: Vec<String> = (1..=40)
            .map(|d| format!("year=2026/month=01/day={d:02}"))
            .collect();
        let days: Vec<&str> = days.iter().map(String::as_str).collect();
        let e = table_statements(&wh, &history_loads(&days));
        assert!(matches!(
            e,
            Err(LoadTaskError::Plan(LoadError::TooManyStatements { .. }))
        ));
        Ok(())
    }

    #[test]
    fn a_manifest_with_nothing_to_load_is_skipped() -> anyhow::Result<()> {
        let mut m = sample_manifest(Dataset::Clientes, 0);
        m.status = Status::Rejected;
        let manifests = MemoryManifests::default();
        let uri = manifests.insert("lake", &m);
        let api = MemoryDataApi::default();
        let out = block_on(submit(
            &api,
            &manifests,
            &warehouse()?,
            Dataset::Clientes,
            &uri,
        ))?;
        assert!(out.skipped);
        assert_eq!(out.state, StatementState::Finished);
        assert!(api.batches().is_empty());
        Ok(())
    }

    #[test]
    fn bad_inputs_are_classified() -> anyhow::Result<()> {
        let manifests = MemoryManifests::default();
        let api = MemoryDataApi::default();
        let wh = warehouse()?;
        let e = block_on(submit(
            &api,
            &manifests,
            &wh,
            Dataset::Clientes,
            "not-a-uri",
        ));
        assert!(matches!(e, Err(ref e) if e.kind() == ErrorKind::InvalidInput));
        let e = block_on(submit(
            &api,
            &manifests,
            &wh,
            Dataset::Clientes,
            "s3://lake/nope.json",
        ));
        assert!(matches!(e, Err(ref e) if e.kind() == ErrorKind::NotFound));
        let uri = manifests.insert("lake", &sample_manifest(Dataset::Proveedores, 1));
        let e = block_on(submit(&api, &manifests, &wh, Dataset::Clientes, &uri));
        assert!(matches!(e, Err(LoadTaskError::DatasetMismatch { .. })));
        let e = block_on(status(&api, "missing"));
        assert!(matches!(e, Err(ref e) if e.kind() == ErrorKind::NotFound));
        Ok(())
    }

    #[test]
    fn a_failed_batch_reports_the_failing_statement() -> anyhow::Result<()> {
        let api = MemoryDataApi::default();
        let id = api.insert_status(StatementStatus {
            state: StatementState::Failed,
            error: None,
            sub_statements: vec![
                SubStatement {
                    id: "s:1".into(),
                    state: Some(StatementState::Finished),
                    error: None,
                },
                SubStatement {
                    id: "s:2".into(),
                    state: Some(StatementState::Failed),
                    error: Some("S3ServiceException: Access Denied".into()),
                },
            ],
        });
        let out = block_on(status(&api, &id))?;
        assert_eq!(out.state, StatementState::Failed);
        assert_eq!(
            out.error.as_deref(),
            Some("statement 2 of the batch: S3ServiceException: Access Denied")
        );
        Ok(())
    }

    #[test]
    fn states_use_the_data_api_names() -> Result<(), serde_json::Error> {
        for s in [
            "SUBMITTED",
            "PICKED",
            "STARTED",
            "FINISHED",
            "FAILED",
            "ABORTED",
        ] {
            let st = StatementState::parse(s);
            assert!(st.is_some(), "{s}");
            assert_eq!(serde_json::to_value(st)?, serde_json::json!(s));
        }
        assert_eq!(StatementState::parse("ALL"), None);
        Ok(())
    }
}
