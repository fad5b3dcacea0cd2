//! The capabilities the trade processor needs, one small trait each. Every trait has an
//! in-memory or local-folder adapter in [`super::memory`]; the `trades-stream` Lambda provides
//! the AWS ones (DynamoDB, SQS, S3, SNS, SageMaker Runtime).
//!
//! The traits use return-position `impl Future + Send` (native async in traits): adapters
//! implement them with plain `async fn`, callers use them through generics, never `dyn`.

use std::collections::HashSet;
use std::future::Future;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::portfolio::{Applied, Portfolio, Rejection};
use super::processor::{DeadLetter, Notification};
use super::trade::Trade;

/// The error type adapters wrap (SDK errors, I/O errors), kept as the `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure. `Transient` (throttling, timeouts, service unavailable) stops the batch
/// and reports `batchItemFailures`; it may be ambiguous — a commit that timed out may have
/// been written — which the processor tolerates because every write is conditional.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("transient portfolio store failure")]
    Transient(#[source] BoxError),
    #[error("portfolio store failure")]
    Permanent(#[source] BoxError),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// A portfolio with the version it was stored at (`0` = no item yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPortfolio {
    pub portfolio: Portfolio,
    pub version: u64,
}

impl StoredPortfolio {
    /// What a user without an item starts from.
    pub fn empty(user_id: &str) -> Self {
        Self {
            portfolio: Portfolio::new(user_id),
            version: 0,
        }
    }
}

/// The result of [`PortfolioStore::load`].
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// The stored portfolio of each asked user, in the order of `user_ids` (`None`: no item
    /// yet, version 0).
    pub portfolios: Vec<Option<StoredPortfolio>>,
    /// Trade ids among those asked that the store *knows* to be decided. May be a subset:
    /// an adapter that only reads the portfolios (DynamoDB: one `BatchGetItem`) returns an
    /// empty set and lets [`PortfolioStore::commit`]'s conditions find duplicates instead.
    pub decided: HashSet<String>,
}

/// How a trade was decided. Either way the decision is final for its `trade_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionOutcome {
    Applied(Applied),
    Rejected(Rejection),
}

/// One decided trade, to be recorded under its `trade_id` (DynamoDB: a `Put` with
/// `attribute_not_exists(trade_id)`).
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub trade: &'a Trade,
    pub sequence_number: &'a str,
    pub outcome: DecisionOutcome,
}

/// One atomic write: the decision items plus the user's portfolio as it stands after them,
/// stored at `expected_version + 1` on condition that the stored version is still
/// `expected_version` (`0`: the item must not exist). At most `max_transaction_items` items
/// (`decisions.len() + 1`): a DynamoDB `TransactWriteItems` call.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub user_id: &'a str,
    pub expected_version: u64,
    pub portfolio: &'a Portfolio,
    pub decisions: &'a [Decision<'a>],
}

impl Commit<'_> {
    pub fn new_version(&self) -> u64 {
        self.expected_version + 1
    }

    /// Items in the transaction: one per decision plus the portfolio put.
    pub fn item_count(&self) -> usize {
        self.decisions.len() + 1
    }
}

/// Why a commit wrote nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conflict {
    /// The stored portfolio is no longer at `expected_version` (a concurrent writer).
    pub version_moved: bool,
    /// Trade ids of the commit that were already decided (DynamoDB: the indexes of the
    /// `ConditionalCheckFailed` cancellation reasons, mapped back to trade ids).
    pub already_decided: Vec<String>,
}

/// The result of a commit that reached the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Nothing was written.
    Conflict(Conflict),
}

/// Durable portfolios and trade decisions.
pub trait PortfolioStore {
    /// One read of the touched users' portfolios (and, if cheap, of which `trade_ids` are
    /// already decided). `user_ids` are distinct.
    fn load(
        &self,
        user_ids: &[&str],
        trade_ids: &[&str],
    ) -> impl Future<Output = Result<Loaded, StoreError>> + Send;

    /// Writes all of `commit` atomically, or nothing and reports the conflict.
    fn commit(
        &self,
        commit: &Commit<'_>,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;
}

/// A shared store is a store (several processors over one store, as concurrent Lambdas are).
impl<T: PortfolioStore + Sync> PortfolioStore for &T {
    fn load(
        &self,
        user_ids: &[&str],
        trade_ids: &[&str],
    ) -> impl Future<Output = Result<Loaded, StoreError>> + Send {
        (**self).load(user_ids, trade_ids)
    }

    fn commit(
        &self,
        commit: &Commit<'_>,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send {
        (**self).commit(commit)
    }
}

/// An output that could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("transient delivery failure")]
    Transient(#[source] BoxError),
    #[error("delivery failure")]
    Permanent(#[source] BoxError),
    #[error("i/o failure")]
    Io(#[from] std::io::Error),
}

/// Where invalid records and business rejections go (SQS DLQ, one JSON message each).
pub trait DeadLetterSink {
    fn send(&self, letters: &[DeadLetter]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The lake's raw trade archive. `key` comes from [`super::archive::archive_key`] and `body`
/// from [`super::archive::encode_ndjson_gz`]; a retried batch overwrites the same key.
pub trait TradeArchive {
    fn put(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Publishes `TradeConfirmed` / `TradeRejected` messages (SNS `PublishBatch`, 10 per call, with
/// message attributes `user_id` and `side`).
pub trait Notifier {
    fn publish(
        &self,
        notifications: &[Notification],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// What the portfolio's owner might do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Buy,
    Hold,
    TakeProfit,
    Reduce,
}

/// Who produced a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecommendationSource {
    Model,
    Rule,
}

/// Stored on the portfolio item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub action: Action,
    pub reason: String,
    pub source: RecommendationSource,
}

/// A portfolio after the batch and the latest rate the user traded at.
#[derive(Debug, Clone, Copy)]
pub struct RecommendationRequest<'a> {
    pub portfolio: &'a Portfolio,
    pub latest_rate: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error("recommendation model failed")]
    Model(#[source] BoxError),
    #[error("recommendation model answered {got} predictions for {expected} instances")]
    WrongCount { expected: usize, got: usize },
}

/// Recommends one action per request, in order (SageMaker: one `InvokeEndpoint` per batch with
/// the [`ModelRequest`] / [`ModelResponse`] contract).
pub trait Recommender {
    fn recommend(
        &self,
        requests: &[RecommendationRequest<'_>],
    ) -> impl Future<Output = Result<Vec<Recommendation>, RecommendError>> + Send;
}

/// The JSON body sent to the model endpoint (`ContentType: application/json`):
/// `{"instances": [{"user_id": "u1", "usd_balance": "150.00", "cost_basis_cop": "605025.00",
/// "average_cost_cop": "4033.5000", "realized_pnl_cop": "0.00", "latest_rate": "4200.0000"}]}`
/// — amounts as decimal strings, `average_cost_cop` `null` without a balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub instances: Vec<ModelInstance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInstance {
    pub user_id: String,
    pub usd_balance: Decimal,
    pub cost_basis_cop: Decimal,
    pub average_cost_cop: Option<Decimal>,
    pub realized_pnl_cop: Decimal,
    pub latest_rate: Decimal,
}

impl ModelRequest {
    pub fn from_requests(requests: &[RecommendationRequest<'_>]) -> Self {
        Self {
            instances: requests
                .iter()
                .map(|r| ModelInstance {
                    user_id: r.portfolio.user_id.clone(),
                    usd_balance: r.portfolio.usd_balance,
                    cost_basis_cop: r.portfolio.cost_basis_cop,
                    average_cost_cop: r.portfolio.average_cost(),
                    realized_pnl_cop: r.portfolio.realized_pnl_cop,
                    latest_rate: r.latest_rate,
                })
                .collect(),
        }
    }
}

/// The model's answer: `{"predictions": [{"action": "TAKE_PROFIT", "reason": "…"}]}`, one per
/// instance in order; `action` is one of `BUY`, `HOLD`, `TAKE_PROFIT`, `REDUCE` (anything else
/// fails the call, and the rule answers instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub predictions: Vec<ModelPrediction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrediction {
    pub action: Action,
    pub reason: String,
}

impl ModelResponse {
    /// The recommendations for `expected` instances, marked `source: "model"`.
    pub fn into_recommendations(
        self,
        expected: usize,
    ) -> Result<Vec<Recommendation>, RecommendError> {
        if self.predictions.len() != expected {
            return Err(RecommendError::WrongCount {
                expected,
                got: self.predictions.len(),
            });
        }
        Ok(self
            .predictions
            .into_iter()
            .map(|p| Recommendation {
                action: p.action,
                reason: p.reason,
                source: RecommendationSource::Model,
            })
            .collect())
    }
}
