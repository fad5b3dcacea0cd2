//! The sweeper: the raw files that landed but were never processed.
//!
//! S3's event delivery is at least once, not always once: a misconfigured rule, a throttled
//! target or an event that exhausted its retries leaves a file in `raw/` that nothing will
//! process. [`sweep`] lists the raw objects of a look-back window, keeps those whose manifest
//! (the commit marker of a processed file, named from the same identity the transform uses) is
//! missing, and starts their executions through [`land`] — under the landing function's own
//! deterministic names, so a file is never processed twice, whoever starts it: an execution still
//! running or already finished is reported `already_started`, not started again.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::landing::{classify, land, ExecutionStarter, LandedObject, RecordReport, StartError};
use crate::runtime::BoxError;
use crate::transform;

/// One raw object as the listing sees it (its current version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawObject {
    pub key: String,
    /// `None` (or `"null"`) in an unversioned bucket.
    pub version_id: Option<String>,
    /// Unquoted.
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// What the sweeper reads of the lake.
pub trait RawObjects: Send + Sync {
    /// The current version of every object under `raw/` modified at or after `since`.
    fn list_raw(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<RawObject>, BoxError>> + Send;

    /// Whether the manifest `key` exists.
    fn has_manifest(&self, key: &str) -> impl Future<Output = Result<bool, BoxError>> + Send;
}

/// What one sweep found and did.
#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub since: Option<DateTime<Utc>>,
    /// Raw objects in the window.
    pub listed: u32,
    /// … of which processed (their manifest exists).
    pub processed: u32,
    /// … not files of a dataset (folder markers, `raw/trades/`, …).
    pub ignored: u32,
    /// … without a manifest: each started, already started, or failed to start.
    pub unprocessed: u32,
    pub started: u32,
    pub already_started: u32,
    pub failed: u32,
    /// One per unprocessed object.
    pub records: Vec<RecordReport>,
    /// The first start failure that may pass (the sweep fails, to be run again).
    #[serde(skip)]
    pub retryable_error: Option<StartError>,
}

/// Why a sweep could not look at the lake.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing raw/ failed")]
    List(#[source] BoxError),
    #[error("reading manifest {key} failed")]
    Manifest {
        key: String,
        #[source]
        source: BoxError,
    },
}

/// Starts an execution for every raw object of `bucket` modified since `since` that has no
/// manifest.
pub async fn sweep<R: RawObjects, S: ExecutionStarter>(
    raw: &R,
    starter: &S,
    bucket: &str,
    since: DateTime<Utc>,
) -> Result<SweepReport, SweepError> {
    let objects = raw.list_raw(since).await.map_err(SweepError::List)?;
    let mut report = SweepReport {
        since: Some(since),
        ..SweepReport::default()
    };
    let mut unprocessed = Vec::new();
    for o in objects {
        report.listed += 1;
        let landed = LandedObject {
            bucket: bucket.to_string(),
            key: o.key,
            size: Some(o.size),
            etag: o.etag,
            version_id: o.version_id,
            sequencer: None,
            event_time: o.last_modified,
        };
        let Ok(accepted) = classify(&landed, Some(bucket)) else {
            report.ignored += 1;
            continue;
        };
        let manifest = transform::manifest_key(&accepted.input.transform_request());
        let exists = raw
            .has_manifest(&manifest)
            .await
            .map_err(|source| SweepError::Manifest {
                key: manifest.clone(),
                source,
            })?;
        if exists {
            report.processed += 1;
            continue;
        }
        report.unprocessed += 1;
        match starter.execution_exists(&accepted.execution_name).await {
            // Running, or ended without a manifest (a failure: notified, redriven by hand).
            Ok(true) => {
                report.already_started += 1;
                report.records.push(RecordReport {
                    bucket: Some(landed.bucket),
                    key: Some(landed.key),
                    outcome: "already_started",
                    execution_name: Some(accepted.execution_name),
                    execution_arn: None,
                    reason: None,
                    retryable: false,
                });
            }
            Ok(false) => unprocessed.push(Ok(landed)),
            Err(e) => {
                report.failed += 1;
                report.records.push(RecordReport {
                    bucket: Some(landed.bucket),
                    key: Some(landed.key),
                    outcome: "failed",
                    execution_name: Some(accepted.execution_name),
                    execution_arn: None,
                    reason: Some(crate::runtime::error_chain(&e)),
                    retryable: e.retryable(),
                });
                if e.retryable() && report.retryable_error.is_none() {
                    report.retryable_error = Some(e);
                }
            }
        }
    }
    let landing = land(starter, Some(bucket), unprocessed).await;
    report.started += landing.started;
    report.already_started += landing.already_started;
    report.failed += landing.failed + landing.ignored + landing.invalid;
    report.records.extend(landing.records);
    if report.retryable_error.is_none() {
        report.retryable_error = landing.retryable_error;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Dataset;
    use crate::ingest::landing::execution_name;
    use crate::ingest::memory::{MemoryRawObjects, MemoryStarter};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn object(key: &str, etag: &str, modified: &str) -> RawObject {
        RawObject {
            key: key.into(),
            version_id: None,
            etag: Some(etag.into()),
            size: 10,
            last_modified: at(modified),
        }
    }

    #[tokio::test]
    async fn only_files_without_a_manifest_are_started_under_the_landing_name() {
        // GIVEN a processed file, an unprocessed one, an old unprocessed one, a folder marker
        let processed = object(
            "raw/clientes/year=2026/month=12/day=01/a.csv",
            "e1",
            "2026-12-01T10:00:00Z",
        );
        let missed = object(
            "raw/clientes/year=2026/month=12/day=01/b.csv",
            "e2",
            "2026-12-01T11:00:00Z",
        );
        let old = object("raw/clientes/c.csv", "e3", "2026-11-01T11:00:00Z");
        let marker = object("raw/clientes/", "e4", "2026-12-01T11:00:00Z");
        let listing = MemoryRawObjects::default();
        listing
            .objects
            .lock()
            .map(|mut o| o.extend([processed.clone(), missed.clone(), old, marker]))
            .ok();
        let done = LandedObject {
            bucket: "lake".into(),
            key: processed.key.clone(),
            size: Some(10),
            etag: processed.etag.clone(),
            version_id: None,
            sequencer: None,
            event_time: processed.last_modified,
        };
        let input = classify(&done, Some("lake")).map(|a| a.input);
        let Ok(input) = input else {
            panic!("the processed file is not a dataset file");
        };
        listing
            .manifests
            .lock()
            .map(|mut m| m.insert(transform::manifest_key(&input.transform_request())))
            .ok();
        let starter = MemoryStarter::default();

        // WHEN the last week is swept
        let report = sweep(&listing, &starter, "lake", at("2026-11-24T00:00:00Z")).await;
        let Ok(report) = report else {
            panic!("the sweep failed");
        };

        // THEN only the missed file starts, under the name the landing function gives it
        assert_eq!(
            (
                report.listed,
                report.processed,
                report.ignored,
                report.unprocessed,
                report.started
            ),
            (3, 1, 1, 1, 1)
        );
        let name = execution_name(Dataset::Clientes, "lake", &missed.key, "e2");
        let started: Vec<String> = starter.executions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(started, vec![name]);

        // WHEN it is swept again before the execution wrote its manifest
        let again = sweep(&listing, &starter, "lake", at("2026-11-24T00:00:00Z")).await;
        // THEN nothing starts twice
        assert!(matches!(again, Ok(r) if r.started == 0 && r.already_started == 1));
    }
}
