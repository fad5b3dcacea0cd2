//! `lago demo`: generates realistic exports of every dataset into `raw/` of a lake folder — dirty
//! rows of every kind, one file exported the way Spanish-language Excel does (Windows-1252, `;`,
//! decimal comma), one gzipped — then runs each through the transform and checks that every
//! generated row is accounted for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use chrono::{Datelike, NaiveDate};
use clap::{Parser, ValueEnum};

use lago::contract::Dataset;
use lago::generate::{GenerateOptions, TextEncoding};
use lago::lake::{partition_prefix, Zone};
use lago::transform::{Status, TransformOptions};

#[derive(Clone, Copy, ValueEnum)]
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
}

struct Planned {
    path: PathBuf,
    dataset: Dataset,
    load_date: NaiveDate,
    opts: GenerateOptions,
}

fn plan(lake: &Path, size: Size, seed: u64) -> Vec<Planned> {
    let (prov, cli, tx) = match size {
        Size::Small => (150, 1_500, 20_000),
        Size::Medium => (1_000, 50_000, 1_000_000),
        Size::Large => (5_000, 400_000, 4_000_000),
    };
    let dates = [
        NaiveDate::from_ymd_opt(2025, 5, 10),
        NaiveDate::from_ymd_opt(2025, 6, 10),
        NaiveDate::from_ymd_opt(2025, 7, 10),
    ];
    let mut out = Vec::new();
    for (i, date) in dates.into_iter().flatten().enumerate() {
        let s = seed.wrapping_mul(31).wrapping_add(i as u64);
        let mk = |dataset: Dataset, rows: u64, enc: TextEncoding, delim: u8, name: &str| Planned {
            path: lake
                .join(partition_prefix(Zone::Raw, dataset, date))
                .join(name),
            dataset,
            load_date: date,
            opts: GenerateOptions {
                dataset,
                rows,
                seed: s,
                dirty_pct: 3.0,
                encoding: enc,
                delimiter: delim,
            },
        };
        let tag = format!("{:04}{:02}", date.year(), date.month());
        out.push(mk(
            Dataset::Proveedores,
            prov,
            TextEncoding::Utf8,
            b',',
            &format!("proveedores_{tag}.csv"),
        ));
        // Clientes come from Excel in Spanish: Windows-1252, `;`, decimal comma.
        out.push(mk(
            Dataset::Clientes,
            cli,
            TextEncoding::Windows1252,
            b';',
            &format!("clientes_{tag}.csv"),
        ));
        out.push(mk(
            Dataset::Transacciones,
            tx,
            TextEncoding::Utf8,
            b',',
            &format!("transacciones_{tag}.csv.gz"),
        ));
    }
    out
}

#[derive(Default)]
struct Tally {
    files: u64,
    rejected_files: u64,
    generated: u64,
    clean: u64,
    rows_ok: u64,
    rows_rejected: u64,
    bytes: u64,
    millis: u64,
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
    let planned = plan(&args.lake, args.size, args.seed);
    eprintln!(
        "generating {} raw files into {}",
        planned.len(),
        args.lake.display()
    );
    let gen_started = Instant::now();
    let mut reports = Vec::new();
    for p in &planned {
        reports.push(crate::generate_to(&p.opts, &p.path)?);
    }
    let gen_secs = gen_started.elapsed().as_secs_f64();

    let mut tallies: BTreeMap<Dataset, Tally> = BTreeMap::new();
    let bar = crate::progress_bar(planned.len() as u64, "transform");
    let tr_started = Instant::now();
    for (p, report) in planned.iter().zip(&reports) {
        let t0 = Instant::now();
        let m = crate::transform_file(&p.path, &args.lake, p.dataset, p.load_date, &opts, None)?;
        let t = tallies.entry(p.dataset).or_default();
        t.files += 1;
        t.rejected_files += u64::from(m.status == Status::Rejected);
        t.generated += report.rows;
        t.clean += report.clean;
        t.rows_ok += m.rows_ok;
        t.rows_rejected += m.rows_rejected;
        t.bytes += std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0);
        t.millis += t0.elapsed().as_millis() as u64;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let tr_secs = tr_started.elapsed().as_secs_f64();

    println!("lago demo — lake: {}", args.lake.display());
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "dataset", "files", "generated", "ok", "rejected", "MB", "rows/s"
    );
    let mut balanced = true;
    for (d, t) in &tallies {
        let secs = (t.millis as f64 / 1000.0).max(1e-3);
        println!(
            "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10.1} {:>10.0}",
            d.name(),
            t.files,
            t.generated,
            t.rows_ok,
            t.rows_rejected,
            t.bytes as f64 / 1e6,
            t.generated as f64 / secs
        );
        balanced &= t.rows_ok + t.rows_rejected == t.generated && t.rows_ok == t.clean;
    }
    println!(
        "generate {gen_secs:.2}s · transform {tr_secs:.2}s · total {:.2}s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "every row accounted for: {}",
        if balanced {
            "yes (ok + rejected = generated, ok = clean)"
        } else {
            "NO"
        }
    );
    println!(
        "outputs: {}/processed, rejected, manifests",
        args.lake.display()
    );
    if !balanced {
        bail!("row counts do not reconcile with what was generated");
    }
    Ok(())
}
