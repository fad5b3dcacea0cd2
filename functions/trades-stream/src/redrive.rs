//! Redrive of the stream's on-failure queue. The Kinesis event source records a batch it gave
//! up on by its place in the stream only; the redrive reads that range again from the shard
//! (`GetShardIterator` at the first sequence number, `GetRecords` to the last) and runs it
//! through the same handler as a delivered batch. The trade processor applies each trade id
//! once, so what was applied before comes back as duplicates and a second redrive is harmless.
//! `lago redrive trades` runs this same code.

use std::future::Future;

use aws_lambda_events::streams::KinesisEventResponse;
use chrono::Utc;
use lago::redrive::{MessageRedrive, MessageReport, QueueMessage, ShardReader, StreamBatch};
use lago::runtime::error_chain;
use lago::trades::{DeadLetterSink, Notifier, PortfolioStore, Recommender, TradeArchive};
use serde_json::json;

use crate::{BatchCounts, HandlerError, KinesisTradeEvent, TradeStream};

/// Runs a batch of records read back from the stream: the function's handler.
pub trait Batches: Sync {
    fn run(
        &self,
        event: &KinesisTradeEvent,
    ) -> impl Future<Output = (Result<KinesisEventResponse, HandlerError>, BatchCounts)> + Send;
}

impl<S, R, A, D, N> Batches for TradeStream<S, R, A, D, N>
where
    S: PortfolioStore + Sync,
    R: Recommender + Sync,
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    async fn run(
        &self,
        event: &KinesisTradeEvent,
    ) -> (Result<KinesisEventResponse, HandlerError>, BatchCounts) {
        let (result, metrics, counts) = self.handle_counted(event, Utc::now(), None).await;
        metrics.property("redrive", true).emit();
        (result, counts)
    }
}

/// Redrives on-failure records with `batches` and `reader` (see the module docs).
pub struct StreamRedrive<'a, B, K> {
    pub batches: &'a B,
    pub reader: &'a K,
    /// The stream's retention, to say how long a batch can still be redriven.
    pub retention_hours: u32,
}

impl<B: Batches, K: ShardReader> MessageRedrive for StreamRedrive<'_, B, K> {
    async fn redrive(&self, message: &QueueMessage, dry_run: bool) -> MessageReport {
        let batch = match StreamBatch::from_failure_record(&message.body) {
            Ok(batch) => batch,
            Err(why) => return MessageReport::new(message, "unreadable", why),
        };
        let hours_left = batch
            .time_left(self.retention_hours, Utc::now())
            .map(|d| d.num_minutes() as f64 / 60.0);
        let subject = json!({
            "stream_arn": batch.stream_arn,
            "shard_id": batch.shard_id,
            "start_sequence_number": batch.start_sequence_number,
            "end_sequence_number": batch.end_sequence_number,
            "batch_size": batch.batch_size,
            "hours_left": hours_left,
        });
        let report = |outcome, detail: String| MessageReport {
            subject: subject.clone(),
            ..MessageReport::new(message, outcome, detail)
        };
        let range = match self.reader.read(&batch).await {
            Ok(range) => range,
            Err(e) => return report("failed", error_chain(&e)),
        };
        let read = range.records.len() as u64;
        if read == 0 && !range.trimmed {
            return report(
                "failed",
                "no record of the range is in the shard (another stream, or a closed shard?)"
                    .into(),
            );
        }
        let lost = if range.trimmed {
            format!(
                "; the stream no longer holds the start of the batch (retention {} h): its \
                 records before {} aged out and are lost",
                self.retention_hours,
                range
                    .records
                    .first()
                    .map_or("the end of the range", |r| r.sequence_number.as_str())
            )
        } else {
            String::new()
        };
        let expired_or = |ok| if range.trimmed { "expired" } else { ok };
        if dry_run {
            return MessageReport {
                items: read,
                ..report(
                    expired_or("would_redrive"),
                    format!("{read} record(s) to read back from the stream{lost}"),
                )
            };
        }
        let event = KinesisTradeEvent::from_shard_records(
            &batch.stream_arn,
            &batch.shard_id,
            &range.records,
        );
        let (result, counts) = self.batches.run(&event).await;
        let done = |outcome, detail: String| MessageReport {
            items: counts.records,
            already_done: counts.duplicates,
            ..report(outcome, detail)
        };
        let summary = format!(
            "{} record(s): {} applied, {} duplicates, {} rejected, {} dead letters",
            counts.records, counts.applied, counts.duplicates, counts.rejected, counts.dead_letters
        );
        match result {
            Ok(response) if response.batch_item_failures.is_empty() => {
                done(expired_or("redriven"), format!("{summary}{lost}"))
            }
            Ok(response) => done(
                "failed",
                format!(
                    "{summary}; stopped at sequence number {} (a transient store failure: redrive again)",
                    response
                        .batch_item_failures
                        .first()
                        .and_then(|f| f.item_identifier.as_deref())
                        .unwrap_or("?")
                ),
            ),
            Err(e) => done("failed", format!("{summary}; {}", error_chain(&e))),
        }
    }
}
