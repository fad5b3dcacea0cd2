//! Sending many small messages through a batch API (`SendMessageBatch`, `PublishBatch`): pack
//! them into calls of at most 10 entries and a byte budget, run a few calls at once, and send
//! the entries that failed for a transient reason again.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::trades::ports::{BoxError, SinkError};

/// Limits of one batch API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Entries per call (SQS and SNS: 10).
    pub max_entries: usize,
    /// Sum of the entries' sizes per call (SQS and SNS: 256 KiB).
    pub max_bytes: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Rounds of sending: the first plus the retries of failed entries.
    pub attempts: u32,
    /// Wait before the first retry round; doubled each round.
    pub backoff: Duration,
}

/// An entry the service refused, by its index in the caller's slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    pub index: usize,
    pub code: String,
    pub message: String,
    /// The service says the entry itself is wrong: sending it again cannot help.
    pub sender_fault: bool,
}

impl EntryFailure {
    /// A failed entry as SQS and SNS report it: the entry id is the caller's index, and a
    /// sender fault with a throttling code is still worth another round.
    pub(crate) fn reported(
        id: &str,
        code: &str,
        message: Option<&str>,
        sender_fault: bool,
    ) -> Self {
        EntryFailure {
            index: id.parse().unwrap_or(usize::MAX),
            code: code.to_string(),
            message: message.unwrap_or_default().to_string(),
            sender_fault: sender_fault && !super::is_transient_code(code),
        }
    }
}

/// A whole call that failed.
#[derive(Debug)]
pub(crate) struct CallFailure {
    pub transient: bool,
    pub source: BoxError,
}

impl CallFailure {
    /// A request that could not be built: sending it again cannot help.
    pub(crate) fn build(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        CallFailure {
            transient: false,
            source: Box::new(e),
        }
    }
}

/// The sink error for what a batch API left unsent, `cause` wrapping the [`BatchFailure`].
pub(crate) fn sink_error(transient: bool, cause: BoxError) -> SinkError {
    if transient {
        SinkError::Transient(cause)
    } else {
        SinkError::Permanent(cause)
    }
}

/// What could not be sent after every round.
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} entries not sent (first: {first})", failed.len())]
pub struct BatchFailure {
    pub total: usize,
    pub failed: Vec<EntryFailure>,
    /// The description of the first failure.
    pub first: String,
    /// Every failure left may succeed later.
    pub transient: bool,
    #[source]
    pub source: Option<BoxError>,
}

/// Groups `sizes` (in order) into calls within `limits`. An entry larger than the byte budget
/// goes alone (the service then refuses it as a sender fault, which is reported).
pub(crate) fn pack(indexes: &[usize], sizes: &[usize], limits: &BatchLimits) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for &i in indexes {
        let size = sizes.get(i).copied().unwrap_or(0);
        if !current.is_empty()
            && (current.len() == limits.max_entries || bytes + size > limits.max_bytes)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Sends every entry (`sizes[i]` is entry `i`'s size) through `call`, which sends one batch of
/// indexes and answers the entries that failed. Entries that failed for a transient reason,
/// and batches whose call failed transiently, are sent again in later rounds.
pub(crate) async fn send_all<F, Fut>(
    sizes: &[usize],
    limits: BatchLimits,
    call: F,
) -> Result<(), BatchFailure>
where
    F: Fn(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<EntryFailure>, CallFailure>> + Send + 'static,
{
    let total = sizes.len();
    let mut pending: Vec<usize> = (0..total).collect();
    let mut final_failures: Vec<EntryFailure> = Vec::new();
    let mut source: Option<BoxError> = None;
    let mut transient = true;
    let mut wait = limits.backoff;
    for round in 0..limits.attempts.max(1) {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        let last_round = round + 1 == limits.attempts.max(1);
        let mut retry: Vec<usize> = Vec::new();
        let mut in_flight: JoinSet<Result<Vec<EntryFailure>, CallFailure>> = JoinSet::new();
        let mut batch_of: HashMap<tokio::task::Id, Vec<usize>> = HashMap::new();
        let mut batches = pack(&pending, sizes, &limits).into_iter();
        loop {
            while in_flight.len() < limits.concurrency.max(1) {
                let Some(batch) = batches.next() else { break };
                let handle = in_flight.spawn(call(batch.clone()));
                batch_of.insert(handle.id(), batch);
            }
            let Some(joined) = in_flight.join_next_with_id().await else {
                break;
            };
            let (batch, result) = match joined {
                Ok((id, result)) => (batch_of.remove(&id).unwrap_or_default(), result),
                Err(e) => {
                    // A send task panicked: whether its entries went out is unknown, and
                    // sending them again is the safe answer (delivery is at least once).
                    let batch = batch_of.remove(&e.id()).unwrap_or_default();
                    let source: BoxError = Box::new(e);
                    (
                        batch,
                        Err(CallFailure {
                            transient: true,
                            source,
                        }),
                    )
                }
            };
            match result {
                Ok(failures) => {
                    for failure in failures {
                        if !failure.sender_fault && !last_round {
                            retry.push(failure.index);
                        } else {
                            transient &= !failure.sender_fault;
                            final_failures.push(failure);
                        }
                    }
                }
                Err(failure) if failure.transient && !last_round => retry.extend(batch),
                Err(failure) => {
                    transient &= failure.transient;
                    for index in &batch {
                        final_failures.push(EntryFailure {
                            index: *index,
                            code: "CallFailed".to_string(),
                            message: failure.source.to_string(),
                            sender_fault: !failure.transient,
                        });
                    }
                    source.get_or_insert(failure.source);
                }
            }
        }
        retry.sort_unstable();
        pending = retry;
    }
    if final_failures.is_empty() {
        return Ok(());
    }
    final_failures.sort_by_key(|f| f.index);
    let first = final_failures
        .first()
        .map(|f| format!("entry {}: {}: {}", f.index, f.code, f.message))
        .unwrap_or_default();
    Err(BatchFailure {
        total,
        failed: final_failures,
        first,
        transient,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn limits() -> BatchLimits {
        BatchLimits {
            max_entries: 10,
            max_bytes: 100,
            concurrency: 3,
            attempts: 3,
            backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn packs_by_count_and_by_bytes() {
        let sizes = vec![10; 25];
        let all: Vec<usize> = (0..25).collect();
        let lens: Vec<usize> = pack(&all, &sizes, &limits()).iter().map(Vec::len).collect();
        assert_eq!(lens, [10, 10, 5]);
        let sizes = [60, 60, 30, 200, 10];
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(
            pack(&all, &sizes, &limits()),
            [vec![0], vec![1, 2], vec![3], vec![4]]
        );
    }

    #[tokio::test]
    async fn failed_entries_are_sent_again_until_they_pass() -> Result<(), BatchFailure> {
        // GIVEN a service that throttles entry 3 twice
        let sent: Arc<Mutex<Vec<usize>>> = Arc::default();
        let throttled = Arc::new(Mutex::new(2u32));
        let (s, t) = (Arc::clone(&sent), Arc::clone(&throttled));
        let call = move |batch: Vec<usize>| {
            let (s, t) = (Arc::clone(&s), Arc::clone(&t));
            async move {
                let mut failures = Vec::new();
                for i in batch {
                    let mut left = t.lock().unwrap_or_else(|e| e.into_inner());
                    if i == 3 && *left > 0 {
                        *left -= 1;
                        failures.push(EntryFailure {
                            index: i,
                            code: "ThrottlingException".into(),
                            message: "slow down".into(),
                            sender_fault: false,
                        });
                    } else {
                        s.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    }
                }
                Ok(failures)
            }
        };
        // WHEN 12 entries are sent
        send_all(&[1; 12], limits(), call).await?;
        // THEN every entry got through exactly once
        let mut got = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        got.sort_unstable();
        assert_eq!(got, (0..12).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn sender_faults_are_reported_not_retried() {
        let calls = Arc::new(Mutex::new(0u32));
        let c = Arc::clone(&calls);
        let call = move |batch: Vec<usize>| {
            let c = Arc::clone(&c);
            async move {
                *c.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                Ok(batch
                    .into_iter()
                    .filter(|i| *i == 0)
                    .map(|index| EntryFailure {
                        index,
                        code: "InvalidParameterValue".into(),
                        message: "too big".into(),
                        sender_fault: true,
                    })
                    .collect())
            }
        };
        let result = send_all(&[1; 2], limits(), call).await;
        let failed = result.as_ref().err().map(|e| (e.failed.len(), e.transient));
        assert_eq!(failed, Some((1, false)));
        assert_eq!(*calls.lock().unwrap_or_else(|e| e.into_inner()), 1);
    }
}
