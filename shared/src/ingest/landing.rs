//! A file landed in `raw/`: which objects start the ingest state machine, under which
//! execution name, with which input — and the port that starts it.
//!
//! S3 delivers object keys form-URL-encoded (`clientes+bogot%C3%A1.csv`) in both the S3
//! notification and the EventBridge "Object Created" event; [`decode_key`] undoes that. The
//! execution name is a function of bucket, key and object version only, so a duplicated event
//! names the same execution and Step Functions refuses to start it twice.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::task::ExecutionInput;
use crate::contract::Dataset;
use crate::lake;
use crate::runtime::BoxError;

/// Longest execution name Step Functions accepts.
pub const MAX_EXECUTION_NAME: usize = 80;
/// Hex characters of the identity hash that ends every execution name (80 bits).
const NAME_HASH_HEX: usize = 20;

/// Why an event key could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("invalid percent escape at byte {at} of key {key:?}")]
    BadEscape { key: String, at: usize },
    #[error("the decoded key {key:?} is not UTF-8")]
    NotUtf8 {
        key: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// Decodes a key as S3 events carry it: `+` is a space and `%XX` a byte; the bytes are UTF-8.
pub fn decode_key(raw: &str) -> Result<String, KeyDecodeError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                // Two hex digits, nothing else (`from_str_radix` would take `+f` for `0f`).
                let digit = |c: u8| char::from(c).to_digit(16);
                let hex = match bytes.get(i + 1..i + 3) {
                    Some(&[hi, lo]) => digit(hi).zip(digit(lo)).map(|(h, l)| (h * 16 + l) as u8),
                    _ => None,
                };
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        return Err(KeyDecodeError::BadEscape {
                            key: raw.to_string(),
                            at: i,
                        })
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|source| KeyDecodeError::NotUtf8 {
        key: raw.to_string(),
        source,
    })
}

/// An object named by an S3 event, its key already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandedObject {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// Distinguishes two writes of an unversioned key that carry no ETag.
    pub sequencer: Option<String>,
    pub event_time: DateTime<Utc>,
}

impl LandedObject {
    /// What identifies this write of the key: the version id, else the ETag, else the sequencer.
    pub fn version(&self) -> &str {
        [&self.version_id, &self.etag, &self.sequencer]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .find(|v| !v.is_empty() && *v != "null")
            .unwrap_or_default()
    }
}

/// Why a landed object does not start an execution (logged and counted, never an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The event names a bucket other than the lake.
    OtherBucket,
    /// The key is not under `raw/<dataset>/`.
    OutsideRaw,
    /// `raw/<name>/` names no dataset (e.g. `raw/trades/`, archived by the trades function).
    UnknownDataset(String),
    /// A zero-byte "folder" placeholder (`…/` or `…_$folder$`).
    FolderMarker,
}

impl IgnoreReason {
    pub fn code(&self) -> &'static str {
        match self {
            IgnoreReason::OtherBucket => "other_bucket",
            IgnoreReason::OutsideRaw => "outside_raw",
            IgnoreReason::UnknownDataset(_) => "unknown_dataset",
            IgnoreReason::FolderMarker => "folder_marker",
        }
    }
}

/// The dataset of a key strictly under `raw/<dataset>/` (exact, lower-case dataset name).
pub fn raw_dataset(key: &str) -> Result<Dataset, IgnoreReason> {
    let mut parts = key.splitn(3, '/');
    let (Some("raw"), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(IgnoreReason::OutsideRaw);
    };
    if rest.is_empty() {
        return Err(IgnoreReason::FolderMarker);
    }
    Dataset::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| IgnoreReason::UnknownDataset(name.to_string()))
}

/// The load date of a landed file: `year=/month=/day=` in its key, else the event's UTC date.
pub fn load_date(key: &str, event_time: DateTime<Utc>) -> NaiveDate {
    lake::date_from_key(key).unwrap_or_else(|| event_time.date_naive())
}

/// The execution name of one write of one object: `<dataset>-<file stem>-<hash>`, at most 80
/// characters of `[A-Za-z0-9_-]`. The hash covers bucket, key and version, so the name is unique
/// per write however much of the stem had to be cut.
pub fn execution_name(dataset: Dataset, bucket: &str, key: &str, version: &str) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, version] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = hex::encode(h.finalize());
    let hash = &digest[..NAME_HASH_HEX];
    let stem: String = lake::output_stem(key)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let budget = MAX_EXECUTION_NAME - dataset.name().len() - hash.len() - 2;
    // The stem is ASCII, so cutting at a byte index is cutting at a character.
    let stem = &stem[..stem.len().min(budget)];
    format!("{}-{stem}-{hash}", dataset.name())
}

/// Whether a name is one Step Functions accepts for an execution.
pub fn is_valid_execution_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EXECUTION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A landed object that starts an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub execution_name: String,
    pub input: ExecutionInput,
}

/// Decides whether an object starts an execution, and with which name and input.
pub fn classify(obj: &LandedObject, lake_bucket: Option<&str>) -> Result<Accepted, IgnoreReason> {
    if lake_bucket.is_some_and(|b| b != obj.bucket) {
        return Err(IgnoreReason::OtherBucket);
    }
    if obj.key.ends_with('/') || obj.key.ends_with("_$folder$") {
        return Err(IgnoreReason::FolderMarker);
    }
    let dataset = raw_dataset(&obj.key)?;
    let input = ExecutionInput {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        version_id: obj.version_id.clone().filter(|v| !v.is_empty()),
        etag: obj.etag.clone().filter(|v| !v.is_empty()),
        size: obj.size.unwrap_or(0),
        dataset,
        load_date: load_date(&obj.key, obj.event_time),
    };
    Ok(Accepted {
        execution_name: execution_name(dataset, &obj.bucket, &obj.key, obj.version()),
        input,
    })
}

/// The result of asking Step Functions to start an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartedExecution {
    Started {
        execution_arn: String,
    },
    /// An execution of that name exists already: the event was a duplicate.
    AlreadyExists,
}

/// Why an execution could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Throttling, a 5xx, a timeout or a dropped connection.
    #[error("Step Functions is unavailable or throttling")]
    Transient(#[source] BoxError),
    /// The state machine is missing, being deleted, or we may not start it: a problem of the
    /// deployment, not of the record, so the event must be retried or dead-lettered, not dropped.
    #[error(
        "the ingest state machine cannot be started (missing, being deleted, or access denied)"
    )]
    Unavailable(#[source] BoxError),
    /// Step Functions refused this particular execution (name or input).
    #[error("Step Functions refused the execution")]
    Refused(#[source] BoxError),
}

impl StartError {
    /// Whether the invocation must fail so the event is delivered again.
    pub fn retryable(&self) -> bool {
        !matches!(self, StartError::Refused(_))
    }
}

/// Starts executions of the ingest state machine.
pub trait ExecutionStarter: Send + Sync {
    fn start_execution(
        &self,
        name: &str,
        input: &str,
    ) -> impl Future<Output = Result<StartedExecution, StartError>> + Send;

    /// Whether an execution of that name exists, running or ended. (Starting a running
    /// execution again with the same input succeeds without a second run, so only this tells
    /// the sweeper that a file is in hand.)
    fn execution_exists(&self, name: &str)
        -> impl Future<Output = Result<bool, StartError>> + Send;
}

/// A record of an event that could not be read as an object (missing key, bad escape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord {
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub detail: String,
}

/// What happened to one record of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordReport {
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// `started`, `already_started`, `ignored`, `invalid` or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

/// What one invocation of the landing function did.
#[derive(Debug, Default, Serialize)]
pub struct LandingReport {
    pub started: u32,
    pub already_started: u32,
    pub ignored: u32,
    pub invalid: u32,
    pub failed: u32,
    pub records: Vec<RecordReport>,
    /// The first retryable failure, which fails the invocation.
    #[serde(skip)]
    pub retryable_error: Option<StartError>,
}

impl LandingReport {
    fn record(&mut self, r: RecordReport) {
        match r.outcome {
            "started" => self.started += 1,
            "already_started" => self.already_started += 1,
            "ignored" => self.ignored += 1,
            "invalid" => self.invalid += 1,
            _ => self.failed += 1,
        }
        self.records.push(r);
    }
}

/// Starts one execution per accepted object. One bad record never stops the others; the caller
/// fails the invocation when [`LandingReport::retryable_error`] is set (a retry is safe: the
/// names are deterministic, so what started already is `already_started` the second time).
pub async fn land<S: ExecutionStarter>(
    starter: &S,
    lake_bucket: Option<&str>,
    records: Vec<Result<LandedObject, InvalidRecord>>,
) -> LandingReport {
    let mut report = LandingReport::default();
    for rec in records {
        let obj = match rec {
            Ok(o) => o,
            Err(bad) => {
                warn!(bucket = ?bad.bucket, key = ?bad.key, detail = %bad.detail, "invalid record ignored");
                report.record(RecordReport {
                    bucket: bad.bucket,
                    key: bad.key,
                    outcome: "invalid",
                    execution_name: None,
                    execution_arn: None,
                    reason: Some(bad.detail),
                    retryable: false,
                });
                continue;
            }
        };
        let base = RecordReport {
            bucket: Some(obj.bucket.clone()),
            key: Some(obj.key.clone()),
            outcome: "ignored",
            execution_name: None,
            execution_arn: None,
            reason: None,
            retryable: false,
        };
        let accepted = match classify(&obj, lake_bucket) {
            Ok(a) => a,
            Err(why) => {
                info!(bucket = %obj.bucket, key = %obj.key, reason = why.code(), "object ignored");
                report.record(RecordReport {
                    reason: Some(why.code().to_string()),
                    ..base
                });
                continue;
            }
        };
        let name = accepted.execution_name;
        let input = match serde_json::to_string(&accepted.input) {
            Ok(s) => s,
            Err(e) => {
                report.record(RecordReport {
                    outcome: "failed",
                    execution_name: Some(name),
                    reason: Some(format!("the execution input could not be serialized: {e}")),
                    ..base
                });
                continue;
            }
        };
        let dataset = accepted.input.dataset;
        match starter.start_execution(&name, &input).await {
            Ok(StartedExecution::Started { execution_arn }) => {
                info!(%dataset, key = %obj.key, execution = %name, "execution started");
                report.record(RecordReport {
                    outcome: "started",
                    execution_name: Some(name),
                    execution_arn: Some(execution_arn),
                    ..base
                });
            }
            Ok(StartedExecution::AlreadyExists) => {
                info!(%dataset, key = %obj.key, execution = %name, "execution exists already: duplicate event");
                report.record(RecordReport {
                    outcome: "already_started",
                    execution_name: Some(name),
                    ..base
                });
            }
            Err(e) => {
                let retryable = e.retryable();
                let detail = crate::runtime::error_chain(&e);
                warn!(%dataset, key = %obj.key, execution = %name, retryable, error = %detail, "start execution failed");
                report.record(RecordReport {
                    outcome: "failed",
                    execution_name: Some(name),
                    reason: Some(detail),
                    retryable,
                    ..base
                });
                if retryable && report.retryable_error.is_none() {
                    report.retryable_error = Some(e);
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::memory::{MemoryStarter, StartErrorKind};
    use chrono::TimeZone;

    fn event_time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 5, 11, 2, 30, 0)
            .single()
            .unwrap_or_default()
    }

    fn object(key: &str) -> LandedObject {
        LandedObject {
            bucket: "lake".into(),
            key: key.into(),
            size: Some(120),
            etag: Some("0123abcd".into()),
            version_id: None,
            sequencer: Some("0062".into()),
            event_time: event_time(),
        }
    }

    #[test]
    fn keys_are_form_url_decoded() -> Result<(), KeyDecodeError> {
        assert_eq!(
            decode_key("raw/clientes/year=2025/month=05/day=10/clientes+bogot%C3%A1.csv")?,
            "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv"
        );
        assert_eq!(decode_key("a%2Bb%20c")?, "a+b c");
        assert_eq!(decode_key("a%3d%3D")?, "a==");
        assert!(matches!(
            decode_key("bad%G1"),
            Err(KeyDecodeError::BadEscape { at: 3, .. })
        ));
        assert!(matches!(
            decode_key("cut%C"),
            Err(KeyDecodeError::BadEscape { .. })
        ));
        assert!(matches!(
            decode_key("%FF%FE"),
            Err(KeyDecodeError::NotUtf8 { .. })
        ));
        Ok(())
    }

    #[test]
    fn an_escape_is_two_hex_digits_and_no_sign() {
        // GIVEN escapes whose two characters a number parser would read as a signed hex number
        for raw in [
            "raw/c/a%+f.csv",
            "raw/c/a%+1.csv",
            "raw/c/a%-1.csv",
            "raw/c/a% f.csv",
        ] {
            // THEN they are bad escapes, not bytes
            assert!(
                matches!(
                    decode_key(raw),
                    Err(KeyDecodeError::BadEscape { at: 7, .. })
                ),
                "{raw}"
            );
        }
    }

    #[test]
    fn only_known_datasets_under_raw_are_accepted() {
        assert_eq!(raw_dataset("raw/clientes/x.csv"), Ok(Dataset::Clientes));
        assert_eq!(
            raw_dataset("raw/trm/year=2025/month=05/day=10/trm.csv"),
            Ok(Dataset::Trm)
        );
        assert_eq!(
            raw_dataset("raw/transacciones/year=2025/month=01/day=01/t.csv.gz"),
            Ok(Dataset::Transacciones)
        );
        assert_eq!(
            raw_dataset("raw/trades/year=2025/x.ndjson.gz"),
            Err(IgnoreReason::UnknownDataset("trades".into()))
        );
        assert_eq!(
            raw_dataset("raw/Clientes/x.csv"),
            Err(IgnoreReason::UnknownDataset("Clientes".into()))
        );
        assert_eq!(
            raw_dataset("processed/clientes/x.parquet"),
            Err(IgnoreReason::OutsideRaw)
        );
        assert_eq!(raw_dataset("raw/clientes"), Err(IgnoreReason::OutsideRaw));
        assert_eq!(
            raw_dataset("x/raw/clientes/a.csv"),
            Err(IgnoreReason::OutsideRaw)
        );
    }

    #[test]
    fn folder_markers_and_other_buckets_are_ignored() {
        assert_eq!(
            classify(&object("raw/clientes/"), None),
            Err(IgnoreReason::FolderMarker)
        );
        assert_eq!(
            classify(&object("raw/clientes/year=2025/"), None),
            Err(IgnoreReason::FolderMarker)
        );
        assert_eq!(
            classify(&object("raw/clientes/old_$folder$"), None),
            Err(IgnoreReason::FolderMarker)
        );
        assert_eq!(
            classify(&object("raw/clientes/a.csv"), Some("other")),
            Err(IgnoreReason::OtherBucket)
        );
    }

    #[test]
    fn load_date_comes_from_the_partition_else_the_event_time() {
        assert_eq!(
            load_date("raw/clientes/year=2025/month=05/day=10/a.csv", event_time()),
            NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default()
        );
        assert_eq!(
            load_date("raw/clientes/a.csv", event_time()),
            NaiveDate::from_ymd_opt(2025, 5, 11).unwrap_or_default()
        );
        // An impossible partition falls back to the event time too.
        assert_eq!(
            load_date("raw/clientes/year=2025/month=13/day=10/a.csv", event_time()),
            NaiveDate::from_ymd_opt(2025, 5, 11).unwrap_or_default()
        );
    }

    #[test]
    fn execution_names_are_deterministic_valid_and_distinct_per_version() {
        let key = "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv";
        let a = execution_name(Dataset::Clientes, "lake", key, "etag-1");
        assert_eq!(a, execution_name(Dataset::Clientes, "lake", key, "etag-1"));
        assert!(a.starts_with("clientes-clientes_bogota-"), "{a}");
        assert!(is_valid_execution_name(&a), "{a}");
        assert_ne!(a, execution_name(Dataset::Clientes, "lake", key, "etag-2"));
        assert_ne!(a, execution_name(Dataset::Clientes, "lake2", key, "etag-1"));
    }

    #[test]
    fn long_and_hostile_names_still_fit_the_alphabet() {
        let long = format!("raw/transacciones/{}.csv", "ñandú ;'\"|*?<>".repeat(40));
        for key in [long.as_str(), "raw/clientes/.csv", "raw/clientes/%.csv"] {
            let n = execution_name(Dataset::Transacciones, "b", key, "v");
            assert!(is_valid_execution_name(&n), "{n:?}");
            assert!(n.len() <= MAX_EXECUTION_NAME);
        }
        // Two long keys that differ only past the cut still get different names.
        let k1 = format!("raw/clientes/{}a.csv", "x".repeat(100));
        let k2 = format!("raw/clientes/{}b.csv", "x".repeat(100));
        assert_ne!(
            execution_name(Dataset::Clientes, "b", &k1, "v"),
            execution_name(Dataset::Clientes, "b", &k2, "v")
        );
    }

    #[test]
    fn the_version_prefers_version_id_then_etag_then_sequencer() {
        let mut o = object("raw/clientes/a.csv");
        assert_eq!(o.version(), "0123abcd");
        o.version_id = Some("null".into());
        assert_eq!(o.version(), "0123abcd");
        o.version_id = Some("v7".into());
        assert_eq!(o.version(), "v7");
        o.version_id = None;
        o.etag = None;
        assert_eq!(o.version(), "0062");
    }

    async fn run_land(
        starter: &MemoryStarter,
        records: Vec<Result<LandedObject, InvalidRecord>>,
    ) -> LandingReport {
        land(starter, Some("lake"), records).await
    }

    #[test]
    fn a_duplicated_event_starts_one_execution() {
        // GIVEN the same object notified twice
        let starter = MemoryStarter::default();
        let rec = object("raw/clientes/year=2025/month=05/day=10/a.csv");
        // WHEN both are landed
        let report =
            crate::ingest::memory::block_on(run_land(&starter, vec![Ok(rec.clone()), Ok(rec)]));
        // THEN one execution started and the other is counted as already started
        assert_eq!((report.started, report.already_started), (1, 1));
        assert_eq!(starter.executions().len(), 1);
        assert!(report.retryable_error.is_none());
    }

    #[test]
    fn one_failing_record_does_not_stop_the_others() {
        // GIVEN a starter that throttles the first name it sees, and an invalid record
        let starter = MemoryStarter::default();
        let first = object("raw/clientes/a.csv");
        let name = classify(&first, None)
            .map(|a| a.execution_name)
            .unwrap_or_default();
        starter.fail_next(&name, StartErrorKind::Transient);
        let bad = InvalidRecord {
            bucket: Some("lake".into()),
            key: Some("raw/clientes/%ZZ".into()),
            detail: "bad escape".into(),
        };
        // WHEN the batch is landed
        let report = crate::ingest::memory::block_on(run_land(
            &starter,
            vec![
                Ok(first),
                Err(bad),
                Ok(object("raw/proveedores/p.csv")),
                Ok(object("raw/trades/t.ndjson.gz")),
            ],
        ));
        // THEN the others went through, and the throttled one fails the invocation
        assert_eq!(report.started, 1);
        assert_eq!(report.invalid, 1);
        assert_eq!(report.ignored, 1);
        assert_eq!(report.failed, 1);
        assert!(report.retryable_error.is_some());
    }

    #[test]
    fn a_refused_execution_does_not_fail_the_invocation() {
        let starter = MemoryStarter::default();
        let o = object("raw/clientes/a.csv");
        let name = classify(&o, None)
            .map(|a| a.execution_name)
            .unwrap_or_default();
        starter.fail_next(&name, StartErrorKind::Refused);
        let report = crate::ingest::memory::block_on(run_land(&starter, vec![Ok(o)]));
        assert_eq!(report.failed, 1);
        assert!(report.retryable_error.is_none());
    }

    #[test]
    fn the_execution_input_is_the_documented_shape() -> Result<(), serde_json::Error> {
        let starter = MemoryStarter::default();
        let report = crate::ingest::memory::block_on(run_land(
            &starter,
            vec![Ok(object(
                "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv",
            ))],
        ));
        assert_eq!(report.started, 1);
        let (_, input) = starter.executions().into_iter().next().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&input)?;
        assert_eq!(
            v,
            serde_json::json!({
                "bucket": "lake",
                "key": "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv",
                "version_id": null,
                "etag": "0123abcd",
                "size": 120,
                "dataset": "clientes",
                "load_date": "2025-05-10"
            })
        );
        Ok(())
    }
}
