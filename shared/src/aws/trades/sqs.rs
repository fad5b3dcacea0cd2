//! The [`DeadLetterSink`] on an SQS queue: one message per dead letter, its body the
//! [`DeadLetter`] JSON (`reason`, `detail`, `shard_id`, `sequence_number`, the original `data`
//! and its `data_encoding`, and `trade_id` / `user_id` when the record was a valid trade), with
//! a `reason` message attribute. Sent with `SendMessageBatch` (10 per call, a few calls at
//! once); entries the service refuses for a transient reason are sent again, the rest reported.
//!
//! A Kinesis record holds up to 1 MiB; a dead letter whose body would pass SQS's 256 KiB limit
//! keeps the first part of `data` and says so (`data_truncated: true`, `data_bytes`).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use tracing::instrument;

use super::batch::{send_all, sink_error, BatchFailure, BatchLimits, CallFailure, EntryFailure};
use super::is_transient;
use crate::trades::ports::{BoxError, DeadLetterSink, SinkError};
use crate::trades::DeadLetter;

/// SQS's limit on a message, and on the sum of a batch's messages.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Room left in a message for the `reason` attribute and the truncation fields.
const HEADROOM: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("could not send dead letters to {queue_url}")]
    Send {
        queue_url: String,
        #[source]
        source: BatchFailure,
    },
}

/// Sends dead letters to one SQS queue (see the module docs).
#[derive(Debug, Clone)]
pub struct SqsDeadLetterSink {
    client: Client,
    queue_url: String,
    limits: BatchLimits,
}

impl SqsDeadLetterSink {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            limits: BatchLimits {
                max_entries: 10,
                max_bytes: MAX_MESSAGE_BYTES,
                concurrency: 8,
                attempts: 4,
                backoff: Duration::from_millis(100),
            },
        }
    }

    /// Rounds of sending (the first plus retries of failed entries) and the first wait.
    pub fn with_retries(mut self, attempts: u32, first_wait: Duration) -> Self {
        self.limits.attempts = attempts.max(1);
        self.limits.backoff = first_wait;
        self
    }
}

/// The message body of a dead letter, within SQS's size limit.
pub fn message_body(letter: &DeadLetter) -> String {
    let json = letter.to_json();
    if json.len() + HEADROOM <= MAX_MESSAGE_BYTES {
        return json;
    }
    let mut value = match serde_json::to_value(letter) {
        Ok(value) => value,
        Err(_) => return json,
    };
    // Escaping can make the data longer in JSON than in bytes: cut, measure, cut again.
    let mut cut = letter.data.len().min(MAX_MESSAGE_BYTES);
    loop {
        while !letter.data.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(fields) = value.as_object_mut() {
            fields.insert("data".into(), letter.data[..cut].into());
            fields.insert("data_truncated".into(), true.into());
            fields.insert("data_bytes".into(), letter.data.len().into());
        }
        let body = value.to_string();
        if body.len() + HEADROOM <= MAX_MESSAGE_BYTES || cut == 0 {
            return body;
        }
        // Shrink in proportion (escapes are spread through the data), at least one byte.
        let target = MAX_MESSAGE_BYTES - HEADROOM;
        let scaled = (cut as u128 * target as u128 / body.len() as u128) as usize;
        cut = scaled.min(cut - 1);
    }
}

impl DeadLetterSink for SqsDeadLetterSink {
    #[instrument(level = "debug", skip_all, fields(letters = letters.len()))]
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let messages: Arc<Vec<(String, String)>> = Arc::new(
            letters
                .iter()
                .map(|l| (message_body(l), l.reason.clone()))
                .collect(),
        );
        let sizes: Vec<usize> = messages
            .iter()
            .map(|(body, reason)| body.len() + reason.len() + 16)
            .collect();
        let call = |batch: Vec<usize>| {
            let client = self.client.clone();
            let queue_url = self.queue_url.clone();
            let messages = Arc::clone(&messages);
            async move {
                let mut request = client.send_message_batch().queue_url(queue_url);
                for i in &batch {
                    let Some((body, reason)) = messages.get(*i) else {
                        continue;
                    };
                    let attribute = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(reason)
                        .build()
                        .map_err(CallFailure::build)?;
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .message_attributes("reason", attribute)
                        .build()
                        .map_err(CallFailure::build)?;
                    request = request.entries(entry);
                }
                match request.send().await {
                    Ok(output) => Ok(output
                        .failed()
                        .iter()
                        .map(|f| {
                            EntryFailure::reported(f.id(), f.code(), f.message(), f.sender_fault())
                        })
                        .collect()),
                    Err(e) => Err(CallFailure {
                        transient: is_transient(&e),
                        source: Box::new(e),
                    }),
                }
            }
        };
        send_all(&sizes, self.limits, call).await.map_err(|source| {
            let transient = source.transient;
            let cause: BoxError = Box::new(SqsError::Send {
                queue_url: self.queue_url.clone(),
                source,
            });
            sink_error(transient, cause)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::DataEncoding;

    fn letter(data: String) -> DeadLetter {
        DeadLetter {
            reason: "invalid_json".into(),
            detail: "expected value".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: "1".into(),
            sub_sequence_number: None,
            data,
            data_encoding: DataEncoding::Utf8,
            trade_id: None,
            user_id: None,
        }
    }

    #[test]
    fn a_small_dead_letter_is_its_json() -> Result<(), serde_json::Error> {
        let l = letter("{oops".into());
        let body: serde_json::Value = serde_json::from_str(&message_body(&l))?;
        assert_eq!(body["reason"], "invalid_json");
        assert_eq!(body["data"], "{oops");
        assert_eq!(body["shard_id"], "shardId-000000000000");
        assert_eq!(body.get("data_truncated"), None);
        Ok(())
    }

    #[test]
    fn a_huge_record_is_truncated_within_the_limit() -> Result<(), serde_json::Error> {
        // GIVEN 1 MiB records of multi-byte characters, and of characters JSON escapes
        for data in ["é".repeat(512 * 1024), "\"\n".repeat(512 * 1024)] {
            let l = letter(data);
            // WHEN it becomes a message
            let body = message_body(&l);
            // THEN it fits, and says what it dropped
            assert!(body.len() + HEADROOM <= MAX_MESSAGE_BYTES, "{}", body.len());
            let value: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(value["data_truncated"], true);
            assert_eq!(value["data_bytes"], 1024 * 1024);
            assert!(value["data"].as_str().is_some_and(|d| d.len() > 100 * 1024));
        }
        Ok(())
    }
}
