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
use crate::load::{self, Ident, LoadError, LoadPlan, RedshiftCopy, SqlDialect};
use crate::runtime::{BoxError, Classified, ErrorKind};
use crate::transform::Manifest;

/// The task input of the `redshift-load` function.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LoadTask {
    /// Apply the warehouse DDL (idempotent).
    Setup,
    /// Load the processed parts of one source file, named by its manifest (the transform's
    /// output carries both fields, so the state machine passes it as is).
    Submit { dataset: Dataset, manifest: String },
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

/// Reads the manifests the transform wrote.
pub trait ManifestReader: Send + Sync {
    fn read_manifest(
        &self,
        uri: &S3Uri,
    ) -> impl Future<Output = Result<Manifest, ManifestError>> + Send;
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

/// `setup`: the schema, the table of every dataset and `trades_history`, then the KPI views
/// over them, as one batch.
pub async fn setup<D: DataApi>(api: &D, wh: &LoadTarget) -> Result<SubmitOutput, LoadTaskError> {
    let sqls = load::warehouse_setup(&wh.dialect, &wh.schema)?;
    // The token changes with the DDL, so a changed contract is applied, a retry is not re-run.
    let refs: Vec<&str> = sqls.iter().map(String::as_str).collect();
    let token = digest(&refs, 64);
    let statement_name = format!("lago-setup-{}", &token[..12]);
    let id = api
        .batch_execute(Batch {
            sqls: &sqls,
            statement_name: &statement_name,
            client_token: &token,
        })
        .await?;
    tracing::info!(statement_id = %id, statements = sqls.len(), schema = %wh.schema, "warehouse DDL submitted");
    Ok(SubmitOutput {
        statement_id: Some(id),
        statement_name,
        state: StatementState::Submitted,
        statements: sqls.len(),
        dataset: None,
        source_key: None,
        skipped: false,
    })
}

/// The Redshift statements that load one manifest's parts (exposed for tests and the docs).
pub fn load_statements(
    wh: &LoadTarget,
    manifest_uri: &S3Uri,
    manifest: &Manifest,
) -> Result<Vec<String>, LoadError> {
    let plan = LoadPlan::for_manifest(manifest, &wh.schema, |key| {
        load::s3_uri(&manifest_uri.bucket, key)
    })?;
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
    let sqls = match load_statements(wh, &uri, &manifest) {
        Ok(s) => s,
        Err(LoadError::NothingToLoad { source_key, reason }) => {
            tracing::info!(%dataset, key = %source_key, %reason, "nothing to load");
            return Ok(SubmitOutput {
                statement_id: None,
                statement_name,
                state: StatementState::Finished,
                statements: 0,
                dataset: Some(dataset),
                source_key: Some(source_key),
                skipped: true,
            });
        }
        Err(e) => return Err(e.into()),
    };
    // Same manifest, same content, same SQL: a retried submit is the same statement.
    let mut token_parts: Vec<&str> = vec![manifest_uri, &manifest.source.checksum];
    token_parts.extend(sqls.iter().map(String::as_str));
    let token = digest(&token_parts, 64);
    let id = api
        .batch_execute(Batch {
            sqls: &sqls,
            statement_name: &statement_name,
            client_token: &token,
        })
        .await?;
    tracing::info!(
        %dataset,
        key = %manifest.source.key,
        rows = manifest.rows_ok,
        parts = manifest.outputs.processed.len(),
        statement_id = %id,
        statements = sqls.len(),
        "load submitted"
    );
    Ok(SubmitOutput {
        statement_id: Some(id),
        statement_name,
        state: StatementState::Submitted,
        statements: sqls.len(),
        dataset: Some(dataset),
        source_key: Some(manifest.source.key),
        skipped: false,
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
        // THEN the batch is the plan rendered for Redshift, with one COPY per part
        let batches = api.batches();
        assert_eq!(batches.len(), 1);
        let expected = load_statements(&warehouse()?, &uri.parse()?, &m)?;
        assert_eq!(batches[0], expected);
        assert_eq!(
            batches[0].iter().filter(|s| s.starts_with("COPY ")).count(),
            2
        );
        assert_eq!(out.state, StatementState::Submitted);
        assert_eq!(out.statements, expected.len());
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
