//! The batch processor: one Kinesis batch in, every record accounted for out.
//!
//! 1. Decode and validate every record; an invalid one becomes a dead letter and never blocks.
//! 2. Group the valid trades by user, keeping stream order; users are handled in the order of
//!    their first record.
//! 3. One [`PortfolioStore::load`] of every touched portfolio (with its version) and of the
//!    trade ids the store already knows to be decided.
//! 4. Per user, apply the trades in order on a copy of the portfolio, skipping every trade id
//!    already decided (earlier batches, or earlier in this batch). An `insufficient_balance`
//!    rejection is a decision too: a later redelivery is a duplicate, never re-decided.
//! 5. One recommendation call for every user with a decision (the rule when the model fails).
//! 6. Per user, commit in transactions of at most `max_transaction_items` items: each is its
//!    decisions plus the portfolio as it stands after them, conditioned on the version read.
//!    A user with `n` decisions costs `ceil(n / (max − 1))` transactions — the issue's
//!    `ceil((n + 1) / 100)` whenever `n ≤ 198`; for more, the extra transaction is the price of
//!    keeping every transaction a consistent step (a portfolio put in each).
//! 7. A conflict (a decision already recorded, or the version moved under a concurrent writer)
//!    writes nothing: the processor learns which trades are decided, re-reads the portfolio if
//!    the version moved, and redoes that user from the last committed point.
//! 8. A store error stops the batch. `batch_item_failure` is the sequence number of the first
//!    record (in stream order) whose outcome is not durable — every record before it is
//!    committed, a duplicate of something durable, or invalid — so Kinesis re-sends only what
//!    is needed, and whatever was committed turns into duplicates when re-sent.
//!
//! The outcome carries only what is settled: dead letters, archive and counts for the records
//! before the failure point, notifications and recommendations for what was committed.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tracing::{debug, warn};

use super::archive::{archive_key, encode_ndjson_gz};
use super::portfolio::Portfolio;
use super::ports::{
    BoxError, Commit, CommitOutcome, DeadLetterSink, Decision, DecisionOutcome, Notifier,
    PortfolioStore, Recommendation, RecommendationRequest, Recommender, SinkError, StoreError,
    StoredPortfolio, TradeArchive,
};
use super::recommend::RuleRecommender;
use super::trade::{InvalidReason, InvalidTrade, Side, Trade};

/// One stream record, borrowed from the event.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
    pub data: RecordData<'a>,
}

/// A record's payload: raw bytes, or the base64 text of a Kinesis event (decoded here, so that
/// bad base64 is a dead letter like any other invalid record).
#[derive(Debug, Clone, Copy)]
pub enum RecordData<'a> {
    Bytes(&'a [u8]),
    Base64(&'a str),
}

/// How a dead letter's `data` is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    Utf8,
    Base64,
}

/// A record that did not become a portfolio change, with why (SQS DLQ message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Stable code: `invalid_json`, `missing_field:<f>`, `insufficient_balance`, …
    pub reason: String,
    pub detail: String,
    pub shard_id: String,
    pub sequence_number: String,
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
    pub trade_id: String,
    pub user_id: String,
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
    /// Valid trades before the failure point, in stream order.
    pub archive: Vec<Trade>,
    /// Where [`BatchOutcome::archive`] goes; `None` when there is nothing to archive.
    pub archive_key: Option<String>,
    /// `batchItemFailures`: the first record not durably processed.
    pub batch_item_failure: Option<String>,
    /// The store error that stopped the batch.
    pub halted_by: Option<StoreError>,
}

impl BatchOutcome {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Limits of the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// Items per transaction (DynamoDB `TransactWriteItems`: 100). At least 2.
    pub max_transaction_items: usize,
    /// Conflicts tolerated per user and batch before giving up as a transient failure.
    pub max_conflict_retries: u32,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            max_transaction_items: 100,
            max_conflict_retries: 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("user {user_id}: {conflicts} conflicting commits in one batch")]
struct TooManyConflicts {
    user_id: String,
    conflicts: u32,
}

/// Decodes, validates and applies batches of trade records exactly once per trade id.
#[derive(Debug)]
pub struct TradeProcessor<S, R = RuleRecommender> {
    store: S,
    recommender: R,
    rule: RuleRecommender,
    config: ProcessorConfig,
}

/// What happens to a record once this batch is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Invalid,
    Pending,
    Duplicate,
    Decided,
}

/// When a user's record is settled, relative to the user's current plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Its trade id is already durably decided.
    Now,
    /// It is the decision in this chunk.
    Decides(u32),
    /// It repeats a trade decided in this chunk.
    Repeats(u32),
}

struct ChunkPlan {
    /// Exclusive end in `Plan::decisions`.
    end: usize,
    portfolio: Portfolio,
}

/// One user's work, computed from a starting portfolio.
struct Plan<'t> {
    decisions: Vec<Decision<'t>>,
    /// Record index of each decision.
    decision_records: Vec<u32>,
    chunks: Vec<ChunkPlan>,
    /// Parallel to the user's trades.
    settle: Vec<Settle>,
    latest_rate: Option<Decimal>,
}

struct UserWork<'t> {
    user_id: &'t str,
    /// Indexes into the batch's trades, in stream order.
    trades: Vec<u32>,
}

/// What the commit phase left behind.
#[derive(Default)]
struct CommitPhase {
    applied: u64,
    conflicts: u64,
    rejected: BTreeMap<String, u64>,
    dead_letters: Vec<DeadLetter>,
    notifications: Vec<Notification>,
    recommendations: Vec<UserRecommendation>,
    halted_by: Option<StoreError>,
}

impl<S> TradeProcessor<S, RuleRecommender> {
    /// A processor recommending with the built-in rule.
    pub fn new(store: S) -> Self {
        Self::with_recommender(store, RuleRecommender::default())
    }
}

impl<S, R> TradeProcessor<S, R> {
    pub fn with_recommender(store: S, recommender: R) -> Self {
        Self {
            store,
            recommender,
            rule: RuleRecommender::default(),
            config: ProcessorConfig::default(),
        }
    }

    pub fn with_config(mut self, config: ProcessorConfig) -> Self {
        self.config = ProcessorConfig {
            max_transaction_items: config.max_transaction_items.max(2),
            ..config
        };
        self
    }

    /// The rule used when the recommender fails.
    pub fn with_rule(mut self, rule: RuleRecommender) -> Self {
        self.rule = rule;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> ProcessorConfig {
        self.config
    }
}

impl<S, R> TradeProcessor<S, R>
where
    S: PortfolioStore + Sync,
    R: Recommender + Sync,
{
    /// Processes one batch (records in stream order). Never fails: a store failure is reported
    /// in [`BatchOutcome::batch_item_failure`] / [`BatchOutcome::halted_by`]. `now` stamps
    /// `updated_at` on the portfolios written.
    pub async fn process_batch(&self, records: &[Record<'_>], now: DateTime<Utc>) -> BatchOutcome {
        let n = records.len();
        let mut status = vec![Status::Pending; n];
        let mut trades: Vec<Trade> = Vec::with_capacity(n);
        let mut trade_records: Vec<u32> = Vec::with_capacity(n);
        let mut invalid: Vec<(usize, InvalidTrade)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match decode(record) {
                Ok(trade) => {
                    trades.push(trade);
                    trade_records.push(i as u32);
                }
                Err(e) => {
                    status[i] = Status::Invalid;
                    invalid.push((i, e));
                }
            }
        }

        let phase = self
            .apply_and_commit(records, &trades, &trade_records, &mut status, now)
            .await;

        // Everything before the first pending record is settled.
        let failure = status.iter().position(|s| *s == Status::Pending);
        let consumed = failure.unwrap_or(n);
        let mut outcome = BatchOutcome {
            records: n as u64,
            applied: phase.applied,
            conflicts: phase.conflicts,
            rejected: phase.rejected,
            dead_letters: Vec::with_capacity(invalid.len() + phase.dead_letters.len()),
            notifications: phase.notifications,
            recommendations: phase.recommendations,
            batch_item_failure: failure.map(|i| records[i].sequence_number.to_string()),
            halted_by: phase.halted_by,
            ..BatchOutcome::default()
        };
        for (i, err) in invalid {
            if i < consumed {
                *outcome.rejected.entry(err.code()).or_default() += 1;
                outcome
                    .dead_letters
                    .push(dead_letter(&records[i], err.code(), err.detail, None));
            } else {
                outcome.retried += 1;
            }
        }
        outcome.dead_letters.extend(phase.dead_letters);
        for (i, s) in status.iter().enumerate() {
            match s {
                Status::Duplicate if i < consumed => outcome.duplicates += 1,
                Status::Duplicate | Status::Pending => outcome.retried += 1,
                Status::Decided if i >= consumed => outcome.committed_beyond_failure += 1,
                Status::Invalid | Status::Decided => {}
            }
        }
        outcome.archive = trades
            .into_iter()
            .zip(trade_records)
            .filter(|(_, r)| (*r as usize) < consumed)
            .map(|(t, _)| t)
            .collect();
        if let Some(first) = outcome.archive.first() {
            outcome.archive_key = Some(archive_key(
                records[0].shard_id,
                records[0].sequence_number,
                records[consumed - 1].sequence_number,
                first.executed_at,
            ));
        }
        if let Some(err) = &outcome.halted_by {
            warn!(
                error = %err,
                failure = outcome.batch_item_failure.as_deref().unwrap_or(""),
                retried = outcome.retried,
                "trade batch stopped"
            );
        }
        debug!(
            records = outcome.records,
            applied = outcome.applied,
            duplicates = outcome.duplicates,
            rejected = outcome.rejected_total(),
            retried = outcome.retried,
            conflicts = outcome.conflicts,
            "trade batch processed"
        );
        outcome
    }

    async fn apply_and_commit(
        &self,
        records: &[Record<'_>],
        trades: &[Trade],
        trade_records: &[u32],
        status: &mut [Status],
        now: DateTime<Utc>,
    ) -> CommitPhase {
        let mut phase = CommitPhase::default();
        if trades.is_empty() {
            return phase;
        }
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut users: Vec<UserWork<'_>> = Vec::new();
        for (k, trade) in trades.iter().enumerate() {
            let slot = *slots.entry(trade.user_id.as_str()).or_insert_with(|| {
                users.push(UserWork {
                    user_id: trade.user_id.as_str(),
                    trades: Vec::new(),
                });
                users.len() - 1
            });
            users[slot].trades.push(k as u32);
        }
        drop(slots);

        let user_ids: Vec<&str> = users.iter().map(|u| u.user_id).collect();
        let trade_ids: Vec<&str> = trades.iter().map(|t| t.trade_id.as_str()).collect();
        let mut loaded = match self.store.load(&user_ids, &trade_ids).await {
            Ok(loaded) => loaded,
            Err(e) => {
                phase.halted_by = Some(e);
                return phase;
            }
        };
        drop(trade_ids);

        let max_decisions = self.config.max_transaction_items.max(2) - 1;
        let no_known = HashSet::new();
        let mut starts: Vec<StoredPortfolio> = Vec::with_capacity(users.len());
        let mut plans: Vec<Plan<'_>> = Vec::with_capacity(users.len());
        for user in &users {
            let start = loaded
                .portfolios
                .remove(user.user_id)
                .unwrap_or_else(|| StoredPortfolio::empty(user.user_id));
            plans.push(plan_user(
                &start.portfolio,
                &user.trades,
                trades,
                trade_records,
                records,
                &loaded.decided,
                &no_known,
                max_decisions,
                now,
            ));
            starts.push(start);
        }
        self.recommend(&mut plans).await;

        for ((user, plan), start) in users.iter().zip(plans).zip(starts) {
            let done = self
                .commit_user(
                    user,
                    plan,
                    start,
                    records,
                    trades,
                    trade_records,
                    &loaded.decided,
                    status,
                    &mut phase,
                    max_decisions,
                    now,
                )
                .await;
            if !done {
                break;
            }
        }
        phase
    }

    /// Puts a recommendation on the final chunk of every plan with decisions.
    async fn recommend(&self, plans: &mut [Plan<'_>]) {
        let requests: Vec<RecommendationRequest<'_>> = plans
            .iter()
            .filter_map(|p| {
                Some(RecommendationRequest {
                    portfolio: &p.chunks.last()?.portfolio,
                    latest_rate: p.latest_rate?,
                })
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        let recs = match self.recommender.recommend(&requests).await {
            Ok(recs) if recs.len() == requests.len() => recs,
            Ok(_) | Err(_) => self.rule.recommend_all(&requests),
        };
        drop(requests);
        let targets = plans
            .iter_mut()
            .filter(|p| p.latest_rate.is_some())
            .filter_map(|p| p.chunks.last_mut());
        for (chunk, rec) in targets.zip(recs) {
            chunk.portfolio.recommendation = Some(rec);
        }
    }

    /// Commits one user's plan, redoing it on conflicts. `false` when the batch must stop.
    #[allow(clippy::too_many_arguments)]
    async fn commit_user<'t>(
        &self,
        user: &UserWork<'t>,
        mut plan: Plan<'t>,
        mut current: StoredPortfolio,
        records: &[Record<'t>],
        trades: &'t [Trade],
        trade_records: &[u32],
        durable: &HashSet<String>,
        status: &mut [Status],
        phase: &mut CommitPhase,
        max_decisions: usize,
        now: DateTime<Utc>,
    ) -> bool {
        let mut known: HashSet<&'t str> = HashSet::new();
        let mut next = 0usize;
        let mut start = 0usize;
        let mut conflicts = 0u32;
        let mut halted = false;
        while next < plan.chunks.len() {
            let chunk = &plan.chunks[next];
            let commit = Commit {
                user_id: user.user_id,
                expected_version: current.version,
                portfolio: &chunk.portfolio,
                decisions: &plan.decisions[start..chunk.end],
            };
            match self.store.commit(&commit).await {
                Ok(CommitOutcome::Committed) => {
                    for (decision, record) in commit
                        .decisions
                        .iter()
                        .zip(&plan.decision_records[start..chunk.end])
                    {
                        status[*record as usize] = Status::Decided;
                        record_decision(phase, decision, &records[*record as usize]);
                    }
                    if next + 1 == plan.chunks.len() {
                        if let Some(rec) = &chunk.portfolio.recommendation {
                            phase.recommendations.push(UserRecommendation {
                                user_id: user.user_id.to_string(),
                                recommendation: rec.clone(),
                            });
                        }
                    }
                    current = StoredPortfolio {
                        portfolio: chunk.portfolio.clone(),
                        version: current.version + 1,
                    };
                    start = chunk.end;
                    next += 1;
                }
                Ok(CommitOutcome::Conflict(conflict)) => {
                    phase.conflicts += 1;
                    conflicts += 1;
                    warn!(
                        user_id = user.user_id,
                        version = current.version,
                        version_moved = conflict.version_moved,
                        already_decided = conflict.already_decided.len(),
                        "portfolio commit conflict; redoing the user"
                    );
                    if conflicts > self.config.max_conflict_retries {
                        let cause: BoxError = Box::new(TooManyConflicts {
                            user_id: user.user_id.to_string(),
                            conflicts,
                        });
                        phase.halted_by = Some(StoreError::Transient(cause));
                        halted = true;
                        break;
                    }
                    for d in &plan.decisions[..start] {
                        known.insert(d.trade.trade_id.as_str());
                    }
                    learn_decided(&mut known, user, trades, &conflict.already_decided);
                    if conflict.version_moved {
                        let ids: Vec<&str> = user
                            .trades
                            .iter()
                            .map(|k| trades[*k as usize].trade_id.as_str())
                            .collect();
                        match self.store.load(&[user.user_id], &ids).await {
                            Ok(mut loaded) => {
                                current = loaded
                                    .portfolios
                                    .remove(user.user_id)
                                    .unwrap_or_else(|| StoredPortfolio::empty(user.user_id));
                                let decided: Vec<String> = loaded.decided.into_iter().collect();
                                learn_decided(&mut known, user, trades, &decided);
                            }
                            Err(e) => {
                                phase.halted_by = Some(e);
                                halted = true;
                                break;
                            }
                        }
                    }
                    plan = plan_user(
                        &current.portfolio,
                        &user.trades,
                        trades,
                        trade_records,
                        records,
                        durable,
                        &known,
                        max_decisions,
                        now,
                    );
                    self.recommend(std::slice::from_mut(&mut plan)).await;
                    next = 0;
                    start = 0;
                }
                Err(e) => {
                    phase.halted_by = Some(e);
                    halted = true;
                    break;
                }
            }
        }
        // Settle the user's other records against what is durable now.
        for (k, settle) in user.trades.iter().zip(&plan.settle) {
            let i = trade_records[*k as usize] as usize;
            let settled = match settle {
                Settle::Now => true,
                Settle::Decides(c) | Settle::Repeats(c) => (*c as usize) < next,
            };
            if settled && status[i] == Status::Pending {
                status[i] = Status::Duplicate;
            }
        }
        !halted
    }
}

/// Adds the user's trade ids among `ids` to `known`.
fn learn_decided<'t>(
    known: &mut HashSet<&'t str>,
    user: &UserWork<'t>,
    trades: &'t [Trade],
    ids: &[String],
) {
    if ids.is_empty() {
        return;
    }
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for k in &user.trades {
        let id = trades[*k as usize].trade_id.as_str();
        if ids.contains(id) {
            known.insert(id);
        }
    }
}

/// Applies a user's trades in order from `start`, cutting chunks of `max_decisions`.
#[allow(clippy::too_many_arguments)]
fn plan_user<'t>(
    start: &Portfolio,
    user_trades: &[u32],
    trades: &'t [Trade],
    trade_records: &[u32],
    records: &[Record<'t>],
    durable: &HashSet<String>,
    known: &HashSet<&str>,
    max_decisions: usize,
    now: DateTime<Utc>,
) -> Plan<'t> {
    let mut working = start.clone();
    let mut plan = Plan {
        decisions: Vec::with_capacity(user_trades.len()),
        decision_records: Vec::with_capacity(user_trades.len()),
        chunks: Vec::new(),
        settle: Vec::with_capacity(user_trades.len()),
        latest_rate: None,
    };
    // Trade ids decided in this plan, with their chunk. Small users scan the decisions.
    let mut seen: HashMap<&'t str, u32> = if user_trades.len() > 8 {
        HashMap::with_capacity(user_trades.len())
    } else {
        HashMap::new()
    };
    for k in user_trades {
        let trade = &trades[*k as usize];
        let id = trade.trade_id.as_str();
        if (!known.is_empty() && known.contains(id)) || (!durable.is_empty() && durable.contains(id))
        {
            plan.settle.push(Settle::Now);
            continue;
        }
        let repeated = if user_trades.len() > 8 {
            seen.get(id).copied()
        } else {
            plan.decisions
                .iter()
                .position(|d| d.trade.trade_id == id)
                .map(|p| (p / max_decisions) as u32)
        };
        if let Some(chunk) = repeated {
            plan.settle.push(Settle::Repeats(chunk));
            continue;
        }
        let chunk = (plan.decisions.len() / max_decisions) as u32;
        let outcome = match working.apply(trade) {
            Ok(applied) => DecisionOutcome::Applied(applied),
            Err(rejection) => DecisionOutcome::Rejected(rejection),
        };
        let record = trade_records[*k as usize];
        plan.decisions.push(Decision {
            trade,
            sequence_number: records[record as usize].sequence_number,
            outcome,
        });
        plan.decision_records.push(record);
        plan.latest_rate = Some(trade.rate);
        if user_trades.len() > 8 {
            seen.insert(id, chunk);
        }
        plan.settle.push(Settle::Decides(chunk));
        if plan.decisions.len() % max_decisions == 0 {
            working.updated_at = Some(now);
            plan.chunks.push(ChunkPlan {
                end: plan.decisions.len(),
                portfolio: working.clone(),
            });
        }
    }
    if plan.decisions.len() % max_decisions != 0 {
        working.updated_at = Some(now);
        plan.chunks.push(ChunkPlan {
            end: plan.decisions.len(),
            portfolio: working,
        });
    }
    plan
}

fn decode(record: &Record<'_>) -> Result<Trade, InvalidTrade> {
    match record.data {
        RecordData::Bytes(bytes) => Trade::parse(bytes),
        RecordData::Base64(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    InvalidTrade::new(
                        InvalidReason::InvalidBase64,
                        format!("record data is not base64: {e}"),
                    )
                })?;
            Trade::parse(&bytes)
        }
    }
}

fn dead_letter(
    record: &Record<'_>,
    reason: String,
    detail: String,
    trade: Option<&Trade>,
) -> DeadLetter {
    let (data, data_encoding) = match record.data {
        RecordData::Base64(text) => (text.to_string(), DataEncoding::Base64),
        RecordData::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (text.to_string(), DataEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(bytes),
                DataEncoding::Base64,
            ),
        },
    };
    DeadLetter {
        reason,
        detail,
        shard_id: record.shard_id.to_string(),
        sequence_number: record.sequence_number.to_string(),
        data,
        data_encoding,
        trade_id: trade.map(|t| t.trade_id.clone()),
        user_id: trade.map(|t| t.user_id.clone()),
    }
}

/// Counts a committed decision and queues its notification (and dead letter, if rejected).
fn record_decision(phase: &mut CommitPhase, decision: &Decision<'_>, record: &Record<'_>) {
    let t = decision.trade;
    let mut note = Notification {
        kind: NotificationKind::TradeConfirmed,
        trade_id: t.trade_id.clone(),
        user_id: t.user_id.clone(),
        side: t.side,
        usd_amount: t.usd_amount,
        rate: t.rate,
        executed_at: t.executed_at,
        cop_amount: None,
        realized_pnl_cop: None,
        usd_balance: None,
        cost_basis_cop: None,
        reason: None,
    };
    match decision.outcome {
        DecisionOutcome::Applied(a) => {
            phase.applied += 1;
            note.cop_amount = Some(a.cop_amount);
            note.realized_pnl_cop = (t.side == Side::Sell).then_some(a.realized_pnl_cop);
            note.usd_balance = Some(a.usd_balance);
            note.cost_basis_cop = Some(a.cost_basis_cop);
        }
        DecisionOutcome::Rejected(rejection) => {
            let code = rejection.code();
            *phase.rejected.entry(code.to_string()).or_default() += 1;
            note.kind = NotificationKind::TradeRejected;
            note.reason = Some(code);
            phase.dead_letters.push(dead_letter(
                record,
                code.to_string(),
                rejection.to_string(),
                Some(t),
            ));
        }
    }
    phase.notifications.push(note);
}

/// A batch output that could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("could not encode the trade archive")]
    Encode(#[source] std::io::Error),
    #[error("could not write the trade archive")]
    Archive(#[source] SinkError),
    #[error("could not send dead letters")]
    DeadLetters(#[source] SinkError),
    #[error("could not publish notifications")]
    Notify(#[source] SinkError),
}

/// Sends a batch's settled outputs: archive object, dead letters, notifications. Each is
/// attempted even if an earlier one failed; the first error is returned. Delivery is
/// at-least-once: a re-sent record's dead letter may be sent again.
pub async fn deliver<A, D, N>(
    outcome: &BatchOutcome,
    archive: &A,
    dead_letters: &D,
    notifier: &N,
) -> Result<(), DeliveryError>
where
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    let archived = match &outcome.archive_key {
        Some(key) => match encode_ndjson_gz(&outcome.archive) {
            Ok(body) => archive
                .put(key, &body)
                .await
                .map_err(DeliveryError::Archive),
            Err(e) => Err(DeliveryError::Encode(e)),
        },
        None => Ok(()),
    };
    let dead = if outcome.dead_letters.is_empty() {
        Ok(())
    } else {
        dead_letters
            .send(&outcome.dead_letters)
            .await
            .map_err(DeliveryError::DeadLetters)
    };
    let notified = if outcome.notifications.is_empty() {
        Ok(())
    } else {
        notifier
            .publish(&outcome.notifications)
            .await
            .map_err(DeliveryError::Notify)
    };
    archived.and(dead).and(notified)
}
