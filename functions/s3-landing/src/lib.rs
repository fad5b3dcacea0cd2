//! The `s3-landing` function's handler: reads either S3 event shape into landed objects and
//! hands them to [`lago::ingest::landing::land`]. Kept out of `main.rs` so the tests drive it
//! with an in-memory Step Functions and the sample events of `events/s3-landing/`.
//!
//! On a schedule it is invoked with `{"action": "sweep"}` instead ([`sweep`]): it starts the
//! executions of raw files of the look-back window that have no manifest, under the same names.
//! On demand, `{"action": "redrive"}` replays the events of the landing DLQ ([`redrive`]).

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod redrive;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use chrono::{DateTime, Utc};
use lago::ingest::landing::{
    decode_key, land, ExecutionStarter, InvalidRecord, LandedObject, LandingReport, StartError,
};
use lago::ingest::sweep::{self as sweeper, RawObjects, SweepError, SweepReport};
use lago::redrive::{redrive_queue, FailureQueue, QueueError, RedriveReport, RedriveRequest};
use lago::runtime::env::{ConfigError, Env};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{Classified, ErrorKind};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `STATE_MACHINE_ARN`: the ingest state machine.
    pub state_machine_arn: String,
    /// `LAKE_BUCKET` (optional): events of other buckets are ignored; the bucket swept.
    pub lake_bucket: Option<String>,
    /// `SWEEP_LOOKBACK_HOURS` (1–2160, default 48): how far back a sweep looks.
    pub sweep_lookback_hours: u32,
    /// `LANDING_DLQ_URL` (optional): the queue a redrive reads.
    pub landing_dlq_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            state_machine_arn: env.required("STATE_MACHINE_ARN")?,
            lake_bucket: env.optional("LAKE_BUCKET"),
            sweep_lookback_hours: env.in_range("SWEEP_LOOKBACK_HOURS", 48u32, 1..=2160)?,
            landing_dlq_url: env.optional("LANDING_DLQ_URL"),
        })
    }
}

/// What the handler needs, built once per container.
pub struct Deps<S, R, Q> {
    pub starter: S,
    /// The lake's raw objects and manifests, for sweeps.
    pub raw: R,
    /// The landing DLQ, for redrives (`None` without `LANDING_DLQ_URL`).
    pub dlq: Option<Q>,
    pub config: Config,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    #[error("the event is neither an S3 notification nor an EventBridge S3 event: {0}")]
    UnknownEvent(String),
    #[error("the event could not be read")]
    Malformed(#[source] serde_json::Error),
    /// Some executions could not be started for a reason that may pass: the whole event is
    /// retried (what did start is recognised by name and not started twice).
    #[error("{failed} execution(s) could not be started")]
    StartFailed {
        failed: u32,
        #[source]
        source: StartError,
    },
    #[error("invalid sweep: {0}")]
    InvalidSweep(String),
    #[error("the sweep could not read the lake")]
    Sweep(#[source] SweepError),
    #[error("invalid redrive: {0}")]
    InvalidRedrive(String),
    #[error("the redrive could not read the landing DLQ")]
    Redrive(#[source] QueueError),
}

impl Classified for LandingError {
    fn kind(&self) -> ErrorKind {
        match self {
            LandingError::UnknownEvent(_)
            | LandingError::Malformed(_)
            | LandingError::InvalidSweep(_)
            | LandingError::InvalidRedrive(_) => ErrorKind::InvalidInput,
            LandingError::StartFailed { .. } => ErrorKind::Retryable,
            LandingError::Sweep(e) => {
                lago::aws::s3::S3Error::kind_in_chain(e).unwrap_or(ErrorKind::Retryable)
            }
            LandingError::Redrive(e) if e.transient => ErrorKind::Retryable,
            LandingError::Redrive(_) => ErrorKind::Internal,
        }
    }
}

/// `detail` of the EventBridge "Object Created" event (the event library has no type for it).
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectCreatedDetail {
    pub bucket: DetailBucket,
    pub object: DetailObject,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DetailBucket {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DetailObject {
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(rename = "version-id", default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub sequencer: Option<String>,
}

fn landed(
    bucket: String,
    raw_key: &str,
    size: Option<u64>,
    etag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
    event_time: DateTime<Utc>,
) -> Result<LandedObject, InvalidRecord> {
    match decode_key(raw_key) {
        Ok(key) => Ok(LandedObject {
            bucket,
            key,
            size,
            etag,
            version_id,
            sequencer,
            event_time,
        }),
        Err(e) => Err(InvalidRecord {
            bucket: Some(bucket),
            key: Some(raw_key.to_string()),
            detail: lago::runtime::error_chain(&e),
        }),
    }
}

/// The objects an event names: every record of an S3 notification, or the one object of an
/// EventBridge event. A record that cannot be read is kept as invalid; an event that is neither
/// shape is an error.
pub fn objects(event: Value) -> Result<Vec<Result<LandedObject, InvalidRecord>>, LandingError> {
    // S3 sends this once when a notification is configured: nothing to land.
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    if event.get("Records").is_some() {
        let ev: S3Event = serde_json::from_value(event).map_err(LandingError::Malformed)?;
        return Ok(ev
            .records
            .into_iter()
            .map(|r| {
                let bucket = r.s3.bucket.name.clone();
                let key = r.s3.object.key.clone();
                let invalid = |detail: String| InvalidRecord {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    detail,
                };
                let name = r.event_name.as_deref().unwrap_or_default();
                if !name.starts_with("ObjectCreated:") {
                    return Err(invalid(format!("{name:?} is not an object creation")));
                }
                let (Some(b), Some(k)) = (bucket.clone(), key.clone()) else {
                    return Err(invalid("the record names no bucket or key".into()));
                };
                landed(
                    b,
                    &k,
                    r.s3.object.size.and_then(|s| u64::try_from(s).ok()),
                    r.s3.object.e_tag,
                    r.s3.object.version_id,
                    r.s3.object.sequencer,
                    r.event_time,
                )
            })
            .collect());
    }
    if event.get("detail-type").is_some() {
        let ev: EventBridgeEvent<ObjectCreatedDetail> =
            serde_json::from_value(event).map_err(LandingError::Malformed)?;
        if ev.source != "aws.s3" || ev.detail_type != "Object Created" {
            return Err(LandingError::UnknownEvent(format!(
                "source {:?}, detail-type {:?}",
                ev.source, ev.detail_type
            )));
        }
        let d = ev.detail;
        return Ok(vec![landed(
            d.bucket.name,
            &d.object.key,
            d.object.size,
            d.object.etag,
            d.object.version_id,
            d.object.sequencer,
            ev.time.unwrap_or_else(Utc::now),
        )]);
    }
    Err(LandingError::UnknownEvent(
        "no Records and no detail-type".into(),
    ))
}

/// One invocation: `{"action": "sweep", …}` sweeps, `{"action": "redrive", …}` redrives the
/// landing DLQ, anything else is an S3 event.
pub async fn dispatch<S: ExecutionStarter, R: RawObjects, Q: FailureQueue>(
    deps: &Deps<S, R, Q>,
    event: LambdaEvent<Value>,
) -> Result<Value, LandingError> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(LandingError::Malformed);
    match event.payload.get("action").and_then(Value::as_str) {
        Some("sweep") => to_value(serde_json::to_value(
            sweep(deps, &event.payload, Utc::now()).await?,
        )),
        Some("redrive") => to_value(serde_json::to_value(
            redrive_dlq(deps, &event.payload).await?,
        )),
        _ => to_value(serde_json::to_value(handle(deps, event).await?)),
    }
}

/// Replays the landing DLQ's events (see [`redrive`]); emits `DlqRedriven` and
/// `DlqRedriveFailed`. Messages that fail again stay on the queue, and its alarm with them.
pub async fn redrive_dlq<S: ExecutionStarter, R, Q: FailureQueue>(
    deps: &Deps<S, R, Q>,
    payload: &Value,
) -> Result<RedriveReport, LandingError> {
    let request = RedriveRequest::from_payload(payload).map_err(LandingError::InvalidRedrive)?;
    let Some(dlq) = &deps.dlq else {
        return Err(LandingError::InvalidRedrive(
            "LANDING_DLQ_URL is not set: there is no queue to redrive".into(),
        ));
    };
    let handler = redrive::LandingRedrive {
        starter: &deps.starter,
        lake_bucket: deps.config.lake_bucket.as_deref(),
    };
    let report = redrive_queue(dlq, &handler, request.dry_run, request.max_messages)
        .await
        .map_err(LandingError::Redrive)?;
    if !request.dry_run {
        Emf::for_function("s3-landing")
            .metric("DlqRedriven", Unit::Count, report.redriven.into())
            .metric(
                "DlqRedriveFailed",
                Unit::Count,
                (report.messages - report.redriven).into(),
            )
            .metric("DlqExecutionsStarted", Unit::Count, report.items)
            .emit();
    }
    report.log("landing DLQ");
    Ok(report)
}

/// `{"action": "sweep", "lookback_hours"?: N}`: starts an execution for every raw file of the
/// lake modified in the last `N` hours (default `SWEEP_LOOKBACK_HOURS`) that has no manifest.
/// Emits `RawFilesUnprocessed` (the alarm on it notifies) and `SweepStarted`; fails, to be run
/// again, when a start failed for a reason that may pass.
pub async fn sweep<S: ExecutionStarter, R: RawObjects, Q>(
    deps: &Deps<S, R, Q>,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<SweepReport, LandingError> {
    let Some(bucket) = deps.config.lake_bucket.as_deref() else {
        return Err(LandingError::InvalidSweep(
            "LAKE_BUCKET is not set: there is no lake to sweep".into(),
        ));
    };
    let hours = match payload.get("lookback_hours") {
        None => u64::from(deps.config.sweep_lookback_hours),
        Some(v) => v
            .as_u64()
            .filter(|h| (1..=2160).contains(h))
            .ok_or_else(|| {
                LandingError::InvalidSweep(format!("lookback_hours {v} is not 1–2160"))
            })?,
    };
    let since = now - chrono::Duration::hours(hours as i64);
    let mut report = sweeper::sweep(&deps.raw, &deps.starter, bucket, since)
        .await
        .map_err(LandingError::Sweep)?;
    Emf::for_function("s3-landing")
        .metric("RawFilesSwept", Unit::Count, report.listed.into())
        .metric(
            "RawFilesUnprocessed",
            Unit::Count,
            report.unprocessed.into(),
        )
        .metric("SweepStarted", Unit::Count, report.started.into())
        .metric("SweepStartFailures", Unit::Count, report.failed.into())
        .emit();
    for r in &report.records {
        tracing::warn!(key = ?r.key, outcome = r.outcome, execution = ?r.execution_name, "raw file without a manifest");
    }
    tracing::info!(
        since = %since,
        listed = report.listed,
        processed = report.processed,
        unprocessed = report.unprocessed,
        started = report.started,
        already_started = report.already_started,
        failed = report.failed,
        "swept"
    );
    if let Some(source) = report.retryable_error.take() {
        return Err(LandingError::StartFailed {
            failed: report.failed,
            source,
        });
    }
    Ok(report)
}

/// One invocation: land every object of the event; fail (so the event is delivered again) only
/// when a start failed for a reason that may pass.
pub async fn handle<S: ExecutionStarter, R, Q>(
    deps: &Deps<S, R, Q>,
    event: LambdaEvent<Value>,
) -> Result<LandingReport, LandingError> {
    let started = std::time::Instant::now();
    let records = objects(event.payload)?;
    let mut report = land(&deps.starter, deps.config.lake_bucket.as_deref(), records).await;
    Emf::for_function("s3-landing")
        .metric("ExecutionsStarted", Unit::Count, report.started.into())
        .metric(
            "DuplicateEvents",
            Unit::Count,
            report.already_started.into(),
        )
        .metric("ObjectsIgnored", Unit::Count, report.ignored.into())
        .metric("InvalidRecords", Unit::Count, report.invalid.into())
        .metric("StartFailures", Unit::Count, report.failed.into())
        .metric(
            "Duration",
            Unit::Milliseconds,
            started.elapsed().as_millis() as u64,
        )
        .property("request_id", event.context.request_id.clone())
        .emit();
    tracing::info!(
        started = report.started,
        already_started = report.already_started,
        ignored = report.ignored,
        invalid = report.invalid,
        failed = report.failed,
        duration_ms = started.elapsed().as_millis() as u64,
        "event landed"
    );
    if let Some(source) = report.retryable_error.take() {
        return Err(LandingError::StartFailed {
            failed: report.failed,
            source,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lago::ingest::memory::{MemoryRawObjects, MemoryStarter, StartErrorKind};
    use lago::redrive::MemoryQueue;
    use lambda_runtime::Context;

    const S3_NOTIFICATION: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/s3-landing/s3-notification.json"
    ));
    const EVENTBRIDGE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/s3-landing/eventbridge-object-created.json"
    ));

    fn deps() -> Deps<MemoryStarter, MemoryRawObjects, MemoryQueue> {
        Deps {
            starter: MemoryStarter::default(),
            raw: MemoryRawObjects::default(),
            dlq: Some(MemoryQueue::default()),
            config: Config {
                state_machine_arn: "arn:aws:states:us-east-1:123456789012:stateMachine:ingest"
                    .into(),
                lake_bucket: Some("lago-lake-dev".into()),
                sweep_lookback_hours: 48,
                landing_dlq_url: Some(
                    "https://sqs.us-east-1.amazonaws.com/123456789012/dlq".into(),
                ),
            },
        }
    }

    fn event(json: &str) -> anyhow::Result<LambdaEvent<Value>> {
        Ok(LambdaEvent::new(
            serde_json::from_str(json)?,
            Context::default(),
        ))
    }

    #[tokio::test]
    async fn the_s3_notification_starts_one_execution_with_the_decoded_key() -> anyhow::Result<()> {
        let deps = deps();
        let report = handle(&deps, event(S3_NOTIFICATION)?).await?;
        assert_eq!(report.started, 1);
        let (name, input) = deps.starter.executions().remove(0);
        let input: Value = serde_json::from_str(&input)?;
        assert_eq!(
            input["key"],
            "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv"
        );
        assert_eq!(input["dataset"], "clientes");
        assert_eq!(input["load_date"], "2025-05-10");
        assert!(name.starts_with("clientes-clientes_bogota-"), "{name}");
        Ok(())
    }

    #[tokio::test]
    async fn the_eventbridge_event_starts_one_execution() -> anyhow::Result<()> {
        let deps = deps();
        let report = handle(&deps, event(EVENTBRIDGE)?).await?;
        assert_eq!(report.started, 1);
        let (_, input) = deps.starter.executions().remove(0);
        let input: Value = serde_json::from_str(&input)?;
        assert_eq!(input["dataset"], "transacciones");
        assert_eq!(input["size"], 48213);
        // No partition in the key: the load date is the event's UTC date.
        assert_eq!(input["load_date"], "2025-05-11");
        Ok(())
    }

    #[tokio::test]
    async fn every_sample_event_runs_through_the_handler() -> anyhow::Result<()> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/s3-landing");
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let deps = deps();
            let body = std::fs::read_to_string(&path)?;
            if serde_json::from_str::<Value>(&body)?
                .get("action")
                .is_some()
            {
                continue; // sweep.json: its own test
            }
            let report = handle(&deps, event(&body)?).await?;
            assert!(report.started >= 1, "{}", path.display());
            // The same event again: nothing new starts.
            let again = handle(&deps, event(&body)?).await?;
            assert_eq!(again.started, 0, "{}", path.display());
            assert_eq!(again.already_started, report.started);
            n += 1;
        }
        assert!(n >= 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_throttled_start_fails_the_invocation_as_retryable() -> anyhow::Result<()> {
        let deps = deps();
        let objs = objects(serde_json::from_str(S3_NOTIFICATION)?)?;
        let obj = objs.into_iter().next().and_then(Result::ok);
        let name = obj
            .and_then(|o| lago::ingest::landing::classify(&o, None).ok())
            .map(|a| a.execution_name)
            .unwrap_or_default();
        deps.starter.fail_next(&name, StartErrorKind::Transient);
        let err = handle(&deps, event(S3_NOTIFICATION)?).await;
        let Err(e) = err else {
            anyhow::bail!("expected an error");
        };
        let d = lago::runtime::diagnostic(e);
        assert_eq!(d.error_type, "Retryable");
        // The retry goes through.
        assert_eq!(handle(&deps, event(S3_NOTIFICATION)?).await?.started, 1);
        Ok(())
    }

    #[tokio::test]
    async fn other_events_are_invalid_input() -> anyhow::Result<()> {
        let deps = deps();
        for body in [
            r#"{"hello":"world"}"#,
            r#"{"Records":"nope"}"#,
            r#"{"detail-type":"Object Deleted","source":"aws.s3","detail":{"bucket":{"name":"b"},"object":{"key":"k"}}}"#,
        ] {
            let Err(e) = handle(&deps, event(body)?).await else {
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

    #[tokio::test]
    async fn keys_outside_raw_and_folders_are_ignored_not_failed() -> anyhow::Result<()> {
        let deps = deps();
        let mut ev: Value = serde_json::from_str(S3_NOTIFICATION)?;
        let rec = ev["Records"][0].clone();
        let mut records = Vec::new();
        for key in [
            "processed/clientes/x.parquet",
            "raw/clientes/",
            "raw/trades/t.ndjson.gz",
            "raw/clientes/bad%ZZ.csv",
        ] {
            let mut r = rec.clone();
            r["s3"]["object"]["key"] = Value::from(key);
            records.push(r);
        }
        ev["Records"] = Value::from(records);
        let report = handle(&deps, LambdaEvent::new(ev, Context::default())).await?;
        assert_eq!((report.started, report.ignored, report.invalid), (0, 3, 1));
        assert!(deps.starter.executions().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_s3_test_event_lands_nothing() -> anyhow::Result<()> {
        let deps = deps();
        let ev = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2025-05-10T13:00:00.000Z","Bucket":"lago-lake-dev","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
        let report = handle(&deps, event(ev)?).await?;
        assert_eq!(report.records.len(), 0);
        Ok(())
    }

    #[test]
    fn config_requires_the_state_machine() {
        assert!(Config::from(&Env::from_pairs(&[])).is_err());
        let c = Config::from(&Env::from_pairs(&[
            ("STATE_MACHINE_ARN", "arn:x"),
            ("LAKE_BUCKET", ""),
        ]));
        assert_eq!(
            c,
            Ok(Config {
                state_machine_arn: "arn:x".into(),
                lake_bucket: None,
                sweep_lookback_hours: 48,
                landing_dlq_url: None,
            })
        );
    }

    #[tokio::test]
    async fn a_redrive_starts_the_dlq_events_once_and_refuses_bad_options() -> anyhow::Result<()> {
        // GIVEN the landing DLQ holding the EventBridge sample twice (delivered twice)
        let deps = deps();
        let dlq = deps.dlq.as_ref().expect("a queue");
        dlq.send(EVENTBRIDGE);
        dlq.send(EVENTBRIDGE);
        let run = |payload: Value| dispatch(&deps, LambdaEvent::new(payload, Context::default()));
        // WHEN it is redriven
        let report = run(serde_json::json!({"action": "redrive"})).await?;
        // THEN one execution started, the second event found it, both messages are gone
        assert_eq!(report["redriven"], 2, "{report}");
        assert_eq!(report["items"], 1, "{report}");
        assert_eq!(report["items_already_done"], 1, "{report}");
        assert_eq!(deps.starter.executions().len(), 1);
        assert!(dlq.bodies().is_empty());
        // AND options it cannot read are refused before anything is read
        dlq.send(EVENTBRIDGE);
        for bad in [
            serde_json::json!({"action": "redrive", "dry_run": "yes"}),
            serde_json::json!({"action": "redrive", "max_messages": 0}),
        ] {
            let err = run(bad).await.expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        }
        assert_eq!(dlq.bodies().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_sweep_starts_what_has_no_manifest_and_refuses_a_bad_window() -> anyhow::Result<()> {
        // GIVEN a raw file of yesterday whose event never arrived
        let deps = deps();
        let now = Utc::now();
        deps.raw
            .objects
            .lock()
            .map(|mut o| {
                o.push(lago::ingest::sweep::RawObject {
                    key: "raw/proveedores/p.csv".into(),
                    version_id: Some("v1".into()),
                    etag: Some("e1".into()),
                    size: 3,
                    last_modified: now - chrono::Duration::hours(20),
                })
            })
            .ok();
        // WHEN a sweep of the last 12 hours runs THEN it does not see it
        let narrow = sweep(&deps, &serde_json::json!({"lookback_hours": 12}), now).await?;
        assert_eq!((narrow.listed, narrow.started), (0, 0));
        // WHEN the sample sweep (the default window, 48 h) runs THEN it is started, once
        let sample: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/s3-landing/sweep.json"
        )))?;
        let report = sweep(&deps, &sample, now).await?;
        assert_eq!(
            (report.listed, report.unprocessed, report.started),
            (1, 1, 1)
        );
        assert_eq!(deps.starter.executions().len(), 1);
        // AND a window outside 1–2160 hours is refused
        for bad in [
            serde_json::json!({"lookback_hours": 0}),
            serde_json::json!({"lookback_hours": "2"}),
        ] {
            let err = sweep(&deps, &bad, now).await.err();
            assert_eq!(
                err.map(|e| e.kind()),
                Some(ErrorKind::InvalidInput),
                "{bad}"
            );
        }
        Ok(())
    }
}
