//! In-memory adapters of every ingest port, for unit tests of the library and of the Lambda
//! handlers: they record what was asked of them and can be told to fail the next call.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{self, Cursor, Read, Write};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use chrono::NaiveDate;

use super::crawler::{
    CrawlStart, CrawlerControl, CrawlerError, CrawlerInfo, CrawlerState, LastCrawl,
};
use super::landing::{ExecutionStarter, StartError, StartedExecution};
use super::statements::{
    Batch, DataApi, DataApiError, ManifestError, ManifestReader, StatementState, StatementStatus,
};
use super::task::{S3Uri, SecretError, SecretSource};
use crate::contract::{Dataset, SCHEMA_VERSION};
use crate::integrity::Written;
use crate::lake::{LakeError, LakeRead, LakeStore, ObjectSink};
use crate::runtime::BoxError;
use crate::transform::{Manifest, OutputObject, Outputs, RawSource, SourceInfo, Status};

/// Runs a future to completion on the current thread (the fakes never wait on I/O, so tests of
/// the library need no async runtime).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A poisoned lock only means another test thread panicked: keep going with its data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fake_error(msg: &str) -> crate::runtime::BoxError {
    Box::new(io::Error::other(msg.to_string()))
}

/// Which [`StartError`] a fake raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartErrorKind {
    Transient,
    Unavailable,
    Refused,
}

/// Raw objects and manifests in memory, for the sweeper.
#[derive(Debug, Default)]
pub struct MemoryRawObjects {
    pub objects: Mutex<Vec<super::sweep::RawObject>>,
    pub manifests: Mutex<std::collections::HashSet<String>>,
}

impl super::sweep::RawObjects for MemoryRawObjects {
    async fn list_raw(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<super::sweep::RawObject>, BoxError> {
        Ok(lock(&self.objects)
            .iter()
            .filter(|o| o.last_modified >= since)
            .cloned()
            .collect())
    }

    async fn has_manifest(&self, key: &str) -> Result<bool, BoxError> {
        Ok(lock(&self.manifests).contains(key))
    }
}

/// Step Functions in memory: execution names are unique, as in the service.
#[derive(Debug, Default)]
pub struct MemoryStarter {
    executions: Mutex<Vec<(String, String)>>,
    failures: Mutex<HashMap<String, StartErrorKind>>,
}

impl MemoryStarter {
    /// The executions started, in order: `(name, input)`.
    pub fn executions(&self) -> Vec<(String, String)> {
        lock(&self.executions).clone()
    }

    /// The next start of `name` fails with `kind`.
    pub fn fail_next(&self, name: &str, kind: StartErrorKind) {
        lock(&self.failures).insert(name.to_string(), kind);
    }
}

impl ExecutionStarter for MemoryStarter {
    async fn execution_exists(&self, name: &str) -> Result<bool, StartError> {
        Ok(lock(&self.executions).iter().any(|(n, _)| n == name))
    }

    async fn start_execution(
        &self,
        name: &str,
        input: &str,
    ) -> Result<StartedExecution, StartError> {
        if let Some(kind) = lock(&self.failures).remove(name) {
            let e = fake_error("injected failure");
            return Err(match kind {
                StartErrorKind::Transient => StartError::Transient(e),
                StartErrorKind::Unavailable => StartError::Unavailable(e),
                StartErrorKind::Refused => StartError::Refused(e),
            });
        }
        let mut ex = lock(&self.executions);
        if ex.iter().any(|(n, _)| n == name) {
            return Ok(StartedExecution::AlreadyExists);
        }
        ex.push((name.to_string(), input.to_string()));
        Ok(StartedExecution::Started {
            execution_arn: format!("arn:aws:states:us-east-1:123456789012:execution:ingest:{name}"),
        })
    }
}

#[derive(Debug, Clone)]
struct FakeCrawler {
    state: CrawlerState,
    last_crawl: Option<LastCrawl>,
    runs: u32,
}

/// Glue crawlers in memory: a started crawler stays RUNNING until told otherwise.
#[derive(Debug, Default)]
pub struct MemoryCrawlers {
    crawlers: Mutex<HashMap<String, FakeCrawler>>,
    transient_failures: Mutex<u32>,
}

impl MemoryCrawlers {
    /// READY crawlers with these names, never run.
    pub fn with(names: &[&str]) -> MemoryCrawlers {
        let c = MemoryCrawlers::default();
        for n in names {
            lock(&c.crawlers).insert(
                n.to_string(),
                FakeCrawler {
                    state: CrawlerState::Ready,
                    last_crawl: None,
                    runs: 0,
                },
            );
        }
        c
    }

    pub fn set_state(&self, name: &str, state: CrawlerState, last_crawl: Option<LastCrawl>) {
        if let Some(c) = lock(&self.crawlers).get_mut(name) {
            c.state = state;
            c.last_crawl = last_crawl;
        }
    }

    /// Crawls started by `start`.
    pub fn runs(&self, name: &str) -> u32 {
        lock(&self.crawlers).get(name).map_or(0, |c| c.runs)
    }

    /// The next `n` calls fail as throttled.
    pub fn throttle_next(&self, n: u32) {
        *lock(&self.transient_failures) = n;
    }

    fn injected(&self) -> Result<(), CrawlerError> {
        let mut n = lock(&self.transient_failures);
        if *n > 0 {
            *n -= 1;
            return Err(CrawlerError::Transient(fake_error("ThrottlingException")));
        }
        Ok(())
    }
}

impl CrawlerControl for MemoryCrawlers {
    async fn start(&self, name: &str) -> Result<CrawlStart, CrawlerError> {
        self.injected()?;
        let mut all = lock(&self.crawlers);
        let c = all.get_mut(name).ok_or_else(|| CrawlerError::NotFound {
            name: name.to_string(),
            source: fake_error("EntityNotFoundException"),
        })?;
        if c.state != CrawlerState::Ready {
            return Ok(CrawlStart::AlreadyRunning);
        }
        c.state = CrawlerState::Running;
        c.runs += 1;
        Ok(CrawlStart::Started)
    }

    async fn info(&self, name: &str) -> Result<CrawlerInfo, CrawlerError> {
        self.injected()?;
        let all = lock(&self.crawlers);
        let c = all.get(name).ok_or_else(|| CrawlerError::NotFound {
            name: name.to_string(),
            source: fake_error("EntityNotFoundException"),
        })?;
        Ok(CrawlerInfo {
            state: c.state,
            last_crawl: c.last_crawl.clone(),
        })
    }
}

/// The Redshift Data API in memory: records every batch, honours idempotency tokens.
#[derive(Debug, Default)]
pub struct MemoryDataApi {
    batches: Mutex<Vec<Vec<String>>>,
    names: Mutex<Vec<String>>,
    tokens: Mutex<HashMap<String, String>>,
    statements: Mutex<HashMap<String, StatementStatus>>,
    refuse_next: Mutex<bool>,
}

impl MemoryDataApi {
    /// The SQL of every batch submitted, in order (a retried token is not submitted twice).
    pub fn batches(&self) -> Vec<Vec<String>> {
        lock(&self.batches).clone()
    }

    /// Adds a statement in the given state; returns its id.
    pub fn insert_status(&self, status: StatementStatus) -> String {
        let mut st = lock(&self.statements);
        let id = format!("mem-{}", st.len() + 1);
        st.insert(id.clone(), status);
        id
    }

    /// Sets the state of a submitted statement.
    pub fn set_state(&self, id: &str, state: StatementState, error: Option<&str>) {
        if let Some(s) = lock(&self.statements).get_mut(id) {
            s.state = state;
            s.error = error.map(str::to_string);
        }
    }

    /// The next batch is refused as invalid.
    pub fn refuse_next(&self) {
        *lock(&self.refuse_next) = true;
    }
}

impl DataApi for MemoryDataApi {
    async fn batch_execute(&self, batch: Batch<'_>) -> Result<String, DataApiError> {
        if std::mem::take(&mut *lock(&self.refuse_next)) {
            return Err(DataApiError::Refused(fake_error("ValidationException")));
        }
        if let Some(id) = lock(&self.tokens).get(batch.client_token) {
            return Ok(id.clone());
        }
        lock(&self.batches).push(batch.sqls.to_vec());
        lock(&self.names).push(batch.statement_name.to_string());
        let id = self.insert_status(StatementStatus {
            state: StatementState::Submitted,
            error: None,
            sub_statements: Vec::new(),
        });
        lock(&self.tokens).insert(batch.client_token.to_string(), id.clone());
        Ok(id)
    }

    async fn describe(&self, statement_id: &str) -> Result<StatementStatus, DataApiError> {
        lock(&self.statements)
            .get(statement_id)
            .cloned()
            .ok_or_else(|| DataApiError::NotFound {
                id: statement_id.to_string(),
                source: fake_error("ResourceNotFoundException"),
            })
    }
}

/// Manifests in memory, by `s3://` URI.
#[derive(Debug, Default)]
pub struct MemoryManifests {
    docs: Mutex<HashMap<String, Vec<u8>>>,
    /// Every object of the lake, as `(bucket, key)`.
    objects: Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl MemoryManifests {
    /// Stores the manifest where the transform writes it in `bucket`, with the parts it lists;
    /// returns its URI.
    pub fn insert(&self, bucket: &str, m: &Manifest) -> String {
        let uri = S3Uri::new(bucket, &m.outputs.manifest).to_string();
        let body = serde_json::to_vec(m).unwrap_or_default();
        lock(&self.docs).insert(uri.clone(), body);
        self.insert_object(bucket, &m.outputs.manifest);
        for part in &m.outputs.processed {
            self.insert_object(bucket, &part.key);
        }
        uri
    }

    /// Another object in the lake (what a listing finds).
    pub fn insert_object(&self, bucket: &str, key: &str) {
        lock(&self.objects).insert((bucket.to_string(), key.to_string()));
    }
}

impl ManifestReader for MemoryManifests {
    async fn read_manifest(&self, uri: &S3Uri) -> Result<Manifest, ManifestError> {
        let u = uri.to_string();
        let body = lock(&self.docs)
            .get(&u)
            .cloned()
            .ok_or_else(|| ManifestError::NotFound {
                uri: u.clone(),
                source: fake_error("NoSuchKey"),
            })?;
        serde_json::from_slice(&body).map_err(|source| ManifestError::Invalid { uri: u, source })
    }

    async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, ManifestError> {
        Ok(lock(&self.objects)
            .iter()
            .filter(|(b, k)| b == bucket && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .take(limit)
            .collect())
    }
}

/// Secrets in memory, by id.
#[derive(Debug, Default)]
pub struct MemorySecrets {
    secrets: Mutex<HashMap<String, Vec<u8>>>,
    reads: Mutex<u32>,
}

impl MemorySecrets {
    pub fn with(id: &str, value: &[u8]) -> MemorySecrets {
        let s = MemorySecrets::default();
        lock(&s.secrets).insert(id.to_string(), value.to_vec());
        s
    }

    /// How many times a secret was read.
    pub fn reads(&self) -> u32 {
        *lock(&self.reads)
    }
}

impl SecretSource for MemorySecrets {
    async fn secret_bytes(&self, id: &str) -> Result<Vec<u8>, SecretError> {
        *lock(&self.reads) += 1;
        lock(&self.secrets)
            .get(id)
            .cloned()
            .ok_or_else(|| SecretError::NotFound {
                id: id.to_string(),
                source: fake_error("ResourceNotFoundException"),
            })
    }
}

/// The lake in memory: objects appear whole when their sink finishes.
#[derive(Debug, Default, Clone)]
pub struct MemoryLake {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryLake {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.objects).get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    pub fn insert(&self, key: &str, body: &[u8]) {
        lock(&self.objects).insert(key.to_string(), body.to_vec());
    }

    /// A re-openable source reading an object of this lake.
    pub fn source(&self, key: &str) -> MemorySource {
        MemorySource(Arc::new(self.get(key).unwrap_or_default()))
    }
}

struct MemorySink {
    key: String,
    buf: Vec<u8>,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectSink for MemorySink {
    fn finish(self: Box<Self>) -> Result<Written, LakeError> {
        let written = Written::of(&self.buf);
        lock(&self.objects).insert(self.key, self.buf);
        Ok(written)
    }
}

impl LakeStore for MemoryLake {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>, LakeError> {
        if key.is_empty() || key.starts_with('/') {
            return Err(LakeError::InvalidKey(key.to_string()));
        }
        Ok(Box::new(MemorySink {
            key: key.to_string(),
            buf: Vec::new(),
            objects: self.objects.clone(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        Ok(lock(&self.objects)
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), LakeError> {
        lock(&self.objects).remove(key);
        Ok(())
    }
}

impl LakeRead for MemoryLake {
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, LakeError> {
        match self.get(key) {
            Some(body) => Ok(Box::new(Cursor::new(body))),
            None => Err(LakeError::Io {
                key: key.to_string(),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }
}

/// Raw bytes as a re-openable source.
#[derive(Debug, Clone)]
pub struct MemorySource(pub Arc<Vec<u8>>);

impl RawSource for MemorySource {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(Cursor::new(self.0.as_ref().clone())))
    }
}

/// A balanced manifest of `parts` processed parts of 10 rows each, as the transform would
/// write for `raw/<dataset>/year=2025/month=05/day=10/sample.csv`.
pub fn sample_manifest(dataset: Dataset, parts: usize) -> Manifest {
    let day = NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default();
    let prefix = |zone: &str| format!("{zone}/{dataset}/year=2025/month=05/day=10/sample-0a1b2c3d");
    let processed: Vec<OutputObject> = (0..parts)
        .map(|i| OutputObject {
            key: format!("{}-{i:05}.parquet", prefix("processed")),
            rows: 10,
            bytes: 1000,
            checksum: None,
        })
        .collect();
    let rows_ok = 10 * parts as u64;
    Manifest {
        schema_version: SCHEMA_VERSION,
        dataset,
        load_date: day,
        source: SourceInfo {
            key: format!("raw/{dataset}/year=2025/month=05/day=10/sample.csv"),
            size: 1234,
            version: "etag".into(),
            checksum: "xxh3-128:00000000000000000000000000000001".into(),
            stored_checksum: None,
            compression: None,
            encoding: Some("utf-8".into()),
            delimiter: Some(",".into()),
            decimal_separator: Some(".".into()),
            bom: false,
        },
        status: Status::Ok,
        file_reason: None,
        file_detail: None,
        rows_in: rows_ok,
        rows_ok,
        rows_rejected: 0,
        rejects_by_reason: BTreeMap::new(),
        ignored_columns: Vec::new(),
        missing_optional_columns: Vec::new(),
        outputs: Outputs {
            processed,
            rejected: None,
            manifest: format!("{}.json", prefix("manifests")),
        },
        started_at: "2025-05-10T00:00:00.000Z".into(),
        duration_ms: 1,
        stages: Default::default(),
        threads: 1,
    }
}
