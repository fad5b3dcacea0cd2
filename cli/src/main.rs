//! `lago`: the energy lake on a laptop.
//!
//! Runs the same library code as the Lambda functions against a local folder laid out like the
//! lake bucket: `lago transform` turns one raw CSV into processed Parquet, rejected rows and a
//! manifest; `lago generate` writes realistic synthetic exports; `lago demo` does both end to end.

#[cfg(feature = "warehouse")]
mod dashboard;
#[cfg(feature = "warehouse")]
mod demo;
mod redrive;
#[cfg(feature = "warehouse")]
mod report;
mod sweep;
mod trades;
#[cfg(feature = "warehouse")]
mod warehouse;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use lago::contract::Dataset;
use lago::generate::{generate, GenerateOptions, GenerateReport, TextEncoding};
use lago::lake::{self, LocalLake};
use lago::transform::{
    self, LocalFile, Manifest, SourceIdentity, Status, TransformOptions, TransformRequest,
};

/// Exit status when the whole file was rejected (the manifest is still written and printed).
const EXIT_FILE_REJECTED: u8 = 3;
/// Exit status of usage errors (as clap uses for its own).
const EXIT_USAGE: u8 = 2;
/// Exit status when an object does not match its manifest (changed, missing, unreadable).
const EXIT_INTEGRITY: u8 = 4;

/// An error in how the command was called, rather than in what it did.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(String);

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[derive(Parser)]
#[command(name = "lago", version, about = "The lago energy lake, locally: transform raw CSV exports into typed Parquet, generate realistic data, run the demo.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transform one raw CSV (optionally gzipped) into processed/, rejected/ and manifests/ of a lake folder.
    Transform(TransformArgs),
    /// Write a deterministic synthetic export of one dataset, optionally with dirty rows.
    Generate(GenerateArgs),
    /// The whole product on embedded defaults: generate, transform, catalog, load, replay trades, dashboard.
    #[cfg(feature = "warehouse")]
    Demo(demo::DemoArgs),
    /// Render the KPI dashboard again from an existing warehouse.
    #[cfg(feature = "warehouse")]
    Report(report::ReportArgs),
    /// Load every processed file of a lake folder into a DuckDB warehouse (the Redshift load plan, rendered for DuckDB).
    #[cfg(feature = "warehouse")]
    Load(warehouse::LoadArgs),
    /// Run one SQL query on a DuckDB warehouse written by `lago load` and print the result.
    #[cfg(feature = "warehouse")]
    Sql(warehouse::SqlArgs),
    /// Dollar trades locally: generate a stream, replay it through the processor, benchmark it.
    Trades(trades::TradesArgs),
    /// Recompute the checksum of every output the lake's manifests list; exits 4 on any mismatch.
    Verify(VerifyArgs),
    /// Transform every raw file of a lake folder that has no manifest yet (a second sweep finds nothing).
    Sweep(sweep::SweepArgs),
    /// Replay a failure queue in AWS: the landing DLQ, or the trades stream's on-failure records.
    Redrive(redrive::RedriveArgs),
    /// Print the Glue tables of the processed zone, generated from the contracts, as the
    /// template declares them (CloudFormation `TableInput`, JSON).
    Catalog(CatalogArgs),
}

#[derive(Parser)]
struct CatalogArgs {
    /// Only this dataset's table (default: every processed table, by dataset name).
    #[arg(long)]
    dataset: Option<Dataset>,
}

#[derive(Parser)]
struct VerifyArgs {
    /// The lake folder (laid out like the bucket).
    #[arg(long)]
    lake: PathBuf,
    /// Only the manifests under this prefix (e.g. `manifests/clientes/`).
    #[arg(long, default_value = "manifests/")]
    prefix: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct TransformArgs {
    /// The raw file (CSV, TSV, gzip).
    #[arg(long)]
    input: PathBuf,
    /// The lake folder (laid out like the bucket).
    #[arg(long)]
    lake: PathBuf,
    /// clientes, proveedores, transacciones or trm; by default taken from `raw/<dataset>/` in the path.
    #[arg(long)]
    dataset: Option<Dataset>,
    /// Load date (YYYY-MM-DD); by default from `year=/month=/day=` in the path, else today (UTC).
    #[arg(long)]
    load_date: Option<NaiveDate>,
    /// Worker threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Parquet part size in MiB.
    #[arg(long, default_value_t = 128)]
    part_size_mb: u64,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    #[value(name = "utf-8")]
    Utf8,
    #[value(name = "windows-1252")]
    Windows1252,
}

#[derive(Parser)]
struct GenerateArgs {
    /// clientes, proveedores, transacciones or trm (one rate a business day from 2024-12-31).
    #[arg(long)]
    dataset: Dataset,
    /// Data records to write.
    #[arg(long)]
    rows: u64,
    /// Output file (`.gz` to gzip it).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Percentage of records with exactly one defect (every reject reason is mixed in).
    #[arg(long, default_value_t = 0.0)]
    dirty: f64,
    #[arg(long, value_enum, default_value = "utf-8")]
    encoding: EncodingArg,
    /// Field delimiter: `,` or `;` (`;` files use a decimal comma, as Excel does).
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Print the generation report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Transform(args) => run_transform(args),
        Command::Generate(args) => run_generate(args).map(|_| ExitCode::SUCCESS),
        #[cfg(feature = "warehouse")]
        Command::Demo(args) => demo::run(args).map(|_| ExitCode::SUCCESS),
        #[cfg(feature = "warehouse")]
        Command::Report(args) => report::run(args).map(|_| ExitCode::SUCCESS),
        #[cfg(feature = "warehouse")]
        Command::Load(args) => warehouse::run_load(args).map(|_| ExitCode::SUCCESS),
        #[cfg(feature = "warehouse")]
        Command::Sql(args) => warehouse::run_sql(args).map(|_| ExitCode::SUCCESS),
        Command::Trades(args) => trades::run(args).map(|_| ExitCode::SUCCESS),
        Command::Verify(args) => run_verify(args),
        Command::Sweep(args) => sweep::run(args).map(|_| ExitCode::SUCCESS),
        Command::Redrive(args) => redrive::run(args),
        Command::Catalog(args) => run_catalog(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A reader that goes away (`lago sql … | head`) ends the process quietly, as with other
/// command-line tools, instead of failing the next print with a panic.
#[cfg(unix)]
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: runs first in `main`, before any other thread exists, and only restores the
    // default disposition of SIGPIPE (which the Rust runtime sets to "ignore").
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_pipe() {}

/// Log filter: `LAGO_LOG`, else `RUST_LOG`, else warnings only (the CLI's own output is on stdout
/// and its progress bars on stderr).
fn init_tracing() {
    let filter = log_filter(|name| std::env::var(name).ok())
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .init();
}

/// The first non-blank of `LAGO_LOG` and `RUST_LOG`.
fn log_filter(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["LAGO_LOG", "RUST_LOG"]
        .into_iter()
        .filter_map(lookup)
        .find(|v| !v.trim().is_empty())
}

/// The PII salt: `LAGO_PII_SALT_FILE` (a file holding it) or `LAGO_PII_SALT`; without either, a
/// development default that is announced, since hashes made with it are not secret.
pub(crate) fn pii_salt() -> Result<Vec<u8>> {
    if let Some(path) = std::env::var_os("LAGO_PII_SALT_FILE") {
        let salt = std::fs::read(&path)
            .with_context(|| format!("reading the PII salt file {}", Path::new(&path).display()))?;
        let trimmed = salt.trim_ascii().to_vec();
        if trimmed.is_empty() {
            bail!("the PII salt file {} is empty", Path::new(&path).display());
        }
        return Ok(trimmed);
    }
    if let Ok(salt) = std::env::var("LAGO_PII_SALT") {
        if !salt.is_empty() {
            return Ok(salt.into_bytes());
        }
    }
    tracing::warn!(
        "no PII salt configured (LAGO_PII_SALT_FILE or LAGO_PII_SALT): using the development salt; identity hashes are not protected"
    );
    Ok(b"lago-development-salt".to_vec())
}

/// The object key a local raw file stands for: from `raw/` on when the path has it.
/// The datasets a file can be, as a sentence: `clientes, proveedores, transacciones or trm`.
fn dataset_choices() -> String {
    let names: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

pub(crate) fn source_key(path: &Path) -> String {
    let s = path.to_string_lossy().replace('\\', "/");
    match s.find("raw/") {
        Some(i) if i == 0 || s[..i].ends_with('/') => s[i..].to_string(),
        _ => lake::file_name(&s).to_string(),
    }
}

pub(crate) fn transform_file(
    input: &Path,
    lake_dir: &Path,
    dataset: Dataset,
    load_date: NaiveDate,
    opts: &TransformOptions,
    progress: Option<&ProgressBar>,
) -> Result<Manifest> {
    let key = source_key(input);
    let identity = SourceIdentity::of_local_file_by_content(input, &key)
        .with_context(|| format!("reading {}", input.display()))?;
    let req = TransformRequest {
        dataset,
        load_date,
        source: identity,
    };
    let store = LocalLake::new(lake_dir);
    let tick = |bytes: u64| {
        if let Some(p) = progress {
            p.set_position(bytes);
        }
    };
    let manifest = transform::transform(
        &LocalFile(input.to_path_buf()),
        &req,
        opts,
        &store,
        Some(&tick),
    )
    .with_context(|| format!("transforming {}", input.display()))?;
    Ok(manifest)
}

fn run_transform(args: TransformArgs) -> Result<ExitCode> {
    let meta = std::fs::metadata(&args.input)
        .with_context(|| format!("cannot read the input file {}", args.input.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", args.input.display());
    }
    let path_text = args.input.to_string_lossy();
    let dataset = match args.dataset.or_else(|| lake::dataset_from_key(&path_text)) {
        Some(d) => d,
        None => {
            return Err(usage(format!(
                "cannot tell the dataset of {}: pass --dataset ({}) or put the file under raw/<dataset>/",
                args.input.display(),
                dataset_choices()
            )))
        }
    };
    let load_date = args
        .load_date
        .or_else(|| lake::date_from_key(&path_text))
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let mut opts = TransformOptions {
        part_size: args.part_size_mb.max(1) << 20,
        pii_salt: pii_salt()?,
        ..TransformOptions::default()
    };
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(usage("--threads must be at least 1"));
        }
        opts.threads = t;
    }
    let bar = progress_bar(meta.len(), &format!("{dataset}"));
    let manifest = transform_file(
        &args.input,
        &args.lake,
        dataset,
        load_date,
        &opts,
        bar.as_ref(),
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        print_summary(&manifest, &args.lake);
    }
    Ok(if manifest.status == Status::Rejected {
        ExitCode::from(EXIT_FILE_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// A progress bar on stderr, only when it is a terminal.
pub(crate) fn progress_bar(len: u64, label: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    Some(bar)
}

fn print_summary(m: &Manifest, lake_dir: &Path) {
    let status = match m.status {
        Status::Ok => "ok".to_string(),
        Status::Rejected => format!(
            "REJECTED ({}: {})",
            m.file_reason.as_deref().unwrap_or("?"),
            m.file_detail.as_deref().unwrap_or("")
        ),
    };
    println!("{} {} → {status}", m.dataset, m.source.key);
    println!(
        "  rows in {}  ok {}  rejected {}  ({} ms, {} thread(s))",
        m.rows_in, m.rows_ok, m.rows_rejected, m.duration_ms, m.threads
    );
    let st = &m.stages;
    println!(
        "  stages: read {} ms, validate {} ms, keys {} ms, parquet {} ms, rejects {} ms",
        st.read_ms, st.validate_ms, st.keys_ms, st.parquet_ms, st.rejects_ms
    );
    for (reason, n) in &m.rejects_by_reason {
        println!("    {reason}: {n}");
    }
    if !m.ignored_columns.is_empty() {
        println!("  ignored columns: {}", m.ignored_columns.join(", "));
    }
    for o in &m.outputs.processed {
        println!(
            "  {}  ({} rows, {} bytes)",
            lake_dir.join(&o.key).display(),
            o.rows,
            o.bytes
        );
    }
    if let Some(r) = &m.outputs.rejected {
        println!("  {}  ({} rows)", lake_dir.join(&r.key).display(), r.rows);
    }
    println!("  {}", lake_dir.join(&m.outputs.manifest).display());
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let delimiter = match args.delimiter.as_str() {
        "," => b',',
        ";" => b';',
        "|" => b'|',
        "\\t" | "\t" | "tab" => b'\t',
        other => {
            return Err(usage(format!(
                "unsupported delimiter {other:?}: use , ; | or tab"
            )))
        }
    };
    if !(0.0..=100.0).contains(&args.dirty) {
        return Err(usage("--dirty is a percentage between 0 and 100"));
    }
    let opts = GenerateOptions {
        dataset: args.dataset,
        rows: args.rows,
        seed: args.seed,
        dirty_pct: args.dirty,
        encoding: match args.encoding {
            EncodingArg::Utf8 => TextEncoding::Utf8,
            EncodingArg::Windows1252 => TextEncoding::Windows1252,
        },
        delimiter,
    };
    let report = generate_to(&opts, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "{}: {} rows ({} clean, {} dirty), {} bytes → {}",
            args.dataset,
            report.rows,
            report.clean,
            report.rows - report.clean,
            report.bytes,
            args.out.display()
        );
    }
    Ok(())
}

/// Writes a generated file; `.gz` paths are gzipped.
pub(crate) fn generate_to(opts: &GenerateOptions, out: &Path) -> Result<GenerateReport> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let report = if out.extension().is_some_and(|e| e == "gz") {
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        let r = generate(opts, &mut gz)?;
        gz.finish()
            .and_then(|mut w| w.flush())
            .with_context(|| format!("writing {}", out.display()))?;
        r
    } else {
        let mut w = BufWriter::new(file);
        let r = generate(opts, &mut w)?;
        w.flush()?;
        r
    };
    Ok(report)
}

fn run_catalog(args: CatalogArgs) -> Result<ExitCode> {
    let out = match args.dataset {
        Some(d) => lago::catalog::table_input(d),
        None => serde_json::Value::Object(
            Dataset::ALL
                .iter()
                .map(|d| (d.name().to_string(), lago::catalog::table_input(*d)))
                .collect(),
        ),
    };
    writeln!(io::stdout(), "{}", serde_json::to_string_pretty(&out)?)?;
    Ok(ExitCode::SUCCESS)
}

fn run_verify(args: VerifyArgs) -> Result<ExitCode> {
    if !args.lake.is_dir() {
        return Err(usage(format!(
            "--lake {} is not a folder",
            args.lake.display()
        )));
    }
    if !args.prefix.starts_with("manifests/") {
        return Err(usage("--prefix must start with manifests/"));
    }
    let lake = LocalLake::new(&args.lake);
    let report = lago::integrity::verify(&lake, &args.prefix)
        .with_context(|| format!("reading the lake at {}", args.lake.display()))?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} manifests, {} objects: {} verified ({} bytes read), {} without a checksum, {} problems",
            report.manifests,
            report.objects,
            report.verified,
            report.bytes,
            report.without_checksum.len(),
            report.problems.len()
        )?;
        for p in &report.problems {
            writeln!(
                out,
                "{}\t{}\t(manifest {})\texpected {}\tfound {}",
                p.finding.code(),
                p.key,
                p.manifest,
                p.expected.as_deref().unwrap_or("-"),
                p.found.as_deref().unwrap_or("-")
            )?;
        }
    }
    out.flush()?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INTEGRITY)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn lago_log_wins_over_rust_log_and_blank_counts_as_unset() {
        let both = env(&[("LAGO_LOG", "debug"), ("RUST_LOG", "info")]);
        assert_eq!(log_filter(both).as_deref(), Some("debug"));
        let rust_only = env(&[("LAGO_LOG", " "), ("RUST_LOG", "lago=trace")]);
        assert_eq!(log_filter(rust_only).as_deref(), Some("lago=trace"));
        assert_eq!(log_filter(env(&[])), None);
    }
}
