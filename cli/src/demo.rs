//! `lago demo`: the whole product on embedded defaults, in the order the ingest state machine
//! runs it, ending in a KPI dashboard.
//!
//! 1. generate realistic exports of every dataset into `raw/` over several load dates — dirty
//!    rows of every kind, a Windows-1252 `;` decimal-comma file as Spanish Excel writes them,
//!    gzipped files — and a stream of dollar trades with redeliveries and bad records;
//! 2. transform every raw file (processed / rejected / manifests);
//! 3. catalog the processed zone (tables, columns, partitions) in `catalog/catalog.json`;
//! 4. load the DuckDB warehouse with the shared load plan (idempotent);
//! 5. replay the trades through the trade processor in Kinesis-sized batches, archiving them;
//!    then build the enriched trade history from the archive into `trades_history`;
//! 6. write the dashboard `report/index.html` from the warehouse.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{Datelike, NaiveDate};
use clap::{Parser, ValueEnum};
use indicatif::ProgressBar;
use serde::Serialize;

use lago::contract::Dataset;
use lago::generate::{GenerateOptions, TextEncoding};
use lago::lake::{partition_prefix, Zone};
use lago::transform::{Manifest, Status, TransformOptions};

use crate::report;

#[derive(Clone, Copy, ValueEnum, Debug)]
pub enum Size {
    Small,
    Medium,
    Large,
}

#[derive(Parser)]
pub struct DemoArgs {
    /// The lake folder to create or reuse.
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    #[arg(long, value_enum, default_value = "small")]
    size: Size,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Worker threads for the transform (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Open the dashboard in the default browser when done.
    #[arg(long)]
    open: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

struct Planned {
    path: PathBuf,
    dataset: Dataset,
    load_date: NaiveDate,
    opts: GenerateOptions,
}

struct Sizes {
    proveedores: u64,
    clientes: u64,
    transacciones: u64,
    trades: u64,
    users: u64,
}

fn sizes(size: Size) -> Sizes {
    match size {
        Size::Small => Sizes {
            proveedores: 150,
            clientes: 1_500,
            transacciones: 20_000,
            trades: 30_000,
            users: 400,
        },
        Size::Medium => Sizes {
            proveedores: 1_000,
            clientes: 50_000,
            transacciones: 1_000_000,
            trades: 500_000,
            users: 5_000,
        },
        Size::Large => Sizes {
            proveedores: 5_000,
            clientes: 400_000,
            transacciones: 5_000_000,
            trades: 2_000_000,
            users: 20_000,
        },
    }
}

/// Records of each TRM export, whatever the size: one rate a business day from 2024-12-31, which
/// (less the dirty 3 %) rates every day until late December 2026, past the demo's trades
/// (the [`TRADE_DAYS`] up to 2026-11-28). Every export starts there, so the warehouse keeps the
/// newest one's rates.
const TRM_RECORDS: u64 = 500;

/// Days the demo's trades span (ending 2026-11-28): enough for 30-day features and 7-day labels.
const TRADE_DAYS: u32 = 60;

fn plan(lake: &Path, s: &Sizes, seed: u64) -> Vec<Planned> {
    let dates = [
        NaiveDate::from_ymd_opt(2025, 5, 10),
        NaiveDate::from_ymd_opt(2025, 6, 10),
        NaiveDate::from_ymd_opt(2025, 7, 10),
    ];
    let mut out = Vec::new();
    for (i, date) in dates.into_iter().flatten().enumerate() {
        let s_i = seed.wrapping_mul(31).wrapping_add(i as u64);
        let mk = |dataset: Dataset, rows: u64, enc: TextEncoding, delim: u8, name: &str| Planned {
            path: lake
                .join(partition_prefix(Zone::Raw, dataset, date))
                .join(name),
            dataset,
            load_date: date,
            opts: GenerateOptions {
                dataset,
                rows,
                seed: s_i,
                dirty_pct: 3.0,
                encoding: enc,
                delimiter: delim,
            },
        };
        let tag = format!("{:04}{:02}", date.year(), date.month());
        out.push(mk(
            Dataset::Proveedores,
            s.proveedores,
            TextEncoding::Utf8,
            b',',
            &format!("proveedores_{tag}.csv"),
        ));
        // Clientes come from Excel in Spanish: Windows-1252, `;`, decimal comma.
        out.push(mk(
            Dataset::Clientes,
            s.clientes,
            TextEncoding::Windows1252,
            b';',
            &format!("clientes_{tag}.csv"),
        ));
        out.push(mk(
            Dataset::Transacciones,
            s.transacciones,
            TextEncoding::Utf8,
            b',',
            &format!("transacciones_{tag}.csv.gz"),
        ));
        // The TRM as the open-data portal exports it: UTF-8, `,`, the rates from 2024-12-31 on.
        out.push(mk(
            Dataset::Trm,
            TRM_RECORDS,
            TextEncoding::Utf8,
            b',',
            &format!("trm_{tag}.csv"),
        ));
    }
    out
}

/// Per-dataset figures of the run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DatasetFigures {
    pub files: u64,
    pub files_rejected: u64,
    pub rows_generated: u64,
    pub rows_clean: u64,
    pub rows_ok: u64,
    pub rows_rejected: u64,
    pub warehouse_rows: u64,
}

/// One stage's timing.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
    pub items: u64,
    pub unit: String,
    pub bytes: u64,
}

/// What the demo prints at the end (and with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub lake: PathBuf,
    pub datasets: BTreeMap<String, DatasetFigures>,
    pub balanced: bool,
    pub trades: TradeFigures,
    pub stages: Vec<StageTiming>,
    /// Warehouse row counts before this run, when the warehouse existed.
    pub previous_warehouse_rows: Option<BTreeMap<String, u64>>,
    pub idempotent: Option<bool>,
    pub report: PathBuf,
    pub warehouse: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TradeFigures {
    pub records: u64,
    pub valid_generated: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub portfolios: u64,
    /// Rows of `trades_history` after the history stage (one per decided trade).
    pub history_rows: u64,
    /// Of the rows the history wrote this run, those without an official rate.
    pub history_without_trm: u64,
    /// Rows of `user_features` (one per user and day).
    pub feature_rows: u64,
    /// Labelled rows of the training set, when this run rebuilt it.
    pub training_rows: Option<u64>,
}

fn stage_bar(label: &str, len: u64) -> Option<ProgressBar> {
    let bar = crate::progress_bar(len, label)?;
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let mut opts = TransformOptions {
        pii_salt: crate::pii_salt()?,
        ..TransformOptions::default()
    };
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(crate::usage("--threads must be at least 1"));
        }
        opts.threads = t;
    }
    let lake = args.lake.clone();
    std::fs::create_dir_all(&lake).with_context(|| format!("creating {}", lake.display()))?;
    let warehouse_file = lake.join("warehouse.duckdb");
    let report_file = lake.join("report").join("index.html");
    let previous = if warehouse_file.exists() {
        Some(report::dataset_counts(&warehouse_file)?)
    } else {
        None
    };
    let s = sizes(args.size);
    let mut stages = Vec::new();

    // 1. Generate.
    let planned = plan(&lake, &s, args.seed);
    let t = Instant::now();
    let bar = stage_bar("generate", planned.len() as u64 + 1);
    let mut reports = Vec::new();
    let mut raw_bytes = 0;
    for p in &planned {
        reports.push(crate::generate_to(&p.opts, &p.path)?);
        raw_bytes += std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0);
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    let trades_file = lake.join("trades").join("stream.ndjson");
    let trade_report = crate::trades::generate_file(
        &trades_file,
        &lago::trades::TradeGenerateOptions {
            trades: s.trades,
            users: s.users,
            seed: args.seed,
            dirty_pct: 3.0,
            // Two months of trades: weekly features and labels for the training set.
            span_days: TRADE_DAYS,
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    stages.push(StageTiming {
        stage: "generate".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: reports.iter().map(|r| r.rows).sum::<u64>() + trade_report.lines,
        unit: "rows".into(),
        bytes: raw_bytes,
    });

    // 2. Transform, in the state machine's order: one file at a time.
    let t = Instant::now();
    let bar = stage_bar("transform", planned.len() as u64);
    let mut figures: BTreeMap<String, DatasetFigures> = BTreeMap::new();
    let mut manifests: Vec<Manifest> = Vec::new();
    for (p, r) in planned.iter().zip(&reports) {
        let m = crate::transform_file(&p.path, &lake, p.dataset, p.load_date, &opts, None)?;
        let f = figures.entry(p.dataset.name().to_string()).or_default();
        f.files += 1;
        f.files_rejected += u64::from(m.status == Status::Rejected);
        f.rows_generated += r.rows;
        f.rows_clean += r.clean;
        f.rows_ok += m.rows_ok;
        f.rows_rejected += m.rows_rejected;
        manifests.push(m);
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rows_in: u64 = manifests.iter().map(|m| m.rows_in).sum();
    stages.push(StageTiming {
        stage: "transform".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: rows_in,
        unit: "rows".into(),
        bytes: raw_bytes,
    });

    // 3. Catalog the processed zone.
    let t = Instant::now();
    let catalog = lago::catalog::scan(&lake).context("cataloguing the processed zone")?;
    let catalog_file = lake.join("catalog").join("catalog.json");
    if let Some(dir) = catalog_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&catalog_file, serde_json::to_vec_pretty(&catalog)?)
        .with_context(|| format!("writing {}", catalog_file.display()))?;
    stages.push(StageTiming {
        stage: "catalog".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: catalog
            .tables
            .iter()
            .map(|t| t.partitions.len() as u64)
            .sum(),
        unit: "partitions".into(),
        bytes: 0,
    });

    // 4. Load the warehouse with the shared load plan.
    let t = Instant::now();
    let bar = stage_bar("load", 1);
    let load = lago_warehouse::load_lake(&lake, &warehouse_file, &Dataset::ALL)
        .context("loading the warehouse")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for d in &load.datasets {
        if let Some(f) = figures.get_mut(d.dataset.name()) {
            f.warehouse_rows = d.table_rows;
        }
    }
    stages.push(StageTiming {
        stage: "load".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: load.datasets.iter().map(|d| d.rows_staged).sum(),
        unit: "rows".into(),
        bytes: 0,
    });

    // 5. Replay the trades in Kinesis-sized batches.
    let t = Instant::now();
    let bar = stage_bar("trades", 1);
    let file =
        File::open(&trades_file).with_context(|| format!("reading {}", trades_file.display()))?;
    let replay = lago::trades::replay(BufReader::with_capacity(1 << 20, file), 10_000, Some(&lake))
        .context("replaying the trades")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    stages.push(StageTiming {
        stage: "trades".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: replay.records,
        unit: "records".into(),
        bytes: std::fs::metadata(&trades_file)
            .map(|m| m.len())
            .unwrap_or(0),
    });
    let trades = TradeFigures {
        records: replay.records,
        valid_generated: trade_report.valid,
        applied: replay.applied,
        duplicates: replay.duplicates,
        rejected: replay.rejected.clone(),
        portfolios: replay.portfolios.len() as u64,
        history_rows: 0,
        history_without_trm: 0,
        feature_rows: 0,
        training_rows: None,
    };

    // 6. The trade history: the archive the replay wrote, enriched, into trades_history.
    let t = Instant::now();
    let history = crate::trades::history(&lake, Some(&warehouse_file), None)?;
    let loaded = history.warehouse.unwrap_or_default();
    stages.push(StageTiming {
        stage: "history".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: history.history.lines,
        unit: "archived lines".into(),
        bytes: 0,
    });
    let trades = TradeFigures {
        history_rows: loaded.table_rows,
        history_without_trm: history.history.rows_without_trm,
        feature_rows: loaded.feature_rows,
        training_rows: history.features.as_ref().map(|f| f.training_rows),
        ..trades
    };

    // 7. Report: the demo's own tables, then the dashboard from the warehouse.
    let t = Instant::now();
    report::store_run_tables(&warehouse_file, &manifests, &stages)?;
    let dashboard = report::build(&warehouse_file)?;
    report::write(&dashboard, &report_file)?;
    stages.push(StageTiming {
        stage: "report".into(),
        seconds: t.elapsed().as_secs_f64(),
        items: dashboard.charts.len() as u64,
        unit: "charts".into(),
        bytes: 0,
    });

    let balanced = figures
        .values()
        .all(|f| f.rows_ok + f.rows_rejected == f.rows_generated && f.rows_ok == f.rows_clean);
    let mut now_counts: BTreeMap<String, u64> = figures
        .iter()
        .map(|(k, f)| (k.clone(), f.warehouse_rows))
        .collect();
    now_counts.insert("trades_history".into(), trades.history_rows);
    let idempotent = previous.as_ref().map(|p| *p == now_counts);
    let summary = DemoSummary {
        lake: lake.clone(),
        datasets: figures,
        balanced,
        trades,
        stages,
        previous_warehouse_rows: previous,
        idempotent,
        report: report_file.clone(),
        warehouse: warehouse_file,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, started.elapsed().as_secs_f64());
    }
    if args.open {
        open_in_browser(&report_file);
    }
    if !balanced {
        bail!("row counts do not reconcile with what was generated");
    }
    if idempotent == Some(false) {
        bail!("the warehouse counts changed on a re-run over the same lake");
    }
    Ok(())
}

fn print_summary(s: &DemoSummary, total: f64) {
    println!("lago demo — lake: {}", s.lake.display());
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "dataset", "files", "generated", "ok", "rejected", "warehouse"
    );
    for (d, f) in &s.datasets {
        println!(
            "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10}",
            d, f.files, f.rows_generated, f.rows_ok, f.rows_rejected, f.warehouse_rows
        );
    }
    println!(
        "every row accounted for: {}",
        if s.balanced {
            "yes (ok + rejected = generated, ok = clean)"
        } else {
            "NO"
        }
    );
    let t = &s.trades;
    let rejected: u64 = t.rejected.values().sum();
    println!(
        "trades: {} records → {} applied, {} duplicates, {} rejected; {} portfolios",
        t.records, t.applied, t.duplicates, rejected, t.portfolios
    );
    for (reason, n) in &t.rejected {
        println!("    {reason}: {n}");
    }
    println!(
        "trade history: {} rows in trades_history ({} written this run without an official rate); {} rows in user_features{}",
        t.history_rows,
        t.history_without_trm,
        t.feature_rows,
        t.training_rows
            .map(|n| format!(", {n} labelled rows in the training set"))
            .unwrap_or_default()
    );
    println!("stages:");
    for st in &s.stages {
        let rate = if st.seconds > 0.0 {
            st.items as f64 / st.seconds
        } else {
            0.0
        };
        let mb = if st.bytes > 0 && st.seconds > 0.0 {
            format!(", {:.1} MB/s", st.bytes as f64 / 1e6 / st.seconds)
        } else {
            String::new()
        };
        println!(
            "  {:<10} {:>7.2}s  {:>10} {} ({:.0}/s{mb})",
            st.stage, st.seconds, st.items, st.unit, rate
        );
    }
    match s.idempotent {
        Some(true) => println!("re-run over the same lake: warehouse counts identical to the previous run (idempotent loads)"),
        Some(false) => println!("re-run over the same lake: warehouse counts CHANGED"),
        None => println!("first run on this lake: run it again to see the loads are idempotent"),
    }
    println!("warehouse: {}", s.warehouse.display());
    println!("dashboard: {}", s.report.display());
    println!("total {total:.2}s");
}

fn open_in_browser(path: &Path) {
    let Ok(abs) = path.canonicalize() else {
        return;
    };
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(opener).arg(&abs).spawn() {
        Ok(_) => {}
        Err(e) => eprintln!(
            "could not open a browser ({opener}: {e}); open {} yourself",
            abs.display()
        ),
    }
}
