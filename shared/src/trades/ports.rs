//! The capabilities the trade processor needs, one small trait each. Every trait has an
//! in-memory or local-folder adapter in [`super::memory`]; the `trades-stream` Lambda provides
//! the AWS ones (DynamoDB, SQS, S3, SNS, SageMaker Runtime).
//!
//! The traits use return-position `impl Future + Send` (native async in traits): adapters
//! implement them with plain `async fn`, callers use them through generics, never `dyn`.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::future::Future;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::outcome::{DeadLetter, Notification};
use super::portfolio::{Applied, Portfolio, Rejection};
use super::trade::Trade;

/// The error type adapters wrap (SDK errors, I/O errors), kept as the `source`: the same one
/// the ingest ports use.
pub use crate::runtime::BoxError;

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

/// A portfolio with the version it was stored at (`0` = no item yet) and the stream position
/// of the last trade it took in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPortfolio {
    pub portfolio: Portfolio,
    pub version: u64,
    /// [`sequence_key`] of the record of the last decision committed with this portfolio
    /// (`None`: none yet). A pending decision at or before it is durable (see [`Commit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<String>,
}

impl StoredPortfolio {
    /// What a user without an item starts from.
    pub fn empty(user_id: &str) -> Self {
        Self {
            portfolio: Portfolio::new(user_id),
            version: 0,
            last_sequence: None,
        }
    }
}

/// Width of a [`sequence_key`]: Kinesis sequence numbers are decimal integers (56 digits
/// today, at most 128 bits).
pub const SEQUENCE_KEY_WIDTH: usize = 64;

/// The padding of the widest key, sliced as needed.
const SEQUENCE_ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const _: () = assert!(SEQUENCE_ZEROS.len() == SEQUENCE_KEY_WIDTH);

/// A stream sequence number as a fixed-width key, so that string order is numeric order
/// (DynamoDB compares strings byte by byte): the decimal digits left-padded with zeros to
/// [`SEQUENCE_KEY_WIDTH`]. Anything else (never sent by Kinesis) is kept as written.
pub fn sequence_key(sequence_number: &str) -> String {
    let mut key = String::with_capacity(SEQUENCE_KEY_WIDTH);
    sequence_key_into(sequence_number, &mut key);
    key
}

/// [`sequence_key`] into `key` (cleared first), reusing its allocation.
pub fn sequence_key_into(sequence_number: &str, key: &mut String) {
    key.clear();
    let digits = sequence_number.trim_start_matches('0');
    if digits.len() <= SEQUENCE_KEY_WIDTH && digits.bytes().all(|b| b.is_ascii_digit()) {
        key.push_str(&SEQUENCE_ZEROS[digits.len()..]);
        key.push_str(digits);
    } else {
        key.push_str(sequence_number);
    }
}

/// Orders two sequence numbers as numbers (the order of their [`sequence_key`]s).
pub fn compare_sequences(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    let numeric = |s: &str| s.len() <= SEQUENCE_KEY_WIDTH && s.bytes().all(|b| b.is_ascii_digit());
    if numeric(a) && numeric(b) {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        sequence_key(a).cmp(&sequence_key(b))
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
    /// The user record's index within its KPL aggregate, when it was one.
    pub sub_sequence: Option<u32>,
    pub outcome: DecisionOutcome,
}

/// One atomic write of a user's decisions — a DynamoDB `TransactWriteItems` call of at most
/// `max_transaction_items` items.
///
/// A user's decisions in a batch go out in `ceil((n + 1) / max)` commits: full *pending*
/// commits of decisions only, then the *final* commit with the rest of the decisions and the
/// portfolio as it stands after all of them, stored at `expected_version + 1` on condition
/// that the stored version is still `expected_version` (`0`: no item yet), together with
/// `last_sequence`, the sequence number of the user's last decision.
///
/// A decision written by a pending commit is durable only once its final commit lands: it is
/// durable exactly when its sequence number is at or before the `last_sequence` stored on its
/// user's portfolio. Until then it may be written again, by the same user for the same
/// record — which is how a retry after a failed final commit redoes it. Every decision put is
/// therefore conditioned on: no decision for this trade id, or a pending one of this user and
/// record whose sequence number is after `expected_sequence` (what the load read).
/// Everything else is a trade already decided. Because a user's records are applied in stream
/// order and the portfolio moves past a record only by a commit that settled it, a pending
/// decision left by a failed final commit is never mistaken for a durable one.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub user_id: &'a str,
    pub expected_version: u64,
    /// The portfolio's `last_sequence` as loaded with `expected_version`.
    pub expected_sequence: Option<&'a str>,
    /// `true`: decisions only, no portfolio put.
    pub pending: bool,
    /// The portfolio after the user's decisions in this batch (after this commit's decisions
    /// for a pending commit; stored only by the final one).
    pub portfolio: &'a Portfolio,
    /// Sequence number of the user's last decision, stored with the portfolio.
    pub last_sequence: &'a str,
    pub decisions: &'a [Decision<'a>],
}

impl Commit<'_> {
    pub fn new_version(&self) -> u64 {
        self.expected_version + 1
    }

    /// Items in the transaction: one per decision, plus the portfolio put of a final commit.
    pub fn item_count(&self) -> usize {
        self.decisions.len() + usize::from(!self.pending)
    }

    /// Whether a stored pending decision (of `user_id`, for the record at `pending_sequence`)
    /// may be written again by `decision` of this commit (see the type's docs).
    pub fn may_redo(&self, decision: &Decision<'_>, user_id: &str, pending_sequence: &str) -> bool {
        user_id == self.user_id
            && compare_sequences(pending_sequence, decision.sequence_number) == Ordering::Equal
            && self
                .expected_sequence
                .is_none_or(|read| compare_sequences(pending_sequence, read) == Ordering::Greater)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequence_keys_are_fixed_width_and_keep_what_is_not_a_number() {
        assert_eq!(sequence_key("42"), format!("{:064}", 42));
        assert_eq!(sequence_key(&sequence_key("42")), sequence_key("42"));
        assert_eq!(sequence_key("0"), "0".repeat(64));
        assert_eq!(sequence_key("x-1"), "x-1");
        assert_eq!(
            compare_sequences("0042", &sequence_key("42")),
            Ordering::Equal
        );
    }

    proptest! {
        #[test]
        fn sequence_order_is_numeric_order(a in any::<u128>(), b in any::<u128>(), pad in 0usize..8) {
            let padded = format!("{}{a}", "0".repeat(pad));
            prop_assert_eq!(compare_sequences(&padded, &b.to_string()), a.cmp(&b));
            prop_assert_eq!(sequence_key(&padded).cmp(&sequence_key(&b.to_string())), a.cmp(&b));
        }
    }
}
