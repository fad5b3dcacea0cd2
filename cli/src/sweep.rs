//! `lago sweep`: the landing function's sweep on a local lake — every file under `raw/<dataset>/`
//! that has no manifest (named, as in AWS, from the file's identity: its key and content hash)
//! is transformed; what has one is left alone, so a second sweep finds nothing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use serde::Serialize;

use lago::ingest::landing::{load_date, raw_dataset};
use lago::lake::{LakeStore, LocalLake};
use lago::transform::{self, SourceIdentity, Status, TransformOptions, TransformRequest};

#[derive(Parser)]
pub struct SweepArgs {
    /// The lake folder (laid out like the bucket).
    #[arg(long)]
    lake: PathBuf,
    /// Only files modified on or after this day (UTC), as the function's look-back window.
    #[arg(long)]
    since: Option<NaiveDate>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What a sweep found and did.
#[derive(Debug, Default, Serialize)]
pub struct SweepSummary {
    pub listed: u32,
    pub processed: u32,
    pub ignored: u32,
    pub unprocessed: u32,
    pub transformed: Vec<Swept>,
}

/// One file the sweep transformed.
#[derive(Debug, Serialize)]
pub struct Swept {
    pub key: String,
    pub status: Status,
    pub rows_in: u64,
    pub rows_ok: u64,
    pub rows_rejected: u64,
    pub manifest: String,
}

pub fn run(args: SweepArgs) -> Result<()> {
    if !args.lake.is_dir() {
        return Err(crate::usage(format!(
            "--lake {} is not a folder",
            args.lake.display()
        )));
    }
    let lake = LocalLake::new(&args.lake);
    let opts = TransformOptions {
        pii_salt: crate::pii_salt()?,
        ..TransformOptions::default()
    };
    let mut summary = SweepSummary::default();
    for key in lake.list("raw/").context("listing raw/")? {
        let path = lake.path(&key)?;
        let modified: DateTime<Utc> = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(DateTime::from)
            .with_context(|| format!("reading {}", path.display()))?;
        if args.since.is_some_and(|d| modified.date_naive() < d) {
            continue;
        }
        summary.listed += 1;
        let Ok(dataset) = raw_dataset(&key) else {
            summary.ignored += 1;
            continue;
        };
        let req = TransformRequest {
            dataset,
            load_date: load_date(&key, modified),
            source: SourceIdentity::of_local_file(&path, &key)
                .with_context(|| format!("reading {}", path.display()))?,
        };
        if lake.path(&transform::manifest_key(&req))?.is_file() {
            summary.processed += 1;
            continue;
        }
        summary.unprocessed += 1;
        let m = crate::transform_file(&path, &args.lake, dataset, req.load_date, &opts, None)?;
        summary.transformed.push(Swept {
            key,
            status: m.status,
            rows_in: m.rows_in,
            rows_ok: m.rows_ok,
            rows_rejected: m.rows_rejected,
            manifest: m.outputs.manifest,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} raw files: {} processed already, {} not dataset files, {} transformed now",
            summary.listed, summary.processed, summary.ignored, summary.unprocessed
        );
        for s in &summary.transformed {
            println!(
                "  {} → {:?}, {} rows ({} ok, {} rejected), {}",
                s.key, s.status, s.rows_in, s.rows_ok, s.rows_rejected, s.manifest
            );
        }
    }
    Ok(())
}
