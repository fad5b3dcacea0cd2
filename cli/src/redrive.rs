//! `lago redrive landing|trades`: the functions' redrives, run from a workstation against AWS
//! (or any endpoint `AWS_ENDPOINT_URL` names) — the same code as `{"action": "redrive"}`.
//!
//! The settings are the function's own environment variables: the process environment, with
//! those of `--function-env FILE` on top — the JSON `aws lambda get-function-configuration
//! --query Environment` prints (`{"Variables": {...}}`), or a plain object of strings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;

use lago::aws::redrive::{KinesisShardReader, SqsFailureQueue};
use lago::aws::sfn::SfnStarter;
use lago::redrive::{redrive_queue, RedriveReport, RedriveRequest};
use lago::runtime::env::Env;

#[derive(Parser)]
pub struct RedriveArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Replay the landing DLQ's events: each file's execution starts under its landing name
    /// (once, however often it is redriven). Settings of s3-landing: STATE_MACHINE_ARN,
    /// LANDING_DLQ_URL, LAKE_BUCKET.
    Landing(Options),
    /// Read the batches of the trades stream's on-failure queue back from the stream and apply
    /// them (each trade once). Settings of trades-stream: STREAM_FAILURE_QUEUE_URL,
    /// STREAM_RETENTION_HOURS, PORTFOLIOS_TABLE, DECISIONS_TABLE, DEAD_LETTER_QUEUE_URL,
    /// TRADES_TOPIC_ARN, LAKE_BUCKET, RECOMMENDER_ENDPOINT.
    Trades(Options),
}

#[derive(Parser)]
struct Options {
    /// The function's environment variables, as `aws lambda get-function-configuration
    /// --query Environment` prints them (or a plain JSON object of strings).
    #[arg(long)]
    function_env: Option<PathBuf>,
    /// The queue to redrive (default: the function's LANDING_DLQ_URL / STREAM_FAILURE_QUEUE_URL).
    #[arg(long)]
    queue_url: Option<String>,
    /// Read and report what a redrive would do; start, apply and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// The most messages to read.
    #[arg(long, default_value_t = lago::redrive::DEFAULT_MAX_MESSAGES as u64)]
    max_messages: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the redrive; exits non-zero when a message is left on its queue by a real redrive.
pub fn run(args: RedriveArgs) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (options, report) = match args.target {
        Target::Landing(o) => {
            let report = runtime.block_on(landing(&o))?;
            (o, report)
        }
        Target::Trades(o) => {
            let report = runtime.block_on(trades(&o))?;
            (o, report)
        }
    };
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if !report.dry_run && report.left_on_queue() > 0 {
        std::process::ExitCode::from(3)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn request(o: &Options) -> Result<RedriveRequest> {
    RedriveRequest::new(o.dry_run, Some(o.max_messages)).map_err(crate::usage)
}

/// The function's settings: the process environment with `--function-env` on top.
fn function_env(path: Option<&Path>) -> Result<Env> {
    let Some(path) = path else {
        return Ok(Env::from_process());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --function-env {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("--function-env {} is not JSON", path.display()))?;
    let vars = v.get("Variables").unwrap_or(&v);
    let Some(vars) = vars.as_object() else {
        return Err(crate::usage(format!(
            "--function-env {}: expected {{\"Variables\": {{...}}}} or an object of strings",
            path.display()
        )));
    };
    let mut map = HashMap::new();
    for (k, v) in vars {
        match v.as_str() {
            Some(s) => {
                map.insert(k.clone(), s.to_string());
            }
            None => bail!("--function-env {}: {k} is not a string", path.display()),
        }
    }
    Ok(Env::from_process_with(map))
}

async fn landing(o: &Options) -> Result<RedriveReport> {
    let request = request(o)?;
    let env = function_env(o.function_env.as_deref())?;
    let config = s3_landing::Config::from(&env).map_err(|e| crate::usage(e.to_string()))?;
    let queue_url = o
        .queue_url
        .clone()
        .or(config.landing_dlq_url.clone())
        .ok_or_else(|| crate::usage("no queue: pass --queue-url or set LANDING_DLQ_URL"))?;
    let sdk = lago::aws::sdk_config().await;
    let starter = SfnStarter::new(aws_sdk_sfn::Client::new(&sdk), &config.state_machine_arn);
    let queue = SqsFailureQueue::from_sdk(&sdk, queue_url);
    let handler = s3_landing::redrive::LandingRedrive {
        starter: &starter,
        lake_bucket: config.lake_bucket.as_deref(),
    };
    Ok(redrive_queue(&queue, &handler, request.dry_run, request.max_messages).await?)
}

async fn trades(o: &Options) -> Result<RedriveReport> {
    let request = request(o)?;
    let env = function_env(o.function_env.as_deref())?;
    let config = trades_stream::Config::from_vars(&env).map_err(|e| crate::usage(e.to_string()))?;
    let queue_url = o
        .queue_url
        .clone()
        .or(config.stream_failure_queue_url.clone())
        .ok_or_else(|| {
            crate::usage("no queue: pass --queue-url or set STREAM_FAILURE_QUEUE_URL")
        })?;
    let sdk = lago::aws::sdk_config().await;
    let clients = trades_stream::AwsClients::new(&sdk, &config);
    let stream = trades_stream::aws_trade_stream(&clients, &config);
    let redriver = trades_stream::Redriver {
        queue: SqsFailureQueue::new(clients.sqs.clone(), queue_url),
        reader: KinesisShardReader::from_sdk(&sdk),
        retention_hours: config.stream_retention_hours,
    };
    Ok(stream.redrive(&redriver, request).await?)
}

fn print_report(r: &RedriveReport) {
    let verb = if r.dry_run {
        "would redrive"
    } else {
        "redriven"
    };
    let done = if r.dry_run {
        r.would_redrive
    } else {
        r.redriven
    };
    println!(
        "{} message(s): {done} {verb}, {} failed, {} unreadable, {} expired; {} item(s), {} done before",
        r.messages, r.failed, r.unreadable, r.expired, r.items, r.items_already_done
    );
    for d in &r.details {
        println!("  {} {}: {}", d.message_id, d.outcome, d.detail);
    }
}
