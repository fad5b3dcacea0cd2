//! Redrive: what a failure path left on a queue, run again through the code that failed.
//!
//! Two queues hold what lago could not do by itself:
//! - the landing DLQ: S3 "Object Created" events EventBridge could not deliver to the landing
//!   function (the message is the event), and invocations the function failed after Lambda's
//!   retries (the message is Lambda's on-failure record, the event in `requestPayload`);
//! - the trades stream's failure queue: a Kinesis batch the event source gave up on. The
//!   message holds no trade, only where the batch lies in the stream ([`StreamBatch`]): the
//!   records are read again from the stream, from the recorded sequence number on, for as long
//!   as the stream retains them.
//!
//! Both replays are idempotent by construction — a landing event starts its executions under
//! the names the landing function gives them, and the trade processor applies each trade id
//! once — so a message redriven twice, or redriven while the original delivery finally went
//! through, changes nothing the second time. A message is deleted only once everything it
//! stands for went through; one that fails again is made visible again and stays on its
//! queue (its alarm keeps firing). A dry run reads and reports, and leaves every message where
//! it was.
//!
//! The functions run the replays (`{"action": "redrive"}` to s3-landing and trades-stream);
//! `lago redrive landing|trades` runs the same code from a workstation.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message received from a failure queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    /// What deletes the message or makes it visible again (SQS's receipt handle).
    pub receipt: String,
    pub body: String,
    /// When the message was first sent to the queue.
    pub sent_at: Option<DateTime<Utc>>,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// A failure queue call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} on the failure queue failed")]
pub struct QueueError {
    pub operation: &'static str,
    /// Whether trying again later may pass (throttling, 5xx, time-outs).
    pub transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A queue of failures: SQS in AWS, [`MemoryQueue`] in unit tests.
pub trait FailureQueue: Send + Sync {
    /// Up to `max` (1–10) messages, hidden from other readers while they are redriven.
    fn receive(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<QueueMessage>, QueueError>> + Send;

    /// Removes a message that was redriven.
    fn delete(&self, message: &QueueMessage)
        -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Makes a message visible again now (a dry run, or a redrive that failed).
    fn release(
        &self,
        message: &QueueMessage,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// The most messages one redrive reads unless told otherwise.
pub const DEFAULT_MAX_MESSAGES: usize = 1000;

/// The most messages one redrive may be asked to read.
pub const MAX_MESSAGES: usize = 100_000;

/// How a redrive is asked for: `{"action": "redrive", "dry_run"?: bool, "max_messages"?: N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveRequest {
    pub dry_run: bool,
    pub max_messages: usize,
}

impl RedriveRequest {
    /// Checks the options: `max_messages` 1–[`MAX_MESSAGES`], default [`DEFAULT_MAX_MESSAGES`].
    pub fn new(dry_run: bool, max_messages: Option<u64>) -> Result<RedriveRequest, String> {
        let max_messages = match max_messages {
            None => DEFAULT_MAX_MESSAGES,
            Some(n) if (1..=MAX_MESSAGES as u64).contains(&n) => n as usize,
            Some(n) => return Err(format!("max_messages {n} is not 1–{MAX_MESSAGES}")),
        };
        Ok(RedriveRequest {
            dry_run,
            max_messages,
        })
    }

    /// Reads the options of an invocation's payload; anything unexpected is refused, not
    /// guessed.
    pub fn from_payload(payload: &Value) -> Result<RedriveRequest, String> {
        let dry_run = match payload.get("dry_run") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("dry_run {v} is not true or false"))?,
        };
        let max = match payload.get("max_messages") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| format!("max_messages {v} is not a whole number"))?,
            ),
        };
        RedriveRequest::new(dry_run, max)
    }
}

/// Replays one message: what a landing event or a stream batch becomes in each case.
pub trait MessageRedrive: Sync {
    /// Redrives `message` (or, for a dry run, says what a redrive would do); the outcome
    /// `redriven` deletes the message, any other leaves it on the queue.
    fn redrive(
        &self,
        message: &QueueMessage,
        dry_run: bool,
    ) -> impl Future<Output = MessageReport> + Send;
}

/// Redrives the messages of `queue`, up to `max`, as they are received: until a receive brings
/// nothing new. Each message is handled once; what is not redriven stays hidden until the end
/// of the run (so a receive never hands it back) and is then made visible again.
pub async fn redrive_queue<Q: FailureQueue, R: MessageRedrive>(
    queue: &Q,
    handler: &R,
    dry_run: bool,
    max: usize,
) -> Result<RedriveReport, QueueError> {
    let mut report = RedriveReport::new(dry_run);
    let mut seen = HashSet::new();
    let mut keep = Vec::new();
    let mut result = Ok(());
    while (report.messages as usize) < max {
        let batch = match queue
            .receive((max - report.messages as usize).min(10))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let fresh: Vec<QueueMessage> = batch
            .into_iter()
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for message in fresh {
            let mut done = handler.redrive(&message, dry_run).await;
            if done.outcome == "redriven" {
                if let Err(e) = queue.delete(&message).await {
                    // Redriven, so a second redrive finds nothing to do; it stays listed.
                    done.outcome = "failed";
                    done.detail = format!(
                        "redriven, but not deleted from the queue: {}",
                        crate::runtime::error_chain(&e)
                    );
                }
            }
            if done.outcome != "redriven" {
                keep.push(message);
            }
            report.record(done);
        }
    }
    for message in &keep {
        if let Err(e) = queue.release(message).await {
            // Visible again when its visibility timeout ends anyway.
            tracing::warn!(message_id = %message.id, error = %crate::runtime::error_chain(&e), "message not released");
        }
    }
    result.map(|()| report)
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub message_id: String,
    /// `redriven` (and deleted), `would_redrive` (a dry run), `failed` (left on the queue),
    /// `unreadable` (left on the queue: no event or batch in it) or `expired` (the stream no
    /// longer holds the batch's first records: left on the queue, the loss is reported).
    pub outcome: &'static str,
    pub detail: String,
    /// What the message stands for: the objects of a landing event, or the stream batch.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub subject: Value,
    /// Landing: executions started. Trades: records read back and run again.
    pub items: u64,
    /// Landing: executions that existed already. Trades: trades applied before (duplicates).
    pub already_done: u64,
}

impl MessageReport {
    pub fn new(message: &QueueMessage, outcome: &'static str, detail: impl Into<String>) -> Self {
        MessageReport {
            message_id: message.id.clone(),
            outcome,
            detail: detail.into(),
            subject: Value::Null,
            items: 0,
            already_done: 0,
        }
    }
}

/// What one redrive did.
#[derive(Debug, Default, Serialize)]
pub struct RedriveReport {
    pub dry_run: bool,
    pub messages: u32,
    pub redriven: u32,
    pub would_redrive: u32,
    pub failed: u32,
    pub unreadable: u32,
    pub expired: u32,
    /// Landing: executions started. Trades: records read back from the stream.
    pub items: u64,
    /// Landing: executions that existed already. Trades: trades already applied (duplicates).
    pub items_already_done: u64,
    pub details: Vec<MessageReport>,
}

impl RedriveReport {
    pub fn new(dry_run: bool) -> Self {
        RedriveReport {
            dry_run,
            ..RedriveReport::default()
        }
    }

    /// Counts `report` and keeps it.
    pub fn record(&mut self, report: MessageReport) {
        self.messages += 1;
        self.items += report.items;
        self.items_already_done += report.already_done;
        match report.outcome {
            "redriven" => self.redriven += 1,
            "would_redrive" => self.would_redrive += 1,
            "unreadable" => self.unreadable += 1,
            "expired" => self.expired += 1,
            _ => self.failed += 1,
        }
        self.details.push(report);
    }

    /// One log line with the counts; `queue` says which.
    pub fn log(&self, queue: &str) {
        tracing::info!(
            queue,
            dry_run = self.dry_run,
            messages = self.messages,
            redriven = self.redriven,
            failed = self.failed,
            unreadable = self.unreadable,
            expired = self.expired,
            items = self.items,
            items_already_done = self.items_already_done,
            "failure queue redriven"
        );
    }

    /// Messages still on the queue after this redrive (all of them for a dry run).
    pub fn left_on_queue(&self) -> u32 {
        self.messages - self.redriven
    }
}

/// The landing event a landing-DLQ message holds: the message itself (what EventBridge sends
/// to a rule's DLQ), or `requestPayload` of Lambda's on-failure record.
pub fn landing_event(body: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(payload) = v.get("requestPayload") {
        return Ok(payload.clone());
    }
    if v.get("detail-type").is_some() || v.get("Records").is_some() {
        return Ok(v);
    }
    Err("neither an S3 event nor a Lambda on-failure record".into())
}

/// A Kinesis batch the event source gave up on: `KinesisBatchInfo` of its on-failure record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatch {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub stream_arn: String,
    #[serde(default)]
    pub batch_size: Option<u64>,
    #[serde(default)]
    pub approximate_arrival_of_first_record: Option<DateTime<Utc>>,
    #[serde(default)]
    pub approximate_arrival_of_last_record: Option<DateTime<Utc>>,
}

impl StreamBatch {
    /// Reads the on-failure record of a Kinesis event source mapping.
    pub fn from_failure_record(body: &str) -> Result<StreamBatch, String> {
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "KinesisBatchInfo")]
            info: StreamBatch,
        }
        let r: Record = serde_json::from_str(body)
            .map_err(|e| format!("not a Kinesis on-failure record: {e}"))?;
        for (what, seq) in [
            ("startSequenceNumber", &r.info.start_sequence_number),
            ("endSequenceNumber", &r.info.end_sequence_number),
        ] {
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{what} {seq:?} is not a sequence number"));
            }
        }
        if sequence_cmp(&r.info.start_sequence_number, &r.info.end_sequence_number)
            == std::cmp::Ordering::Greater
        {
            return Err("the batch ends before it starts".into());
        }
        Ok(r.info)
    }

    /// How long the stream still holds the batch's first record, given its retention; negative
    /// once it may have been trimmed. `None` without an arrival time.
    pub fn time_left(&self, retention_hours: u32, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let first = self.approximate_arrival_of_first_record?;
        Some(first + chrono::Duration::hours(i64::from(retention_hours)) - now)
    }
}

/// Orders Kinesis sequence numbers (decimal strings of up to 128 bits and more, so no integer
/// type holds them all): by length, then digit by digit.
pub fn sequence_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// One Kinesis record read back from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub arrived_at: Option<DateTime<Utc>>,
}

/// The records of a batch read back from its shard.
#[derive(Debug, Default)]
pub struct ShardRange {
    /// From the batch's first sequence number to its last, in order.
    pub records: Vec<ShardRecord>,
    /// The stream no longer holds the start of the batch: its first records aged out
    /// (the first record read is later than the batch's first sequence number).
    pub trimmed: bool,
}

/// A stream failure reading a shard.
#[derive(Debug, thiserror::Error)]
#[error("reading {shard_id} back from the stream failed ({operation})")]
pub struct StreamError {
    pub operation: &'static str,
    pub shard_id: String,
    pub transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Reads a recorded range of a shard again: Kinesis (`GetShardIterator` at the sequence
/// number, then `GetRecords`) in AWS.
pub trait ShardReader: Send + Sync {
    fn read(
        &self,
        batch: &StreamBatch,
    ) -> impl Future<Output = Result<ShardRange, StreamError>> + Send;
}

/// The failure queue in memory, for unit tests: `receive` hides what it returns until it is
/// deleted or released.
#[cfg(any(test, feature = "local"))]
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: std::sync::Mutex<MemoryQueueState>,
}

#[cfg(any(test, feature = "local"))]
#[derive(Debug, Default)]
struct MemoryQueueState {
    next: u64,
    /// (message, hidden)
    messages: Vec<(QueueMessage, bool)>,
    deleted: Vec<String>,
}

#[cfg(any(test, feature = "local"))]
impl MemoryQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryQueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `body`; returns its message id.
    pub fn send(&self, body: impl Into<String>) -> String {
        let mut s = self.state();
        s.next += 1;
        let id = format!("m-{}", s.next);
        s.messages.push((
            QueueMessage {
                id: id.clone(),
                receipt: format!("r-{id}"),
                body: body.into(),
                sent_at: None,
                receive_count: 0,
            },
            false,
        ));
        id
    }

    /// The bodies on the queue, visible or not.
    pub fn bodies(&self) -> Vec<String> {
        self.state()
            .messages
            .iter()
            .map(|(m, _)| m.body.clone())
            .collect()
    }

    /// Ids of the messages deleted, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.state().deleted.clone()
    }

    /// Messages received and neither deleted nor released.
    pub fn hidden(&self) -> usize {
        self.state().messages.iter().filter(|(_, h)| *h).count()
    }
}

#[cfg(any(test, feature = "local"))]
impl FailureQueue for MemoryQueue {
    async fn receive(&self, max: usize) -> Result<Vec<QueueMessage>, QueueError> {
        let mut s = self.state();
        let mut out = Vec::new();
        for (m, hidden) in s.messages.iter_mut().filter(|(_, h)| !*h).take(max) {
            *hidden = true;
            m.receive_count += 1;
            out.push(m.clone());
        }
        Ok(out)
    }

    async fn delete(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let mut s = self.state();
        s.messages.retain(|(m, _)| m.receipt != message.receipt);
        s.deleted.push(message.id.clone());
        Ok(())
    }

    async fn release(&self, message: &QueueMessage) -> Result<(), QueueError> {
        for (m, hidden) in self.state().messages.iter_mut() {
            if m.receipt == message.receipt {
                *hidden = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    const FAILURE_RECORD: &str = r#"{
        "requestContext": {"requestId": "c9b8fa9f", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:trades-stream", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-12-07T10:00:06.021Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
            "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
            "approximateArrivalOfFirstRecord": "2026-12-07T10:00:04.835Z",
            "approximateArrivalOfLastRecord": "2026-12-07T10:00:05.580Z",
            "batchSize": 500,
            "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/lago-dev-trades"
        }
    }"#;

    #[test]
    fn the_kinesis_on_failure_record_gives_the_batch_and_the_time_left() {
        let batch = StreamBatch::from_failure_record(FAILURE_RECORD).unwrap();
        assert_eq!(batch.shard_id, "shardId-000000000001");
        assert_eq!(batch.batch_size, Some(500));
        assert!(batch.stream_arn.ends_with("stream/lago-dev-trades"));
        let now = "2026-12-08T10:00:04.835Z".parse().unwrap();
        // A week's retention, a day later: six days left.
        assert_eq!(batch.time_left(168, now), Some(chrono::Duration::days(6)));
        assert!(batch.time_left(12, now).unwrap() < chrono::Duration::zero());
    }

    #[test]
    fn an_on_failure_record_without_a_usable_range_is_refused() {
        for body in [
            "{}",
            "not json",
            r#"{"KinesisBatchInfo": {"shardId": "s", "startSequenceNumber": "12a", "endSequenceNumber": "13", "streamArn": "a"}}"#,
            r#"{"KinesisBatchInfo": {"shardId": "s", "startSequenceNumber": "14", "endSequenceNumber": "13", "streamArn": "a"}}"#,
        ] {
            assert!(StreamBatch::from_failure_record(body).is_err(), "{body}");
        }
    }

    #[test]
    fn a_redrive_request_is_read_strictly() {
        let read = |v: Value| RedriveRequest::from_payload(&v);
        assert_eq!(
            read(serde_json::json!({"action": "redrive"})),
            Ok(RedriveRequest {
                dry_run: false,
                max_messages: DEFAULT_MAX_MESSAGES
            })
        );
        assert_eq!(
            read(serde_json::json!({"dry_run": true, "max_messages": 5})),
            Ok(RedriveRequest {
                dry_run: true,
                max_messages: 5
            })
        );
        for bad in [
            serde_json::json!({"dry_run": "true"}),
            serde_json::json!({"max_messages": 0}),
            serde_json::json!({"max_messages": -3}),
            serde_json::json!({"max_messages": 1e9}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sequence_numbers_compare_as_numbers_of_any_length() {
        assert_eq!(sequence_cmp("9", "10"), Ordering::Less);
        assert_eq!(sequence_cmp("010", "10"), Ordering::Equal);
        assert_eq!(
            sequence_cmp(
                "49601189658422359378836298522902373528957594348623495186",
                "49601189658422359378836298521827638475320189012309704722"
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn a_landing_message_is_the_event_or_lambdas_on_failure_record() {
        let event = r#"{"source": "aws.s3", "detail-type": "Object Created", "detail": {}}"#;
        assert_eq!(landing_event(event).unwrap()["source"], "aws.s3");
        let record = format!(
            r#"{{"version": "1.0", "requestContext": {{"condition": "RetriesExhausted"}}, "requestPayload": {event}, "responsePayload": {{"errorType": "Retryable"}}}}"#
        );
        assert_eq!(
            landing_event(&record).unwrap()["detail-type"],
            "Object Created"
        );
        assert!(landing_event(r#"{"hello": 1}"#).is_err());
        assert!(landing_event("<xml/>").is_err());
    }

    /// Redrives a message whose body is `ok`, fails one whose body is `fail`.
    struct ByBody;

    impl MessageRedrive for ByBody {
        async fn redrive(&self, message: &QueueMessage, dry_run: bool) -> MessageReport {
            let outcome = match (message.body.as_str(), dry_run) {
                (_, true) => "would_redrive",
                ("ok", _) => "redriven",
                _ => "failed",
            };
            MessageReport {
                items: 1,
                ..MessageReport::new(message, outcome, "")
            }
        }
    }

    #[tokio::test]
    async fn redriven_messages_are_deleted_and_the_rest_stay_on_the_queue() {
        // GIVEN 25 messages, 5 of which fail again
        let q = MemoryQueue::default();
        for i in 0..25 {
            q.send(if i % 5 == 0 { "fail" } else { "ok" });
        }
        // WHEN the queue is redriven
        let report = redrive_queue(&q, &ByBody, false, 100).await.unwrap();
        // THEN each message was handled once, 20 deleted, 5 visible again
        assert_eq!(
            (report.messages, report.redriven, report.failed),
            (25, 20, 5)
        );
        assert_eq!(report.items, 25);
        assert_eq!(q.deleted().len(), 20);
        assert_eq!(q.bodies(), vec!["fail"; 5]);
        assert_eq!(q.hidden(), 0);
        // AND a second redrive sees only those
        let again = redrive_queue(&q, &ByBody, false, 100).await.unwrap();
        assert_eq!((again.messages, again.failed), (5, 5));
    }

    #[tokio::test]
    async fn a_dry_run_deletes_nothing_and_max_bounds_the_run() {
        let q = MemoryQueue::default();
        for _ in 0..25 {
            q.send("ok");
        }
        let dry = redrive_queue(&q, &ByBody, true, 100).await.unwrap();
        assert_eq!(
            (dry.messages, dry.would_redrive, dry.left_on_queue()),
            (25, 25, 25)
        );
        assert!(q.deleted().is_empty());
        assert_eq!(q.hidden(), 0);
        let some = redrive_queue(&q, &ByBody, false, 12).await.unwrap();
        assert_eq!(some.redriven, 12);
        assert_eq!(q.bodies().len(), 13);
    }
}
