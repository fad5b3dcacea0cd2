//! The [`TradeArchive`] on the lake bucket: one `PutObject` per batch, at the deterministic key
//! from [`crate::trades::archive_key`] (a retried batch overwrites its object). Encryption is
//! the bucket's default (SSE-KMS in the SAM template): no encryption header is sent, so the
//! key in force is whatever the bucket says, and the function needs `kms:GenerateDataKey` on it.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tracing::instrument;

use super::is_transient;
use crate::trades::ports::{BoxError, SinkError, TradeArchive};

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("could not write s3://{bucket}/{key}")]
    Put {
        bucket: String,
        key: String,
        #[source]
        source: SdkError<PutObjectError>,
    },
}

/// Writes archived trade batches to one bucket.
#[derive(Debug, Clone)]
pub struct S3TradeArchive {
    client: Client,
    bucket: String,
}

impl S3TradeArchive {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl TradeArchive for S3TradeArchive {
    #[instrument(level = "debug", skip(self, body), fields(bytes = body.len()))]
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            // The object is a .gz file (NDJSON inside), not NDJSON served compressed: no
            // Content-Encoding, so no HTTP client unzips it behind the reader's back.
            .content_type("application/gzip")
            // S3 refuses the object unless the bytes it received have this checksum, and keeps
            // it for every later read to check.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(crate::integrity::Written::of(body).checksum.value)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(source) => {
                let transient = is_transient(&source);
                let cause: BoxError = Box::new(S3Error::Put {
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                    source,
                });
                Err(if transient {
                    SinkError::Transient(cause)
                } else {
                    SinkError::Permanent(cause)
                })
            }
        }
    }
}
