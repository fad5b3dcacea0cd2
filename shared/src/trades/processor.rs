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
//! 6. Per user, commit the `n` decisions and the portfolio in `ceil((n + 1) / max)`
//!    transactions of at most `max_transaction_items` items: full *pending* ones of decisions
//!    only, then the *final* one with the remaining decisions and the portfolio, conditioned
//!    on the version read. Pending decisions become durable when the final transaction lands
//!    (see [`Commit`]); until then a retry may write them again, so the user's records count
//!    as settled only after the final transaction.
//!    Users are committed concurrently, at most [`ProcessorConfig::commit_concurrency`] at
//!    once; a user's own transactions go out one after another, in order. Users that share a
//!    trade id within the batch (a producer's mistake) are committed first, one after another
//!    in user order, so the first of them decides it whatever the timing. The results are merged in
//!    user order: the outcome is the one committing users one after another would give.
//! 7. A conflict (a decision already recorded, or the version moved under a concurrent writer)
//!    writes nothing: the processor learns which trades are decided, re-reads that user's
//!    portfolio and redoes the user from what is stored.
//! 8. A store error stops the batch: no further user is started (those in flight finish).
//!    With a deadline ([`TradeProcessor::process_batch_within`]) a transient error is first
//!    retried with jittered back-off while the wait ends before the deadline, and no user is
//!    started after it. `batch_item_failure` is the sequence number of the first record (in
//!    stream order) whose outcome is not durable — every record before it is committed, a
//!    duplicate of something durable, or invalid — so Kinesis re-sends only what is needed,
//!    and whatever was committed (by users committed concurrently past that point too) turns
//!    into duplicates when re-sent.
//!
//! The outcome carries only what is settled: dead letters, archive and counts for the records
//! before the failure point, notifications, recommendations and archived decisions for what
//! was committed.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rust_decimal::Decimal;
use serde::Serialize;
use tracing::{debug, warn};

use super::archive::{archive_key, ArchiveStatus, ArchivedTrade};
use super::hash::{FastMap, FastSet, FastState};
use super::outcome::{
    BatchOutcome, DeadLetter, Notification, NotificationKind, UserRecommendation,
};
use super::portfolio::Portfolio;
use super::ports::{
    BoxError, Commit, CommitOutcome, Decision, DecisionOutcome, Loaded, PortfolioStore,
    RecommendationRequest, Recommender, StoreError,
};
use super::recommend::RuleRecommender;
use super::trade::{Interner, InvalidReason, InvalidTrade, Side, Trade};

/// One stream record, borrowed from the event.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub shard_id: &'a str,
    /// The Kinesis record's sequence number (shared by the user records of a KPL aggregate:
    /// it is what a partial batch response names, and Kinesis re-sends the whole aggregate).
    pub sequence_number: &'a str,
    /// The user record's index within its KPL aggregate; `None` for a record sent alone.
    pub sub_sequence: Option<u32>,
    pub data: RecordData<'a>,
    /// When the stream received the record (Kinesis' approximate arrival time), if known.
    pub arrived_at: Option<DateTime<Utc>>,
}

/// A record's payload: raw bytes, or the base64 text of a Kinesis event (decoded here, so that
/// bad base64 is a dead letter like any other invalid record).
#[derive(Debug, Clone, Copy)]
pub enum RecordData<'a> {
    Bytes(&'a [u8]),
    Base64(&'a str),
    /// A record refused before it could be read as a trade (a KPL aggregate whose digest or
    /// body is wrong): dead-lettered with `reason`, its base64 text kept whole.
    Refused {
        reason: InvalidReason,
        detail: &'a str,
        base64: &'a str,
    },
}

/// How a dead letter's `data` is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    Utf8,
    Base64,
}

/// Limits of the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// Items per transaction (DynamoDB `TransactWriteItems`: 100). At least 2.
    pub max_transaction_items: usize,
    /// Conflicts tolerated per user and batch before giving up as a transient failure.
    pub max_conflict_retries: u32,
    /// Users whose commits are in flight at once (each user's own commits stay in order);
    /// `1` (the default) commits one user after another. The store's reads use the same bound
    /// (`DynamoDbPortfolioStore::with_read_concurrency`), so this is the most store calls a
    /// batch has in flight.
    pub commit_concurrency: usize,
    /// Back-off of transient store failures retried within a deadline
    /// ([`TradeProcessor::process_batch_within`]).
    pub retry: RetryPolicy,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            max_transaction_items: 100,
            max_conflict_retries: 16,
            commit_concurrency: 1,
            retry: RetryPolicy::default(),
        }
    }
}

/// Users committed at once by the `trades-stream` Lambda and the `lago trades` commands: 64
/// calls of ~10 ms keep one invocation above 20,000 trades/s on a typical batch (see
/// `docs/trades.md`). [`ProcessorConfig::default`] commits one user after another: the
/// reference the concurrent commits are tested against.
pub const DEFAULT_COMMIT_CONCURRENCY: usize = 64;

/// Exponential back-off with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(max, first × 2ⁿ)]`, so that throttled users do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `attempt` (0-based) of `key`'s call, or `None` when there is no
    /// deadline or the wait would reach it.
    fn wait(&self, attempt: u32, key: &str, deadline: Option<Instant>) -> Option<Duration> {
        let deadline = deadline?;
        let cap = self
            .first_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write(key.as_bytes());
        hasher.write_u32(attempt);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        let wait = Duration::from_nanos(hasher.finish() % nanos.saturating_add(1));
        (Instant::now() + wait < deadline).then_some(wait)
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
    Applied,
    /// Decided as a rejection, with its code.
    Rejected(&'static str),
}

/// When a user's record is settled, relative to the user's current plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Its trade id is already durably decided.
    Now,
    /// It is decided (or repeated) by the plan: settled when the plan's final commit lands.
    WithPlan,
}

/// One user's work, computed from a starting portfolio. Its decisions are a range of the
/// batch's [`Decided`]; its settle marks a range of the batch's settle marks.
struct Plan {
    /// Range of the user's decisions in [`Decided`].
    first: usize,
    end: usize,
    /// The portfolio after every decision, stored by the final commit.
    portfolio: Portfolio,
    latest_rate: Option<Decimal>,
}

impl Plan {
    /// Commits of the plan: `decided + 1` items (the portfolio put last) in commits of
    /// `max_items`; none when nothing is decided.
    fn commits(&self, max_items: usize) -> usize {
        match self.end - self.first {
            0 => 0,
            decided => (decided + 1).div_ceil(max_items),
        }
    }

    /// The decisions of commit `c`: full pending commits, then the final one with the rest.
    fn commit_range(&self, c: usize, max_items: usize) -> std::ops::Range<usize> {
        let start = self.first + c * max_items;
        start..(start + max_items).min(self.end)
    }
}

/// The decisions of every plan of a batch, in one place (no allocation per user).
#[derive(Default)]
struct Decided<'t> {
    decisions: Vec<Decision<'t>>,
    /// Record index of each decision.
    records: Vec<u32>,
}

struct UserWork<'t> {
    user_id: &'t str,
    /// Indexes into the batch's trades, in stream order.
    trades: &'t [u32],
    /// Where the user's trades start in the batch's settle marks.
    offset: usize,
}

impl UserWork<'_> {
    /// The user's settle marks in [`BatchPlans::settle`].
    fn settle_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.trades.len()
    }
}

/// Per-user state of a batch, kept in flat vectors.
struct BatchPlans<'t> {
    decided: Decided<'t>,
    /// Parallel to the users' trades (grouped by user): when each record is settled.
    settle: Vec<Settle>,
    /// Trade ids decided by the plan being built (reused from user to user).
    seen: FastSet<&'t str>,
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
    deadline_reached: bool,
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
    /// in [`BatchOutcome::batch_item_failure`] / [`BatchOutcome::halted_by`] at once, without
    /// retrying. `now` stamps `updated_at` on the portfolios written.
    pub async fn process_batch(&self, records: &[Record<'_>], now: DateTime<Utc>) -> BatchOutcome {
        self.process(records, now, None).await
    }

    /// [`Self::process_batch`] with a time budget: transient store failures (throttling, a
    /// transaction conflict, a timeout) are retried with jittered back-off
    /// ([`ProcessorConfig::retry`]) as long as the wait ends before `deadline`, and no user is
    /// started after it. Whatever is not durable by then is reported in
    /// [`BatchOutcome::batch_item_failure`], never lost. Waits on tokio's timer.
    pub async fn process_batch_within(
        &self,
        records: &[Record<'_>],
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> BatchOutcome {
        self.process(records, now, Some(deadline)).await
    }

    async fn process(
        &self,
        records: &[Record<'_>],
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> BatchOutcome {
        let n = records.len();
        let mut status = vec![Status::Pending; n];
        let mut trades: Vec<Trade> = Vec::with_capacity(n);
        let mut trade_records: Vec<u32> = Vec::with_capacity(n);
        // Plans read sequence numbers in user order: a compact copy stays in cache where the
        // records themselves would not.
        let mut trade_sequences: Vec<&str> = Vec::with_capacity(n);
        let mut invalid: Vec<(usize, InvalidTrade)> = Vec::new();
        // Users and channels repeat: room for a typical batch's, grown only by unusual ones.
        let mut interner = Interner::with_capacity(n / 4);
        for (i, record) in records.iter().enumerate() {
            match decode(record, &mut interner) {
                Ok(trade) => {
                    trades.push(trade);
                    trade_records.push(i as u32);
                    trade_sequences.push(record.sequence_number);
                }
                Err(e) => {
                    status[i] = Status::Invalid;
                    invalid.push((i, e));
                }
            }
        }

        let phase = self
            .apply_and_commit(
                BatchInput {
                    trades: &trades,
                    trade_records: &trade_records,
                    records,
                    sequences: &trade_sequences,
                },
                &mut status,
                now,
                deadline,
            )
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
            deadline_reached: phase.deadline_reached,
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
                Status::Applied | Status::Rejected(_) if i >= consumed => {
                    outcome.committed_beyond_failure += 1
                }
                Status::Invalid | Status::Applied | Status::Rejected(_) => {}
            }
        }
        // Archived: every valid record before the failure point, and the decisions committed
        // beyond it (durable, though Kinesis re-sends their records, which then come back as
        // duplicates): each decision reaches the archive from the record that made it.
        outcome.archive = trades
            .into_iter()
            .zip(&trade_records)
            .filter(|(_, r)| {
                let i = **r as usize;
                i < consumed || matches!(status[i], Status::Applied | Status::Rejected(_))
            })
            .map(|(trade, r)| archived_trade(trade, &records[*r as usize], status[*r as usize]))
            .collect();
        if let Some(first) = records.first() {
            outcome.archive_key =
                archive_key(first.shard_id, first.sequence_number, &outcome.archive);
        }
        if let Some(err) = &outcome.halted_by {
            warn!(
                error = %err,
                failure = outcome.batch_item_failure.as_deref().unwrap_or(""),
                retried = outcome.retried,
                "trade batch stopped"
            );
        } else if outcome.deadline_reached {
            warn!(
                failure = outcome.batch_item_failure.as_deref().unwrap_or(""),
                retried = outcome.retried,
                "trade batch stopped at its deadline"
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
        input: BatchInput<'_, '_>,
        status: &mut [Status],
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> CommitPhase {
        let trades = input.trades;
        let mut phase = CommitPhase::default();
        if trades.is_empty() {
            return phase;
        }
        // One notification per decided trade: sized once, not grown batch after batch.
        phase.notifications.reserve(trades.len());
        // Group by user with a counting sort: one flat index, no per-user allocation. The
        // batch's trades were parsed with one interner, so one user id is one allocation:
        // its address identifies the user without hashing the text.
        let mut slots: FastMap<usize, u32> =
            FastMap::with_capacity_and_hasher(trades.len() / 4, FastState::default());
        let mut user_ids: Vec<&str> = Vec::new();
        let mut trade_slots: Vec<u32> = Vec::with_capacity(trades.len());
        for trade in trades {
            let next = user_ids.len() as u32;
            let address = Arc::as_ptr(&trade.user_id).cast::<u8>() as usize;
            let slot = *slots.entry(address).or_insert_with(|| {
                user_ids.push(&*trade.user_id);
                next
            });
            trade_slots.push(slot);
        }
        drop(slots);
        let mut bounds = vec![0usize; user_ids.len() + 1];
        for slot in &trade_slots {
            bounds[*slot as usize + 1] += 1;
        }
        for u in 0..user_ids.len() {
            bounds[u + 1] += bounds[u];
        }
        let mut fill = bounds.clone();
        let mut order = vec![0u32; trades.len()];
        for (k, slot) in trade_slots.iter().enumerate() {
            order[fill[*slot as usize]] = k as u32;
            fill[*slot as usize] += 1;
        }
        drop((fill, trade_slots));
        let users: Vec<UserWork<'_>> = user_ids
            .iter()
            .enumerate()
            .map(|(u, user_id)| UserWork {
                user_id,
                trades: &order[bounds[u]..bounds[u + 1]],
                offset: bounds[u],
            })
            .collect();

        // In commit order (user by user), which lets a store read ahead.
        let trade_ids: Vec<&str> = order
            .iter()
            .map(|k| &*trades[*k as usize].trade_id)
            .collect();
        let loaded = match self.load(&user_ids, &trade_ids, deadline).await {
            Ok(loaded) => loaded,
            Err(e) => {
                phase.halted_by = Some(e);
                return phase;
            }
        };
        drop(trade_ids);

        let max_items = self.config.max_transaction_items.max(2);
        let no_known = FastSet::default();
        let mut versions: Vec<(u64, Option<String>)> = Vec::with_capacity(users.len());
        let mut plans: Vec<Plan> = Vec::with_capacity(users.len());
        let mut batch = BatchPlans {
            decided: Decided {
                decisions: Vec::with_capacity(trades.len()),
                records: Vec::with_capacity(trades.len()),
            },
            settle: vec![Settle::Now; trades.len()],
            seen: FastSet::default(),
        };
        let mut stored = loaded.portfolios.into_iter();
        for user in &users {
            let (start, version) = match stored.next().flatten() {
                Some(s) => (s.portfolio, (s.version, s.last_sequence)),
                None => (Portfolio::new(user.user_id), (0, None)),
            };
            plans.push(plan_user(
                start,
                user,
                (
                    &mut batch.decided,
                    &mut batch.settle[user.settle_range()],
                    &mut batch.seen,
                ),
                input,
                (&loaded.decided, &no_known),
                now,
            ));
            versions.push(version);
        }
        self.recommend(&mut plans).await;

        let one_by_one = one_by_one(&users, trades, self.config.commit_concurrency);
        let BatchPlans {
            decided, settle, ..
        } = &mut batch;
        let results = self
            .commit_users(
                &users,
                one_by_one,
                UserStarts {
                    plans: &mut plans,
                    versions,
                    settle,
                },
                CommitContext {
                    shared: decided,
                    input,
                    durable: &loaded.decided,
                    max_items,
                    now,
                    deadline,
                },
            )
            .await;

        // Merged in user order, whatever order the commits finished in: the outcome is the
        // one committing the users one after another would give.
        let mut not_started = 0usize;
        let merged = users.iter().zip(results).zip(&mut plans);
        for (((user, result), plan), settle) in merged.zip(user_settles(settle, &users)) {
            let Some(result) = result else {
                // Never started (the batch stopped first): the user's records stay pending.
                not_started += 1;
                continue;
            };
            phase.conflicts += u64::from(result.conflicts);
            if let Some(e) = result.error {
                // Keep the first failure, preferring a permanent one (it needs a human).
                if phase
                    .halted_by
                    .as_ref()
                    .is_none_or(StoreError::is_transient)
                {
                    phase.halted_by = Some(e);
                }
            }
            let decisions = result.own.as_deref().unwrap_or(decided);
            if result.landed {
                let range = plan.first..plan.end;
                for (decision, record) in decisions.decisions[range.clone()]
                    .iter()
                    .zip(&decisions.records[range])
                {
                    status[*record as usize] = match &decision.outcome {
                        DecisionOutcome::Applied(_) => Status::Applied,
                        DecisionOutcome::Rejected(rejection) => Status::Rejected(rejection.code()),
                    };
                    record_decision(&mut phase, decision, &input.records[*record as usize]);
                }
                // The plan's portfolio is not used again: its recommendation moves.
                if let Some(recommendation) = plan.portfolio.recommendation.take() {
                    phase.recommendations.push(UserRecommendation {
                        user_id: user.user_id.to_string(),
                        recommendation,
                    });
                }
            }
            // Settle the user's other records against what is durable now.
            for (k, settle) in user.trades.iter().zip(settle.iter()) {
                let i = input.trade_records[*k as usize] as usize;
                let settled = match settle {
                    Settle::Now => true,
                    Settle::WithPlan => result.landed,
                };
                if settled && status[i] == Status::Pending {
                    status[i] = Status::Duplicate;
                }
            }
        }
        phase.deadline_reached = not_started > 0 && deadline.is_some_and(|d| Instant::now() >= d);
        phase
    }

    /// One read of `user_ids`, retried within `deadline` while it fails transiently.
    async fn load(
        &self,
        user_ids: &[&str],
        trade_ids: &[&str],
        deadline: Option<Instant>,
    ) -> Result<Loaded, StoreError> {
        let mut attempt = 0u32;
        loop {
            match self.store.load(user_ids, trade_ids).await {
                Err(e) if e.is_transient() => {
                    let key = user_ids.first().copied().unwrap_or("");
                    let Some(wait) = self.config.retry.wait(attempt, key, deadline) else {
                        return Err(e);
                    };
                    debug!(error = %e, attempt, ?wait, "portfolio read failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Commits the users' plans and returns each user's result (`None`: not started). The
    /// users in `one_by_one` go first, one after another in user order; then the others,
    /// `commit_concurrency` at a time. Once a user fails or the deadline passes no user
    /// starts; those in flight finish.
    async fn commit_users<'t>(
        &self,
        users: &[UserWork<'t>],
        one_by_one: Vec<u32>,
        starts: UserStarts<'_, '_>,
        cx: CommitContext<'_, '_, 't>,
    ) -> Vec<Option<UserCommit<'t>>> {
        let limit = self.config.commit_concurrency.max(1);
        let mut results: Vec<Option<UserCommit<'t>>> = (0..users.len()).map(|_| None).collect();
        let mut starts: Vec<Option<UserStart<'_>>> = starts
            .plans
            .iter_mut()
            .zip(starts.versions)
            .zip(user_settles(starts.settle, users))
            .map(|((plan, (version, read_sequence)), settle)| {
                Some(UserStart {
                    plan,
                    version,
                    read_sequence,
                    settle,
                })
            })
            .collect();
        let past_deadline = || cx.deadline.is_some_and(|d| Instant::now() >= d);
        let mut stop = false;
        for u in one_by_one {
            let Some(start) = starts[u as usize].take() else {
                continue;
            };
            if stop || past_deadline() {
                stop = true;
                break;
            }
            let result = self.commit_user(&users[u as usize], start, cx).await;
            stop |= result.error.is_some();
            results[u as usize] = Some(result);
        }

        // The others: `limit` workers take the next user as they become free. A store that
        // answers without waiting lets the first worker commit every user in its first poll,
        // exactly as one user after another would, failures included.
        let queue = Mutex::new(CommitQueue {
            starts: starts.into_iter().enumerate(),
            results,
            stop,
        });
        let worker = || async {
            loop {
                let (u, start) = {
                    let mut queue = lock(&queue);
                    if queue.stop {
                        return;
                    }
                    let Some((u, start)) = queue.starts.find_map(|(u, s)| Some((u, s?))) else {
                        return;
                    };
                    if past_deadline() {
                        queue.stop = true;
                        return;
                    }
                    (u, start)
                };
                let result = self.commit_user(&users[u], start, cx).await;
                let mut queue = lock(&queue);
                queue.stop |= result.error.is_some();
                queue.results[u] = Some(result);
            }
        };
        let mut workers: FuturesUnordered<_> =
            (0..limit.min(users.len())).map(|_| worker()).collect();
        while workers.next().await.is_some() {}
        drop(workers);
        queue
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .results
    }

    /// Puts a recommendation on the portfolio of every plan with decisions.
    async fn recommend(&self, plans: &mut [Plan]) {
        let requests: Vec<RecommendationRequest<'_>> = plans
            .iter()
            .filter_map(|p| {
                Some(RecommendationRequest {
                    portfolio: &p.portfolio,
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
        let targets = plans.iter_mut().filter(|p| p.latest_rate.is_some());
        for (plan, rec) in targets.zip(recs) {
            plan.portfolio.recommendation = Some(rec);
        }
    }

    /// Commits one user's plan, redoing it on conflicts and retrying transient failures
    /// within the deadline. The user's settle marks follow the plan that was committed last.
    async fn commit_user<'t>(
        &self,
        user: &UserWork<'t>,
        start: UserStart<'_>,
        cx: CommitContext<'_, '_, 't>,
    ) -> UserCommit<'t> {
        let UserStart {
            plan,
            mut version,
            mut read_sequence,
            settle,
        } = start;
        let trades = cx.input.trades;
        let max_items = cx.max_items;
        // The decisions of a redone plan (the first plan's are in the batch's).
        let mut own: Option<Box<Decided<'t>>> = None;
        let mut known: FastSet<&'t str> = FastSet::default();
        let mut next = 0usize;
        let mut conflicts = 0u32;
        let mut retries = 0u32;
        let mut error = None;
        while next < plan.commits(max_items) {
            let last = next + 1 == plan.commits(max_items);
            let result = {
                let decisions = &own.as_deref().unwrap_or(cx.shared).decisions;
                let commit = Commit {
                    user_id: user.user_id,
                    expected_version: version,
                    expected_sequence: read_sequence.as_deref(),
                    pending: !last,
                    portfolio: &plan.portfolio,
                    last_sequence: decisions[plan.first..plan.end]
                        .last()
                        .map_or("", |d| d.sequence_number),
                    decisions: &decisions[plan.commit_range(next, max_items)],
                };
                self.store.commit(&commit).await
            };
            match result {
                Ok(CommitOutcome::Committed) => {
                    if last {
                        version += 1;
                    }
                    next += 1;
                }
                Ok(CommitOutcome::Conflict(conflict)) => {
                    conflicts += 1;
                    warn!(
                        user_id = user.user_id,
                        version,
                        version_moved = conflict.version_moved,
                        already_decided = conflict.already_decided.len(),
                        "portfolio commit conflict; redoing the user"
                    );
                    if conflicts > self.config.max_conflict_retries {
                        let cause: BoxError = Box::new(TooManyConflicts {
                            user_id: user.user_id.to_string(),
                            conflicts,
                        });
                        error = Some(StoreError::Transient(cause));
                        break;
                    }
                    // A concurrent writer (or transaction) moved the portfolio: let it finish
                    // before reading again, when there is time to.
                    if conflict.version_moved {
                        if let Some(wait) =
                            self.config
                                .retry
                                .wait(conflicts - 1, user.user_id, cx.deadline)
                        {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    // Pending decisions written so far are not durable: the redo writes them
                    // again (their conditions allow it) or learns that they are decided.
                    learn_decided(&mut known, user, trades, &conflict.already_decided);
                    // Re-read the user (the version may have moved) and redo from there.
                    let ids: Vec<&str> = user
                        .trades
                        .iter()
                        .map(|k| &*trades[*k as usize].trade_id)
                        .collect();
                    let start_from = match self.load(&[user.user_id], &ids, cx.deadline).await {
                        Ok(loaded) => {
                            let decided: Vec<String> = loaded.decided.into_iter().collect();
                            learn_decided(&mut known, user, trades, &decided);
                            loaded.portfolios.into_iter().next().flatten()
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    };
                    let start_portfolio = match start_from {
                        Some(stored) => {
                            version = stored.version;
                            read_sequence = stored.last_sequence;
                            stored.portfolio
                        }
                        None => {
                            version = 0;
                            read_sequence = None;
                            Portfolio::new(user.user_id)
                        }
                    };
                    let redo = own.get_or_insert_with(Box::default);
                    redo.decisions.clear();
                    redo.records.clear();
                    *plan = plan_user(
                        start_portfolio,
                        user,
                        (redo, &mut *settle, &mut FastSet::default()),
                        cx.input,
                        (cx.durable, &known),
                        cx.now,
                    );
                    self.recommend(std::slice::from_mut(plan)).await;
                    next = 0;
                }
                Err(e) if e.is_transient() => {
                    match self.config.retry.wait(retries, user.user_id, cx.deadline) {
                        Some(wait) => {
                            debug!(user_id = user.user_id, error = %e, retries, ?wait, "portfolio commit failed; retrying");
                            retries += 1;
                            tokio::time::sleep(wait).await;
                        }
                        None => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        UserCommit {
            landed: error.is_none() && next == plan.commits(max_items),
            own,
            conflicts,
            error,
        }
    }
}

/// The users left to commit, shared by the commit workers of a batch.
struct CommitQueue<'a, 't, I: Iterator<Item = (usize, Option<UserStart<'a>>)>> {
    starts: I,
    results: Vec<Option<UserCommit<'t>>>,
    /// A user failed or the deadline passed: no user starts any more.
    stop: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding it; a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-user starting points of the commit phase.
struct UserStarts<'a, 'b> {
    plans: &'a mut [Plan],
    versions: Vec<(u64, Option<String>)>,
    /// The batch's settle marks, split per user.
    settle: &'b mut [Settle],
}

/// One user's plan (redone in place on a conflict), the version and stream position it was
/// computed from, and the user's settle marks.
struct UserStart<'a> {
    plan: &'a mut Plan,
    version: u64,
    read_sequence: Option<String>,
    settle: &'a mut [Settle],
}

/// What every user's commit reads.
#[derive(Clone, Copy)]
struct CommitContext<'a, 'b, 't> {
    /// The decisions of the first plans.
    shared: &'a Decided<'t>,
    input: BatchInput<'b, 't>,
    /// Trade ids the batch's load found decided.
    durable: &'a HashSet<String>,
    max_items: usize,
    now: DateTime<Utc>,
    deadline: Option<Instant>,
}

/// How one user's commits ended (the plan committed last is the user's, redone in place).
struct UserCommit<'t> {
    /// Every commit of the plan landed: its decisions are durable.
    landed: bool,
    /// The decisions of a redone plan; `None`: the plan's are in the batch's.
    own: Option<Box<Decided<'t>>>,
    conflicts: u32,
    error: Option<StoreError>,
}

/// Each user's settle marks, in user order.
fn user_settles<'s>(mut settle: &'s mut [Settle], users: &[UserWork<'_>]) -> Vec<&'s mut [Settle]> {
    users
        .iter()
        .map(|user| {
            let (mine, rest) = std::mem::take(&mut settle).split_at_mut(user.trades.len());
            settle = rest;
            mine
        })
        .collect()
}

/// The users to commit one after another, in user order, before the others go concurrently:
/// every user without concurrency; else those that share a trade id within the batch (a
/// producer's mistake), so that the first of them decides it whatever the timing.
fn one_by_one(users: &[UserWork<'_>], trades: &[Trade], concurrency: usize) -> Vec<u32> {
    let n = users.len() as u32;
    if concurrency <= 1 {
        return (0..n).collect();
    }
    // Keyed by a 64-bit hash of the id, not the id: no string to compare or keep, and a
    // collision only sends two more users one by one, which is always correct.
    let state = FastState::default();
    let mut owner: FastMap<u64, u32> = FastMap::with_capacity_and_hasher(trades.len(), state);
    let mut shared = vec![false; users.len()];
    for (u, user) in users.iter().enumerate() {
        for k in user.trades {
            let owner = *owner
                .entry(state.hash_one(&*trades[*k as usize].trade_id))
                .or_insert(u as u32);
            if owner != u as u32 {
                shared[owner as usize] = true;
                shared[u] = true;
            }
        }
    }
    (0..n).filter(|u| shared[*u as usize]).collect()
}

/// Adds the user's trade ids among `ids` to `known`.
fn learn_decided<'t>(
    known: &mut FastSet<&'t str>,
    user: &UserWork<'t>,
    trades: &'t [Trade],
    ids: &[String],
) {
    if ids.is_empty() {
        return;
    }
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for k in user.trades {
        let id = &*trades[*k as usize].trade_id;
        if ids.contains(id) {
            known.insert(id);
        }
    }
}

/// A batch's valid trades (in record order) and what plans and commits need of their records.
#[derive(Clone, Copy)]
struct BatchInput<'a, 't> {
    trades: &'t [Trade],
    /// Record index of each trade.
    trade_records: &'a [u32],
    records: &'a [Record<'t>],
    /// Sequence number of each trade's record.
    sequences: &'a [&'t str],
}

/// Applies a user's trades in order from `start`, appending the decisions to the batch's and
/// marking when each of the user's records settles. Trade ids in `durable` or `known` are
/// decided already; an id repeated in the user's trades is decided once.
fn plan_user<'t>(
    start: Portfolio,
    user: &UserWork<'_>,
    (decided, settle, seen): (&mut Decided<'t>, &mut [Settle], &mut FastSet<&'t str>),
    input: BatchInput<'_, 't>,
    (durable, known): (&HashSet<String>, &FastSet<&str>),
    now: DateTime<Utc>,
) -> Plan {
    let first = decided.decisions.len();
    let mut plan = Plan {
        first,
        end: first,
        portfolio: start,
        latest_rate: None,
    };
    // Small users scan their decisions; others keep a set of what they decided.
    let many = user.trades.len() > 8;
    seen.clear();
    for (k, settle) in user.trades.iter().zip(settle.iter_mut()) {
        let trade = &input.trades[*k as usize];
        let id: &'t str = &trade.trade_id;
        if (!known.is_empty() && known.contains(id))
            || (!durable.is_empty() && durable.contains(id))
        {
            *settle = Settle::Now;
            continue;
        }
        *settle = Settle::WithPlan;
        let repeated = if many {
            !seen.insert(id)
        } else {
            decided.decisions[first..]
                .iter()
                .any(|d| &*d.trade.trade_id == id)
        };
        if repeated {
            continue;
        }
        let outcome = match plan.portfolio.apply(trade) {
            Ok(applied) => DecisionOutcome::Applied(applied),
            Err(rejection) => DecisionOutcome::Rejected(rejection),
        };
        let record = input.trade_records[*k as usize];
        decided.decisions.push(Decision {
            trade,
            sequence_number: input.sequences[*k as usize],
            sub_sequence: input.records[record as usize].sub_sequence,
            outcome,
        });
        decided.records.push(record);
        plan.latest_rate = Some(trade.rate);
    }
    plan.end = decided.decisions.len();
    if plan.end > first {
        plan.portfolio.updated_at = Some(now);
    }
    plan
}

fn decode(record: &Record<'_>, interner: &mut Interner) -> Result<Trade, InvalidTrade> {
    match record.data {
        RecordData::Bytes(bytes) => Trade::parse_interned(bytes, interner),
        RecordData::Base64(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    InvalidTrade::new(
                        InvalidReason::InvalidBase64,
                        format!("record data is not base64: {e}"),
                    )
                })?;
            Trade::parse_interned(&bytes, interner)
        }
        RecordData::Refused { reason, detail, .. } => Err(InvalidTrade::new(reason, detail)),
    }
}

/// An archive line: the trade and what this batch's record of it came to. Only settled records
/// are archived, so `Pending` (and `Invalid`, never a trade) cannot occur.
fn archived_trade(trade: Trade, record: &Record<'_>, status: Status) -> ArchivedTrade {
    let (status, reason) = match status {
        Status::Applied => (ArchiveStatus::Applied, ""),
        Status::Rejected(code) => (ArchiveStatus::Rejected, code),
        Status::Duplicate | Status::Pending | Status::Invalid => (ArchiveStatus::Duplicate, ""),
    };
    ArchivedTrade {
        trade,
        status,
        reason: reason.into(),
        sequence_number: record.sequence_number.to_string(),
        sub_sequence_number: record.sub_sequence,
        arrived_at: record.arrived_at,
    }
}

fn dead_letter(
    record: &Record<'_>,
    reason: String,
    detail: String,
    trade: Option<&Trade>,
) -> DeadLetter {
    let (data, data_encoding) = match record.data {
        RecordData::Base64(text) | RecordData::Refused { base64: text, .. } => {
            (text.to_string(), DataEncoding::Base64)
        }
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
        sub_sequence_number: record.sub_sequence,
        data,
        data_encoding,
        trade_id: trade.map(|t| t.trade_id.to_string()),
        user_id: trade.map(|t| t.user_id.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::delivery::deliver;
    use crate::trades::memory::Latency;
    use crate::trades::memory::{
        FailureMode, MemoryPortfolioStore, RecordingArchive, RecordingDeadLetters,
        RecordingNotifier,
    };
    use crate::trades::ports::{Loaded, RecommendError, Recommendation, RecommendationSource};
    use crate::trades::recommend::WithRuleFallback;
    use std::str::FromStr;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const SHARD: &str = "shardId-000000000000";

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_795_900_000, 0).unwrap_or_default()
    }

    fn trade_line(id: &str, user: &str, side: &str, usd: &str, rate: &str) -> String {
        format!(
            r#"{{"trade_id":"{id}","user_id":"{user}","side":"{side}","usd_amount":"{usd}","rate":"{rate}","executed_at":"2026-11-28T17:00:00Z"}}"#
        )
    }

    /// Records numbered from `first`, sequence numbers zero-padded.
    struct Stream {
        seqs: Vec<String>,
        lines: Vec<Vec<u8>>,
    }

    impl Stream {
        fn new(first: u64, lines: &[String]) -> Self {
            Self {
                seqs: (0..lines.len() as u64)
                    .map(|i| format!("{:06}", first + i))
                    .collect(),
                lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
            }
        }

        fn records(&self) -> Vec<Record<'_>> {
            self.seqs
                .iter()
                .zip(&self.lines)
                .map(|(seq, line)| Record {
                    shard_id: SHARD,
                    sequence_number: seq,
                    sub_sequence: None,
                    data: RecordData::Bytes(line),
                    arrived_at: None,
                })
                .collect()
        }

        /// The records from sequence number `seq` on (a Kinesis retry).
        fn from(&self, seq: &str) -> Vec<Record<'_>> {
            let at = self.seqs.iter().position(|s| s == seq).unwrap_or(0);
            self.records().split_off(at)
        }
    }

    fn run<S: PortfolioStore + Sync, R: Recommender + Sync>(
        processor: &TradeProcessor<S, R>,
        records: &[Record<'_>],
    ) -> BatchOutcome {
        pollster::block_on(processor.process_batch(records, now()))
    }

    fn balance(store: &MemoryPortfolioStore, user: &str) -> Option<(Decimal, Decimal, Decimal)> {
        store.portfolio(user).map(|p| {
            (
                p.portfolio.usd_balance,
                p.portfolio.cost_basis_cop,
                p.portfolio.realized_pnl_cop,
            )
        })
    }

    #[test]
    fn applies_a_batch_and_reports_every_output() {
        // GIVEN two users' trades
        let stream = Stream::new(
            1,
            &[
                trade_line("t1", "ana", "BUY", "100.00", "4000.0000"),
                trade_line("t2", "bo", "BUY", "10", "4100"),
                trade_line("t3", "ana", "SELL", "40", "4200"),
            ],
        );
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        // WHEN processed
        let out = run(&processor, &stream.records());
        // THEN all is applied, notified, archived and recommended
        assert_eq!((out.applied, out.duplicates, out.retried), (3, 0, 0));
        assert!(out.rejected.is_empty() && out.dead_letters.is_empty());
        assert_eq!(out.batch_item_failure, None);
        assert_eq!(out.notifications.len(), 3);
        // users in order of first appearance: ana's two trades, then bo's
        let ids: Vec<&str> = out.notifications.iter().map(|n| &*n.trade_id).collect();
        assert_eq!(ids, ["t1", "t3", "t2"]);
        assert_eq!(out.notifications[1].realized_pnl_cop, Some(dec("8000.00")));
        assert_eq!(out.notifications[0].realized_pnl_cop, None);
        assert_eq!(
            out.archive
                .iter()
                .map(|t| &*t.trade.trade_id)
                .collect::<Vec<_>>(),
            ["t1", "t2", "t3"]
        );
        let key = out.archive_key.as_deref().unwrap_or_default();
        assert!(
            key.starts_with(
                "raw/trades/year=2026/month=11/day=28/shardId-000000000000-000001-000003-"
            ),
            "{key}"
        );
        assert_eq!(out.recommendations.len(), 2);
        let store = processor.store();
        assert_eq!(
            balance(store, "ana"),
            Some((dec("60"), dec("240000"), dec("8000")))
        );
        let ana = store.portfolio("ana").map(|p| p.portfolio);
        assert_eq!(ana.as_ref().map(|p| p.trades_applied), Some(2));
        assert_eq!(ana.as_ref().and_then(|p| p.updated_at), Some(now()));
        assert!(ana.and_then(|p| p.recommendation).is_some());
        // one read, one transaction per user
        let c = store.counters();
        assert_eq!((c.loads, c.commits, c.items_written), (1, 2, 5));
    }

    #[test]
    fn duplicates_within_and_across_batches_change_nothing() {
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        let t1 = trade_line("t1", "ana", "BUY", "100", "4000");
        // GIVEN t1 delivered twice in one batch
        let first = Stream::new(1, &[t1.clone(), t1.clone()]);
        let out = run(&processor, &first.records());
        assert_eq!((out.applied, out.duplicates), (1, 1));
        // WHEN it comes again in a later batch
        let second = Stream::new(3, &[t1]);
        let out = run(&processor, &second.records());
        // THEN it is a duplicate and nothing is written
        assert_eq!((out.applied, out.duplicates), (0, 1));
        assert!(out.notifications.is_empty());
        assert_eq!(out.archive.len(), 1, "the raw archive keeps redeliveries");
        assert_eq!(processor.store().counters().commits, 1);
        assert_eq!(
            balance(processor.store(), "ana"),
            Some((dec("100"), dec("400000"), dec("0")))
        );
    }

    #[test]
    fn a_rejected_trade_is_decided_once_and_never_redecided() {
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        let oversell = trade_line("s1", "ana", "SELL", "50", "4000");
        // GIVEN a sell without balance
        let out = run(
            &processor,
            &Stream::new(1, std::slice::from_ref(&oversell)).records(),
        );
        assert_eq!(out.rejected.get("insufficient_balance"), Some(&1));
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(out.dead_letters[0].reason, "insufficient_balance");
        assert_eq!(out.dead_letters[0].trade_id.as_deref(), Some("s1"));
        assert_eq!(out.dead_letters[0].data, oversell);
        assert_eq!(out.notifications[0].kind, NotificationKind::TradeRejected);
        assert_eq!(out.notifications[0].reason, Some("insufficient_balance"));
        // WHEN the user buys, then the sell is redelivered
        let buy = trade_line("b1", "ana", "BUY", "100", "4000");
        let out = run(&processor, &Stream::new(2, &[buy, oversell]).records());
        // THEN the sell stays rejected: a duplicate, not applied now
        assert_eq!((out.applied, out.duplicates), (1, 1));
        assert_eq!(processor.store().decision("s1"), Some(false));
        assert_eq!(
            balance(processor.store(), "ana"),
            Some((dec("100"), dec("400000"), dec("0")))
        );
    }

    #[test]
    fn invalid_records_become_dead_letters_and_never_block() {
        let good = trade_line("t1", "ana", "BUY", "1", "4000");
        let bad_bytes: Vec<u8> = vec![b'{', 0xff, b'}'];
        let seqs = ["1", "2", "3", "4", "5"];
        let records = [
            Record {
                shard_id: SHARD,
                sequence_number: seqs[0],
                sub_sequence: None,
                data: RecordData::Base64("%%% not base64"),
                arrived_at: None,
            },
            Record {
                shard_id: SHARD,
                sequence_number: seqs[1],
                sub_sequence: None,
                data: RecordData::Bytes(b"{\"trade_id\":"),
                arrived_at: None,
            },
            Record {
                shard_id: SHARD,
                sequence_number: seqs[2],
                sub_sequence: None,
                data: RecordData::Bytes(&bad_bytes),
                arrived_at: None,
            },
            Record {
                shard_id: SHARD,
                sequence_number: seqs[3],
                sub_sequence: None,
                data: RecordData::Bytes(good.as_bytes()),
                arrived_at: None,
            },
            Record {
                shard_id: SHARD,
                sequence_number: seqs[4],
                sub_sequence: None,
                data: RecordData::Base64("eyJ0cmFkZV9pZCI6MX0="), // {"trade_id":1}
                arrived_at: None,
            },
        ];
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        let out = run(&processor, &records);
        assert_eq!(out.applied, 1);
        let reasons: Vec<&str> = out.dead_letters.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "invalid_base64",
                "invalid_json",
                "invalid_encoding",
                "invalid_field:trade_id"
            ]
        );
        assert_eq!(out.dead_letters[2].data_encoding, DataEncoding::Base64);
        assert_eq!(out.dead_letters[2].data, "e/99");
        assert_eq!(out.dead_letters[0].data, "%%% not base64");
        assert_eq!(out.dead_letters[1].sequence_number, "2");
        assert_eq!(out.rejected_total(), 4);
        let json = out.dead_letters[1].to_json();
        assert!(json.contains(r#""data_encoding":"utf8""#), "{json}");
        assert_eq!(out.batch_item_failure, None);
    }

    #[test]
    fn transactions_grow_with_users_not_trades() {
        // GIVEN users with 150, 10 and 1 trades in one batch
        let mut lines = Vec::new();
        for i in 0..150 {
            lines.push(trade_line(&format!("a{i}"), "ana", "BUY", "1", "4000"));
            if i < 10 {
                lines.push(trade_line(&format!("b{i}"), "bo", "BUY", "1", "4000"));
            }
        }
        lines.push(trade_line("c0", "cy", "BUY", "1", "4000"));
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        // WHEN processed
        let out = run(&processor, &Stream::new(1, &lines).records());
        // THEN ceil((150 + 1) / 100) + 1 + 1 transactions: the minimum, at most 100 items each
        assert_eq!(out.applied, 161);
        let c = processor.store().counters();
        assert_eq!((c.loads, c.commits), (1, 4));
        assert_eq!(c.items_written, 161 + 3);
        let ana = processor.store().portfolio("ana");
        assert_eq!(
            ana.map(|p| (p.version, p.portfolio.trades_applied, p.last_sequence)),
            Some((1, 150, Some(format!("{:064}", 160))))
        );
        assert_eq!(processor.store().decided_count(), 161);
    }

    #[test]
    fn a_transient_failure_reports_the_first_record_not_yet_committed() {
        // GIVEN interleaved users: ana commits first, bo's commit is throttled
        let lines = [
            trade_line("a1", "ana", "BUY", "10", "4000"), // 1
            trade_line("b1", "bo", "BUY", "10", "4000"),  // 2
            trade_line("a2", "ana", "SELL", "5", "4100"), // 3
            "garbage".to_string(),                        // 4
            trade_line("c1", "cy", "BUY", "1", "4000"),   // 5
            trade_line("b2", "bo", "SELL", "5", "4200"),  // 6
        ];
        let stream = Stream::new(1, &lines);
        let store = MemoryPortfolioStore::new();
        store.fail_commit(2, FailureMode::Transient);
        let processor = TradeProcessor::new(store);
        // WHEN processed
        let out = run(&processor, &stream.records());
        // THEN the failure is bo's first record; ana's trades (even the later one) are durable
        assert_eq!(out.batch_item_failure.as_deref(), Some("000002"));
        assert!(out.halted_by.as_ref().is_some_and(StoreError::is_transient));
        assert_eq!(out.applied, 2);
        assert_eq!(out.committed_beyond_failure, 1);
        assert_eq!(out.retried, 4);
        assert_eq!(out.notifications.len(), 2);
        assert!(
            out.dead_letters.is_empty(),
            "garbage is after the failure point"
        );
        // AND the archive has ana's first trade and her later one, decided beyond the failure
        let archived: Vec<_> = out
            .archive
            .iter()
            .map(|a| (a.sequence_number.as_str(), a.status))
            .collect();
        assert_eq!(
            archived,
            [
                ("000001", ArchiveStatus::Applied),
                ("000003", ArchiveStatus::Applied)
            ]
        );
        let key = out.archive_key.as_deref().unwrap_or_default();
        assert!(
            key.starts_with(
                "raw/trades/year=2026/month=11/day=28/shardId-000000000000-000001-000003-"
            ),
            "{key}"
        );

        // WHEN Kinesis re-sends from the failed record
        let out = run(&processor, &stream.from("000002"));
        // THEN the rest is applied, ana's re-sent trade is a duplicate
        assert_eq!(out.batch_item_failure, None);
        assert_eq!((out.applied, out.duplicates), (3, 1));
        assert_eq!(out.dead_letters.len(), 1);

        // AND the state equals an unfailed run
        let clean = TradeProcessor::new(MemoryPortfolioStore::new());
        run(&clean, &stream.records());
        for user in ["ana", "bo", "cy"] {
            assert_eq!(
                balance(processor.store(), user),
                balance(clean.store(), user),
                "{user}"
            );
        }
    }

    fn buys(user: &str, n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| trade_line(&format!("{user}{i}"), user, "BUY", "1", "4000"))
            .collect()
    }

    #[test]
    fn a_failed_final_transaction_leaves_nothing_durable() {
        // GIVEN 150 trades of one user: a pending transaction of 100 decisions, then the final
        let stream = Stream::new(1, &buys("a", 150));
        let store = MemoryPortfolioStore::new();
        store.fail_commit(2, FailureMode::Transient);
        let processor = TradeProcessor::new(store);
        // WHEN the final transaction is throttled
        let out = run(&processor, &stream.records());
        // THEN nothing of the user is applied: the failure is the first record
        assert_eq!(out.batch_item_failure.as_deref(), Some("000001"));
        assert_eq!((out.applied, out.retried), (0, 150));
        assert!(out.notifications.is_empty() && out.archive.is_empty());
        assert_eq!(processor.store().portfolio("a"), None);
        assert_eq!(processor.store().decision_items(), 100);
        assert_eq!(processor.store().decided_count(), 0);
        // WHEN Kinesis re-sends the batch
        let out = run(&processor, &stream.records());
        // THEN the pending decisions are written again and everything is applied once
        assert_eq!(
            (out.applied, out.duplicates, out.batch_item_failure),
            (150, 0, None)
        );
        assert_eq!(
            balance(processor.store(), "a"),
            Some((dec("150"), dec("600000"), dec("0")))
        );
        assert_eq!(processor.store().decided_count(), 150);
    }

    #[test]
    fn pending_decisions_left_by_a_failure_are_redone_by_shorter_retries() {
        // GIVEN 250 trades of one user: pending 1–100 and 101–200 land, the final 201–250 fails
        let stream = Stream::new(1, &buys("a", 250));
        let store = MemoryPortfolioStore::new();
        store.fail_commit(3, FailureMode::Transient);
        let processor = TradeProcessor::new(store);
        let out = run(&processor, &stream.records());
        assert_eq!(
            (out.applied, out.batch_item_failure.as_deref()),
            (0, Some("000001"))
        );
        // WHEN the retries come as shorter batches: 1–150, then 151–250
        let records = stream.records();
        let first = run(&processor, &records[..150]);
        // THEN the first settles 1–150 only; the pending 151–200 stay redoable
        assert_eq!((first.applied, first.batch_item_failure), (150, None));
        assert_eq!(processor.store().decided_count(), 150);
        assert_eq!(processor.store().decision("a151"), None);
        let second = run(&processor, &records[150..]);
        assert_eq!((second.applied, second.duplicates), (100, 0));
        // AND the state equals an unfailed run
        let clean = TradeProcessor::new(MemoryPortfolioStore::new());
        run(&clean, &records);
        assert_eq!(balance(processor.store(), "a"), balance(clean.store(), "a"));
        assert_eq!(processor.store().decided_count(), 250);
        // AND a later redelivery of any of them is a duplicate
        let again = run(&processor, &records[90..110]);
        assert_eq!((again.applied, again.duplicates), (0, 20));
    }

    #[test]
    fn a_final_transaction_that_landed_but_timed_out_makes_its_pending_ones_durable() {
        // GIVEN 250 trades of one user whose final transaction lands but times out
        let stream = Stream::new(1, &buys("a", 250));
        let store = MemoryPortfolioStore::without_decision_lookup();
        store.fail_commit(3, FailureMode::TransientAfterWrite);
        let processor = TradeProcessor::new(store);
        let out = run(&processor, &stream.records());
        assert_eq!(out.batch_item_failure.as_deref(), Some("000001"));
        // WHEN the batch is re-sent
        let out = run(&processor, &stream.records());
        // THEN every trade (pending ones included) is found decided by the conditions
        assert_eq!(
            (out.applied, out.duplicates, out.batch_item_failure),
            (0, 250, None)
        );
        assert_eq!(
            balance(processor.store(), "a"),
            Some((dec("250"), dec("1000000"), dec("0")))
        );
    }

    #[test]
    fn a_commit_that_landed_but_timed_out_is_safe_to_retry() {
        let lines = [
            trade_line("a1", "ana", "BUY", "10", "4000"),
            trade_line("a2", "ana", "SELL", "4", "4100"),
        ];
        let stream = Stream::new(1, &lines);
        for store in [
            MemoryPortfolioStore::new(),
            MemoryPortfolioStore::without_decision_lookup(),
        ] {
            // GIVEN a commit that is written but reported as a timeout
            store.fail_commit(1, FailureMode::TransientAfterWrite);
            let processor = TradeProcessor::new(store);
            let out = run(&processor, &stream.records());
            assert_eq!(out.batch_item_failure.as_deref(), Some("000001"));
            // WHEN the whole batch is re-sent
            let out = run(&processor, &stream.records());
            // THEN nothing is applied twice
            assert_eq!((out.applied, out.duplicates), (0, 2));
            assert_eq!(
                balance(processor.store(), "ana"),
                Some((dec("6"), dec("24000"), dec("400")))
            );
        }
    }

    #[test]
    fn a_failed_load_fails_at_the_first_valid_record() {
        let lines = [
            "nope".to_string(),
            trade_line("a1", "ana", "BUY", "10", "4000"),
        ];
        let store = MemoryPortfolioStore::new();
        store.fail_load(1);
        let processor = TradeProcessor::new(store);
        let out = run(&processor, &Stream::new(1, &lines).records());
        assert_eq!(out.batch_item_failure.as_deref(), Some("000002"));
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!((out.applied, out.retried), (0, 1));
        assert_eq!(out.archive_key, None);
    }

    /// A store where another writer applies a trade for the same user right before our
    /// first commit.
    struct RacingStore {
        inner: MemoryPortfolioStore,
        raced: std::sync::atomic::AtomicBool,
    }

    impl PortfolioStore for RacingStore {
        async fn load(&self, users: &[&str], ids: &[&str]) -> Result<Loaded, StoreError> {
            self.inner.load(users, ids).await
        }

        async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
            if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let line = trade_line("other", commit.user_id, "BUY", "5", "3000");
                let other = TradeProcessor::new(&self.inner);
                let stream = Stream::new(900, &[line]);
                let out = pollster::block_on(other.process_batch(&stream.records(), now()));
                assert_eq!(out.applied, 1);
            }
            self.inner.commit(commit).await
        }
    }

    #[test]
    fn a_concurrent_writer_is_detected_and_the_user_redone() {
        // GIVEN a concurrent writer that changes ana's portfolio between our read and write
        let store = RacingStore {
            inner: MemoryPortfolioStore::new(),
            raced: false.into(),
        };
        let processor = TradeProcessor::new(store);
        let lines = [
            trade_line("a1", "ana", "BUY", "10", "4000"),
            trade_line("a2", "ana", "SELL", "15", "4100"),
        ];
        // WHEN processed
        let out = run(&processor, &Stream::new(1, &lines).records());
        // THEN the conflict is redone on the new state: the sell now fits the balance
        assert_eq!(out.conflicts, 1);
        assert_eq!(out.applied, 2);
        let inner = &processor.store().inner;
        // 5 @ 3000 + 10 @ 4000 = 55000 for 15 USD; the sell removes all of it
        assert_eq!(
            balance(inner, "ana"),
            Some((dec("0"), dec("0"), dec("6500")))
        );
        assert_eq!(inner.portfolio("ana").map(|p| p.version), Some(2));
    }

    #[test]
    fn without_a_decision_lookup_duplicates_are_found_by_the_conditions() {
        // GIVEN a store that, like DynamoDB, only reads portfolios
        let processor = TradeProcessor::new(MemoryPortfolioStore::without_decision_lookup());
        let t1 = trade_line("t1", "ana", "BUY", "100", "4000");
        run(
            &processor,
            &Stream::new(1, std::slice::from_ref(&t1)).records(),
        );
        // WHEN t1 is redelivered with a new trade
        let t2 = trade_line("t2", "ana", "BUY", "1", "4000");
        let out = run(&processor, &Stream::new(2, &[t1, t2]).records());
        // THEN the refused commit teaches the processor, which redoes the user
        assert_eq!((out.applied, out.duplicates, out.conflicts), (1, 1, 1));
        assert_eq!(
            balance(processor.store(), "ana"),
            Some((dec("101"), dec("404000"), dec("0")))
        );
    }

    #[test]
    fn one_trade_id_under_two_users_is_decided_once() {
        for store in [
            MemoryPortfolioStore::new(),
            MemoryPortfolioStore::without_decision_lookup(),
        ] {
            let processor = TradeProcessor::new(store);
            let lines = [
                trade_line("t1", "ana", "BUY", "1", "4000"),
                trade_line("t1", "bo", "BUY", "2", "4000"),
            ];
            let out = run(&processor, &Stream::new(1, &lines).records());
            assert_eq!((out.applied, out.duplicates), (1, 1));
            assert_eq!(processor.store().decided_count(), 1);
        }
    }

    struct BrokenModel;

    impl Recommender for BrokenModel {
        async fn recommend(
            &self,
            _requests: &[RecommendationRequest<'_>],
        ) -> Result<Vec<Recommendation>, RecommendError> {
            Err(RecommendError::WrongCount {
                expected: 1,
                got: 0,
            })
        }
    }

    #[test]
    fn a_failing_model_never_fails_the_batch() {
        // GIVEN a model that fails, used bare or wrapped
        let bare = TradeProcessor::with_recommender(MemoryPortfolioStore::new(), BrokenModel);
        let line = trade_line("t1", "ana", "BUY", "1", "4000");
        // WHEN a batch is processed
        let out = run(&bare, &Stream::new(1, &[line]).records());
        // THEN the batch succeeds with the rule's recommendation
        assert_eq!(out.applied, 1);
        assert_eq!(
            out.recommendations[0].recommendation.source,
            RecommendationSource::Rule
        );
        let wrapped = TradeProcessor::with_recommender(
            MemoryPortfolioStore::new(),
            WithRuleFallback::new(Some(BrokenModel), Default::default()),
        );
        let line = trade_line("t1", "ana", "BUY", "1", "4000");
        run(&wrapped, &Stream::new(1, &[line]).records());
        let stored = wrapped
            .store()
            .portfolio("ana")
            .and_then(|p| p.portfolio.recommendation);
        assert_eq!(stored.map(|r| r.source), Some(RecommendationSource::Rule));
    }

    #[test]
    fn deliver_sends_archive_dead_letters_and_notifications() -> TestResult {
        let processor = TradeProcessor::new(MemoryPortfolioStore::new());
        let lines = [trade_line("t1", "ana", "BUY", "1", "4000"), "x".to_string()];
        let out = run(&processor, &Stream::new(1, &lines).records());
        let (archive, dlq, notifier) = (
            RecordingArchive::new(),
            RecordingDeadLetters::new(),
            RecordingNotifier::new(),
        );
        pollster::block_on(deliver(&out, &archive, &dlq, &notifier))?;
        assert_eq!(archive.objects().len(), 1);
        assert_eq!(dlq.len(), 1);
        let notes = notifier.notifications();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].attributes(), [("user_id", "ana"), ("side", "BUY")]);
        let body: serde_json::Value = serde_json::from_str(&notes[0].to_json())?;
        assert_eq!(body["kind"], "TradeConfirmed");
        assert_eq!(body["cop_amount"], "4000.00");
        assert_eq!(body["usd_balance"], "1.00");
        Ok(())
    }

    fn block_on_timer<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
            .block_on(future)
    }

    /// One BUY each for `users` users, `t<u>` of `user<u>`.
    fn one_trade_each(users: usize) -> Vec<String> {
        (0..users)
            .map(|u| {
                trade_line(
                    &format!("t{u}"),
                    &format!("user{u:03}"),
                    "BUY",
                    "10",
                    "4000",
                )
            })
            .collect()
    }

    fn concurrency(users: usize) -> ProcessorConfig {
        ProcessorConfig {
            commit_concurrency: users,
            retry: RetryPolicy {
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
            },
            ..ProcessorConfig::default()
        }
    }

    #[test]
    fn users_are_committed_concurrently_up_to_the_limit() {
        // GIVEN 40 users with a trade each and a store that takes 5 ms per call
        let stream = Stream::new(1, &one_trade_each(40));
        let store = MemoryPortfolioStore::without_decision_lookup()
            .with_latency(Latency::fixed(Duration::from_millis(5)));
        let processor = TradeProcessor::new(store).with_config(concurrency(8));
        // WHEN processed
        let out = block_on_timer(processor.process_batch(&stream.records(), now()));
        // THEN eight calls were in flight at once, never more, one transaction per user
        let c = processor.store().counters();
        assert_eq!(c.max_in_flight, 8);
        assert_eq!((out.applied, c.loads, c.commits), (40, 1, 40));
        // AND the outcome lists the users in stream order, as one after another would
        let ids: Vec<&str> = out.notifications.iter().map(|n| &*n.trade_id).collect();
        let expected: Vec<String> = (0..40).map(|u| format!("t{u}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(out.recommendations.len(), 40);
    }

    #[test]
    fn one_user_s_transactions_stay_in_order_while_others_overlap() {
        // GIVEN a heavy user (250 trades: three transactions of 100) among 20 light ones
        let mut lines = buys("heavy", 250);
        lines.extend(one_trade_each(20));
        let stream = Stream::new(1, &lines);
        let store = MemoryPortfolioStore::without_decision_lookup()
            .with_latency(Latency::fixed(Duration::from_millis(3)));
        let processor = TradeProcessor::new(store).with_config(concurrency(16));
        // WHEN processed
        let out = block_on_timer(processor.process_batch(&stream.records(), now()));
        // THEN everything is applied once, the heavy user's balance is every buy in order
        assert_eq!((out.applied, out.batch_item_failure), (270, None));
        assert_eq!(
            balance(processor.store(), "heavy"),
            Some((dec("250"), dec("1000000"), dec("0")))
        );
        let heavy = processor.store().portfolio("heavy");
        assert_eq!(
            heavy.map(|p| (p.version, p.portfolio.last_trade_id)),
            Some((1, Some("heavy250".to_string())))
        );
        assert_eq!(processor.store().counters().commits, 3 + 20);
    }

    #[test]
    fn throttled_commits_are_retried_within_the_deadline() {
        // GIVEN three users and two throttled commit calls
        let lines = [
            trade_line("a1", "ana", "BUY", "10", "4000"),
            trade_line("b1", "bo", "BUY", "10", "4000"),
            trade_line("c1", "cy", "BUY", "1", "4000"),
        ];
        let stream = Stream::new(1, &lines);
        let store = MemoryPortfolioStore::new();
        store.fail_commit(2, FailureMode::Transient);
        store.fail_commit(3, FailureMode::Transient);
        store.fail_load(1);
        let processor = TradeProcessor::new(store).with_config(concurrency(64));
        // WHEN processed with time to spare
        let deadline = Instant::now() + Duration::from_secs(30);
        let out =
            block_on_timer(processor.process_batch_within(&stream.records(), now(), deadline));
        // THEN the failures were retried: everything applied once, nothing reported
        assert_eq!(
            (out.applied, out.retried, out.batch_item_failure),
            (3, 0, None)
        );
        assert!(out.halted_by.is_none() && !out.deadline_reached);
        let c = processor.store().counters();
        assert_eq!((c.transient_failures, c.loads, c.committed), (3, 2, 3));
        assert_eq!(processor.store().decided_count(), 3);
    }

    #[test]
    fn what_cannot_be_committed_before_the_deadline_is_reported_not_lost() {
        // GIVEN 30 users, a store taking 20 ms per call, one user at a time, 100 ms to go
        let stream = Stream::new(1, &one_trade_each(30));
        let store =
            MemoryPortfolioStore::new().with_latency(Latency::fixed(Duration::from_millis(20)));
        let processor = TradeProcessor::new(store).with_config(concurrency(1));
        let deadline = Instant::now() + Duration::from_millis(100);
        // WHEN processed
        let out =
            block_on_timer(processor.process_batch_within(&stream.records(), now(), deadline));
        // THEN it stops at the deadline and reports the first user it did not commit
        assert!(out.deadline_reached && out.halted_by.is_none());
        assert!(out.applied < 30, "{} applied", out.applied);
        let failure = out.batch_item_failure.clone().expect("a failure point");
        assert_eq!(failure, format!("{:06}", out.applied + 1));
        assert_eq!(out.retried, 30 - out.applied);
        // WHEN Kinesis re-sends from there
        let rest = block_on_timer(processor.process_batch(&stream.from(&failure), now()));
        // THEN the rest is applied, each trade once
        assert_eq!((rest.applied, rest.duplicates), (30 - out.applied, 0));
        assert_eq!(processor.store().decided_count(), 30);
    }

    /// The memory store, with one user's commits slower than everyone else's.
    struct SlowFor {
        inner: MemoryPortfolioStore,
        user: &'static str,
    }

    impl PortfolioStore for SlowFor {
        async fn load(&self, users: &[&str], ids: &[&str]) -> Result<Loaded, StoreError> {
            self.inner.load(users, ids).await
        }

        async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
            if commit.user_id == self.user {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.inner.commit(commit).await
        }
    }

    #[test]
    fn users_sharing_a_trade_id_commit_in_user_order_whatever_the_timing() {
        // GIVEN ana and bo both carrying t1 (ana first), ana's commits slow
        let lines = [
            trade_line("a0", "ana", "BUY", "10", "4000"),
            trade_line("t1", "ana", "BUY", "1", "4000"),
            trade_line("t1", "bo", "BUY", "2", "4000"),
            trade_line("b1", "bo", "BUY", "3", "4000"),
            trade_line("c1", "cy", "BUY", "4", "4000"),
        ];
        let store = SlowFor {
            inner: MemoryPortfolioStore::without_decision_lookup(),
            user: "ana",
        };
        let processor = TradeProcessor::new(store).with_config(concurrency(64));
        // WHEN processed with every user's commit free to go at once
        let out = block_on_timer(processor.process_batch(&Stream::new(1, &lines).records(), now()));
        // THEN ana decides t1, as committing one user after another would; bo's copy is a
        // duplicate and cy did not wait for either
        assert_eq!((out.applied, out.duplicates), (4, 1));
        let inner = &processor.store().inner;
        assert_eq!(balance(inner, "ana").map(|b| b.0), Some(dec("11")));
        assert_eq!(balance(inner, "bo").map(|b| b.0), Some(dec("3")));
        assert_eq!(inner.decided_count(), 4);
        let order: Vec<&str> = out.notifications.iter().map(|n| &*n.trade_id).collect();
        assert_eq!(order, ["a0", "t1", "b1", "c1"]);
    }

    #[test]
    fn only_users_sharing_a_trade_id_are_committed_one_by_one() {
        let lines = [
            trade_line("x", "ana", "BUY", "1", "4000"),
            trade_line("y", "bo", "BUY", "1", "4000"),
            trade_line("z", "cy", "BUY", "1", "4000"),
            trade_line("x", "dan", "BUY", "1", "4000"),
        ];
        let trades: Vec<Trade> = lines
            .iter()
            .map(|l| Trade::parse(l.as_bytes()).expect("valid"))
            .collect();
        let order: Vec<u32> = (0..4).collect();
        let users: Vec<UserWork<'_>> = ["ana", "bo", "cy", "dan"]
            .iter()
            .enumerate()
            .map(|(u, id)| UserWork {
                user_id: id,
                trades: &order[u..u + 1],
                offset: u,
            })
            .collect();
        assert_eq!(one_by_one(&users, &trades, 8), [0, 3]);
        assert_eq!(one_by_one(&users, &trades, 1), [0, 1, 2, 3]);
    }
}
