//! The `trades-history` function's handler: reads which archive days to look at from the task
//! input, runs the trade history ([`lago::history::run_until`]) and, when it wrote rows (or the
//! features were never built), the user features and training set ([`lago::history::features`])
//! on a blocking thread against the lake (S3, or a local folder in tests) within the
//! invocation's deadline, and returns the counts, what the warehouse loads (whole day folders,
//! the features) and the Glue partitions of those days.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use lago::aws::s3::{S3Error, S3Lake};
use lago::history::features::{self, FeaturesReport, TRAINING_SET_KEY, USER_FEATURES_KEY};
use lago::history::{
    partition_input, processed_day, warehouse_loads, Days, HistoryError, HistoryOptions,
    HistoryReport, PartitionInput,
};
use lago::lake::{date_from_key, LakeError, LakeRead, LakeStore, LocalLake};
use lago::load::TableLoad;
use lago::runtime::env::{ConfigError, Env};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{Classified, ErrorKind};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;

/// Settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `LAKE_BUCKET`: the bucket read from and written to.
    pub lake_bucket: String,
    /// `DEADLINE_MARGIN_SECONDS` (2–120, default 10): time kept back from the invocation's
    /// deadline to stop between objects and report instead of being killed.
    pub deadline_margin: Duration,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            lake_bucket: env.required("LAKE_BUCKET")?,
            deadline_margin: Duration::from_secs(env.in_range(
                "DEADLINE_MARGIN_SECONDS",
                10u64,
                2..=120,
            )?),
        })
    }
}

/// The lake the history reads and writes: both ports, shareable with the blocking thread.
pub trait Lake: LakeStore + LakeRead + Clone + 'static {
    /// Waits for clean-ups of an interrupted run (aborted multipart uploads).
    fn settle(&self) -> impl Future<Output = ()> + Send;
}

impl Lake for S3Lake {
    async fn settle(&self) {
        self.drain_cleanups().await;
    }
}

/// A folder laid out like the bucket (the local twin, the tests).
impl Lake for LocalLake {
    async fn settle(&self) {}
}

/// Opens the S3 connection during init (HeadBucket: allowed by the ListBucket the lake needs).
pub async fn warm(client: &aws_sdk_s3::Client, bucket: &str) {
    let r = client.head_bucket().bucket(bucket).send().await;
    tracing::debug!(ok = r.is_ok(), "s3 connection warmed");
}

/// What the handler needs, built once per container.
pub struct Deps<L> {
    pub lake: L,
    pub config: Config,
}

/// What a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `{}` (the schedule): the archive partitions of today and yesterday (UTC), so a batch
    /// archived after midnight under yesterday's date is still picked up.
    Scheduled,
    /// `{"date": "YYYY-MM-DD"}`: that day's partition only.
    Day(NaiveDate),
}

impl Request {
    /// Reads the task input; anything but the two shapes is refused.
    pub fn parse(input: &Value) -> Result<Request, InputError> {
        let shape = || InputError::Shape {
            found: truncated(input.to_string()),
        };
        let Value::Object(fields) = input else {
            return Err(shape());
        };
        match (fields.len(), fields.get("date")) {
            (0, _) => Ok(Request::Scheduled),
            (1, Some(Value::String(s))) => {
                // Exactly `YYYY-MM-DD`: chrono alone also takes `2025-5-1` and `+2025-05-01`.
                let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .filter(|_| s.len() == 10);
                date.map(Request::Day).ok_or_else(|| InputError::Date {
                    value: truncated(s.clone()),
                })
            }
            _ => Err(shape()),
        }
    }

    /// The archive days (UTC partitions) to look at, given the time now.
    pub fn days(&self, now: DateTime<Utc>) -> Vec<NaiveDate> {
        match *self {
            Request::Day(d) => vec![d],
            Request::Scheduled => {
                let today = now.date_naive();
                today.pred_opt().into_iter().chain([today]).collect()
            }
        }
    }
}

fn truncated(mut s: String) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// A task input that is neither `{}` nor `{"date": "YYYY-MM-DD"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the task input must be {{}} or {{\"date\": \"YYYY-MM-DD\"}}, not {found}")]
    Shape { found: String },
    #[error("{value:?} is not a date as YYYY-MM-DD")]
    Date { value: String },
}

/// The task output: what the history did, the parts for the warehouse load, the features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryOutput {
    /// The archive days looked at.
    pub days: Vec<NaiveDate>,
    /// Archive objects of those days.
    pub objects: u64,
    /// Of those, processed by an earlier run (they have a manifest).
    pub already_processed: u64,
    /// Of those, not started because the deadline came: the next run's.
    pub pending: u64,
    /// Rejected whole (not readable gzip).
    pub unreadable: u64,
    pub rows: u64,
    pub repeats: u64,
    pub invalid: u64,
    pub rows_without_trm: u64,
    /// Parquet parts written by this run.
    pub parts: u64,
    /// What the warehouse loads (`redshift-load`'s `submit_tables`): the day folders of
    /// `processed/trades/` this run wrote to (a dated request: its day, whenever it has parts),
    /// then the features when they were rebuilt (a dated request: whenever they exist). Empty
    /// when there is nothing new.
    pub load: Vec<TableLoad>,
    /// The `trades_history` Glue partitions of the loaded days, as `BatchCreatePartition` takes
    /// them.
    pub partitions: Vec<PartitionInput>,
    /// The features run, when the history changed (or had never been featurised).
    pub features: Option<FeaturesReport>,
    /// The training set's `s3://` URI, when the features were rebuilt.
    pub training_set: Option<String>,
    pub duration_ms: u64,
}

impl HistoryOutput {
    fn new(bucket: &str, days: Vec<NaiveDate>, ran: Ran, duration_ms: u64) -> HistoryOutput {
        let uri = |key: &str| format!("s3://{bucket}/{key}");
        let Ran {
            report,
            features,
            load_days,
            load_features,
        } = ran;
        HistoryOutput {
            days,
            objects: report.objects,
            already_processed: report.already_processed,
            pending: report.pending,
            unreadable: report.unreadable,
            rows: report.rows,
            repeats: report.repeats,
            invalid: report.invalid,
            rows_without_trm: report.rows_without_trm,
            parts: report.parts.len() as u64,
            load: warehouse_loads(&load_days, load_features, uri),
            partitions: load_days
                .iter()
                .map(|d| partition_input(*d, uri(&processed_day(*d))))
                .collect(),
            training_set: features.as_ref().map(|_| uri(TRAINING_SET_KEY)),
            features,
            duration_ms,
        }
    }
}

/// Why the task failed. Bad archive content is not an error: it is rejected, with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum HistoryTaskError {
    #[error("invalid task input")]
    Input(#[from] InputError),
    #[error(
        "only {remaining:?} of the invocation were left, less than the {margin:?} safety margin"
    )]
    NoTime {
        remaining: Duration,
        margin: Duration,
    },
    #[error("the trade history did not finish within the invocation's deadline; the objects it completed are kept and the rest are the next run's")]
    Deadline,
    #[error("the trade history failed")]
    History(#[from] HistoryError),
    #[error("the trade history thread panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

impl Classified for HistoryTaskError {
    fn kind(&self) -> ErrorKind {
        use HistoryTaskError as E;
        match self {
            E::Input(_) => ErrorKind::InvalidInput,
            E::NoTime { .. } | E::Deadline => ErrorKind::DeadlineExceeded,
            E::Panicked(_) => ErrorKind::Internal,
            E::History(h) => history_kind(h),
        }
    }
}

fn history_kind(e: &HistoryError) -> ErrorKind {
    let not_found = |io: &std::io::Error| {
        if io.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Retryable
        }
    };
    match e {
        HistoryError::Lake(LakeError::InvalidKey(_) | LakeError::Unsupported(_)) => {
            ErrorKind::Internal
        }
        // Content the history wrote itself (or the transform's `trm` Parquet) that does not
        // read back, or a manifest that does not serialize: a bug, not a passing condition.
        HistoryError::Unreadable { .. } | HistoryError::Manifest(_) => ErrorKind::Internal,
        HistoryError::Lake(LakeError::Io { source, .. }) | HistoryError::Read { source, .. } => {
            S3Error::kind_of_io(source).unwrap_or_else(|| not_found(source))
        }
        // The store, Parquet and Arrow fail on I/O: an S3 call decides, else it may pass.
        other => S3Error::kind_in_chain(other).unwrap_or(ErrorKind::Retryable),
    }
}

/// What a run did and what it hands the warehouse.
struct Ran {
    report: HistoryReport,
    features: Option<FeaturesReport>,
    load_days: BTreeSet<NaiveDate>,
    load_features: bool,
}

/// The history, then the features when the history changed: on the blocking thread. `reload`
/// (a dated request) loads that day and the features again even with nothing new.
fn run<L: LakeStore + LakeRead + ?Sized>(
    lake: &L,
    opts: &HistoryOptions,
    deadline: Option<Instant>,
    reload: Option<NaiveDate>,
) -> Result<Ran, HistoryError> {
    let report = lago::history::run_until(lake, opts, deadline)?;
    // The features are rebuilt from the whole history, so only when it changed (or they were
    // never built): a run with nothing new leaves them as they are.
    let built = lake
        .list(USER_FEATURES_KEY)?
        .iter()
        .any(|k| k == USER_FEATURES_KEY);
    let stale = report.rows > 0 || !built;
    let in_time = deadline.is_none_or(|d| Instant::now() < d);
    if stale && !in_time {
        tracing::warn!(
            rows = report.rows,
            "no time left for the features; the next run that writes rows rebuilds them"
        );
    }
    let features = if stale && in_time {
        Some(features::run(lake)?)
    } else {
        None
    };
    let mut load_days: BTreeSet<NaiveDate> = report
        .parts
        .iter()
        .filter_map(|k| date_from_key(k))
        .collect();
    if let Some(day) = reload {
        if !lake.list(&processed_day(day))?.is_empty() {
            load_days.insert(day);
        }
    }
    let load_features = features.is_some() || (reload.is_some() && built);
    Ok(Ran {
        report,
        features,
        load_days,
        load_features,
    })
}

/// One task at the time of the invocation.
pub async fn handle<L: Lake>(
    deps: &Deps<L>,
    event: LambdaEvent<Value>,
) -> Result<HistoryOutput, HistoryTaskError> {
    handle_at(deps, event, Utc::now()).await
}

/// One task, `now` deciding which days "today and yesterday" are and the rows' load date.
pub async fn handle_at<L: Lake>(
    deps: &Deps<L>,
    event: LambdaEvent<Value>,
    now: DateTime<Utc>,
) -> Result<HistoryOutput, HistoryTaskError> {
    let started = Instant::now();
    let request = Request::parse(&event.payload).map_err(|e| fail(&event.payload, e.into()))?;
    let days = request.days(now);
    let margin = deps.config.deadline_margin;
    // No object starts after `deadline`; the task gives up at `hard` even if one overruns or a
    // call hangs, leaving half the margin to abort uploads and report.
    let (deadline, hard) = match lago::runtime::time_left(event.context.deadline) {
        None => (None, None),
        Some(left) if left <= margin => {
            return Err(fail(
                &event.payload,
                HistoryTaskError::NoTime {
                    remaining: left,
                    margin,
                },
            ))
        }
        Some(left) => (Some(started + left - margin), Some(left - margin / 2)),
    };
    let opts = HistoryOptions {
        days: Days::Only(days.clone()),
        load_date: now.date_naive(),
    };
    let lake = Arc::new(deps.lake.clone());
    let job = {
        let lake = Arc::clone(&lake);
        let reload = match request {
            Request::Day(d) => Some(d),
            Request::Scheduled => None,
        };
        tokio::task::spawn_blocking(move || run(lake.as_ref(), &opts, deadline, reload))
    };
    let joined = match hard {
        Some(h) => tokio::time::timeout(h, job)
            .await
            .map_err(|_| HistoryTaskError::Deadline),
        None => Ok(job.await),
    };
    lake.settle().await;
    let result = joined.and_then(|j| j.map_err(HistoryTaskError::Panicked));
    let ran = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(fail(&event.payload, e.into())),
        Err(e) => return Err(fail(&event.payload, e)),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let out = HistoryOutput::new(&deps.config.lake_bucket, days, ran, duration_ms);
    let processed = out
        .objects
        .saturating_sub(out.already_processed + out.pending);
    let (feature_rows, training_rows) = out
        .features
        .as_ref()
        .map_or((0, 0), |f| (f.rows, f.training_rows));
    Emf::for_function("trades-history")
        .metric("ObjectsProcessed", Unit::Count, processed)
        .metric("ObjectsPending", Unit::Count, out.pending)
        .metric("ObjectsUnreadable", Unit::Count, out.unreadable)
        .metric("HistoryRows", Unit::Count, out.rows)
        .metric("RepeatedLines", Unit::Count, out.repeats)
        .metric("InvalidLines", Unit::Count, out.invalid)
        .metric("RowsWithoutTrm", Unit::Count, out.rows_without_trm)
        .metric("FeatureRows", Unit::Count, feature_rows)
        .metric("TrainingRows", Unit::Count, training_rows)
        .metric("Duration", Unit::Milliseconds, duration_ms)
        .property("request_id", event.context.request_id.clone())
        .emit();
    tracing::info!(
        days = ?out.days,
        objects = out.objects,
        already_processed = out.already_processed,
        pending = out.pending,
        rows = out.rows,
        repeats = out.repeats,
        invalid = out.invalid,
        rows_without_trm = out.rows_without_trm,
        parts = out.parts,
        loads = out.load.len(),
        feature_rows,
        training_rows,
        duration_ms,
        "trade history"
    );
    Ok(out)
}

fn fail(input: &Value, e: HistoryTaskError) -> HistoryTaskError {
    tracing::error!(
        input = %truncated(input.to_string()),
        error_type = e.kind().error_type(),
        error = %lago::runtime::error_chain(&e),
        "trade history failed"
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use lago::trades::{archive_key, encode_ndjson_gz, ArchiveStatus, ArchivedTrade, Trade};
    use std::time::{SystemTime, UNIX_EPOCH};

    const SCHEDULED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/trades-history-scheduled.json"
    ));
    const DATED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/trades-history-dated.json"
    ));

    fn deps(dir: &std::path::Path) -> Deps<LocalLake> {
        Deps {
            lake: LocalLake::new(dir),
            config: Config {
                lake_bucket: "lago-lake-dev".into(),
                deadline_margin: Duration::from_secs(10),
            },
        }
    }

    fn at(s: &str) -> anyhow::Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    }

    fn event(json: &str, seconds: u64) -> anyhow::Result<LambdaEvent<Value>> {
        let mut ctx = lambda_runtime::Context::default();
        ctx.deadline =
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + seconds * 1000;
        Ok(LambdaEvent::new(serde_json::from_str(json)?, ctx))
    }

    /// An applied BUY of `user` at `executed_at`.
    fn buy(id: &str, user: &str, executed_at: &str) -> anyhow::Result<ArchivedTrade> {
        let json = format!(
            r#"{{"trade_id":"{id}","user_id":"{user}","side":"BUY","usd_amount":"10.00","rate":"4000.0000","executed_at":"{executed_at}"}}"#
        );
        Ok(ArchivedTrade {
            trade: Trade::parse(json.as_bytes())?,
            status: ArchiveStatus::Applied,
            reason: "".into(),
            sequence_number: format!("4955{id}"),
            sub_sequence_number: None,
            arrived_at: None,
        })
    }

    /// One archive object of `lines`, under the key the stream gives it.
    fn archive(lake: &LocalLake, lines: &[ArchivedTrade]) -> anyhow::Result<String> {
        let first = &lines[0].sequence_number;
        let key = archive_key("shardId-000000000000", first, lines)
            .ok_or_else(|| anyhow::anyhow!("no key"))?;
        lake.put(&key, &encode_ndjson_gz(lines)?)?;
        Ok(key)
    }

    #[test]
    fn the_two_input_shapes_are_read_and_nothing_else() {
        assert_eq!(
            Request::parse(&serde_json::json!({})),
            Ok(Request::Scheduled)
        );
        assert_eq!(
            Request::parse(&serde_json::json!({"date": "2026-11-28"})),
            Ok(Request::Day(
                NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default()
            ))
        );
        for bad in [
            r#"{"date": "2026-11-31"}"#,
            r#"{"date": "2026-1-5"}"#,
            r#"{"date": "+2026-11-28"}"#,
            r#"{"date": null}"#,
            r#"{"date": 20261128}"#,
            r#"{"date": "2026-11-28", "dataset": "trades"}"#,
            r#"{"day": "2026-11-28"}"#,
            r#"{"version":"0","detail-type":"Scheduled Event","source":"aws.events"}"#,
            r#"[]"#,
            r#"null"#,
            r#""2026-11-28""#,
        ] {
            let v: Value = serde_json::from_str(bad).unwrap_or_default();
            assert!(Request::parse(&v).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schedule_looks_at_yesterday_and_today_in_utc() -> anyhow::Result<()> {
        // Five past midnight UTC (still the evening before in Bogotá): both UTC days.
        let days = Request::Scheduled.days(at("2026-11-29T00:05:00Z")?);
        assert_eq!(
            days,
            [
                NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default(),
                NaiveDate::from_ymd_opt(2026, 11, 29).unwrap_or_default()
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_scheduled_run_processes_today_and_yesterday_then_nothing() -> anyhow::Result<()> {
        // GIVEN archive objects of yesterday, today and a week ago
        let dir = tempfile::tempdir()?;
        let deps = deps(dir.path());
        let yesterday = archive(
            &deps.lake,
            &[
                buy("1", "ana", "2026-11-28T15:00:00Z")?,
                buy("2", "bo", "2026-11-28T16:00:00Z")?,
            ],
        )?;
        let today = archive(&deps.lake, &[buy("3", "ana", "2026-11-29T01:00:00Z")?])?;
        let old = archive(&deps.lake, &[buy("0", "ana", "2026-11-21T15:00:00Z")?])?;
        let now = at("2026-11-29T02:00:00Z")?;

        // WHEN the scheduled task runs
        let out = handle_at(&deps, event(SCHEDULED, 60)?, now).await?;

        // THEN yesterday's and today's objects are processed, the old one is not looked at
        assert_eq!(
            (out.objects, out.already_processed, out.pending, out.rows),
            (2, 0, 0, 3)
        );
        let part = |raw: &str| {
            raw.replace("raw/", "processed/")
                .replace(".ndjson.gz", ".parquet")
        };
        assert_eq!(out.parts, 2);
        assert!(deps.lake.path(&part(&yesterday))?.exists());
        assert!(deps.lake.path(&part(&today))?.exists());
        // AND the load names both day folders, then the rebuilt features, with their partitions
        let day =
            |d: &str| format!("s3://lago-lake-dev/processed/trades/year=2026/month=11/day={d}/");
        assert_eq!(
            serde_json::to_value(&out.load)?,
            serde_json::json!([
                {"table": "trades_history", "parts": [day("28"), day("29")]},
                {"table": "user_features", "parts": [format!("s3://lago-lake-dev/{USER_FEATURES_KEY}")]},
            ])
        );
        let partitions = serde_json::to_value(&out.partitions)?;
        assert_eq!(
            partitions[0]["Values"],
            serde_json::json!(["2026", "11", "28"])
        );
        assert_eq!(partitions[1]["StorageDescriptor"]["Location"], day("29"));
        let old_manifest = old
            .replace("raw/", "manifests/")
            .replace(".ndjson.gz", ".json");
        assert!(!deps.lake.path(&old_manifest)?.exists());
        // AND the features and the training set were built
        let features = out
            .features
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no features"))?;
        assert_eq!((features.trades, features.users), (3, 2));
        assert_eq!(
            out.training_set.as_deref(),
            Some("s3://lago-lake-dev/processed/features/training/train.csv")
        );
        assert!(deps.lake.path(TRAINING_SET_KEY)?.exists());

        // WHEN it runs again
        let again = handle_at(&deps, event(SCHEDULED, 60)?, now).await?;
        // THEN nothing is processed and the features are left as they are
        assert_eq!(
            (again.objects, again.already_processed, again.rows),
            (2, 2, 0)
        );
        assert_eq!(again.parts, 0);
        assert_eq!((again.features, again.training_set), (None, None));
        // AND there is nothing to load or catalog
        assert!(again.load.is_empty() && again.partitions.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_dated_run_loads_its_day_again_with_nothing_new() -> anyhow::Result<()> {
        // GIVEN a day already processed (e.g. by a run whose load failed afterwards)
        let dir = tempfile::tempdir()?;
        let deps = deps(dir.path());
        archive(&deps.lake, &[buy("1", "ana", "2026-11-28T15:00:00Z")?])?;
        let first = handle(&deps, event(DATED, 60)?).await?;
        assert_eq!((first.rows, first.load.len()), (1, 2));
        // WHEN the same day is asked for again
        let again = handle(&deps, event(DATED, 60)?).await?;
        // THEN nothing is processed, yet the day's folder and the features are loaded again
        assert_eq!((again.rows, again.parts), (0, 0));
        assert!(again.features.is_none());
        assert_eq!(again.load, first.load);
        assert_eq!(again.partitions.len(), 1);
        // AND a day without any part has nothing to load
        let empty = handle(&deps, event(r#"{"date": "2026-11-27"}"#, 60)?).await?;
        assert_eq!(empty.load.len(), 1);
        assert_eq!(empty.load[0].table, lago::load::Table::UserFeatures);
        assert!(empty.partitions.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_sample_dated_event_processes_its_day_only() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let deps = deps(dir.path());
        archive(&deps.lake, &[buy("1", "ana", "2026-11-28T15:00:00Z")?])?;
        archive(&deps.lake, &[buy("2", "ana", "2026-11-29T15:00:00Z")?])?;
        let out = handle(&deps, event(DATED, 60)?).await?;
        assert_eq!(
            out.days,
            [NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default()]
        );
        assert_eq!((out.objects, out.rows), (1, 1));
        assert_eq!(out.parts, 1);
        assert!(out.load[0].parts[0].ends_with("/year=2026/month=11/day=28/"));
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_lake_still_gets_its_features_once() -> anyhow::Result<()> {
        // The features never built are built even with no new rows, and only once.
        let dir = tempfile::tempdir()?;
        let deps = deps(dir.path());
        let first = handle(&deps, event(SCHEDULED, 60)?).await?;
        assert_eq!(first.objects, 0);
        assert!(first.features.is_some());
        let second = handle(&deps, event(SCHEDULED, 60)?).await?;
        assert!(second.features.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn errors_carry_stable_types() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let deps = deps(dir.path());
        // Not enough time left: a clear DeadlineExceeded, nothing started.
        let Err(e) = handle(&deps, event(SCHEDULED, 5)?).await else {
            anyhow::bail!("expected DeadlineExceeded");
        };
        assert_eq!(lago::runtime::diagnostic(e).error_type, "DeadlineExceeded");
        assert!(deps.lake.list("")?.is_empty());
        for body in [r#"{"date":"28/11/2026"}"#, r#"{"dates":[]}"#, "42"] {
            let Err(e) = handle(&deps, event(body, 60)?).await else {
                anyhow::bail!("{body} should fail");
            };
            assert_eq!(
                lago::runtime::diagnostic(e).error_type,
                "InvalidInput",
                "{body}"
            );
        }
        Ok(())
    }

    #[test]
    fn lake_failures_are_classified_by_their_cause() {
        let io = |kind| {
            HistoryTaskError::History(HistoryError::Lake(LakeError::Io {
                key: "k".into(),
                source: std::io::Error::from(kind),
            }))
        };
        assert_eq!(io(std::io::ErrorKind::NotFound).kind(), ErrorKind::NotFound);
        assert_eq!(
            io(std::io::ErrorKind::ConnectionReset).kind(),
            ErrorKind::Retryable
        );
        let s3 = |kind| {
            HistoryTaskError::History(HistoryError::Lake(LakeError::Store(Box::new(S3Error {
                operation: "GetObject",
                bucket: "b".into(),
                key: "k".into(),
                kind,
                source: "denied".into(),
            }))))
        };
        assert_eq!(s3(ErrorKind::InvalidInput).kind(), ErrorKind::InvalidInput);
        assert_eq!(s3(ErrorKind::Retryable).kind(), ErrorKind::Retryable);
        let unreadable = HistoryTaskError::History(HistoryError::Unreadable {
            key: "processed/trm/x.parquet".into(),
            detail: "no column valor".into(),
        });
        assert_eq!(unreadable.kind(), ErrorKind::Internal);
    }

    #[test]
    fn config_is_bounded() {
        let base = [("LAKE_BUCKET", "l")];
        assert!(Config::from(&Env::from_pairs(&base)).is_ok());
        assert!(Config::from(&Env::from_pairs(&[])).is_err());
        let mut bad = base.to_vec();
        bad.push(("DEADLINE_MARGIN_SECONDS", "1"));
        assert!(Config::from(&Env::from_pairs(&bad)).is_err());
    }
}
