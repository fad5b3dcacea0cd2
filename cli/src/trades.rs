//! `lago trades`: the dollar-trades pipeline locally — generate a realistic stream, replay it
//! through the same processor the `trades-stream` Lambda runs, and measure it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use lago::trades::{
    generate_trades, replay_with, run_bench_with, BenchOptions, ReplayOptions,
    TradeGenerateOptions, TradeGenerateReport, DEFAULT_COMMIT_CONCURRENCY,
};

#[derive(Parser)]
pub struct TradesArgs {
    #[command(subcommand)]
    command: TradesCommand,
}

/// How the in-memory portfolio store answers and how many users are committed at once.
#[derive(clap::Args)]
struct StoreArgs {
    /// Delay of every store call (each read and each transaction), in milliseconds, as a
    /// round trip to DynamoDB would take (typically 10–30).
    #[arg(long, default_value_t = 0.0)]
    store_latency_ms: f64,
    /// Users whose commits are in flight at once (1 = one user after another).
    #[arg(long, default_value_t = DEFAULT_COMMIT_CONCURRENCY)]
    commit_concurrency: usize,
}

impl StoreArgs {
    fn latency(&self) -> Result<Duration> {
        if !(0.0..=60_000.0).contains(&self.store_latency_ms) {
            return Err(crate::usage(
                "--store-latency-ms is between 0 and 60000 milliseconds",
            ));
        }
        if self.commit_concurrency == 0 || self.commit_concurrency > 1024 {
            return Err(crate::usage("--commit-concurrency is between 1 and 1024"));
        }
        Ok(Duration::from_secs_f64(self.store_latency_ms / 1e3))
    }
}

#[derive(Subcommand)]
enum TradesCommand {
    /// Write a deterministic NDJSON stream of trades (one Kinesis record per line).
    Generate {
        #[arg(long)]
        trades: u64,
        #[arg(long, default_value_t = 1000)]
        users: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Percentage of redeliveries, malformed lines, invalid fields and oversells.
        #[arg(long, default_value_t = 0.0)]
        dirty: f64,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a stream through the trade processor in Kinesis-sized batches with an in-memory store.
    Replay {
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
        /// Archive each batch's valid trades, with their decisions, under this lake folder (raw/trades/…).
        #[arg(long)]
        lake: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the summary (and every portfolio) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Throughput of decode + validate + apply + commit (optionally with a store latency per
    /// call), batch time percentiles, and store requests per batch.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        trades: u64,
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Writes a generated trade stream to `out`.
pub fn generate_file(
    out: &Path,
    trades: u64,
    users: u64,
    seed: u64,
    dirty: f64,
) -> Result<TradeGenerateReport> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::new(file);
    let opts = TradeGenerateOptions {
        trades,
        users,
        seed,
        dirty_pct: dirty,
    };
    let report =
        generate_trades(&opts, &mut w).with_context(|| format!("writing {}", out.display()))?;
    w.flush()?;
    Ok(report)
}

pub fn run(args: TradesArgs) -> Result<()> {
    match args.command {
        TradesCommand::Generate {
            trades,
            users,
            out,
            seed,
            dirty,
            json,
        } => {
            if !(0.0..=100.0).contains(&dirty) {
                return Err(crate::usage("--dirty is a percentage between 0 and 100"));
            }
            if users == 0 {
                return Err(crate::usage("--users must be at least 1"));
            }
            let report = generate_file(&out, trades, users, seed, dirty)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                eprintln!(
                    "{} lines ({} valid trades) → {}",
                    report.lines,
                    report.valid,
                    out.display()
                );
            }
        }
        TradesCommand::Replay {
            input,
            batch_size,
            lake,
            store,
            json,
        } => {
            if batch_size == 0 || batch_size > 10_000 {
                return Err(crate::usage(
                    "--batch-size is between 1 and 10000 (Kinesis' largest batch)",
                ));
            }
            let file =
                File::open(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let options = ReplayOptions {
                batch_size,
                store_latency: store.latency()?,
                commit_concurrency: store.commit_concurrency,
            };
            let summary = replay_with(
                BufReader::with_capacity(1 << 20, file),
                &options,
                lake.as_deref(),
            )
            .with_context(|| format!("replaying {}", input.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
        }
        TradesCommand::Bench {
            trades,
            users,
            batch_size,
            store,
            json,
        } => {
            if users == 0 || batch_size == 0 {
                return Err(crate::usage("--users and --batch-size must be at least 1"));
            }
            let report = run_bench_with(&BenchOptions {
                trades,
                users,
                batch_size,
                store_latency: store.latency()?,
                commit_concurrency: store.commit_concurrency,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}
