//! What one batch of the trade processor produced: decisions counted by reason, dead letters,
//! notifications, recommendations and the archive — everything the function delivers or reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::archive::ArchivedTrade;
use super::ports::{Recommendation, StoreError};
use super::processor::DataEncoding;
use super::trade::{serialize_shared, Side};

/// A record that did not become a portfolio change, with why (SQS DLQ message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Stable code: `invalid_json`, `missing_field:<f>`, `insufficient_balance`, …
    pub reason: String,
    pub detail: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// The user record's index within its KPL aggregate (absent for a record sent alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u32>,
    /// The original record data, losslessly: UTF-8 text when it is, base64 otherwise.
    pub data: String,
    pub data_encoding: DataEncoding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl DeadLetter {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NotificationKind {
    TradeConfirmed,
    TradeRejected,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::TradeConfirmed => "TradeConfirmed",
            NotificationKind::TradeRejected => "TradeRejected",
        }
    }
}

/// One SNS message. The body is [`Notification::to_json`]; `user_id` and `side` are also the
/// message attributes subscription filters match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub kind: NotificationKind,
    #[serde(serialize_with = "serialize_shared")]
    pub trade_id: Arc<str>,
    #[serde(serialize_with = "serialize_shared")]
    pub user_id: Arc<str>,
    pub side: Side,
    pub usd_amount: Decimal,
    pub rate: Decimal,
    pub executed_at: DateTime<Utc>,
    /// `round2(usd_amount × rate)` of a confirmed trade.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cop_amount: Option<Decimal>,
    /// Realized by a confirmed SELL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realized_pnl_cop: Option<Decimal>,
    /// Balances after a confirmed trade.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_balance: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_basis_cop: Option<Decimal>,
    /// Reason code of a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Notification {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The SNS message attributes: `user_id` and `side`.
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [("user_id", &self.user_id), ("side", self.side.as_str())]
    }
}

/// The recommendation stored on a user's portfolio by this batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecommendation {
    pub user_id: String,
    pub recommendation: Recommendation,
}

/// Everything one call of [`TradeProcessor::process_batch`] did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub records: u64,
    /// Trades applied (committed) by this call.
    pub applied: u64,
    /// Records before the failure point whose trade was already decided.
    pub duplicates: u64,
    /// Committed rejections and invalid records before the failure point, by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Records from the failure point on that were not committed here: Kinesis re-sends them.
    pub retried: u64,
    /// Records from the failure point on that were committed here (counted in `applied` or
    /// `rejected`): Kinesis re-sends them too, and they come back as duplicates.
    pub committed_beyond_failure: u64,
    /// Commits refused by the store's conditions (and redone).
    pub conflicts: u64,
    pub dead_letters: Vec<DeadLetter>,
    pub notifications: Vec<Notification>,
    pub recommendations: Vec<UserRecommendation>,
    /// Valid trades with their decisions, in stream order: every one before the failure point,
    /// and those decided (committed) beyond it.
    pub archive: Vec<ArchivedTrade>,
    /// Where [`BatchOutcome::archive`] goes; `None` when there is nothing to archive.
    pub archive_key: Option<String>,
    /// `batchItemFailures`: the first record not durably processed.
    pub batch_item_failure: Option<String>,
    /// The store error that stopped the batch.
    pub halted_by: Option<StoreError>,
    /// The deadline of [`TradeProcessor::process_batch_within`] passed before every user was
    /// committed: the rest is in [`BatchOutcome::batch_item_failure`].
    pub deadline_reached: bool,
}

impl BatchOutcome {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}
