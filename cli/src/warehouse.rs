//! `lago load` and `lago sql`: the local twin of the Redshift load. `load` runs the DuckDB
//! rendering of the same load plan over every processed file of a lake folder; `sql` queries the
//! resulting DuckDB file. Built only with the `warehouse` feature (the default).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use lago::contract::Dataset;
use lago_warehouse::{LoadSummary, SkipReason};

#[derive(Parser)]
pub struct LoadArgs {
    /// The lake folder (laid out like the bucket: processed/, manifests/, …).
    #[arg(long)]
    lake: PathBuf,
    /// The DuckDB warehouse file (created if missing).
    #[arg(long)]
    warehouse: PathBuf,
    /// Datasets to load (repeat or separate with commas); all of them by default.
    #[arg(long = "dataset", value_delimiter = ',')]
    datasets: Vec<Dataset>,
    /// Print the load summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
pub struct SqlArgs {
    /// The DuckDB warehouse file written by `lago load` (opened read-only).
    #[arg(long)]
    warehouse: PathBuf,
    /// One SQL statement; tables resolve in the `lago` schema (`clientes`, `lago.clientes`).
    query: String,
    /// Print the rows as a JSON array of objects (decimals as strings, exact).
    #[arg(long)]
    json: bool,
}

pub fn run_load(args: LoadArgs) -> Result<()> {
    let datasets = if args.datasets.is_empty() {
        Dataset::ALL.to_vec()
    } else {
        let mut d = args.datasets;
        d.sort();
        d.dedup();
        d
    };
    let summary =
        lago_warehouse::load_lake(&args.lake, &args.warehouse, &datasets).with_context(|| {
            format!(
                "loading {} into {}",
                args.lake.display(),
                args.warehouse.display()
            )
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn print_summary(s: &LoadSummary) {
    println!(
        "{} ← lake loaded in {:.2} s",
        s.warehouse.display(),
        s.duration_ms as f64 / 1000.0
    );
    println!(
        "{:<14} {:>6} {:>8} {:>10} {:>10} {:>10} {:>11}",
        "dataset", "files", "skipped", "rows read", "replaced", "inserted", "table rows"
    );
    for d in &s.datasets {
        println!(
            "{:<14} {:>6} {:>8} {:>10} {:>10} {:>10} {:>11}",
            d.dataset.name(),
            d.files_loaded,
            d.files_skipped,
            d.rows_staged,
            d.rows_replaced,
            d.rows_inserted,
            d.table_rows
        );
    }
    for k in &s.skipped {
        let why = match k.reason {
            SkipReason::Rejected => "file rejected",
            SkipReason::NoRows => "no accepted rows",
            SkipReason::Superseded => "a newer transform of the same key was loaded",
        };
        println!("  skipped {} ({why})", k.source_key);
    }
}

pub fn run_sql(args: SqlArgs) -> Result<()> {
    let result = lago_warehouse::query(&args.warehouse, &args.query)
        .with_context(|| format!("querying {}", args.warehouse.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result.json_rows())?);
    } else {
        println!("{result}");
    }
    Ok(())
}
