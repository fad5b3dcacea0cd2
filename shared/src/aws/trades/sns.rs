//! The [`Notifier`] on an SNS topic: one message per notification, its body the
//! [`Notification`] JSON (`kind` `TradeConfirmed` / `TradeRejected`, the trade, the balances
//! after it or the rejection reason), with the message attributes `user_id`, `side` and `kind`
//! that subscription filter policies match on. Sent with `PublishBatch` (10 per call, a few
//! calls at once); entries refused for a transient reason are published again.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sns::Client;
use tracing::instrument;

use super::batch::{send_all, sink_error, BatchFailure, BatchLimits, CallFailure, EntryFailure};
use super::is_transient;
use crate::trades::ports::{BoxError, Notifier, SinkError};
use crate::trades::Notification;

/// SNS's limit on a message, and on the sum of a batch's messages.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("could not publish notifications to {topic_arn}")]
    Publish {
        topic_arn: String,
        #[source]
        source: BatchFailure,
    },
}

/// Publishes trade notifications to one SNS topic (see the module docs).
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
    limits: BatchLimits,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
            limits: BatchLimits {
                max_entries: 10,
                max_bytes: MAX_BATCH_BYTES,
                concurrency: 16,
                attempts: 4,
                backoff: Duration::from_millis(100),
            },
        }
    }

    /// Rounds of publishing (the first plus retries of failed entries) and the first wait.
    pub fn with_retries(mut self, attempts: u32, first_wait: Duration) -> Self {
        self.limits.attempts = attempts.max(1);
        self.limits.backoff = first_wait;
        self
    }
}

/// One message ready to publish.
struct Message {
    body: String,
    user_id: String,
    side: &'static str,
    kind: &'static str,
}

fn attribute(value: &str) -> Result<MessageAttributeValue, CallFailure> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(CallFailure::build)
}

impl Notifier for SnsNotifier {
    #[instrument(level = "debug", skip_all, fields(notifications = notifications.len()))]
    async fn publish(&self, notifications: &[Notification]) -> Result<(), SinkError> {
        let messages: Arc<Vec<Message>> = Arc::new(
            notifications
                .iter()
                .map(|n| Message {
                    body: n.to_json(),
                    user_id: n.user_id.to_string(),
                    side: n.side.as_str(),
                    kind: n.kind.as_str(),
                })
                .collect(),
        );
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| m.body.len() + m.user_id.len() + m.side.len() + m.kind.len() + 64)
            .collect();
        let call = |batch: Vec<usize>| {
            let client = self.client.clone();
            let topic_arn = self.topic_arn.clone();
            let messages = Arc::clone(&messages);
            async move {
                let mut request = client.publish_batch().topic_arn(topic_arn);
                for i in &batch {
                    let Some(m) = messages.get(*i) else { continue };
                    let entry = PublishBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message(&m.body)
                        .message_attributes("user_id", attribute(&m.user_id)?)
                        .message_attributes("side", attribute(m.side)?)
                        .message_attributes("kind", attribute(m.kind)?)
                        .build()
                        .map_err(CallFailure::build)?;
                    request = request.publish_batch_request_entries(entry);
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
            let cause: BoxError = Box::new(SnsError::Publish {
                topic_arn: self.topic_arn.clone(),
                source,
            });
            sink_error(transient, cause)
        })
    }
}
