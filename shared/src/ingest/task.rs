//! The ingest state machine's data: the execution input written by the landing function (and
//! read by the transform), the transform's output (read by the load's `submit`), and `s3://` URIs.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::contract::Dataset;
use crate::runtime::{BoxError, Classified, ErrorKind};
use crate::transform::{Manifest, SourceIdentity, SourceVersion, Status, TransformRequest};

/// The input of one ingest execution: one write of one raw object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInput {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub dataset: Dataset,
    pub load_date: NaiveDate,
}

/// Why a task input cannot be processed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskInputError {
    #[error("the bucket is empty")]
    EmptyBucket,
    #[error("key {key:?} is not under raw/{dataset}/")]
    KeyOutsideDataset { key: String, dataset: Dataset },
    #[error("{0:?} is not an s3://bucket/key URI")]
    BadS3Uri(String),
}

impl ExecutionInput {
    /// What identifies this write of the object: the version id, else the ETag (unquoted).
    pub fn version(&self) -> String {
        match (&self.version_id, &self.etag) {
            (Some(v), _) if !v.is_empty() && v != "null" => v.clone(),
            (_, Some(e)) => e.trim_matches('"').to_string(),
            _ => String::new(),
        }
    }

    /// Checks what the transform relies on: a bucket, and a key under `raw/<dataset>/`.
    pub fn validate(&self) -> Result<(), TaskInputError> {
        if self.bucket.is_empty() {
            return Err(TaskInputError::EmptyBucket);
        }
        match super::landing::raw_dataset(&self.key) {
            Ok(d) if d == self.dataset => Ok(()),
            _ => Err(TaskInputError::KeyOutsideDataset {
                key: self.key.clone(),
                dataset: self.dataset,
            }),
        }
    }

    /// The transform request for this object; output names derive from key and version, so a
    /// retried execution overwrites its own outputs.
    pub fn transform_request(&self) -> TransformRequest {
        TransformRequest {
            dataset: self.dataset,
            load_date: self.load_date,
            source: SourceIdentity {
                key: self.key.clone(),
                size: self.size,
                version: SourceVersion::Known(self.version()),
            },
        }
    }
}

/// An `s3://bucket/key` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> S3Uri {
        S3Uri {
            bucket: bucket.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl FromStr for S3Uri {
    type Err = TaskInputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TaskInputError::BadS3Uri(s.to_string());
        let rest = s.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, key) = rest.split_once('/').ok_or_else(bad)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad());
        }
        Ok(S3Uri::new(bucket, key))
    }
}

/// What the transform task returns to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformOutput {
    /// `ok`, or `rejected` when the whole file was rejected (the state machine notifies and fails).
    pub status: Status,
    pub dataset: Dataset,
    pub load_date: NaiveDate,
    pub bucket: String,
    pub key: String,
    pub rows_in: u64,
    pub rows_ok: u64,
    pub rows_rejected: u64,
    /// The processed Parquet parts, as `s3://` URIs.
    pub outputs: Vec<String>,
    /// The rejected rows (NDJSON) or the rejected file, if any.
    pub rejected: Option<String>,
    /// The manifest, as an `s3://` URI: what the load's `submit` reads.
    pub manifest: String,
    /// File-level reason when the whole file was rejected.
    pub file_reason: Option<String>,
    pub duration_ms: u64,
}

impl TransformOutput {
    /// The task output of a manifest the transform wrote into `bucket`.
    pub fn from_manifest(bucket: &str, m: &Manifest) -> TransformOutput {
        let uri = |key: &str| S3Uri::new(bucket, key).to_string();
        TransformOutput {
            status: m.status.clone(),
            dataset: m.dataset,
            load_date: m.load_date,
            bucket: bucket.to_string(),
            key: m.source.key.clone(),
            rows_in: m.rows_in,
            rows_ok: m.rows_ok,
            rows_rejected: m.rows_rejected,
            outputs: m.outputs.processed.iter().map(|o| uri(&o.key)).collect(),
            rejected: m.outputs.rejected.as_ref().map(|o| uri(&o.key)),
            manifest: uri(&m.outputs.manifest),
            file_reason: m.file_reason.clone(),
            duration_ms: m.duration_ms,
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id:?} does not exist")]
    NotFound {
        id: String,
        #[source]
        source: BoxError,
    },
    #[error("Secrets Manager is unavailable or throttling")]
    Transient(#[source] BoxError),
    #[error("reading secret {id:?} was refused")]
    Refused {
        id: String,
        #[source]
        source: BoxError,
    },
    #[error("secret {id:?} is empty")]
    Empty { id: String },
}

impl Classified for SecretError {
    fn kind(&self) -> ErrorKind {
        match self {
            SecretError::Transient(_) => ErrorKind::Retryable,
            SecretError::NotFound { .. } => ErrorKind::NotFound,
            SecretError::Refused { .. } | SecretError::Empty { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// Reads a secret's value (the PII salt).
pub trait SecretSource: Send + Sync {
    fn secret_bytes(&self, id: &str) -> impl Future<Output = Result<Vec<u8>, SecretError>> + Send;
}

/// The PII salt held by a secret: the value of its `salt` key when the secret is a JSON object
/// (the console's key/value form), else the whole value. An empty salt is refused: hashes
/// without one can be reversed by a dictionary of identity numbers.
pub fn pii_salt(id: &str, secret: &[u8]) -> Result<Vec<u8>, SecretError> {
    let salt = match serde_json::from_slice::<serde_json::Value>(secret) {
        Ok(serde_json::Value::Object(map)) => match map.get("salt") {
            Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
            _ => secret.to_vec(),
        },
        _ => secret.to_vec(),
    };
    if salt.iter().all(u8::is_ascii_whitespace) {
        return Err(SecretError::Empty { id: id.to_string() });
    }
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ExecutionInput {
        ExecutionInput {
            bucket: "lake".into(),
            key: "raw/clientes/year=2025/month=05/day=10/a.csv".into(),
            version_id: None,
            etag: Some("\"abc\"".into()),
            size: 10,
            dataset: Dataset::Clientes,
            load_date: NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default(),
        }
    }

    #[test]
    fn the_version_is_the_version_id_else_the_unquoted_etag() {
        let mut i = input();
        assert_eq!(i.version(), "abc");
        i.version_id = Some("3HL4kqtJlcpXroDTDmJ".into());
        assert_eq!(i.version(), "3HL4kqtJlcpXroDTDmJ");
    }

    #[test]
    fn inputs_must_name_a_key_of_their_dataset() {
        assert_eq!(input().validate(), Ok(()));
        let mut i = input();
        i.dataset = Dataset::Transacciones;
        assert!(matches!(
            i.validate(),
            Err(TaskInputError::KeyOutsideDataset { .. })
        ));
        i = input();
        i.bucket.clear();
        assert_eq!(i.validate(), Err(TaskInputError::EmptyBucket));
    }

    #[test]
    fn optional_fields_may_be_missing() -> Result<(), serde_json::Error> {
        let i: ExecutionInput = serde_json::from_str(
            r#"{"bucket":"b","key":"raw/clientes/a.csv","dataset":"clientes","load_date":"2025-05-10"}"#,
        )?;
        assert_eq!(i.size, 0);
        assert_eq!(i.version(), "");
        Ok(())
    }

    #[test]
    fn s3_uris_round_trip() -> Result<(), TaskInputError> {
        let u: S3Uri = "s3://lake/manifests/clientes/a b.json".parse()?;
        assert_eq!(u, S3Uri::new("lake", "manifests/clientes/a b.json"));
        assert_eq!(u.to_string(), "s3://lake/manifests/clientes/a b.json");
        for bad in ["lake/key", "s3://lake", "s3:///key", "s3://lake/"] {
            assert!(bad.parse::<S3Uri>().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn the_salt_is_the_secret_or_its_salt_key() -> Result<(), SecretError> {
        assert_eq!(pii_salt("s", b"pepper")?, b"pepper");
        assert_eq!(pii_salt("s", br#"{"salt":"pepper"}"#)?, b"pepper");
        assert_eq!(pii_salt("s", br#"{"other":"x"}"#)?, br#"{"other":"x"}"#);
        assert!(matches!(
            pii_salt("s", b" \n"),
            Err(SecretError::Empty { .. })
        ));
        Ok(())
    }
}
