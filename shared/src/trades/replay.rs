//! `lago trades replay`: runs the trade processor over an NDJSON file as Kinesis-style batches
//! — one line = one record, in order, on shard `shardId-000000000000`, sequence numbers the
//! 1-based line numbers zero-padded to 20 digits (blank lines are skipped) — with the in-memory
//! portfolio store, an optional local lake folder for the archive, and recorded DLQ messages
//! and notifications. A batch that reports a failure is resumed from the failed record, as
//! Kinesis does.
//!
//! Each batch is processed "at" the `executed_at` of its last valid trade, so `updated_at`
//! and the whole summary are deterministic for a given file and batch size.
//!
//! [`replay_event_with`] replays one Kinesis event in the Lambda's own JSON shape instead (one
//! batch, `Records[].kinesis.data` base64, KPL aggregates expanded by the same
//! [`super::kinesis`] code as the function), resumed from a failed record as Lambda would.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::delivery::{deliver, DeliveryError};
use super::kinesis::KinesisTradeEvent;
use super::memory::{
    Latency, LocalFolderArchive, MemoryPortfolioStore, RecordingDeadLetters, RecordingNotifier,
    StoreCounters,
};
use super::outcome::BatchOutcome;
use super::ports::{
    BoxError, DeadLetterSink, Notifier, PortfolioStore, Recommendation, Recommender, SinkError,
    StoreError, StoredPortfolio, TradeArchive,
};
use super::processor::{
    ProcessorConfig, Record, RecordData, TradeProcessor, DEFAULT_COMMIT_CONCURRENCY,
};
use super::trade::Trade;

/// The shard every replayed record is on.
pub const REPLAY_SHARD: &str = "shardId-000000000000";

/// Consecutive failed attempts at the same record before the replay gives up.
const MAX_STALLS: u32 = 8;

/// A portfolio as the replay prints it: every amount a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortfolioView {
    pub user_id: String,
    pub usd_balance: Decimal,
    pub cost_basis_cop: Decimal,
    pub average_cost_cop: Option<Decimal>,
    pub realized_pnl_cop: Decimal,
    pub trades_applied: u64,
    pub last_trade_id: Option<String>,
    pub last_executed_at: Option<DateTime<Utc>>,
    pub last_rate: Option<Decimal>,
    pub recommendation: Option<Recommendation>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl From<&StoredPortfolio> for PortfolioView {
    fn from(stored: &StoredPortfolio) -> Self {
        let p = &stored.portfolio;
        Self {
            user_id: p.user_id.clone(),
            usd_balance: p.usd_balance,
            cost_basis_cop: p.cost_basis_cop,
            average_cost_cop: p.average_cost(),
            realized_pnl_cop: p.realized_pnl_cop,
            trades_applied: p.trades_applied,
            last_trade_id: p.last_trade_id.clone(),
            last_executed_at: p.last_executed_at,
            last_rate: p.last_rate,
            recommendation: p.recommendation.clone(),
            updated_at: p.updated_at,
            version: stored.version,
        }
    }
}

/// Counts over a whole replay. Each record is counted once: `records = applied + duplicates +
/// Σ rejected` (a record re-sent after a failure counts where it finally settled).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayTotals {
    pub records: u64,
    pub batches: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dead_letters: u64,
    pub notifications: u64,
    pub archived_objects: u64,
    /// Records re-sent after a failed batch.
    pub resent: u64,
    /// Re-sent records that had been committed before the failure was reported: their second
    /// delivery is a duplicate, not counted in `duplicates`.
    pub resent_decided: u64,
}

impl ReplayTotals {
    /// Adds one processed batch.
    fn tally(&mut self, outcome: &BatchOutcome) {
        self.batches += 1;
        self.applied += outcome.applied;
        self.duplicates += outcome.duplicates;
        self.resent_decided += outcome.committed_beyond_failure;
        for (reason, count) in &outcome.rejected {
            *self.rejected.entry(reason.clone()).or_default() += count;
        }
        self.dead_letters += outcome.dead_letters.len() as u64;
        self.notifications += outcome.notifications.len() as u64;
        self.archived_objects += u64::from(outcome.archive_key.is_some());
    }
}

/// What `lago trades replay` prints (`--json`: this, serialized).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub records: u64,
    pub batches: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dead_letters: u64,
    pub notifications: BTreeMap<String, u64>,
    pub archived_objects: u64,
    pub store: StoreCounters,
    /// Sorted by `user_id`.
    pub portfolios: Vec<PortfolioView>,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} records in {} batches: {} applied, {} duplicates, {} rejected",
            self.records,
            self.batches,
            self.applied,
            self.duplicates,
            self.rejected.values().sum::<u64>()
        )?;
        for (reason, count) in &self.rejected {
            writeln!(f, "  rejected {reason}: {count}")?;
        }
        writeln!(
            f,
            "{} dead letters, {} notifications, {} archive objects, {} portfolios",
            self.dead_letters,
            self.notifications.values().sum::<u64>(),
            self.archived_objects,
            self.portfolios.len()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("could not read the input")]
    Io(#[from] io::Error),
    #[error("could not deliver a batch's outputs")]
    Delivery(#[from] DeliveryError),
    #[error("the batch kept failing at sequence number {sequence_number}")]
    Stalled {
        sequence_number: String,
        #[source]
        source: StoreError,
    },
}

/// How a replay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Records per batch (Kinesis: at most 10,000).
    pub batch_size: usize,
    /// Delay of every store call, as a round trip to DynamoDB would take.
    pub store_latency: Duration,
    /// Users committed at once ([`ProcessorConfig::commit_concurrency`]).
    pub commit_concurrency: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            store_latency: Duration::ZERO,
            commit_concurrency: DEFAULT_COMMIT_CONCURRENCY,
        }
    }
}

/// Replays `input` with a fresh in-memory store; archives under `lake_dir` when given.
/// Synchronous: blocks on the async processor with `pollster`, no runtime needed.
pub fn replay(
    input: impl BufRead,
    batch_size: usize,
    lake_dir: Option<&Path>,
) -> Result<ReplaySummary, ReplayError> {
    replay_with(
        input,
        &ReplayOptions {
            batch_size,
            ..ReplayOptions::default()
        },
        lake_dir,
    )
}

/// [`replay`] with a store latency and a commit concurrency; with a latency the batches run on
/// a single-threaded tokio runtime (its timer simulates the round trips).
pub fn replay_with(
    input: impl BufRead,
    options: &ReplayOptions,
    lake_dir: Option<&Path>,
) -> Result<ReplaySummary, ReplayError> {
    replay_source(Source::Lines(Box::new(input)), options, lake_dir)
}

/// Replays one Kinesis event (the Lambda's JSON shape) as the function would process it: one
/// batch (`options.batch_size` is not used), KPL aggregates expanded, resumed from a failed
/// record.
pub fn replay_event_with(
    event: &KinesisTradeEvent,
    options: &ReplayOptions,
    lake_dir: Option<&Path>,
) -> Result<ReplaySummary, ReplayError> {
    replay_source(Source::Event(event), options, lake_dir)
}

/// What a replay reads.
enum Source<'a> {
    Lines(Box<dyn BufRead + 'a>),
    Event(&'a KinesisTradeEvent),
}

fn replay_source(
    source: Source<'_>,
    options: &ReplayOptions,
    lake_dir: Option<&Path>,
) -> Result<ReplaySummary, ReplayError> {
    let store = MemoryPortfolioStore::new().with_latency(Latency::fixed(options.store_latency));
    let processor = TradeProcessor::new(store).with_config(ProcessorConfig {
        commit_concurrency: options.commit_concurrency.max(1),
        ..ProcessorConfig::default()
    });
    let archive = OptionalArchive(lake_dir.map(LocalFolderArchive::new));
    let dead_letters = RecordingDeadLetters::new();
    let notifier = RecordingNotifier::counting();
    let (processor_ref, archive_ref, dl_ref, notifier_ref) =
        (&processor, &archive, &dead_letters, &notifier);
    let run = async move {
        match source {
            Source::Lines(input) => {
                replay_into(
                    processor_ref,
                    input,
                    options.batch_size,
                    archive_ref,
                    dl_ref,
                    notifier_ref,
                )
                .await
            }
            Source::Event(event) => {
                replay_event_into(processor_ref, event, archive_ref, dl_ref, notifier_ref).await
            }
        }
    };
    let totals = if options.store_latency.is_zero() {
        pollster::block_on(run)?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?
            .block_on(run)?
    };
    let store = processor.store();
    Ok(ReplaySummary {
        records: totals.records,
        batches: totals.batches,
        applied: totals.applied,
        duplicates: totals.duplicates,
        rejected: totals.rejected,
        dead_letters: totals.dead_letters,
        notifications: notifier.counts(),
        archived_objects: totals.archived_objects,
        store: store.counters(),
        portfolios: store.portfolios().iter().map(PortfolioView::from).collect(),
    })
}

/// The replay loop over any store and sinks (the tests inject failures through it).
pub async fn replay_into<S, R, A, D, N>(
    processor: &TradeProcessor<S, R>,
    mut input: impl BufRead,
    batch_size: usize,
    archive: &A,
    dead_letters: &D,
    notifier: &N,
) -> Result<ReplayTotals, ReplayError>
where
    S: PortfolioStore + Sync,
    R: Recommender + Sync,
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    let batch_size = batch_size.max(1);
    let mut totals = ReplayTotals::default();
    let mut window: VecDeque<(String, Vec<u8>)> = VecDeque::with_capacity(batch_size);
    let mut line_no: u64 = 0;
    let mut eof = false;
    let mut now = DateTime::<Utc>::UNIX_EPOCH;
    let mut stalls = 0u32;
    loop {
        while !eof && window.len() < batch_size {
            let mut line = Vec::new();
            if input.read_until(b'\n', &mut line)? == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.is_empty() {
                window.push_back((format!("{line_no:020}"), line));
                totals.records += 1;
            }
        }
        if window.is_empty() {
            break;
        }
        let records: Vec<Record<'_>> = window
            .iter()
            .map(|(seq, data)| Record {
                shard_id: REPLAY_SHARD,
                sequence_number: seq,
                sub_sequence: None,
                data: RecordData::Bytes(data),
                arrived_at: None,
            })
            .collect();
        if let Some(t) = records.iter().rev().find_map(executed_at) {
            now = now.max(t);
        }
        let outcome = processor.process_batch(&records, now).await;
        drop(records);
        deliver(&outcome, archive, dead_letters, notifier).await?;
        totals.tally(&outcome);
        match outcome.batch_item_failure {
            None => {
                window.clear();
                stalls = 0;
            }
            Some(seq) => {
                let at = window.iter().position(|(s, _)| *s == seq).unwrap_or(0);
                stalls = if at == 0 { stalls + 1 } else { 0 };
                if stalls > MAX_STALLS {
                    let source = outcome.halted_by.unwrap_or_else(|| {
                        let cause: BoxError = "batch failed without a store error".into();
                        StoreError::Permanent(cause)
                    });
                    return Err(ReplayError::Stalled {
                        sequence_number: seq,
                        source,
                    });
                }
                // Kinesis resumes from the failed record; what was committed past it comes
                // back as duplicates, not counted twice (`resent_decided`).
                totals.resent += (window.len() - at) as u64;
                window.drain(..at);
            }
        }
    }
    totals.duplicates -= totals.resent_decided;
    Ok(totals)
}

/// When a record's trade was executed, if it is one.
fn executed_at(record: &Record<'_>) -> Option<DateTime<Utc>> {
    use base64::Engine as _;
    match record.data {
        RecordData::Bytes(b) => Trade::parse(b).ok().map(|t| t.executed_at),
        RecordData::Base64(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|b| Trade::parse(&b).ok())
            .map(|t| t.executed_at),
        RecordData::Refused { .. } => None,
    }
}

/// [`replay_into`] for one Kinesis event: the whole event is the batch, processed "at" its
/// latest trade; a failure resumes from the failed Kinesis record (a KPL aggregate whole).
pub async fn replay_event_into<S, R, A, D, N>(
    processor: &TradeProcessor<S, R>,
    event: &KinesisTradeEvent,
    archive: &A,
    dead_letters: &D,
    notifier: &N,
) -> Result<ReplayTotals, ReplayError>
where
    S: PortfolioStore + Sync,
    R: Recommender + Sync,
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    let expanded = event.expand();
    let records = expanded.records(event);
    let now = records
        .iter()
        .filter_map(executed_at)
        .max()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut totals = ReplayTotals {
        records: records.len() as u64,
        ..ReplayTotals::default()
    };
    let (mut from, mut stalls) = (0usize, 0u32);
    while from < records.len() {
        let outcome = processor.process_batch(&records[from..], now).await;
        deliver(&outcome, archive, dead_letters, notifier).await?;
        totals.tally(&outcome);
        let Some(seq) = outcome.batch_item_failure else {
            break;
        };
        let at = records[from..]
            .iter()
            .position(|r| r.sequence_number == seq)
            .unwrap_or(0);
        stalls = if at == 0 { stalls + 1 } else { 0 };
        if stalls > MAX_STALLS {
            return Err(ReplayError::Stalled {
                sequence_number: seq,
                source: outcome.halted_by.unwrap_or_else(|| {
                    StoreError::Permanent("batch failed without a store error".into())
                }),
            });
        }
        totals.resent += (records.len() - from - at) as u64;
        from += at;
    }
    totals.duplicates -= totals.resent_decided;
    Ok(totals)
}

/// The local archive when a lake folder is given, else nothing.
struct OptionalArchive(Option<LocalFolderArchive>);

impl TradeArchive for OptionalArchive {
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        match &self.0 {
            Some(archive) => archive.put(key, body).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::generate::{generate_trades, TradeGenerateOptions};
    use flate2::read::GzDecoder;
    use std::io::Read;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn replay_accounts_for_every_generated_line() -> TestResult {
        // GIVEN a dirty generated file
        let opts = TradeGenerateOptions {
            trades: 6_000,
            users: 40,
            seed: 11,
            dirty_pct: 12.0,
            span_days: 0,
        };
        let mut file = Vec::new();
        let report = generate_trades(&opts, &mut file)?;
        // WHEN replayed in batches of 500
        let summary = replay(&file[..], 500, None)?;
        // THEN every kind the generator wrote is found again
        assert_eq!(summary.records, report.lines);
        assert_eq!(summary.applied, report.valid);
        assert_eq!(summary.duplicates, report.duplicates);
        assert_eq!(
            summary.rejected.get("insufficient_balance").copied(),
            Some(report.oversells)
        );
        let invalid: u64 = summary
            .rejected
            .iter()
            .filter(|(k, _)| k.as_str() != "insufficient_balance")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(invalid, report.malformed + report.invalid_fields);
        assert_eq!(
            summary.records,
            summary.applied + summary.duplicates + summary.rejected.values().sum::<u64>()
        );
        assert_eq!(summary.portfolios.len() as u64, report.users);
        assert_eq!(summary.dead_letters, summary.rejected.values().sum::<u64>());
        assert_eq!(
            summary.notifications.get("TradeConfirmed").copied(),
            Some(report.valid)
        );
        Ok(())
    }

    #[test]
    fn batch_size_does_not_change_the_portfolios() -> TestResult {
        let opts = TradeGenerateOptions {
            trades: 3_000,
            users: 25,
            seed: 5,
            dirty_pct: 8.0,
            span_days: 0,
        };
        let mut file = Vec::new();
        generate_trades(&opts, &mut file)?;
        let strip = |s: ReplaySummary| -> Vec<PortfolioView> {
            s.portfolios
                .into_iter()
                .map(|mut p| {
                    p.updated_at = None;
                    p.recommendation = None;
                    p.version = 0;
                    p
                })
                .collect()
        };
        let one = strip(replay(&file[..], 1, None)?);
        let big = strip(replay(&file[..], 10_000, None)?);
        let odd = strip(replay(&file[..], 77, None)?);
        assert_eq!(one, big);
        assert_eq!(odd, big);
        Ok(())
    }

    #[test]
    fn summary_json_has_amounts_as_strings_sorted_by_user() -> TestResult {
        let input = concat!(
            r#"{"trade_id":"a","user_id":"zed","side":"BUY","usd_amount":100,"rate":4000,"executed_at":"2026-11-28T17:00:00Z"}"#,
            "\n",
            r#"{"trade_id":"b","user_id":"amy","side":"BUY","usd_amount":"0.5","rate":"4100.25","executed_at":"2026-11-28T17:00:01Z"}"#,
            "\r\n\n",
            "oops\n",
        );
        let summary = replay(input.as_bytes(), 10, None)?;
        let json = serde_json::to_value(&summary)?;
        assert_eq!(json["applied"], 2);
        assert_eq!(json["rejected"]["invalid_json"], 1);
        assert_eq!(json["portfolios"][0]["user_id"], "amy");
        assert_eq!(json["portfolios"][0]["usd_balance"], "0.50");
        assert_eq!(json["portfolios"][0]["cost_basis_cop"], "2050.13");
        assert_eq!(json["portfolios"][1]["cost_basis_cop"], "400000.00");
        assert_eq!(json["portfolios"][1]["realized_pnl_cop"], "0.00");
        assert_eq!(json["portfolios"][1]["last_rate"], "4000.0000");
        assert_eq!(json["portfolios"][1]["updated_at"], "2026-11-28T17:00:01Z");
        Ok(())
    }

    #[test]
    fn archive_lands_in_the_lake_folder() -> TestResult {
        let lake = tempfile::tempdir()?;
        let input = concat!(
            r#"{"trade_id":"a","user_id":"u","side":"BUY","usd_amount":"1","rate":"4000","executed_at":"2026-11-28T17:00:00Z"}"#,
            "\n",
            "broken\n",
            r#"{"trade_id":"b","user_id":"u","side":"SELL","usd_amount":"1","rate":"4100","executed_at":"2026-11-28T17:00:01Z"}"#,
            "\n",
        );
        let summary = replay(input.as_bytes(), 10, Some(lake.path()))?;
        assert_eq!(summary.archived_objects, 1);
        let dir = lake.path().join("raw/trades/year=2026/month=11/day=28");
        let names: Vec<String> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names.len(), 1);
        assert!(
            names[0].starts_with("shardId-000000000000-00000000000000000001-00000000000000000003-")
        );
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(dir.join(&names[0]))?).read_to_string(&mut text)?;
        let ids: Vec<String> = text
            .lines()
            .map(|l| Trade::parse(l.as_bytes()).map(|t| t.trade_id.to_string()))
            .collect::<Result<_, _>>()?;
        assert_eq!(ids, ["a", "b"]);
        Ok(())
    }

    #[test]
    fn a_replay_on_a_slow_store_with_concurrent_commits_ends_as_the_sequential_one() -> TestResult {
        // GIVEN a dirty stream of 2,000 trades over 150 users
        let opts = TradeGenerateOptions {
            trades: 2_000,
            users: 150,
            seed: 5,
            dirty_pct: 8.0,
            span_days: 0,
        };
        let mut file = Vec::new();
        generate_trades(&opts, &mut file)?;
        // WHEN replayed one user after another on an instant store, and 16 users at a time
        // on a store taking 1 ms per call
        let sequential = ReplayOptions {
            batch_size: 400,
            store_latency: Duration::ZERO,
            commit_concurrency: 1,
        };
        let concurrent = ReplayOptions {
            store_latency: Duration::from_millis(1),
            commit_concurrency: 16,
            ..sequential
        };
        let mut want = replay_with(&file[..], &sequential, None)?;
        let mut got = replay_with(&file[..], &concurrent, None)?;
        // THEN everything but the store's request counts is the same, portfolios included
        assert!(got.store.max_in_flight > 1 && got.store.max_in_flight <= 16);
        assert_eq!(got.store.commits, want.store.commits);
        (want.store, got.store) = Default::default();
        assert_eq!(got, want);
        Ok(())
    }
}
