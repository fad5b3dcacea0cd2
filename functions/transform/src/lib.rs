//! The `transform` function's handler: validates the execution input, fetches the PII salt once
//! per container, runs the synchronous transform engine on a blocking thread against S3 (or the
//! in-memory lake in tests) within the invocation's deadline, and maps the manifest to the task
//! output. With `{"action": "verify", "manifest": "s3://…"}` it instead recomputes the checksum
//! of every output that manifest lists ([`verify`]), the state machine's integrity step; with
//! `{"action": "register", "manifest": "s3://…"}` it registers the Glue partitions that
//! manifest's Parquet went to ([`register`]), so the data is queryable with no crawler.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lago::aws::s3::{S3Error, S3Lake, S3Source};
use lago::catalog::{CatalogError, PartitionCatalog, PartitionSpec, Registered};
use lago::ingest::task::S3Uri;
use lago::ingest::task::{
    pii_salt, ExecutionInput, SecretError, SecretSource, TaskInputError, TransformOutput,
};
use lago::integrity::{self, Problem, VerifyReport};
use lago::lake::{LakeError, LakeRead, LakeStore};
use lago::runtime::env::{ConfigError, Env};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{Classified, ErrorKind};
use lago::transform::{self as engine, RawSource, TransformError, TransformOptions};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::sync::OnceCell;

/// Settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `LAKE_BUCKET`: the only bucket read from and written to.
    pub lake_bucket: String,
    /// `PII_SALT_SECRET_ARN`: the secret holding the salt of PII hashes.
    pub salt_secret_id: String,
    /// `S3_PART_SIZE_MIB` (5–64, default 8): multipart upload part size.
    pub s3_part_size: usize,
    /// `PARQUET_PART_MIB` (8–1024, default 128): target size of one Parquet part.
    pub parquet_part_size: u64,
    /// `TRANSFORM_THREADS` (default: the CPUs the process sees; below 1,769 MB Lambda gives less
    /// CPU time than that, so the template sets 1: docs/cost.md).
    pub threads: usize,
    /// `DEADLINE_MARGIN_SECONDS` (2–120, default 10): time kept back from the invocation's
    /// deadline to stop cleanly and report instead of being killed.
    pub deadline_margin: Duration,
    /// `GLUE_DATABASE` (optional): the processed zone's Glue database, where `register` adds
    /// partitions.
    pub glue_database: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Config {
            lake_bucket: env.required("LAKE_BUCKET")?,
            salt_secret_id: env.required("PII_SALT_SECRET_ARN")?,
            s3_part_size: env.in_range("S3_PART_SIZE_MIB", 8usize, 5..=64)? << 20,
            parquet_part_size: env.in_range("PARQUET_PART_MIB", 128u64, 8..=1024)? << 20,
            threads: env.in_range("TRANSFORM_THREADS", cpus, 1..=64)?,
            deadline_margin: Duration::from_secs(env.in_range(
                "DEADLINE_MARGIN_SECONDS",
                10u64,
                2..=120,
            )?),
            glue_database: env.optional("GLUE_DATABASE"),
        })
    }
}

/// Where the raw object is read from and the outputs written to.
pub trait Storage: Send + Sync {
    /// The raw object of this execution, re-openable.
    fn source(&self, input: &ExecutionInput) -> Arc<dyn RawSource + Send + Sync>;
    /// The lake the outputs go to.
    fn lake(&self) -> Arc<dyn LakeStore>;
    /// The lake's objects, to read back.
    fn objects(&self) -> Arc<dyn LakeRead>;
    /// Waits for clean-ups of an interrupted run (aborted multipart uploads).
    fn settle(&self) -> impl Future<Output = ()> + Send;
}

/// The lake bucket on S3.
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    handle: tokio::runtime::Handle,
    lake: S3Lake,
}

impl S3Storage {
    pub fn new(
        client: aws_sdk_s3::Client,
        handle: tokio::runtime::Handle,
        config: &Config,
    ) -> S3Storage {
        let lake = S3Lake::new(client.clone(), &config.lake_bucket, handle.clone())
            .with_part_size(config.s3_part_size);
        S3Storage {
            client,
            handle,
            lake,
        }
    }

    /// Opens the S3 connection during init (HeadBucket: allowed by the ListBucket the lake needs).
    pub async fn warm(&self) {
        let r = self
            .client
            .head_bucket()
            .bucket(self.lake.bucket())
            .send()
            .await;
        tracing::debug!(ok = r.is_ok(), "s3 connection warmed");
    }
}

impl Storage for S3Storage {
    fn source(&self, input: &ExecutionInput) -> Arc<dyn RawSource + Send + Sync> {
        Arc::new(S3Source::new(
            self.client.clone(),
            self.handle.clone(),
            &input.bucket,
            &input.key,
            input.version_id.clone(),
            input.etag.clone(),
        ))
    }

    fn lake(&self) -> Arc<dyn LakeStore> {
        Arc::new(self.lake.clone())
    }

    fn objects(&self) -> Arc<dyn LakeRead> {
        Arc::new(self.lake.clone())
    }

    async fn settle(&self) {
        self.lake.drain_cleanups().await;
    }
}

/// What the handler needs, built once per container.
pub struct Deps<St, Sec, Cat = NoCatalog> {
    pub storage: St,
    pub secrets: Sec,
    pub config: Config,
    /// Where `register` adds partitions (Glue in AWS); `None` without `GLUE_DATABASE`.
    pub catalog: Option<Cat>,
    salt: OnceCell<Vec<u8>>,
}

/// The catalog of a function built without one: `register` says so instead of registering.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCatalog;

impl PartitionCatalog for NoCatalog {
    async fn register(
        &self,
        database: &str,
        partitions: &[PartitionSpec],
    ) -> Result<Registered, CatalogError> {
        Err(CatalogError {
            database: database.to_string(),
            table: partitions
                .first()
                .map(|p| p.dataset.name().to_string())
                .unwrap_or_default(),
            code: "NoCatalog".into(),
            transient: false,
            source: None,
        })
    }
}

impl<St: Storage, Sec: SecretSource> Deps<St, Sec> {
    pub fn new(storage: St, secrets: Sec, config: Config) -> Deps<St, Sec> {
        Deps {
            storage,
            secrets,
            config,
            catalog: None,
            salt: OnceCell::new(),
        }
    }
}

impl<St: Storage, Sec: SecretSource, Cat> Deps<St, Sec, Cat> {
    /// The same, registering partitions in `catalog` (under `GLUE_DATABASE`).
    pub fn with_catalog<C: PartitionCatalog>(self, catalog: C) -> Deps<St, Sec, C> {
        Deps {
            storage: self.storage,
            secrets: self.secrets,
            config: self.config,
            catalog: Some(catalog),
            salt: self.salt,
        }
    }

    /// The PII salt, read from Secrets Manager on first use and kept for the container's life.
    pub async fn salt(&self) -> Result<&[u8], SecretError> {
        let id = &self.config.salt_secret_id;
        let salt = self
            .salt
            .get_or_try_init(|| async {
                let raw = self.secrets.secret_bytes(id).await?;
                pii_salt(id, &raw)
            })
            .await?;
        Ok(salt)
    }

    /// Reads the salt during init; a failure is logged and retried by the first invocation.
    pub async fn warm_salt(&self) {
        if let Err(e) = self.salt().await {
            tracing::warn!(error = %lago::runtime::error_chain(&e), "the PII salt could not be read during init");
        }
    }
}

/// Why the task failed. A bad file is not an error: it is rejected, with a manifest, and the
/// output says `status: rejected`.
#[derive(Debug, thiserror::Error)]
pub enum TransformTaskError {
    #[error("invalid task input")]
    Input(#[source] serde_json::Error),
    #[error("invalid task input")]
    InvalidTask(#[from] TaskInputError),
    #[error("the object is in bucket {found:?}; this function reads only {expected:?}")]
    WrongBucket { expected: String, found: String },
    #[error("the PII salt is unavailable")]
    Salt(#[from] SecretError),
    #[error(
        "only {remaining:?} of the invocation were left, less than the {margin:?} safety margin"
    )]
    NoTime {
        remaining: Duration,
        margin: Duration,
    },
    #[error(
        "the transform did not finish within the invocation's deadline; nothing was committed"
    )]
    Deadline,
    #[error("the transform failed")]
    Transform(#[from] TransformError),
    #[error("the transform thread panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("invalid verify input: {0}")]
    VerifyInput(String),
    #[error("reading the outputs of {manifest} failed")]
    VerifyRead {
        manifest: String,
        #[source]
        source: LakeError,
    },
    #[error("{} of the outputs of {manifest} do not match it: {}", problems.len(), summary(problems))]
    Mismatch {
        manifest: String,
        problems: Vec<Problem>,
    },
    #[error("the manifest {manifest} cannot be read")]
    ManifestUnreadable {
        manifest: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the partitions of {manifest} are not where its load date puts them: {detail}")]
    PartitionMismatch { manifest: String, detail: String },
    #[error("GLUE_DATABASE is not set: there is no catalog to register partitions in")]
    NoCatalog,
    #[error("the partitions could not be registered")]
    Catalog(#[source] CatalogError),
}

/// The first problems, one phrase each (the full list is in the log).
fn summary(problems: &[Problem]) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .take(3)
        .map(|p| format!("{} {}", p.key, p.finding.code()))
        .collect();
    if problems.len() > 3 {
        s.push(format!("and {} more", problems.len() - 3));
    }
    s.join("; ")
}

/// The kind of an I/O error from the S3 adapters or the local file system.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    S3Error::kind_of_io(e).unwrap_or(if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Retryable
    })
}

impl Classified for TransformTaskError {
    fn kind(&self) -> ErrorKind {
        use TransformTaskError as E;
        match self {
            E::Input(_) | E::InvalidTask(_) | E::WrongBucket { .. } | E::VerifyInput(_) => {
                ErrorKind::InvalidInput
            }
            E::ManifestUnreadable { source, .. } => match source.downcast_ref::<LakeError>() {
                Some(LakeError::Io { source, .. }) => io_kind(source),
                Some(other) => S3Error::kind_in_chain(other).unwrap_or(ErrorKind::Retryable),
                None => ErrorKind::Internal,
            },
            E::PartitionMismatch { .. } | E::NoCatalog => ErrorKind::Internal,
            E::Catalog(e) if e.transient => ErrorKind::Retryable,
            E::Catalog(e) if e.code == "EntityNotFoundException" => ErrorKind::NotFound,
            E::Catalog(_) => ErrorKind::Internal,
            E::Mismatch { .. } => ErrorKind::ChecksumMismatch,
            E::VerifyRead { source, .. } => match source {
                LakeError::Io { source, .. } => io_kind(source),
                other => S3Error::kind_in_chain(other).unwrap_or(ErrorKind::Retryable),
            },
            E::Salt(e) => e.kind(),
            E::NoTime { .. } | E::Deadline => ErrorKind::DeadlineExceeded,
            E::Panicked(_) => ErrorKind::Internal,
            E::Transform(t) => match t {
                TransformError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
                TransformError::Source(io) => io_kind(io),
                TransformError::Lake(LakeError::InvalidKey(_) | LakeError::Unsupported(_)) => {
                    ErrorKind::Internal
                }
                TransformError::Lake(LakeError::Io { source, .. }) => io_kind(source),
                TransformError::Manifest(_) | TransformError::Invariant(_) => ErrorKind::Internal,
                // Parquet and the key set fail on I/O (an S3 part upload, the spill file).
                other => S3Error::kind_in_chain(other).unwrap_or(ErrorKind::Retryable),
            },
        }
    }
}

/// One invocation: `{"action": "verify", …}` verifies a manifest's outputs,
/// `{"action": "register", …}` registers its partitions, anything else is a transform task.
pub async fn dispatch<St: Storage, Sec: SecretSource, Cat: PartitionCatalog>(
    deps: &Deps<St, Sec, Cat>,
    event: LambdaEvent<Value>,
) -> Result<Value, TransformTaskError> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(TransformTaskError::Input);
    match event.payload.get("action").and_then(Value::as_str) {
        Some("verify") => to_value(serde_json::to_value(verify(deps, event.payload).await?)),
        Some("register") => to_value(serde_json::to_value(register(deps, event.payload).await?)),
        _ => to_value(serde_json::to_value(handle(deps, event).await?)),
    }
}

/// What `register` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegisterOutput {
    pub database: Option<String>,
    pub table: String,
    /// `[year, month, day]` of each partition.
    pub partitions: Vec<[String; 3]>,
    pub created: u32,
    pub existed: u32,
    /// Nothing to register: a rejected file, or no row ok.
    pub skipped: bool,
}

/// `{"action": "register", "manifest": "s3://<lake>/manifests/…"}`: registers, in the processed
/// database (`GLUE_DATABASE`), the partition of the load date the manifest's Parquet went to —
/// already registered is fine (an earlier file of the same day, a retry). The table is the
/// template's, declared from the contract; so is the partition's storage. A manifest with no
/// Parquet (a rejected file) registers nothing.
pub async fn register<St: Storage, Sec: SecretSource, Cat: PartitionCatalog>(
    deps: &Deps<St, Sec, Cat>,
    payload: Value,
) -> Result<RegisterOutput, TransformTaskError> {
    let uri = manifest_uri(deps, &payload)?;
    let lake = deps.storage.objects();
    let key = uri.key.clone();
    let manifest = tokio::task::spawn_blocking(
        move || -> Result<engine::Manifest, Box<dyn std::error::Error + Send + Sync>> {
            let body = lake.read_all(&key)?;
            Ok(serde_json::from_slice(&body)?)
        },
    )
    .await
    .map_err(TransformTaskError::Panicked)?
    .map_err(|source| TransformTaskError::ManifestUnreadable {
        manifest: uri.to_string(),
        source,
    })?;
    let spec = PartitionSpec::processed(manifest.dataset, &uri.bucket, manifest.load_date);
    let mut out = RegisterOutput {
        database: deps.config.glue_database.clone(),
        table: manifest.dataset.name().to_string(),
        partitions: Vec::new(),
        created: 0,
        existed: 0,
        skipped: manifest.outputs.processed.is_empty(),
    };
    if out.skipped {
        tracing::info!(manifest = %uri, "no Parquet: no partition to register");
        return Ok(out);
    }
    let folder = spec
        .location
        .strip_prefix(&format!("s3://{}/", uri.bucket))
        .unwrap_or_default()
        .to_string();
    if let Some(outside) = manifest
        .outputs
        .processed
        .iter()
        .find(|p| !p.key.starts_with(&folder))
    {
        return Err(TransformTaskError::PartitionMismatch {
            manifest: uri.to_string(),
            detail: format!("{} is not under {folder}", outside.key),
        });
    }
    let (Some(catalog), Some(database)) = (&deps.catalog, &deps.config.glue_database) else {
        return Err(TransformTaskError::NoCatalog);
    };
    let registered = catalog
        .register(database, std::slice::from_ref(&spec))
        .await
        .map_err(TransformTaskError::Catalog)?;
    out.partitions.push(spec.values.clone());
    out.created = registered.created;
    out.existed = registered.existed;
    Emf::for_function("transform")
        .metric("PartitionsCreated", Unit::Count, registered.created.into())
        .property("table", out.table.clone())
        .emit();
    tracing::info!(manifest = %uri, database = %database, table = %out.table, partition = ?spec.values, created = registered.created, existed = registered.existed, "partition registered");
    Ok(out)
}

/// The `manifest` of an action's payload: an `s3://` URI of a manifest in the lake bucket.
fn manifest_uri<St, Sec, Cat>(
    deps: &Deps<St, Sec, Cat>,
    payload: &Value,
) -> Result<S3Uri, TransformTaskError> {
    let uri = payload
        .get("manifest")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TransformTaskError::VerifyInput("`manifest` (an s3:// URI) is required".into())
        })?;
    let uri: S3Uri = uri
        .parse()
        .map_err(|e| TransformTaskError::VerifyInput(format!("manifest {uri:?}: {e}")))?;
    if uri.bucket != deps.config.lake_bucket {
        return Err(TransformTaskError::WrongBucket {
            expected: deps.config.lake_bucket.clone(),
            found: uri.bucket,
        });
    }
    if !uri.key.starts_with("manifests/") || !uri.key.ends_with(".json") {
        return Err(TransformTaskError::VerifyInput(format!(
            "{uri} is not a manifest (manifests/….json)"
        )));
    }
    Ok(uri)
}

/// `{"action": "verify", "manifest": "s3://<lake>/manifests/…"}`: reads every output the
/// manifest lists back from the lake and recomputes its checksum. Any output changed, missing or
/// unreadable fails the task with `ChecksumMismatch`, naming them.
pub async fn verify<St: Storage, Sec: SecretSource, Cat>(
    deps: &Deps<St, Sec, Cat>,
    payload: Value,
) -> Result<VerifyReport, TransformTaskError> {
    let uri = manifest_uri(deps, &payload)?;
    let lake = deps.storage.objects();
    let key = uri.key.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut report = VerifyReport::default();
        integrity::verify_manifest(lake.as_ref(), &key, &mut report).map(|()| report)
    })
    .await
    .map_err(TransformTaskError::Panicked)?
    .map_err(|source| TransformTaskError::VerifyRead {
        manifest: uri.to_string(),
        source,
    })?;
    Emf::for_function("transform")
        .metric("OutputsVerified", Unit::Count, report.verified)
        .metric(
            "OutputsMismatched",
            Unit::Count,
            report.problems.len() as u64,
        )
        .property("manifest", uri.to_string())
        .emit();
    if !report.ok() {
        for p in &report.problems {
            tracing::error!(manifest = %uri, key = %p.key, finding = p.finding.code(), expected = ?p.expected, found = ?p.found, "output does not match its manifest");
        }
        return Err(TransformTaskError::Mismatch {
            manifest: uri.to_string(),
            problems: report.problems,
        });
    }
    tracing::info!(manifest = %uri, verified = report.verified, bytes = report.bytes, "outputs verified");
    Ok(report)
}

/// One task: transform one raw object.
pub async fn handle<St: Storage, Sec: SecretSource, Cat>(
    deps: &Deps<St, Sec, Cat>,
    event: LambdaEvent<Value>,
) -> Result<TransformOutput, TransformTaskError> {
    let started = Instant::now();
    let input: ExecutionInput =
        serde_json::from_value(event.payload).map_err(TransformTaskError::Input)?;
    input.validate()?;
    if input.bucket != deps.config.lake_bucket {
        return Err(TransformTaskError::WrongBucket {
            expected: deps.config.lake_bucket.clone(),
            found: input.bucket,
        });
    }
    let margin = deps.config.deadline_margin;
    // The engine stops at `deadline`; the task gives up at `hard` even if a call hangs, leaving
    // half the margin to abort uploads and report.
    let (deadline, hard) = match lago::runtime::time_left(event.context.deadline) {
        None => (None, None),
        Some(left) if left <= margin => {
            return Err(TransformTaskError::NoTime {
                remaining: left,
                margin,
            })
        }
        Some(left) => (Some(started + left - margin), Some(left - margin / 2)),
    };
    let salt = deps.salt().await?.to_vec();
    let req = input.transform_request();
    let opts = TransformOptions {
        threads: deps.config.threads,
        part_size: deps.config.parquet_part_size,
        pii_salt: salt,
        deadline,
        ..TransformOptions::default()
    };
    let source = deps.storage.source(&input);
    let lake = deps.storage.lake();
    let job = tokio::task::spawn_blocking(move || {
        engine::transform(source.as_ref(), &req, &opts, lake.as_ref(), None)
    });
    let joined = match hard {
        Some(h) => tokio::time::timeout(h, job)
            .await
            .map_err(|_| TransformTaskError::Deadline),
        None => Ok(job.await),
    };
    deps.storage.settle().await;
    let result = joined.and_then(|j| j.map_err(TransformTaskError::Panicked));
    let manifest = match result {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(fail(&input, e.into())),
        Err(e) => return Err(fail(&input, e)),
    };
    let out = TransformOutput::from_manifest(&deps.config.lake_bucket, &manifest);
    let duration_ms = started.elapsed().as_millis() as u64;
    Emf::for_function("transform")
        .dimension("Dataset", input.dataset.name())
        .metric("RowsIn", Unit::Count, out.rows_in)
        .metric("RowsOk", Unit::Count, out.rows_ok)
        .metric("RowsRejected", Unit::Count, out.rows_rejected)
        .metric(
            "FilesRejected",
            Unit::Count,
            u64::from(out.file_reason.is_some()),
        )
        .metric("BytesIn", Unit::Bytes, manifest.source.size)
        .metric("Duration", Unit::Milliseconds, duration_ms)
        .metric("ReadTime", Unit::Milliseconds, manifest.stages.read_ms)
        .metric(
            "ValidateTime",
            Unit::Milliseconds,
            manifest.stages.validate_ms,
        )
        .metric("KeysTime", Unit::Milliseconds, manifest.stages.keys_ms)
        .metric(
            "ParquetTime",
            Unit::Milliseconds,
            manifest.stages.parquet_ms,
        )
        .property("key", input.key.clone())
        .property("request_id", event.context.request_id.clone())
        .emit();
    tracing::info!(
        dataset = %input.dataset,
        key = %input.key,
        status = ?out.status,
        rows_in = out.rows_in,
        rows_ok = out.rows_ok,
        rows_rejected = out.rows_rejected,
        parts = out.outputs.len(),
        duration_ms,
        "transformed"
    );
    Ok(out)
}

fn fail(input: &ExecutionInput, e: TransformTaskError) -> TransformTaskError {
    tracing::error!(
        dataset = %input.dataset,
        key = %input.key,
        error_type = e.kind().error_type(),
        error = %lago::runtime::error_chain(&e),
        "transform failed"
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use lago::ingest::memory::{MemoryLake, MemorySecrets};
    use std::time::{SystemTime, UNIX_EPOCH};

    const TASK: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/transform/task.json"
    ));

    /// The lake in memory, raw objects included.
    #[derive(Default)]
    pub struct MemoryStorage {
        pub lake: MemoryLake,
    }

    impl Storage for MemoryStorage {
        fn source(&self, input: &ExecutionInput) -> Arc<dyn RawSource + Send + Sync> {
            Arc::new(self.lake.source(&input.key))
        }
        fn lake(&self) -> Arc<dyn LakeStore> {
            Arc::new(self.lake.clone())
        }
        fn objects(&self) -> Arc<dyn LakeRead> {
            Arc::new(self.lake.clone())
        }
        async fn settle(&self) {}
    }

    fn config() -> Config {
        Config {
            lake_bucket: "lago-lake-dev".into(),
            salt_secret_id: "arn:aws:secretsmanager:us-east-1:123456789012:secret:lago-pii-salt"
                .into(),
            s3_part_size: 8 << 20,
            parquet_part_size: 128 << 20,
            threads: 2,
            deadline_margin: Duration::from_secs(10),
            glue_database: Some("energy_processed_db_dev".into()),
        }
    }

    fn deps() -> Deps<MemoryStorage, MemorySecrets> {
        Deps::new(
            MemoryStorage::default(),
            MemorySecrets::with(&config().salt_secret_id, br#"{"salt":"s3cr3t-pepper"}"#),
            config(),
        )
    }

    const CLIENTES: &str =
        "id_cliente;nombre;segmento;tipo_identificacion;numero_identificacion;email;ciudad\n\
        C-001;José Pérez;Residencial;CC;1020304050;jose.perez@example.com;Bogotá\n\
        C-002;Ana Gómez;COMERCIAL;NIT;900123456;ana@empresa.co;Medellín\n\
        C-003;Sin Segmento;;CC;1;x@y.co;Cali\n";

    fn event_with_deadline(json: &str, seconds: u64) -> anyhow::Result<LambdaEvent<Value>> {
        let mut ctx = lambda_runtime::Context::default();
        ctx.deadline =
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + seconds * 1000;
        Ok(LambdaEvent::new(serde_json::from_str(json)?, ctx))
    }

    #[tokio::test]
    async fn the_sample_task_transforms_the_raw_object() -> anyhow::Result<()> {
        // GIVEN the raw object the sample task names
        let deps = deps();
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        // WHEN the task runs
        let out = handle(&deps, event_with_deadline(TASK, 60)?).await?;
        // THEN rows are counted, outputs written, and the output names them as s3 URIs
        assert_eq!((out.rows_in, out.rows_ok, out.rows_rejected), (3, 2, 1));
        assert_eq!(out.outputs.len(), 1);
        let keys = deps.storage.lake.keys();
        for uri in out
            .outputs
            .iter()
            .chain(out.rejected.iter())
            .chain([&out.manifest])
        {
            let key = uri.strip_prefix("s3://lago-lake-dev/").unwrap_or_default();
            assert!(keys.iter().any(|k| k == key), "{uri} not written");
        }
        assert!(out
            .manifest
            .contains("/manifests/clientes/year=2025/month=05/day=10/"));
        // AND the PII never reaches the Parquet part
        let part_key = out.outputs[0].trim_start_matches("s3://lago-lake-dev/");
        let part = deps.storage.lake.get(part_key).unwrap_or_default();
        let needle = b"1020304050";
        assert!(!part.windows(needle.len()).any(|w| w == needle));
        Ok(())
    }

    #[tokio::test]
    async fn every_sample_event_runs_through_the_handler() -> anyhow::Result<()> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/transform");
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let body = std::fs::read_to_string(entry?.path())?;
            if serde_json::from_str::<Value>(&body)?
                .get("action")
                .is_some()
            {
                continue; // verify.json: its own test
            }
            let deps = deps();
            let task: ExecutionInput = serde_json::from_str(&body)?;
            deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
            let out = handle(&deps, event_with_deadline(&body, 60)?).await?;
            assert_eq!(out.rows_in, 3);
            // A replay overwrites its own outputs instead of adding new ones.
            let before = deps.storage.lake.keys();
            handle(&deps, event_with_deadline(&body, 60)?).await?;
            assert_eq!(deps.storage.lake.keys(), before);
            n += 1;
        }
        assert!(n >= 1);
        Ok(())
    }

    #[tokio::test]
    async fn the_sample_load_event_names_what_the_sample_task_writes() -> anyhow::Result<()> {
        // The redshift-load sample is the state machine passing this task's output on.
        let submit: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/redshift-load/submit.json"
        )))?;
        let deps = deps();
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        let out = serde_json::to_value(handle(&deps, event_with_deadline(TASK, 60)?).await?)?;
        for field in [
            "manifest",
            "outputs",
            "rejected",
            "key",
            "dataset",
            "load_date",
        ] {
            assert_eq!(submit[field], out[field], "{field}");
        }
        Ok(())
    }

    const VERIFY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/transform/verify.json"
    ));

    #[tokio::test]
    async fn the_sample_verify_checks_what_the_sample_task_wrote_and_fails_on_a_change(
    ) -> anyhow::Result<()> {
        // GIVEN the sample task transformed
        let deps = deps();
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        let out = handle(&deps, event_with_deadline(TASK, 60)?).await?;
        // WHEN the sample verify runs on its manifest THEN each output verifies
        let report = dispatch(&deps, event_with_deadline(VERIFY, 60)?).await?;
        let listed = out.outputs.len() + out.rejected.iter().count();
        assert_eq!(report["verified"], listed as u64);
        assert_eq!(report["problems"], serde_json::json!([]));
        // WHEN a part is changed afterwards THEN verify fails with ChecksumMismatch, naming it
        let part = out.outputs[0].trim_start_matches("s3://lago-lake-dev/");
        deps.storage
            .lake
            .insert(part, b"not the parquet that was written");
        let err = match dispatch(&deps, event_with_deadline(VERIFY, 60)?).await {
            Err(e) => e,
            Ok(v) => anyhow::bail!("verified a changed part: {v}"),
        };
        assert_eq!(err.kind(), ErrorKind::ChecksumMismatch);
        assert!(
            err.to_string().contains(&format!("{part} mismatch")),
            "{err}"
        );
        Ok(())
    }

    const REGISTER: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/transform/register.json"
    ));

    #[tokio::test]
    async fn the_sample_register_adds_the_partition_the_sample_task_wrote_once(
    ) -> anyhow::Result<()> {
        // GIVEN the sample task transformed, and a catalog
        let deps = deps().with_catalog(lago::catalog::MemoryPartitions::default());
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        handle(&deps, event_with_deadline(TASK, 60)?).await?;
        // WHEN the sample register runs on its manifest, twice (a retry)
        let first = dispatch(&deps, event_with_deadline(REGISTER, 60)?).await?;
        let again = dispatch(&deps, event_with_deadline(REGISTER, 60)?).await?;
        // THEN the load date's partition is in the catalog once, where the Parquet is
        assert_eq!(
            (first["created"].as_u64(), first["existed"].as_u64()),
            (Some(1), Some(0)),
            "{first}"
        );
        assert_eq!(
            (again["created"].as_u64(), again["existed"].as_u64()),
            (Some(0), Some(1)),
            "{again}"
        );
        let catalog = deps.catalog.as_ref().expect("a catalog");
        assert_eq!(
            catalog.partitions(),
            vec![(
                "energy_processed_db_dev".to_string(),
                "clientes".to_string(),
                ["2025".to_string(), "05".into(), "10".into()],
                "s3://lago-lake-dev/processed/clientes/year=2025/month=05/day=10/".to_string()
            )]
        );
        // AND without a catalog it says so rather than pretend
        let bare = deps_with_lake_of(&deps);
        let err = dispatch(&bare, event_with_deadline(REGISTER, 60)?)
            .await
            .expect_err("no catalog");
        assert!(err.to_string().contains("GLUE_DATABASE"), "{err}");
        Ok(())
    }

    /// Deps without a catalog, over a copy of `deps`' lake.
    fn deps_with_lake_of<C>(
        deps: &Deps<MemoryStorage, MemorySecrets, C>,
    ) -> Deps<MemoryStorage, MemorySecrets> {
        let bare = self::deps();
        for key in deps.storage.lake.keys() {
            bare.storage
                .lake
                .insert(&key, &deps.storage.lake.get(&key).unwrap_or_default());
        }
        bare
    }

    #[tokio::test]
    async fn verify_refuses_what_is_not_a_manifest_of_its_lake() -> anyhow::Result<()> {
        let deps = deps();
        for payload in [
            r#"{"action": "verify"}"#,
            r#"{"action": "verify", "manifest": "s3://lago-lake-dev/processed/x.parquet"}"#,
            r#"{"action": "verify", "manifest": "s3://other-bucket/manifests/x.json"}"#,
        ] {
            let err = match dispatch(&deps, event_with_deadline(payload, 60)?).await {
                Err(e) => e,
                Ok(v) => anyhow::bail!("{payload} accepted: {v}"),
            };
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{payload}");
        }
        // A manifest that is not there is NotFound (the state machine does not retry it).
        let missing = r#"{"action": "verify", "manifest": "s3://lago-lake-dev/manifests/x.json"}"#;
        let err = match dispatch(&deps, event_with_deadline(missing, 60)?).await {
            Err(e) => e,
            Ok(v) => anyhow::bail!("verified nothing: {v}"),
        };
        assert_eq!(err.kind(), ErrorKind::NotFound);
        Ok(())
    }

    #[tokio::test]
    async fn the_salt_is_read_once_per_container() -> anyhow::Result<()> {
        let deps = deps();
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        for _ in 0..3 {
            handle(&deps, event_with_deadline(TASK, 60)?).await?;
        }
        assert_eq!(deps.secrets.reads(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_file_missing_required_columns_is_rejected_not_failed() -> anyhow::Result<()> {
        let deps = deps();
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, b"foo,bar\n1,2\n");
        let out = handle(&deps, event_with_deadline(TASK, 60)?).await?;
        assert_eq!(out.status, lago::transform::Status::Rejected);
        assert_eq!(out.file_reason.as_deref(), Some("missing_columns"));
        assert!(out.outputs.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn errors_carry_stable_types() -> anyhow::Result<()> {
        let deps = deps();
        // Not enough time left: a clear DeadlineExceeded, nothing started.
        let Err(e) = handle(&deps, event_with_deadline(TASK, 5)?).await else {
            anyhow::bail!("expected DeadlineExceeded");
        };
        assert_eq!(lago::runtime::diagnostic(e).error_type, "DeadlineExceeded");
        let cases = [
            r#"{"bucket":"other","key":"raw/clientes/a.csv","dataset":"clientes","load_date":"2025-05-10"}"#,
            r#"{"bucket":"lago-lake-dev","key":"processed/clientes/a.csv","dataset":"clientes","load_date":"2025-05-10"}"#,
            r#"{"bucket":"lago-lake-dev","key":"raw/clientes/a.csv","dataset":"clientes"}"#,
            r#"42"#,
        ];
        for body in cases {
            let Err(e) = handle(&deps, event_with_deadline(body, 60)?).await else {
                anyhow::bail!("{body} should fail");
            };
            assert_eq!(
                lago::runtime::diagnostic(e).error_type,
                "InvalidInput",
                "{body}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_salt_is_not_found_and_not_cached() -> anyhow::Result<()> {
        let deps = Deps::new(MemoryStorage::default(), MemorySecrets::default(), config());
        let task: ExecutionInput = serde_json::from_str(TASK)?;
        deps.storage.lake.insert(&task.key, CLIENTES.as_bytes());
        for _ in 0..2 {
            let Err(e) = handle(&deps, event_with_deadline(TASK, 60)?).await else {
                anyhow::bail!("expected a salt error");
            };
            assert_eq!(lago::runtime::diagnostic(e).error_type, "NotFound");
        }
        assert_eq!(deps.secrets.reads(), 2);
        Ok(())
    }

    #[test]
    fn config_is_bounded() {
        let base = [("LAKE_BUCKET", "l"), ("PII_SALT_SECRET_ARN", "arn:s")];
        assert!(Config::from(&Env::from_pairs(&base)).is_ok());
        let mut bad = base.to_vec();
        bad.push(("S3_PART_SIZE_MIB", "4"));
        assert!(Config::from(&Env::from_pairs(&bad)).is_err());
        assert!(Config::from(&Env::from_pairs(&base[..1])).is_err());
    }
}
