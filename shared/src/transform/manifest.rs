//! The manifest written for every source file: what came in, what went out, and why.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::contract::Dataset;
use crate::integrity::{ObjectChecksum, Written};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Rejected,
}

/// The source file as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub key: String,
    pub size: u64,
    /// ETag or content hash the caller identified the object by.
    pub version: String,
    /// `xxh3-128:<hex>` of the bytes as stored (compressed if they were).
    pub checksum: String,
    /// The checksum the store kept with the object (on S3: the producer's, or the CRC64NVME S3
    /// computes when the producer sent none), which the read checked when it was a full-object
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_checksum: Option<ObjectChecksum>,
    pub compression: Option<String>,
    pub encoding: Option<String>,
    pub delimiter: Option<String>,
    pub decimal_separator: Option<String>,
    pub bom: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputObject {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// The full-object checksum of the bytes written (absent in manifests written before
    /// outputs carried one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ObjectChecksum>,
}

impl OutputObject {
    /// The output `key` with `rows` rows, as it was written.
    pub fn written(key: impl Into<String>, rows: u64, written: Written) -> OutputObject {
        OutputObject {
            key: key.into(),
            rows,
            bytes: written.bytes,
            checksum: Some(written.checksum),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Outputs {
    pub processed: Vec<OutputObject>,
    pub rejected: Option<OutputObject>,
    pub manifest: String,
}

/// One JSON document per source file under `manifests/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub dataset: Dataset,
    pub load_date: NaiveDate,
    pub source: SourceInfo,
    pub status: Status,
    /// File-level reason (`missing_columns`, `empty_file`, `unreadable`) when rejected whole.
    pub file_reason: Option<String>,
    pub file_detail: Option<String>,
    pub rows_in: u64,
    pub rows_ok: u64,
    pub rows_rejected: u64,
    pub rejects_by_reason: BTreeMap<String, u64>,
    pub ignored_columns: Vec<String>,
    pub missing_optional_columns: Vec<String>,
    pub outputs: Outputs,
    pub started_at: String,
    pub duration_ms: u64,
    /// Where the time went, stage by stage.
    #[serde(default)]
    pub stages: StageTimes,
    pub threads: usize,
}

/// Time spent in each stage of a transform, in milliseconds of wall clock. With one thread the
/// stages run one after another and add up to nearly all of `duration_ms`; with several they
/// overlap, `validate_ms` is summed over the workers, and a stage that waits for a free core
/// counts the wait, so their sum can exceed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageTimes {
    /// Reading, decompressing, decoding and hashing the source, cut into chunks of records.
    pub read_ms: u64,
    /// Splitting, validating and converting the records.
    pub validate_ms: u64,
    /// Checking keys for duplicates (first row wins).
    pub keys_ms: u64,
    /// Encoding, compressing and writing Parquet.
    pub parquet_ms: u64,
    /// Writing rejected rows.
    pub rejects_ms: u64,
}

impl StageTimes {
    pub(crate) fn ms(d: std::time::Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Manifest {
    /// The reconciliation invariant every manifest must hold.
    pub fn balanced(&self) -> bool {
        self.rows_in == self.rows_ok + self.rows_rejected
            && self.rejects_by_reason.values().sum::<u64>() == self.rows_rejected
            && self.outputs.processed.iter().map(|o| o.rows).sum::<u64>() == self.rows_ok
            && self.outputs.rejected.as_ref().map_or(0, |r| r.rows)
                == if self.status == Status::Ok {
                    self.rows_rejected
                } else {
                    self.outputs.rejected.as_ref().map_or(0, |r| r.rows)
                }
    }
}
