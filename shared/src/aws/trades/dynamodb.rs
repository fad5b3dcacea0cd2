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
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, instrument, warn};

use super::is_transient;
use crate::trades::ports::{
    sequence_key, BoxError, Commit, CommitOutcome, Conflict, Decision, DecisionOutcome, Loaded,
    PortfolioStore, Recommendation, StoreError, StoredPortfolio,
};
use crate::trades::trade::Side;
use crate::trades::Portfolio;

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

/// A stored item that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("attribute {0} is missing")]
    Missing(&'static str),
    #[error("attribute {name} is not of type {expected}")]
    WrongType {
        name: &'static str,
        expected: &'static str,
    },
    #[error("attribute {name} = {value:?} is not a valid number")]
    Number { name: &'static str, value: String },
    #[error("attribute {name} = {value:?} has more than {scale} decimals")]
    Scale {
        name: &'static str,
        value: String,
        scale: u32,
    },
    #[error("attribute {name} = {value:?} is not an RFC 3339 timestamp")]
    Timestamp { name: &'static str, value: String },
    #[error("attribute {name} = {value:?} is not a known value")]
    Enum { name: &'static str, value: String },
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

/// What a `TransactionCanceledException` means for a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// Only conditions failed (or a concurrent transaction touched an item): nothing was
    /// written, and the processor redoes the user.
    Conflict(Conflict),
    /// Throttling inside the transaction, or reasons that cannot be read: try later.
    Transient(String),
    /// A reason that will not go away (validation, item size, …).
    Permanent(String),
}

/// Reads the cancellation reasons of a commit's transaction: one per item, in order — the
/// decisions, then the portfolio put.
pub fn read_cancellation(
    decisions: &[Decision<'_>],
    reasons: &[CancellationReason],
) -> Cancellation {
    let mut conflict = Conflict::default();
    let mut transient_reasons = Vec::new();
    let mut permanent_reasons = Vec::new();
    for (index, reason) in reasons.iter().enumerate() {
        let code = reason.code().unwrap_or("None");
        let describe = || format!("{code} at item {index}");
        match code {
            "None" => {}
            "ConditionalCheckFailed" => match decisions.get(index) {
                Some(decision) => {
                    let stored_id = reason.item().and_then(|item| match item.get("trade_id") {
                        Some(AttributeValue::S(id)) => Some(id.clone()),
                        _ => None,
                    });
                    conflict
                        .already_decided
                        .push(stored_id.unwrap_or_else(|| decision.trade.trade_id.to_string()));
                }
                None => conflict.version_moved = true,
            },
            // Another transaction was writing one of the items: the state it leaves is read
            // again before redoing.
            "TransactionConflict" => conflict.version_moved = true,
            "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded" => {
                transient_reasons.push(describe())
            }
            _ => permanent_reasons.push(describe()),
        }
    }
    if !permanent_reasons.is_empty() {
        Cancellation::Permanent(permanent_reasons.join(", "))
    } else if !transient_reasons.is_empty() {
        Cancellation::Transient(transient_reasons.join(", "))
    } else if conflict.version_moved || !conflict.already_decided.is_empty() {
        Cancellation::Conflict(conflict)
    } else {
        Cancellation::Transient(format!(
            "no usable cancellation reason among {}",
            reasons.len()
        ))
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: Decimal) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn timestamp(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The serde name of a unit enum variant (`TAKE_PROFIT`, `rule`).
fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// The portfolio item at `version`.
pub fn portfolio_item(p: &Portfolio, version: u64) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::with_capacity(12);
    item.insert("user_id".to_string(), s(&p.user_id));
    item.insert(
        "version".to_string(),
        AttributeValue::N(version.to_string()),
    );
    item.insert("usd_balance".to_string(), n(p.usd_balance));
    item.insert("cost_basis_cop".to_string(), n(p.cost_basis_cop));
    item.insert("realized_pnl_cop".to_string(), n(p.realized_pnl_cop));
    item.insert(
        "trades_applied".to_string(),
        AttributeValue::N(p.trades_applied.to_string()),
    );
    if let Some(mut avg) = p.average_cost() {
        // Derived, stored for readers of the table (dashboards, the model's training data);
        // never read back. Always 4 places, like a rate.
        if avg.scale() < 4 {
            avg.rescale(4);
        }
        item.insert("average_cost_cop".to_string(), n(avg));
    }
    if let Some(id) = &p.last_trade_id {
        item.insert("last_trade_id".to_string(), s(id));
    }
    if let Some(t) = p.last_executed_at {
        item.insert("last_executed_at".to_string(), timestamp(t));
    }
    if let Some(rate) = p.last_rate {
        item.insert("last_rate".to_string(), n(rate));
    }
    if let Some(rec) = &p.recommendation {
        item.insert(
            "recommendation".to_string(),
            AttributeValue::M(HashMap::from([
                ("action".to_string(), s(enum_name(&rec.action))),
                ("reason".to_string(), s(&rec.reason)),
                ("source".to_string(), s(enum_name(&rec.source))),
            ])),
        );
    }
    if let Some(t) = p.updated_at {
        item.insert("updated_at".to_string(), timestamp(t));
    }
    item
}

/// The decision item of one decided trade, written by the commit that stores the portfolio
/// at `portfolio_version`.
pub fn decision_item(
    d: &Decision<'_>,
    portfolio_version: u64,
    decided_at: Option<DateTime<Utc>>,
) -> HashMap<String, AttributeValue> {
    let t = d.trade;
    let mut item = HashMap::with_capacity(16);
    item.insert("trade_id".to_string(), s(&*t.trade_id));
    item.insert("user_id".to_string(), s(&*t.user_id));
    item.insert("side".to_string(), s(t.side.as_str()));
    item.insert("usd_amount".to_string(), n(t.usd_amount));
    item.insert("rate".to_string(), n(t.rate));
    item.insert("executed_at".to_string(), timestamp(t.executed_at));
    if let Some(channel) = &t.channel {
        item.insert("channel".to_string(), s(&**channel));
    }
    item.insert("sequence_number".to_string(), s(d.sequence_number));
    item.insert(
        "portfolio_version".to_string(),
        AttributeValue::N(portfolio_version.to_string()),
    );
    if let Some(at) = decided_at {
        item.insert("decided_at".to_string(), timestamp(at));
    }
    match d.outcome {
        DecisionOutcome::Applied(a) => {
            item.insert("outcome".to_string(), s("APPLIED"));
            item.insert("cop_amount".to_string(), n(a.cop_amount));
            if a.side == Side::Sell {
                item.insert("removed_cop".to_string(), n(a.removed_cop));
                item.insert("realized_pnl_cop".to_string(), n(a.realized_pnl_cop));
            }
            item.insert("usd_balance_after".to_string(), n(a.usd_balance));
            item.insert("cost_basis_cop_after".to_string(), n(a.cost_basis_cop));
        }
        DecisionOutcome::Rejected(rejection) => {
            item.insert("outcome".to_string(), s("REJECTED"));
            item.insert("reason".to_string(), s(rejection.code()));
            item.insert("detail".to_string(), s(rejection.to_string()));
        }
    }
    item
}

type Item = HashMap<String, AttributeValue>;

fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(ItemError::WrongType {
            name,
            expected: "S",
        }),
    }
}

fn get_n<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => Ok(Some(v)),
        Some(_) => Err(ItemError::WrongType {
            name,
            expected: "N",
        }),
    }
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, ItemError> {
    value.ok_or(ItemError::Missing(name))
}

/// A stored number as a decimal with exactly `scale` places (DynamoDB drops trailing zeros).
fn decimal(value: &str, name: &'static str, scale: u32) -> Result<Decimal, ItemError> {
    let parsed = if value.contains(['e', 'E']) {
        Decimal::from_scientific(value)
    } else {
        Decimal::from_str(value)
    };
    let mut d = parsed
        .map_err(|_| ItemError::Number {
            name,
            value: value.to_string(),
        })?
        .normalize();
    if d.scale() > scale {
        return Err(ItemError::Scale {
            name,
            value: value.to_string(),
            scale,
        });
    }
    d.rescale(scale);
    Ok(d)
}

fn integer(value: &str, name: &'static str) -> Result<u64, ItemError> {
    value.parse().map_err(|_| ItemError::Number {
        name,
        value: value.to_string(),
    })
}

fn time(value: &str, name: &'static str) -> Result<DateTime<Utc>, ItemError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ItemError::Timestamp {
            name,
            value: value.to_string(),
        })
}

fn enum_value<T: DeserializeOwned>(value: &str, name: &'static str) -> Result<T, ItemError> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
        ItemError::Enum {
            name,
            value: value.to_string(),
        }
    })
}

/// Reads a portfolio item back.
pub fn portfolio_from_item(item: &Item) -> Result<StoredPortfolio, ItemError> {
    let amount = |name: &'static str| -> Result<Decimal, ItemError> {
        decimal(required(get_n(item, name)?, name)?, name, 2)
    };
    let recommendation = match item.get("recommendation") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::M(m)) => Some(Recommendation {
            action: enum_value(required(get_s(m, "action")?, "action")?, "action")?,
            reason: required(get_s(m, "reason")?, "reason")?.to_string(),
            source: enum_value(required(get_s(m, "source")?, "source")?, "source")?,
        }),
        Some(_) => {
            return Err(ItemError::WrongType {
                name: "recommendation",
                expected: "M",
            })
        }
    };
    let portfolio = Portfolio {
        user_id: required(get_s(item, "user_id")?, "user_id")?.to_string(),
        usd_balance: amount("usd_balance")?,
        cost_basis_cop: amount("cost_basis_cop")?,
        realized_pnl_cop: amount("realized_pnl_cop")?,
        trades_applied: integer(
            required(get_n(item, "trades_applied")?, "trades_applied")?,
            "trades_applied",
        )?,
        last_trade_id: get_s(item, "last_trade_id")?.map(str::to_string),
        last_executed_at: get_s(item, "last_executed_at")?
            .map(|t| time(t, "last_executed_at"))
            .transpose()?,
        last_rate: get_n(item, "last_rate")?
            .map(|r| decimal(r, "last_rate", 4))
            .transpose()?,
        recommendation,
        updated_at: get_s(item, "updated_at")?
            .map(|t| time(t, "updated_at"))
            .transpose()?,
    };
    let version = integer(required(get_n(item, "version")?, "version")?, "version")?;
    Ok(StoredPortfolio {
        portfolio,
        version,
        last_sequence: get_s(item, "last_sequence")?.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::ports::{Action, RecommendationSource};
    use crate::trades::Trade;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn trade(
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

    #[test]
    fn a_portfolio_survives_dynamodb_number_normalization() -> TestResult {
        // GIVEN a portfolio after a buy, with a recommendation
        let mut p = Portfolio::new("ana");
        p.apply(&trade("t1", "BUY", "150", "4033.5")?)?;
        p.recommendation = Some(Recommendation {
            action: Action::TakeProfit,
            reason: "up 4%".into(),
            source: RecommendationSource::Model,
        });
        p.updated_at = Some(time("2026-11-28T17:00:01Z", "t")?);
        let mut item = portfolio_item(&p, 7);
        assert_eq!(
            item.get("usd_balance"),
            Some(&AttributeValue::N("150.00".into()))
        );
        assert_eq!(
            item.get("cost_basis_cop"),
            Some(&AttributeValue::N("605025.00".into()))
        );
        assert_eq!(
            item.get("last_rate"),
            Some(&AttributeValue::N("4033.5000".into()))
        );
        assert_eq!(
            item.get("average_cost_cop"),
            Some(&AttributeValue::N("4033.5000".into()))
        );
        // WHEN DynamoDB hands the numbers back normalized
        item.insert("usd_balance".into(), AttributeValue::N("150".into()));
        item.insert("cost_basis_cop".into(), AttributeValue::N("605025".into()));
        item.insert("last_rate".into(), AttributeValue::N("4033.5".into()));
        // THEN the portfolio reads back identical, scales included
        let stored = portfolio_from_item(&item)?;
        assert_eq!(stored.version, 7);
        assert_eq!(stored.portfolio, p);
        assert_eq!(stored.portfolio.usd_balance.to_string(), "150.00");
        assert_eq!(
            stored.portfolio.last_rate.map(|r| r.to_string()).as_deref(),
            Some("4033.5000")
        );
        Ok(())
    }

    #[test]
    fn an_amount_with_too_many_decimals_is_refused() {
        let mut item = portfolio_item(&Portfolio::new("ana"), 1);
        item.insert("usd_balance".into(), AttributeValue::N("1.005".into()));
        assert!(matches!(
            portfolio_from_item(&item),
            Err(ItemError::Scale {
                name: "usd_balance",
                ..
            })
        ));
        item.insert("usd_balance".into(), AttributeValue::S("1".into()));
        assert!(matches!(
            portfolio_from_item(&item),
            Err(ItemError::WrongType {
                name: "usd_balance",
                ..
            })
        ));
    }

    #[test]
    fn decision_items_record_the_outcome() -> TestResult {
        let mut p = Portfolio::new("ana");
        let buy = trade("t1", "BUY", "10", "4000")?;
        let applied = p.apply(&buy)?;
        let d = Decision {
            trade: &buy,
            sequence_number: "000001",
            outcome: DecisionOutcome::Applied(applied),
        };
        let item = decision_item(&d, 3, None);
        assert_eq!(item.get("outcome"), Some(&s("APPLIED")));
        assert_eq!(
            item.get("cop_amount"),
            Some(&AttributeValue::N("40000.00".into()))
        );
        assert_eq!(
            item.get("usd_amount"),
            Some(&AttributeValue::N("10.00".into()))
        );
        assert_eq!(
            item.get("portfolio_version"),
            Some(&AttributeValue::N("3".into()))
        );
        assert_eq!(item.get("removed_cop"), None);
        let sell = trade("t2", "SELL", "11", "4000")?;
        let rejection = match p.apply(&sell) {
            Err(r) => r,
            Ok(_) => return Err("the oversell was applied".into()),
        };
        let d = Decision {
            trade: &sell,
            sequence_number: "000002",
            outcome: DecisionOutcome::Rejected(rejection),
        };
        let item = decision_item(&d, 3, None);
        assert_eq!(item.get("outcome"), Some(&s("REJECTED")));
        assert_eq!(item.get("reason"), Some(&s("insufficient_balance")));
        Ok(())
    }

    fn reason(code: &str, trade_id: Option<&str>) -> CancellationReason {
        let mut b = CancellationReason::builder().code(code);
        if let Some(id) = trade_id {
            b = b.item("trade_id", s(id));
        }
        b.build()
    }

    #[test]
    fn cancellation_reasons_become_conflicts_or_errors() -> TestResult {
        let (t1, t2) = (
            trade("t1", "BUY", "1", "4000")?,
            trade("t2", "BUY", "1", "4000")?,
        );
        let mut p = Portfolio::new("ana");
        let decisions = [
            Decision {
                trade: &t1,
                sequence_number: "1",
                outcome: DecisionOutcome::Applied(p.apply(&t1)?),
            },
            Decision {
                trade: &t2,
                sequence_number: "2",
                outcome: DecisionOutcome::Applied(p.apply(&t2)?),
            },
        ];
        // a decision item that exists: the trade id, from the returned item
        let got = read_cancellation(
            &decisions,
            &[
                reason("None", None),
                reason("ConditionalCheckFailed", Some("t2")),
                reason("None", None),
            ],
        );
        assert_eq!(
            got,
            Cancellation::Conflict(Conflict {
                version_moved: false,
                already_decided: vec!["t2".into()]
            })
        );
        // the portfolio's condition: the version moved
        let got = read_cancellation(
            &decisions,
            &[
                reason("None", None),
                reason("None", None),
                reason("ConditionalCheckFailed", None),
            ],
        );
        assert_eq!(
            got,
            Cancellation::Conflict(Conflict {
                version_moved: true,
                already_decided: vec![]
            })
        );
        // throttling inside the transaction is transient, a validation error permanent
        let got = read_cancellation(
            &decisions,
            &[
                reason("ThrottlingError", None),
                reason("None", None),
                reason("None", None),
            ],
        );
        assert!(matches!(got, Cancellation::Transient(_)));
        let got = read_cancellation(&decisions, &[reason("ValidationError", None)]);
        assert!(matches!(got, Cancellation::Permanent(_)));
        assert!(matches!(
            read_cancellation(&decisions, &[]),
            Cancellation::Transient(_)
        ));
        Ok(())
    }
}
