//! `lago trades`: the dollar-trades pipeline locally — generate a realistic stream, replay it
//! through the same processor the `trades-stream` Lambda runs, measure it, and build the
//! enriched trade history in the warehouse from the archive.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use lago::history::features::{FeaturesReport, USER_FEATURES_KEY};
use lago::history::{Days, HistoryOptions, HistoryReport};
use lago::lake::{LakeStore, LocalLake};
use lago::load::TableLoad;

use lago::trades::kinesis::KinesisTradeEvent;
use lago::trades::{
    generate_trades, replay_event_with, replay_with, run_bench_with, BenchOptions, ReplayOptions,
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
    /// Turn the lake's trade archive (raw/trades/) into the enriched trade history
    /// (processed/trades/), rebuild the per-user, per-day features and the XGBoost training
    /// set (processed/features/), and with --warehouse load trades_history and user_features:
    /// what the trades-history state machine does, on a local folder and DuckDB. Objects
    /// already processed are skipped, so running it again changes nothing.
    History {
        /// The lake folder (laid out like the bucket).
        #[arg(long)]
        lake: PathBuf,
        /// The DuckDB warehouse file to load (created if missing); the lake only when absent.
        #[arg(long)]
        warehouse: Option<PathBuf>,
        /// Only this day's archive partition (YYYY-MM-DD: the UTC date of a batch's first
        /// trade); every day when absent.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
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
        /// Spread the trades over this many days ending 2026-11-28 13:00 UTC (0: a peak hour's
        /// burst, one trade every 0.75 s on average).
        #[arg(long, default_value_t = 0)]
        days: u32,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a stream through the trade processor in Kinesis-sized batches with an in-memory store.
    Replay {
        /// NDJSON, one trade per line.
        #[arg(
            long,
            required_unless_present = "kinesis_event",
            conflicts_with = "kinesis_event"
        )]
        input: Option<PathBuf>,
        /// A Kinesis event in the Lambda's JSON shape (`Records[].kinesis.data` base64, KPL
        /// aggregates included), replayed as the function processes it: one batch.
        #[arg(long)]
        kinesis_event: Option<PathBuf>,
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
pub fn generate_file(out: &Path, opts: &TradeGenerateOptions) -> Result<TradeGenerateReport> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::new(file);
    let report =
        generate_trades(opts, &mut w).with_context(|| format!("writing {}", out.display()))?;
    w.flush()?;
    Ok(report)
}

/// What `lago trades history` did: the lake side, and the warehouse side when there was one.
#[derive(Debug, serde::Serialize)]
pub struct HistorySummary {
    pub history: HistoryReport,
    /// The features and training set, when this run rebuilt them (something new in the
    /// history, or never built).
    pub features: Option<FeaturesReport>,
    pub warehouse: Option<HistoryLoad>,
}

/// The warehouse side of `lago trades history`.
#[derive(Debug, Default, serde::Serialize)]
pub struct HistoryLoad {
    pub rows_staged: u64,
    /// `duplicate` rows replaced by their trade's decision.
    pub rows_replaced: u64,
    pub rows_inserted: u64,
    /// Rows loaded earlier that got an official rate published since.
    pub rows_rated: u64,
    /// Rows in `trades_history` after the load.
    pub table_rows: u64,
    /// Rows in `user_features` after the load.
    pub feature_rows: u64,
}

/// The archive of `lake_dir` into the trade history and the features, then, with a
/// `warehouse_file`, into its `trades_history` and `user_features`.
pub fn history(
    lake_dir: &Path,
    warehouse_file: Option<&Path>,
    date: Option<NaiveDate>,
) -> Result<HistorySummary> {
    let lake = LocalLake::new(lake_dir);
    let options = HistoryOptions {
        days: date.map_or(Days::All, |d| Days::Only(vec![d])),
        load_date: chrono::Utc::now().date_naive(),
    };
    let report = lago::history::run(&lake, &options)
        .with_context(|| format!("building the trade history of {}", lake_dir.display()))?;
    // The features are rebuilt from the whole history, so only when it changed (or was never
    // built): a run with nothing new leaves them as they are.
    let features = if report.rows > 0 || !lake.path(USER_FEATURES_KEY)?.exists() {
        Some(lago::history::features::run(&lake).context("building the user features")?)
    } else {
        None
    };
    // What the state machine loads: whole day folders (a day asked for by date, whenever it has
    // parts), then the features when rebuilt (or, for a date, whenever they exist).
    let mut days: BTreeSet<NaiveDate> = report
        .parts
        .iter()
        .filter_map(|k| lago::lake::date_from_key(k))
        .collect();
    if let Some(d) = date {
        if !lake.list(&lago::history::processed_day(d))?.is_empty() {
            days.insert(d);
        }
    }
    let with_features =
        features.is_some() || (date.is_some() && lake.path(USER_FEATURES_KEY)?.exists());
    let loads = lago::history::warehouse_loads(&days, with_features, str::to_string);
    let warehouse = match warehouse_file {
        Some(file) => Some(load_history(&lake, file, &loads)?),
        None => None,
    };
    Ok(HistorySummary {
        history: report,
        features,
        warehouse,
    })
}

#[cfg(feature = "warehouse")]
fn load_history(lake: &LocalLake, file: &Path, loads: &[TableLoad]) -> Result<HistoryLoad> {
    use lago::load::Table;
    let mut wh = lago_warehouse::Warehouse::open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    wh.ensure_tables()
        .context("creating the warehouse tables")?;
    let mut out = HistoryLoad::default();
    for load in loads {
        let done = wh
            .load_parts(lake, load.table, &load.parts)
            .with_context(|| format!("loading {}", load.table))?;
        if load.table == Table::TradesHistory {
            out.rows_staged = done.rows_staged;
            out.rows_replaced = done.rows_replaced;
            out.rows_inserted = done.rows_inserted;
            out.rows_rated = done.rows_rated;
        }
    }
    out.table_rows = wh.table_rows(Table::TradesHistory)?;
    out.feature_rows = wh.table_rows(Table::UserFeatures)?;
    Ok(out)
}

#[cfg(not(feature = "warehouse"))]
fn load_history(_: &LocalLake, _: &Path, _: &[TableLoad]) -> Result<HistoryLoad> {
    Err(crate::usage(
        "this lago is built without the warehouse: drop --warehouse, or build with the default features",
    ))
}

fn print_history(summary: &HistorySummary) {
    let h = &summary.history;
    eprintln!(
        "{} archive objects ({} already processed): {} lines → {} rows ({} repeated, {} invalid, {} without an official rate) in {} ms",
        h.objects, h.already_processed, h.lines, h.rows, h.repeats, h.invalid, h.rows_without_trm, h.duration_ms,
    );
    match &summary.features {
        Some(f) => eprintln!(
            "features: {} rows for {} users, {} labelled rows in {} ({} ms)",
            f.rows,
            f.users,
            f.training_rows,
            lago::history::features::TRAINING_SET_KEY,
            f.duration_ms
        ),
        None => eprintln!("features: unchanged (nothing new in the history)"),
    }
    if let Some(w) = &summary.warehouse {
        eprintln!(
            "trades_history: {} rows staged, {} duplicates replaced by their decision, {} inserted, {} given a rate published since, {} rows in all; user_features: {} rows",
            w.rows_staged, w.rows_replaced, w.rows_inserted, w.rows_rated, w.table_rows, w.feature_rows
        );
    }
}

pub fn run(args: TradesArgs) -> Result<()> {
    match args.command {
        TradesCommand::Generate {
            trades,
            users,
            out,
            seed,
            dirty,
            days,
            json,
        } => {
            if !(0.0..=100.0).contains(&dirty) {
                return Err(crate::usage("--dirty is a percentage between 0 and 100"));
            }
            if users == 0 {
                return Err(crate::usage("--users must be at least 1"));
            }
            if days > 3650 {
                return Err(crate::usage("--days is at most 3650"));
            }
            let report = generate_file(
                &out,
                &TradeGenerateOptions {
                    trades,
                    users,
                    seed,
                    dirty_pct: dirty,
                    span_days: days,
                },
            )?;
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
            kinesis_event,
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
            let options = ReplayOptions {
                batch_size,
                store_latency: store.latency()?,
                commit_concurrency: store.commit_concurrency,
            };
            let summary = match (input, kinesis_event) {
                (_, Some(path)) => {
                    let text = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let event: KinesisTradeEvent = serde_json::from_slice(&text).map_err(|e| {
                        crate::usage(format!(
                            "{} is not a Kinesis event ({{\"Records\": [...]}}): {e}",
                            path.display()
                        ))
                    })?;
                    replay_event_with(&event, &options, lake.as_deref())
                        .with_context(|| format!("replaying {}", path.display()))?
                }
                (Some(input), None) => {
                    let file = File::open(&input)
                        .with_context(|| format!("cannot read {}", input.display()))?;
                    replay_with(
                        BufReader::with_capacity(1 << 20, file),
                        &options,
                        lake.as_deref(),
                    )
                    .with_context(|| format!("replaying {}", input.display()))?
                }
                (None, None) => return Err(crate::usage("--input or --kinesis-event is required")),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
        }
        TradesCommand::History {
            lake,
            warehouse,
            date,
            json,
        } => {
            let summary = history(&lake, warehouse.as_deref(), date)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_history(&summary);
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
