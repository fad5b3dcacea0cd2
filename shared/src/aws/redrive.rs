//! The redrive ports in AWS: [`SqsFailureQueue`] (the landing DLQ, the trades stream's
//! failure queue) and [`KinesisShardReader`] (a recorded range of a shard, read again).

use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::is_transient;
use crate::redrive::{
    sequence_cmp, FailureQueue, QueueError, QueueMessage, ShardRange, ShardReader, ShardRecord,
    StreamBatch, StreamError,
};

/// A failure queue on SQS. Messages received stay hidden for the visibility timeout (default
/// 15 minutes, the longest a Lambda invocation runs) — longer than a redrive holds them.
#[derive(Debug, Clone)]
pub struct SqsFailureQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    visibility: Duration,
    wait: Duration,
}

impl SqsFailureQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsFailureQueue {
            client,
            queue_url: queue_url.into(),
            visibility: Duration::from_secs(900),
            wait: Duration::from_secs(1),
        }
    }

    /// A client of `sdk` for the queue at `queue_url`.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(aws_sdk_sqs::Client::new(sdk), queue_url)
    }

    /// How long a received message stays hidden.
    pub fn with_visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

fn queue_error<E>(
    operation: &'static str,
    e: aws_sdk_sqs::error::SdkError<E, super::HttpResponse>,
) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    QueueError {
        operation,
        transient: is_transient(&e),
        source: Box::new(e),
    }
}

impl FailureQueue for SqsFailureQueue {
    #[instrument(skip(self), fields(queue = %self.queue_url))]
    async fn receive(&self, max: usize) -> Result<Vec<QueueMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(self.visibility.as_secs().min(43_200) as i32)
            // Long polling asks every server of the queue, so an empty answer means empty.
            .wait_time_seconds(self.wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| queue_error("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes()
                        .and_then(|a| a.get(&name))
                        .map(String::as_str)
                };
                Some(QueueMessage {
                    id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    sent_at: attr(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|ms| ms.parse::<i64>().ok())
                        .and_then(DateTime::<Utc>::from_timestamp_millis),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                })
            })
            .collect())
    }

    #[instrument(skip(self, message), fields(queue = %self.queue_url, message_id = %message.id))]
    async fn delete(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| queue_error("DeleteMessage", e))?;
        Ok(())
    }

    #[instrument(skip(self, message), fields(queue = %self.queue_url, message_id = %message.id))]
    async fn release(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| queue_error("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

/// Reads a batch's range of its shard back from Kinesis.
#[derive(Debug, Clone)]
pub struct KinesisShardReader {
    client: aws_sdk_kinesis::Client,
    /// GetRecords calls one range may take (a shard allows 5 a second): a bound on a range
    /// that never reaches its end.
    max_calls: u32,
}

impl KinesisShardReader {
    /// A client of `sdk`.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_kinesis::Client::new(sdk))
    }

    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        KinesisShardReader {
            client,
            max_calls: 1000,
        }
    }
}

fn stream_error<E>(
    operation: &'static str,
    shard_id: &str,
    e: aws_sdk_kinesis::error::SdkError<E, super::HttpResponse>,
) -> StreamError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    StreamError {
        operation,
        shard_id: shard_id.to_string(),
        transient: is_transient(&e),
        source: Box::new(e),
    }
}

impl ShardReader for KinesisShardReader {
    #[instrument(skip(self, batch), fields(shard = %batch.shard_id, start = %batch.start_sequence_number, end = %batch.end_sequence_number))]
    async fn read(&self, batch: &StreamBatch) -> Result<ShardRange, StreamError> {
        let shard = batch.shard_id.as_str();
        let iterator = |kind: ShardIteratorType| {
            let mut req = self
                .client
                .get_shard_iterator()
                .stream_arn(&batch.stream_arn)
                .shard_id(shard)
                .shard_iterator_type(kind.clone());
            if kind == ShardIteratorType::AtSequenceNumber {
                req = req.starting_sequence_number(&batch.start_sequence_number);
            }
            req.send()
        };
        let mut range = ShardRange::default();
        // A sequence number the stream no longer holds is refused: read from the oldest record
        // it holds instead, and report the start as trimmed.
        let mut next = match iterator(ShardIteratorType::AtSequenceNumber).await {
            Ok(out) => out.shard_iterator,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_argument_exception()) =>
            {
                range.trimmed = true;
                iterator(ShardIteratorType::TrimHorizon)
                    .await
                    .map_err(|e| stream_error("GetShardIterator", shard, e))?
                    .shard_iterator
            }
            Err(e) => return Err(stream_error("GetShardIterator", shard, e)),
        };
        let mut first = true;
        let mut calls = 0;
        while let Some(it) = next.take() {
            calls += 1;
            if calls > self.max_calls {
                return Err(StreamError {
                    operation: "GetRecords",
                    shard_id: shard.to_string(),
                    transient: true,
                    source: format!(
                        "the range was not read to its end in {} calls",
                        self.max_calls
                    )
                    .into(),
                });
            }
            let out = self
                .client
                .get_records()
                .stream_arn(&batch.stream_arn)
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| stream_error("GetRecords", shard, e))?;
            for r in out.records() {
                let seq = r.sequence_number();
                if first {
                    first = false;
                    if sequence_cmp(seq, &batch.start_sequence_number).is_gt() {
                        range.trimmed = true;
                    }
                }
                if sequence_cmp(seq, &batch.end_sequence_number).is_gt() {
                    return Ok(range);
                }
                if sequence_cmp(seq, &batch.start_sequence_number).is_lt() {
                    continue;
                }
                range.records.push(ShardRecord {
                    sequence_number: seq.to_string(),
                    partition_key: r.partition_key().unwrap_or_default().to_string(),
                    data: r.data().as_ref().to_vec(),
                    arrived_at: r
                        .approximate_arrival_timestamp()
                        .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.to_millis().ok()?)),
                });
                if seq == batch.end_sequence_number {
                    return Ok(range);
                }
            }
            // Caught up with the shard (or it closed): nothing more of the range exists.
            if out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0 {
                break;
            }
            next = out.next_shard_iterator.clone();
        }
        Ok(range)
    }
}
