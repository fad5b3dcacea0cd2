//! Delivering a batch's settled outputs to the archive, the dead-letter queue and the notifier.

use super::archive::encode_ndjson_gz;
use super::outcome::BatchOutcome;
use super::ports::{DeadLetterSink, Notifier, SinkError, TradeArchive};

/// A batch output that could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("could not encode the trade archive")]
    Encode(#[source] std::io::Error),
    #[error("could not write the trade archive")]
    Archive(#[source] SinkError),
    #[error("could not send dead letters")]
    DeadLetters(#[source] SinkError),
    #[error("could not publish notifications")]
    Notify(#[source] SinkError),
}

/// Sends a batch's settled outputs: archive object, dead letters, notifications — the three
/// at once, so a batch waits for the slowest rather than their sum. Each is attempted even if
/// another failed; the first error (in that order) is returned. Delivery is at-least-once: a
/// re-sent record's dead letter may be sent again.
pub async fn deliver<A, D, N>(
    outcome: &BatchOutcome,
    archive: &A,
    dead_letters: &D,
    notifier: &N,
) -> Result<(), DeliveryError>
where
    A: TradeArchive + Sync,
    D: DeadLetterSink + Sync,
    N: Notifier + Sync,
{
    let archived = async {
        match &outcome.archive_key {
            Some(key) => match encode_ndjson_gz(&outcome.archive) {
                Ok(body) => archive
                    .put(key, &body)
                    .await
                    .map_err(DeliveryError::Archive),
                Err(e) => Err(DeliveryError::Encode(e)),
            },
            None => Ok(()),
        }
    };
    let dead = async {
        if outcome.dead_letters.is_empty() {
            return Ok(());
        }
        dead_letters
            .send(&outcome.dead_letters)
            .await
            .map_err(DeliveryError::DeadLetters)
    };
    let notified = async {
        if outcome.notifications.is_empty() {
            return Ok(());
        }
        notifier
            .publish(&outcome.notifications)
            .await
            .map_err(DeliveryError::Notify)
    };
    let (archived, dead, notified) = futures_util::future::join3(archived, dead, notified).await;
    archived.and(dead).and(notified)
}
