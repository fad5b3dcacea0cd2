//! trades-stream: the Kinesis consumer of the app's dollar trades.
//!
//! Invoked by a Kinesis event source mapping (batches of up to 10,000 records, partition key
//! `user_id`, `FunctionResponseTypes: [ReportBatchItemFailures]`). Each batch goes through the
//! library's [`TradeProcessor`] — decode, validate, apply each `trade_id` exactly once to its
//! user's portfolio in conditional DynamoDB transactions — and [`deliver`] sends what settled:
//! the archive object to the lake, dead letters to SQS, `TradeConfirmed` / `TradeRejected` to
//! SNS. A transient store failure answers `batchItemFailures` with the first record not yet
//! durable, so Kinesis re-sends only from there; whatever was committed comes back as
//! duplicates. One EMF record per batch carries the counts.
//!
//! [`TradeStream`] is generic over the ports, so the tests drive it with the in-memory
//! adapters, with SDK clients on `aws-smithy-mocks`, and with SDK clients on a moto server.

pub mod config;
pub mod event;
pub mod redrive;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_lambda_events::streams::KinesisEventResponse;
use chrono::{DateTime, Utc};
use lago::aws::trades::{
    DynamoDbPortfolioStore, S3TradeArchive, SageMakerRecommender, SnsNotifier, SqsDeadLetterSink,
};
use lago::redrive::{
    redrive_queue, FailureQueue, QueueError, RedriveReport, RedriveRequest, ShardReader,
};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{error_chain, Classified, ErrorKind};
use lago::trades::{
    deliver, BatchOutcome, DeadLetter, DeadLetterSink, DeliveryError, Notification, Notifier,
    PortfolioStore, ProcessorConfig, Recommender, SinkError, StoreError, TradeArchive,
    TradeProcessor, WithRuleFallback,
};
use lambda_runtime::LambdaEvent;
use tracing::{debug, error, info, warn};

pub use config::{Config, ConfigError};
pub use event::{KinesisTradeEvent, KinesisTradeRecord};

/// What the function is invoked with: a Kinesis batch (`{"Records": [...]}`), or
/// `{"action": "redrive", "dry_run"?: bool, "max_messages"?: N}` to redrive the on-failure
/// queue ([`redrive`]). One shape, read in one pass: a batch pays nothing for the other.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Invocation {
    #[serde(rename = "Records", default)]
    pub records: Vec<KinesisTradeRecord>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub max_messages: Option<u64>,
}

/// The function's answer: the batch's item failures, or what a redrive did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Response {
    Batch(KinesisEventResponse),
    Redrive(RedriveReport),
}

/// What a redrive reads: the on-failure queue and the stream's shards.
pub struct Redriver<Q, K> {
    pub queue: Q,
    pub reader: K,
    /// The stream's retention (`STREAM_RETENTION_HOURS`).
    pub retention_hours: u32,
}

/// The function's name in metrics and logs.
pub const FUNCTION: &str = "trades-stream";

/// Why an invocation failed. Each has a stable `errorType` ([`HandlerError::error_type`]).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The store refused for a reason that will not pass (permissions, a missing table, an
    /// item that does not decode): someone has to look. The batch is retried whole.
    #[error("the portfolio store failed")]
    Store(#[source] StoreError),
    /// The archive or the dead letters could not be written; a retry of the batch writes
    /// them again (the archive key is deterministic, invalid records are re-decoded).
    #[error("the batch's outputs could not be delivered")]
    Delivery(#[source] DeliveryError),
    /// An invocation the function cannot act on (an unknown action, bad redrive options).
    #[error("invalid invocation: {0}")]
    InvalidRequest(String),
    /// The on-failure queue could not be read.
    #[error("the redrive could not read the on-failure queue")]
    Redrive(#[source] QueueError),
}

impl HandlerError {
    /// `StoreFailure`, `Retryable` (delivery failed transiently) or `DeliveryFailed`.
    pub fn error_type(&self) -> &'static str {
        self.kind().error_type()
    }
}

impl Classified for HandlerError {
    fn kind(&self) -> ErrorKind {
        match self {
            HandlerError::Store(_) => ErrorKind::StoreFailure,
            HandlerError::Delivery(e) if delivery_is_transient(e) => ErrorKind::Retryable,
            HandlerError::Delivery(_) => ErrorKind::DeliveryFailed,
            HandlerError::InvalidRequest(_) => ErrorKind::InvalidInput,
            HandlerError::Redrive(e) if e.transient => ErrorKind::Retryable,
            HandlerError::Redrive(_) => ErrorKind::Internal,
        }
    }
}

fn delivery_is_transient(e: &DeliveryError) -> bool {
    match e {
        DeliveryError::Archive(s) | DeliveryError::DeadLetters(s) | DeliveryError::Notify(s) => {
            matches!(s, SinkError::Transient(_) | SinkError::Io(_))
        }
        DeliveryError::Encode(_) => false,
    }
}

/// A port that remembers whether a call failed, so the handler knows which outputs of a batch
/// were lost and which a retry recreates.
struct Tracked<'a, T> {
    inner: &'a T,
    failed: AtomicBool,
}

impl<'a, T> Tracked<'a, T> {
    fn new(inner: &'a T) -> Self {
        Self {
            inner,
            failed: AtomicBool::new(false),
        }
    }

    fn note<R>(&self, result: Result<R, SinkError>) -> Result<R, SinkError> {
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

impl<T: TradeArchive + Sync> TradeArchive for Tracked<'_, T> {
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        self.note(self.inner.put(key, body).await)
    }
}

impl<T: DeadLetterSink + Sync> DeadLetterSink for Tracked<'_, T> {
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        self.note(self.inner.send(letters).await)
    }
}

impl<T: Notifier + Sync> Notifier for Tracked<'_, T> {
    async fn publish(&self, notifications: &[Notification]) -> Result<(), SinkError> {
        self.note(self.inner.publish(notifications).await)
    }
}

/// The handler with its ports: the trade processor (store + recommender) and the three outputs.
pub struct TradeStream<S, R, A, D, N> {
    processor: TradeProcessor<S, R>,
    archive: A,
    dead_letters: D,
    notifier: N,
    /// Kept before the invocation's deadline for delivering the outputs.
    delivery_reserve: Duration,
}

/// The function as deployed.
pub type AwsTradeStream = TradeStream<
    DynamoDbPortfolioStore,
    WithRuleFallback<SageMakerRecommender>,
    S3TradeArchive,
    SqsDeadLetterSink,
    SnsNotifier,
>;

impl<S, R, A, D, N> TradeStream<S, R, A, D, N>
where
    S: PortfolioStore + Sync,
    R: Recommender + Sync,
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    pub fn new(processor: TradeProcessor<S, R>, archive: A, dead_letters: D, notifier: N) -> Self {
        Self {
            processor,
            archive,
            dead_letters,
            notifier,
            delivery_reserve: config::DEFAULT_DELIVERY_RESERVE,
        }
    }

    /// Time kept before the invocation's deadline for delivering the outputs.
    pub fn with_delivery_reserve(mut self, reserve: Duration) -> Self {
        self.delivery_reserve = reserve;
        self
    }

    pub fn processor(&self) -> &TradeProcessor<S, R> {
        &self.processor
    }

    /// The archive, dead-letter sink and notifier.
    pub fn outputs(&self) -> (&A, &D, &N) {
        (&self.archive, &self.dead_letters, &self.notifier)
    }

    /// Processes one batch at `now` (stamped on the portfolios written). The metrics are
    /// returned even when the invocation fails, so the caller emits them either way.
    pub async fn handle(
        &self,
        event: &KinesisTradeEvent,
        now: DateTime<Utc>,
    ) -> (Result<KinesisEventResponse, HandlerError>, Emf) {
        self.handle_within(event, now, None).await
    }

    /// [`Self::handle`] with a time budget for the commits: transient store failures are
    /// retried with back-off until `deadline`, then reported (see
    /// [`TradeProcessor::process_batch_within`]).
    pub async fn handle_within(
        &self,
        event: &KinesisTradeEvent,
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> (Result<KinesisEventResponse, HandlerError>, Emf) {
        let (result, metrics, _) = self.handle_counted(event, now, deadline).await;
        (result, metrics)
    }

    /// [`Self::handle_within`], with the batch's counts.
    pub async fn handle_counted(
        &self,
        event: &KinesisTradeEvent,
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> (Result<KinesisEventResponse, HandlerError>, Emf, BatchCounts) {
        let expanded = event.expand();
        let records = expanded.records(event);
        let mut outcome = match deadline {
            Some(deadline) => {
                self.processor
                    .process_batch_within(&records, now, deadline)
                    .await
            }
            None => self.processor.process_batch(&records, now).await,
        };
        let (archive, dead_letters, notifier) = (
            Tracked::new(&self.archive),
            Tracked::new(&self.dead_letters),
            Tracked::new(&self.notifier),
        );
        let delivered = deliver(&outcome, &archive, &dead_letters, &notifier).await;
        // What a retry cannot recreate: notifications and the dead letters of rejected trades
        // are produced only by the commit that decided them. Logged whole, to replay by hand.
        let mut undelivered = 0u64;
        if notifier.failed() {
            for n in &outcome.notifications {
                error!(notification = %n.to_json(), "undelivered notification");
            }
            undelivered += outcome.notifications.len() as u64;
        }
        if dead_letters.failed() {
            for letter in outcome.dead_letters.iter().filter(|l| l.trade_id.is_some()) {
                error!(dead_letter = %letter.to_json(), "undelivered dead letter");
                undelivered += 1;
            }
        }
        let metrics = batch_metrics(&outcome, event.shard_id(), undelivered);
        let counts = BatchCounts {
            records: outcome.records,
            applied: outcome.applied,
            duplicates: outcome.duplicates,
            rejected: outcome.rejected_total(),
            dead_letters: outcome.dead_letters.len() as u64,
        };
        info!(
            shard_id = event.shard_id(),
            records = outcome.records,
            applied = outcome.applied,
            duplicates = outcome.duplicates,
            rejected = outcome.rejected_total(),
            dead_letters = outcome.dead_letters.len(),
            conflicts = outcome.conflicts,
            retried = outcome.retried,
            failure = outcome.batch_item_failure.as_deref().unwrap_or(""),
            "trade batch"
        );
        let mut response = KinesisEventResponse::default();
        if let Some(sequence_number) = &outcome.batch_item_failure {
            response.add_failure(sequence_number.clone());
        }
        if let Some(halt) = outcome.halted_by.take() {
            if halt.is_transient() {
                warn!(error = %error_chain(&halt), "transient store failure; Kinesis re-sends from the failed record");
            } else {
                error!(error = %error_chain(&halt), "portfolio store failure");
                return (Err(HandlerError::Store(halt)), metrics, counts);
            }
        }
        match delivered {
            Err(e) if archive.failed() || dead_letters.failed() => {
                error!(error = %error_chain(&e), "delivery failed; the batch will be retried");
                (Err(HandlerError::Delivery(e)), metrics, counts)
            }
            Err(e) => {
                // Only the notifications failed: a retry would not send them (the trades are
                // duplicates by then), so the batch succeeds and they are in the log.
                error!(error = %error_chain(&e), undelivered, "notifications lost");
                (Ok(response), metrics, counts)
            }
            Ok(()) => (Ok(response), metrics, counts),
        }
    }

    /// The Lambda entry: a Kinesis batch ([`Self::handle_event`]) or a redrive of the
    /// on-failure queue with `redriver` (`None` when the queue is not configured).
    pub async fn invoke<Q: FailureQueue, K: ShardReader>(
        &self,
        event: LambdaEvent<Invocation>,
        redriver: Option<&Redriver<Q, K>>,
    ) -> Result<Response, HandlerError> {
        let LambdaEvent { payload, context } = event;
        match payload.action.as_deref() {
            None => {
                let batch = KinesisTradeEvent {
                    records: payload.records,
                };
                self.handle_event(LambdaEvent::new(batch, context))
                    .await
                    .map(Response::Batch)
            }
            Some("redrive") => {
                let request =
                    RedriveRequest::new(payload.dry_run.unwrap_or(false), payload.max_messages)
                        .map_err(HandlerError::InvalidRequest)?;
                let Some(redriver) = redriver else {
                    return Err(HandlerError::InvalidRequest(
                        "STREAM_FAILURE_QUEUE_URL is not set: there is no queue to redrive".into(),
                    ));
                };
                self.redrive(redriver, request).await.map(Response::Redrive)
            }
            Some(other) => Err(HandlerError::InvalidRequest(format!(
                "unknown action {other:?} (a Kinesis batch, or \"redrive\")"
            ))),
        }
    }

    /// Redrives the on-failure queue (see [`redrive`]): each batch read back from its shard and
    /// handled again; `StreamRedriven`, `StreamRedriveFailed` and `StreamRecordsExpired` say
    /// how it went.
    pub async fn redrive<Q: FailureQueue, K: ShardReader>(
        &self,
        redriver: &Redriver<Q, K>,
        request: RedriveRequest,
    ) -> Result<RedriveReport, HandlerError> {
        let handler = redrive::StreamRedrive {
            batches: self,
            reader: &redriver.reader,
            retention_hours: redriver.retention_hours,
        };
        let report = redrive_queue(
            &redriver.queue,
            &handler,
            request.dry_run,
            request.max_messages,
        )
        .await
        .map_err(HandlerError::Redrive)?;
        if !request.dry_run {
            Emf::for_function(FUNCTION)
                .metric("StreamRedriven", Unit::Count, report.redriven.into())
                .metric(
                    "StreamRedriveFailed",
                    Unit::Count,
                    (report.failed + report.unreadable).into(),
                )
                .metric("StreamBatchesExpired", Unit::Count, report.expired.into())
                .emit();
        }
        report.log("trades stream on-failure queue");
        Ok(report)
    }

    /// The Lambda entry for a batch: handles the event at the wall clock, emits the batch's
    /// EMF record.
    pub async fn handle_event(
        &self,
        event: LambdaEvent<KinesisTradeEvent>,
    ) -> Result<KinesisEventResponse, HandlerError> {
        debug!(
            request_id = %event.context.request_id,
            records = event.payload.records.len(),
            "invoked"
        );
        let deadline = commit_deadline(event.context.deadline, self.delivery_reserve);
        let (result, metrics) = self
            .handle_within(&event.payload, Utc::now(), Some(deadline))
            .await;
        metrics.emit();
        result
    }
}

/// What one batch came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchCounts {
    /// Processor records (user records of KPL aggregates counted one by one).
    pub records: u64,
    pub applied: u64,
    /// Trades decided before: what a redrive of an applied batch finds.
    pub duplicates: u64,
    pub rejected: u64,
    pub dead_letters: u64,
}

/// When the commits must stop: the invocation's deadline (milliseconds since the epoch) less
/// the time kept for delivering the outputs.
pub fn commit_deadline(invocation_deadline_ms: u64, reserve: Duration) -> Instant {
    let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    let left = Duration::from_millis(invocation_deadline_ms.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(reserve)
}

/// The EMF record of one batch.
fn batch_metrics(outcome: &BatchOutcome, shard_id: &str, undelivered: u64) -> Emf {
    let mut emf = Emf::for_function(FUNCTION)
        .metric("Records", Unit::Count, outcome.records)
        .metric("Applied", Unit::Count, outcome.applied)
        .metric("Duplicates", Unit::Count, outcome.duplicates)
        .metric("Rejected", Unit::Count, outcome.rejected_total())
        .metric(
            "DeadLetters",
            Unit::Count,
            outcome.dead_letters.len() as u64,
        )
        .metric("Conflicts", Unit::Count, outcome.conflicts)
        .metric("Retried", Unit::Count, outcome.retried)
        .metric(
            "DeadlineReached",
            Unit::Count,
            u64::from(outcome.deadline_reached),
        )
        .metric("Undelivered", Unit::Count, undelivered)
        .property("shard_id", shard_id);
    if let Some(failure) = &outcome.batch_item_failure {
        emf = emf.property("batch_item_failure", failure.as_str());
    }
    emf
}

/// The SDK clients, built once per container from one SDK configuration.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub sagemaker: aws_sdk_sagemakerruntime::Client,
}

impl AwsClients {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.s3_force_path_style)
            .build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            sagemaker: aws_sdk_sagemakerruntime::Client::new(sdk),
        }
    }

    /// Opens the DynamoDB connection (DNS, TCP, TLS) during init, so the first batch does not
    /// pay for it: a `BatchGetItem` of a key no user has, at most `budget`, answer ignored.
    /// DynamoDB is the first call of every batch and the only one on its critical path; the
    /// other services are reached once the batch is applied, and warming them would take
    /// permissions the function otherwise does not need.
    pub async fn warm_up(&self, config: &Config, budget: Duration) {
        let key = std::collections::HashMap::from([(
            "user_id".to_string(),
            aws_sdk_dynamodb::types::AttributeValue::S("__warm_up__".to_string()),
        )]);
        let Ok(keys) = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
            .keys(key)
            .build()
        else {
            return;
        };
        let call = self
            .dynamodb
            .batch_get_item()
            .request_items(&config.portfolios_table, keys)
            .send();
        match tokio::time::timeout(budget, call).await {
            Ok(Ok(_)) => debug!("DynamoDB connection warmed"),
            Ok(Err(e)) => warn!(error = %error_chain(&e), "warm-up read failed"),
            Err(_) => warn!(?budget, "warm-up read timed out"),
        }
    }
}

/// The function wired to AWS: DynamoDB, S3, SQS, SNS and, when configured, SageMaker.
pub fn aws_trade_stream(clients: &AwsClients, config: &Config) -> AwsTradeStream {
    // One bound for both phases: the reads, then the users committed at once.
    let store = DynamoDbPortfolioStore::new(
        clients.dynamodb.clone(),
        &config.portfolios_table,
        &config.decisions_table,
    )
    .with_read_concurrency(config.store_concurrency);
    let model = config.recommender_endpoint.as_ref().map(|endpoint| {
        SageMakerRecommender::new(
            clients.sagemaker.clone(),
            endpoint,
            config.recommender_timeout,
        )
    });
    let recommender = WithRuleFallback::new(model, Default::default());
    let processor =
        TradeProcessor::with_recommender(store, recommender).with_config(ProcessorConfig {
            commit_concurrency: config.store_concurrency,
            ..ProcessorConfig::default()
        });
    TradeStream::new(
        processor,
        S3TradeArchive::new(clients.s3.clone(), &config.lake_bucket),
        SqsDeadLetterSink::new(clients.sqs.clone(), &config.dead_letter_queue_url),
        SnsNotifier::new(clients.sns.clone(), &config.topic_arn),
    )
    .with_delivery_reserve(config.delivery_reserve)
}
