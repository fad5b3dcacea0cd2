//! The [`PortfolioStore`] on DynamoDB: two tables, written together in one transaction.
//!
//! - **portfolios** (key `user_id`): one item per user — the [`Portfolio`] plus `version`.
//! - **decisions** (key `trade_id`): one item per decided trade, written once, ever; it
//!   records the outcome (`APPLIED` / `REJECTED`), the trade, and the Kinesis sequence number
//!   that decided it. A decision from a *pending* commit (a user with 100 or more decisions
//!   in a batch, see [`Commit`]) also carries `pending_sequence`, and is durable once the
//!   portfolio's `last_sequence` is at or past it; until then only a retry of the same record
//!   for the same user may write it again. Sequence numbers are stored zero-padded to 64
//!   digits so that DynamoDB's string comparison is numeric.
//!
//! `load` is one `BatchGetItem` (strongly consistent) per 100 touched users, run a few at a
//! time, with `UnprocessedKeys` sent again with back-off. It reads portfolios only: duplicates
//! are found by the commit's conditions. `commit` is one `TransactWriteItems`: a `Put` per
//! decision, then (final commits) the portfolio `Put` conditioned on the version read
//! (`attribute_not_exists(user_id)` for version 0). A `TransactionCanceledException` is read through its
//! cancellation reasons (with `ReturnValuesOnConditionCheckFailure: ALL_OLD`): a decision item
//! that exists is a trade already decided, a failed portfolio condition a version that moved —
//! both a [`CommitOutcome::Conflict`]; throttling inside a transaction is transient.
//!
//! Amounts are DynamoDB numbers written from the [`Decimal`]'s text (`"1003087.50"`), never
//! through `f64`. DynamoDB normalizes numbers (`"150.00"` reads back as `"150"`), so reading
//! restores the scale (2 for USD and COP, 4 for rates) and refuses a value with more decimals.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use tokio::task::JoinSet;
use tracing::{debug, instrument, warn};

mod cancellation;
mod item;

pub use cancellation::{read_cancellation, Cancellation};
use item::s;
pub use item::{decision_item, portfolio_from_item, portfolio_item, ItemError};

use super::is_transient;
use crate::trades::ports::{
    sequence_key, BoxError, Commit, CommitOutcome, Loaded, PortfolioStore, StoreError,
    StoredPortfolio,
};

/// Keys per `BatchGetItem` request (the service's limit).
pub const BATCH_GET_KEYS: usize = 100;

/// A DynamoDB failure, with the SDK error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum DynamoDbError {
    #[error("BatchGetItem on {table} failed")]
    BatchGet {
        table: String,
        #[source]
        source: SdkError<BatchGetItemError>,
    },
    #[error("TransactWriteItems failed")]
    TransactWrite(#[source] SdkError<TransactWriteItemsError>),
    #[error("{remaining} portfolio keys still unprocessed after {attempts} BatchGetItem attempts")]
    Unprocessed { remaining: usize, attempts: u32 },
    #[error("transaction cancelled: {reasons}")]
    Cancelled { reasons: String },
    #[error("could not build the request")]
    Build(#[from] BuildError),
    #[error("stored item is invalid")]
    Item(#[from] ItemError),
    #[error("a read task failed")]
    Task(#[from] tokio::task::JoinError),
}

fn transient(e: DynamoDbError) -> StoreError {
    let cause: BoxError = Box::new(e);
    StoreError::Transient(cause)
}

fn permanent(e: impl Into<DynamoDbError>) -> StoreError {
    let cause: BoxError = Box::new(e.into());
    StoreError::Permanent(cause)
}

/// The portfolio store on two DynamoDB tables (see the module docs).
#[derive(Debug, Clone)]
pub struct DynamoDbPortfolioStore {
    client: Client,
    portfolios_table: String,
    decisions_table: String,
    read_concurrency: usize,
    unprocessed_attempts: u32,
    unprocessed_backoff: Duration,
}

impl DynamoDbPortfolioStore {
    pub fn new(
        client: Client,
        portfolios_table: impl Into<String>,
        decisions_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            portfolios_table: portfolios_table.into(),
            decisions_table: decisions_table.into(),
            read_concurrency: 8,
            unprocessed_attempts: 8,
            unprocessed_backoff: Duration::from_millis(50),
        }
    }

    /// `BatchGetItem` calls in flight at once (default 8).
    pub fn with_read_concurrency(mut self, calls: usize) -> Self {
        self.read_concurrency = calls.max(1);
        self
    }

    /// Rounds of `UnprocessedKeys` re-sending and the first wait (doubled each round; default
    /// 8 rounds from 50 ms).
    pub fn with_unprocessed_retry(mut self, attempts: u32, first_wait: Duration) -> Self {
        self.unprocessed_attempts = attempts.max(1);
        self.unprocessed_backoff = first_wait;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One `BatchGetItem` of `user_ids` (at most 100), sending unprocessed keys again.
    async fn read_chunk(
        client: Client,
        table: String,
        user_ids: Vec<String>,
        attempts: u32,
        first_wait: Duration,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut keys: Vec<HashMap<String, AttributeValue>> = user_ids
            .into_iter()
            .map(|u| HashMap::from([("user_id".to_string(), AttributeValue::S(u))]))
            .collect();
        let mut items = Vec::with_capacity(keys.len());
        let mut wait = first_wait;
        for attempt in 1..=attempts {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(permanent)?;
            let output = client
                .batch_get_item()
                .request_items(&table, request)
                .send()
                .await
                .map_err(|source| {
                    let is_transient = is_transient(&source);
                    let e = DynamoDbError::BatchGet {
                        table: table.clone(),
                        source,
                    };
                    if is_transient {
                        transient(e)
                    } else {
                        permanent(e)
                    }
                })?;
            let mut output = output;
            if let Some(found) = output.responses.as_mut().and_then(|r| r.remove(&table)) {
                items.extend(found);
            }
            keys = output
                .unprocessed_keys
                .as_mut()
                .and_then(|u| u.remove(&table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if keys.is_empty() {
                return Ok(items);
            }
            debug!(
                table = %table,
                unprocessed = keys.len(),
                attempt,
                "BatchGetItem left keys unprocessed"
            );
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        Err(transient(DynamoDbError::Unprocessed {
            remaining: keys.len(),
            attempts,
        }))
    }

    /// The transaction of one commit: the decision puts, then the portfolio put of a final
    /// commit (see [`Commit`] for the conditions).
    fn transaction(&self, commit: &Commit<'_>) -> Result<Vec<TransactWriteItem>, BuildError> {
        let decided_at = commit.portfolio.updated_at;
        let read = commit.expected_sequence.map(sequence_key);
        let mut items = Vec::with_capacity(commit.item_count());
        for decision in commit.decisions {
            let sequence = sequence_key(decision.sequence_number);
            let mut item = decision_item(decision, commit.new_version(), decided_at);
            if commit.pending {
                item.insert("pending_sequence".to_string(), s(&sequence));
            }
            // Never decided, or pending for this user and record and not yet durable.
            let mut values = HashMap::from([
                (":sequence".to_string(), s(sequence)),
                (":user".to_string(), s(commit.user_id)),
            ]);
            let condition = match &read {
                Some(read) => {
                    values.insert(":read".to_string(), s(read));
                    "attribute_not_exists(trade_id) OR (pending_sequence = :sequence \
                     AND user_id = :user AND pending_sequence > :read)"
                }
                None => {
                    "attribute_not_exists(trade_id) OR (pending_sequence = :sequence \
                     AND user_id = :user)"
                }
            };
            let put = Put::builder()
                .table_name(&self.decisions_table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        if commit.pending {
            return Ok(items);
        }
        let mut item = portfolio_item(commit.portfolio, commit.new_version());
        item.insert(
            "last_sequence".to_string(),
            s(sequence_key(commit.last_sequence)),
        );
        let put = Put::builder()
            .table_name(&self.portfolios_table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = if commit.expected_version == 0 {
            put.condition_expression("attribute_not_exists(user_id)")
        } else {
            put.condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::N(commit.expected_version.to_string()),
                )
        };
        items.push(TransactWriteItem::builder().put(put.build()?).build());
        Ok(items)
    }
}

impl PortfolioStore for DynamoDbPortfolioStore {
    #[instrument(level = "debug", skip_all, fields(users = user_ids.len()))]
    async fn load(&self, user_ids: &[&str], _trade_ids: &[&str]) -> Result<Loaded, StoreError> {
        let mut tasks: JoinSet<Result<Vec<HashMap<String, AttributeValue>>, StoreError>> =
            JoinSet::new();
        let mut chunks = user_ids.chunks(BATCH_GET_KEYS);
        let mut found: HashMap<String, StoredPortfolio> = HashMap::with_capacity(user_ids.len());
        let mut failure: Option<StoreError> = None;
        loop {
            while failure.is_none() && tasks.len() < self.read_concurrency {
                let Some(chunk) = chunks.next() else { break };
                tasks.spawn(Self::read_chunk(
                    self.client.clone(),
                    self.portfolios_table.clone(),
                    chunk.iter().map(|u| (*u).to_string()).collect(),
                    self.unprocessed_attempts,
                    self.unprocessed_backoff,
                ));
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let items = match joined {
                Ok(Ok(items)) => items,
                Ok(Err(e)) => {
                    // Keep the first failure, preferring a permanent one (it needs a human).
                    if failure.as_ref().is_none_or(StoreError::is_transient) {
                        failure = Some(e);
                    }
                    continue;
                }
                Err(e) => {
                    failure.get_or_insert_with(|| transient(DynamoDbError::Task(e)));
                    continue;
                }
            };
            for item in items {
                match portfolio_from_item(&item) {
                    Ok(stored) => {
                        found.insert(stored.portfolio.user_id.clone(), stored);
                    }
                    Err(e) => {
                        failure.get_or_insert_with(|| permanent(e));
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Loaded {
            portfolios: user_ids.iter().map(|u| found.remove(*u)).collect(),
            decided: Default::default(),
        })
    }

    #[instrument(
        level = "debug",
        skip_all,
        fields(user_id = commit.user_id, version = commit.expected_version, items = commit.item_count())
    )]
    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let items = self.transaction(commit).map_err(permanent)?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(CommitOutcome::Committed),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            return match read_cancellation(commit.decisions, cancelled.cancellation_reasons()) {
                Cancellation::Conflict(conflict) => {
                    debug!(
                        version_moved = conflict.version_moved,
                        already_decided = conflict.already_decided.len(),
                        "transaction refused by its conditions"
                    );
                    Ok(CommitOutcome::Conflict(conflict))
                }
                Cancellation::Transient(reasons) => {
                    Err(transient(DynamoDbError::Cancelled { reasons }))
                }
                Cancellation::Permanent(reasons) => {
                    warn!(reasons = %reasons, "transaction cancelled");
                    Err(permanent(DynamoDbError::Cancelled { reasons }))
                }
            };
        }
        if is_transient(&err) {
            Err(transient(DynamoDbError::TransactWrite(err)))
        } else {
            Err(permanent(DynamoDbError::TransactWrite(err)))
        }
    }
}

#[cfg(test)]
mod fixtures {
    use crate::trades::Trade;

    pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

    pub(super) fn trade(
        id: &str,
        side: &str,
        usd: &str,
        rate: &str,
    ) -> Result<Trade, Box<dyn std::error::Error>> {
        let line = format!(
            r#"{{"trade_id":"{id}","user_id":"ana","side":"{side}","usd_amount":"{usd}","rate":"{rate}","executed_at":"2026-11-28T17:00:00Z","channel":"app"}}"#
        );
        Ok(Trade::parse(line.as_bytes())?)
    }
}
