//! `lago trades bench`: throughput of the trade processor on one core, and the store requests
//! it makes per batch against the minimum — with the store answering at once (the processor's
//! own cost) or after a fixed latency per call (a DynamoDB round trip), committing users one
//! after another or many at once.
//!
//! The input is generated (clean, seed 42) and split into records before the clock starts;
//! the timed part is `process_batch` over every batch — decode, validate, group, load, apply,
//! commit to the in-memory store, notifications and rule recommendations — on this thread,
//! with each batch's wall time recorded for its percentiles.
//! The store reads portfolios only, as the DynamoDB adapter does (duplicates are caught by the
//! commit conditions), and counts requests as DynamoDB would see them: one `BatchGetItem` per
//! 100 touched users, one `TransactWriteItems` per commit.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::generate::{generate_trades, TradeGenerateOptions};
use super::memory::{Latency, MemoryPortfolioStore, StoreCounters};
use super::processor::{
    ProcessorConfig, Record, RecordData, TradeProcessor, DEFAULT_COMMIT_CONCURRENCY,
};
use super::trade::Trade;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    pub trades: u64,
    pub users: u64,
    pub batch_size: usize,
    /// Delay of every store call (each `load` and each transaction), as a round trip to
    /// DynamoDB would take; zero measures the processor's own cost.
    pub store_latency: Duration,
    /// Users committed at once ([`ProcessorConfig::commit_concurrency`]).
    pub commit_concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            trades: 1_000_000,
            users: 10_000,
            batch_size: 10_000,
            store_latency: Duration::ZERO,
            commit_concurrency: DEFAULT_COMMIT_CONCURRENCY,
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub trades: u64,
    pub users: u64,
    pub batch_size: usize,
    pub batches: u64,
    pub store_latency_ms: f64,
    pub commit_concurrency: usize,
    /// Decode + validate + apply + commit, wall time.
    pub seconds: f64,
    pub trades_per_sec: f64,
    /// Wall time of one batch: median and 99th percentile (nearest rank).
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
    pub batch_max_ms: f64,
    /// Decode + validate alone.
    pub parse_seconds: f64,
    pub parse_trades_per_sec: f64,
    pub applied: u64,
    pub store: StoreCounters,
    /// `TransactWriteItems` calls per batch.
    pub transactions_per_batch: f64,
    /// The minimum, `Σ users ceil((trades_u + 1) / 100)`, per batch.
    pub min_transactions_per_batch: f64,
    /// `BatchGetItem` calls per batch (100 portfolio keys each).
    pub reads_per_batch: f64,
    pub users_per_batch: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trades bench: {} trades, {} users, {} batches of {} records, one core",
            self.trades, self.users, self.batches, self.batch_size
        )?;
        writeln!(
            f,
            "  store latency {} ms per call, {} user(s) committed at once",
            self.store_latency_ms, self.commit_concurrency
        )?;
        let goal = if self.store_latency_ms > 0.0 {
            "goal 20000 with 10 ms calls"
        } else {
            "goal 1000000"
        };
        writeln!(
            f,
            "  decode + validate + apply + commit: {:.3} s = {:.0} trades/s ({goal})",
            self.seconds, self.trades_per_sec
        )?;
        writeln!(
            f,
            "  batch time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.batch_p50_ms, self.batch_p99_ms, self.batch_max_ms
        )?;
        writeln!(
            f,
            "  decode + validate only:             {:.3} s = {:.0} trades/s",
            self.parse_seconds, self.parse_trades_per_sec
        )?;
        writeln!(
            f,
            "  per batch ({:.1} users): {:.2} reads (BatchGetItem) + {:.2} transactions",
            self.users_per_batch, self.reads_per_batch, self.transactions_per_batch
        )?;
        writeln!(
            f,
            "  minimum Σ users ceil((n+1)/100) = {:.2} transactions ({})",
            self.min_transactions_per_batch,
            if self.transactions_per_batch == self.min_transactions_per_batch {
                "equal"
            } else {
                "NOT equal"
            }
        )?;
        writeln!(
            f,
            "  store: {} transactions, {} items written, {} conflicts; {} trades applied",
            self.store.commits, self.store.items_written, self.store.conflicts, self.applied
        )
    }
}

/// Generates `trades` clean trades over `users` users and processes them in batches of
/// `batch` records with the in-memory store answering at once, one user after another.
pub fn run_bench(trades: u64, users: u64, batch: usize) -> BenchReport {
    run_bench_with(&BenchOptions {
        trades,
        users,
        batch_size: batch,
        ..BenchOptions::default()
    })
}

/// [`run_bench`] with a store latency and a commit concurrency. The batches run one after
/// another on a single-threaded tokio runtime, as in one Lambda invocation.
pub fn run_bench_with(options: &BenchOptions) -> BenchReport {
    let BenchOptions {
        trades,
        users,
        store_latency,
        ..
    } = *options;
    let batch = options.batch_size.max(1);
    let mut data = Vec::with_capacity(trades as usize * 190);
    let opts = TradeGenerateOptions {
        trades,
        users,
        seed: 42,
        dirty_pct: 0.0,
        span_days: 0,
    };
    // Writing to a Vec cannot fail.
    let _ = generate_trades(&opts, &mut data);
    let lines: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let sequences: Vec<String> = (1..=lines.len()).map(|i| format!("{i:020}")).collect();
    let records: Vec<Record<'_>> = lines
        .iter()
        .zip(&sequences)
        .map(|(line, seq)| Record {
            shard_id: "shardId-000000000000",
            sequence_number: seq,
            sub_sequence: None,
            data: RecordData::Bytes(line),
            arrived_at: None,
        })
        .collect();

    // Decode + validate alone.
    let started = Instant::now();
    let mut valid = 0u64;
    for line in &lines {
        valid += u64::from(Trade::parse(line).is_ok());
    }
    let parse_seconds = started.elapsed().as_secs_f64();
    debug_assert_eq!(valid, lines.len() as u64);

    // The minimum requests, from each batch's per-user counts (untimed).
    let (mut min, mut batch_users) = (0u64, 0u64);
    for chunk in lines.chunks(batch) {
        let mut per_user: HashMap<std::sync::Arc<str>, u64> = HashMap::new();
        for line in chunk {
            if let Ok(t) = Trade::parse(line) {
                *per_user.entry(t.user_id).or_default() += 1;
            }
        }
        batch_users += per_user.len() as u64;
        for n in per_user.values() {
            min += (n + 1).div_ceil(100);
        }
    }

    // Shaped like the DynamoDB adapter: the load reads portfolios only and the commit
    // conditions find duplicates.
    let store = MemoryPortfolioStore::without_decision_lookup()
        .with_capacity(lines.len(), users as usize)
        .with_latency(Latency::fixed(store_latency));
    let processor = TradeProcessor::new(store).with_config(ProcessorConfig {
        commit_concurrency: options.commit_concurrency.max(1),
        ..ProcessorConfig::default()
    });
    let now = DateTime::<Utc>::UNIX_EPOCH;
    let (processor_ref, records_ref) = (&processor, &records);
    let run = async move {
        let mut batch_ms: Vec<f64> = Vec::with_capacity(records_ref.len().div_ceil(batch));
        let mut applied = 0u64;
        let started = Instant::now();
        for chunk in records_ref.chunks(batch) {
            let batch_started = Instant::now();
            let outcome = processor_ref.process_batch(chunk, now).await;
            batch_ms.push(batch_started.elapsed().as_secs_f64() * 1e3);
            applied += outcome.applied;
        }
        (started.elapsed().as_secs_f64(), batch_ms, applied)
    };
    let (seconds, mut batch_ms, applied) = if store_latency.is_zero() {
        pollster::block_on(run)
    } else {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime.block_on(run),
            // Without a timer the latency cannot be simulated; nothing was measured.
            Err(_) => (f64::NAN, Vec::new(), 0),
        }
    };
    batch_ms.sort_by(f64::total_cmp);
    let store = processor.store().counters();
    let batches = lines.len().div_ceil(batch).max(1) as u64;
    let per_batch = |x: u64| x as f64 / batches as f64;
    BenchReport {
        trades: lines.len() as u64,
        users,
        batch_size: batch,
        batches,
        store_latency_ms: store_latency.as_secs_f64() * 1e3,
        commit_concurrency: options.commit_concurrency.max(1),
        seconds,
        trades_per_sec: lines.len() as f64 / seconds.max(f64::MIN_POSITIVE),
        batch_p50_ms: percentile(&batch_ms, 50),
        batch_p99_ms: percentile(&batch_ms, 99),
        batch_max_ms: batch_ms.last().copied().unwrap_or(0.0),
        parse_seconds,
        parse_trades_per_sec: lines.len() as f64 / parse_seconds.max(f64::MIN_POSITIVE),
        applied,
        store,
        transactions_per_batch: per_batch(store.commits),
        min_transactions_per_batch: per_batch(min),
        reads_per_batch: per_batch(store.batch_get_requests),
        users_per_batch: per_batch(batch_users),
    }
}

/// The nearest-rank percentile `p` of sorted values (0 when there are none).
fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_applies_everything_at_the_minimum() {
        // 30 users over 20,000 trades: every user has well over 100 trades per batch.
        for users in [30, 300] {
            let report = run_bench(20_000, users, 10_000);
            assert_eq!(report.trades, 20_000);
            assert_eq!(report.applied, 20_000);
            assert_eq!(report.batches, 2);
            assert_eq!(report.store.conflicts, 0);
            assert_eq!(
                report.transactions_per_batch, report.min_transactions_per_batch,
                "{users} users"
            );
            assert!(report.to_string().contains("(equal)"));
        }
    }
}
