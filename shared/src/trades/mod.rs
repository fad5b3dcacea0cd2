//! Dollar trades: exactly-once, in-order portfolios from an at-least-once stream.
//!
//! The app's COP↔USD trades arrive on Kinesis (partition key `user_id`) in batches. The
//! [`TradeProcessor`] decodes and validates every record ([`Trade::parse`]), applies each
//! `trade_id` at most once, ever, to its user's [`Portfolio`] (average-cost method, exact
//! decimals), and writes through the [`PortfolioStore`] port in conditional transactions so a
//! redelivered batch, a retried suffix or a concurrent writer cannot apply anything twice.
//! Nothing is dropped: every record ends applied, duplicate, rejected (dead letter with a
//! reason) or reported back for a retry ([`BatchOutcome::batch_item_failure`]).
//!
//! Side outputs go through their own ports ([`TradeArchive`], [`DeadLetterSink`], [`Notifier`],
//! [`Recommender`]); [`deliver`] sends a batch's outcome to them. The `trades-stream` Lambda
//! implements the ports on DynamoDB, S3, SQS, SNS and SageMaker; [`memory`] implements them in
//! memory and on a local folder for the `lago trades` commands ([`replay()`], [`generate_trades`],
//! [`run_bench`]) and the tests.

pub mod archive;
#[cfg(any(test, feature = "local"))]
pub mod bench;
pub mod delivery;
#[cfg(any(test, feature = "local"))]
pub mod generate;
pub(crate) mod hash;
pub mod kinesis;
pub mod kpl;
#[cfg(any(test, feature = "local"))]
pub mod memory;
pub mod outcome;
pub mod portfolio;
pub mod ports;
pub mod processor;
pub mod recommend;
#[cfg(any(test, feature = "local"))]
pub mod replay;
pub mod trade;

#[cfg(test)]
mod properties;

pub use archive::{archive_key, encode_ndjson_gz, ArchiveStatus, ArchivedTrade};
#[cfg(any(test, feature = "local"))]
pub use bench::{run_bench, run_bench_with, BenchOptions, BenchReport};
pub use delivery::{deliver, DeliveryError};
#[cfg(any(test, feature = "local"))]
pub use generate::{generate_trades, TradeGenerateOptions, TradeGenerateReport};
#[cfg(any(test, feature = "local"))]
pub use memory::{
    FailureMode, Latency, LocalFolderArchive, MemoryPortfolioStore, RecordingArchive,
    RecordingDeadLetters, RecordingNotifier, StoreCounters,
};
pub use outcome::{BatchOutcome, DeadLetter, Notification, NotificationKind, UserRecommendation};
pub use portfolio::{Applied, Portfolio, Rejection};
pub use ports::{
    compare_sequences, sequence_key, Action, Commit, CommitOutcome, Conflict, DeadLetterSink,
    Decision, DecisionOutcome, Loaded, ModelRequest, ModelResponse, Notifier, PortfolioStore,
    RecommendError, Recommendation, RecommendationRequest, RecommendationSource, Recommender,
    SinkError, StoreError, StoredPortfolio, TradeArchive,
};
pub use processor::{
    DataEncoding, ProcessorConfig, Record, RecordData, RetryPolicy, TradeProcessor,
    DEFAULT_COMMIT_CONCURRENCY,
};
pub use recommend::{RuleConfig, RuleRecommender, WithRuleFallback};
#[cfg(any(test, feature = "local"))]
pub use replay::{
    replay, replay_event_with, replay_with, PortfolioView, ReplayError, ReplayOptions,
    ReplaySummary,
};
pub use trade::{InvalidReason, InvalidTrade, Side, Trade};
