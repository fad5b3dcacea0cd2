//! The AWS adapters of the trade ports ([`crate::trades::ports`]), used by the `trades-stream`
//! Lambda:
//!
//! | port | adapter | calls |
//! | --- | --- | --- |
//! | [`PortfolioStore`](crate::trades::PortfolioStore) | [`DynamoDbPortfolioStore`] | `BatchGetItem` (100 keys), `TransactWriteItems` |
//! | [`DeadLetterSink`](crate::trades::DeadLetterSink) | [`SqsDeadLetterSink`] | `SendMessageBatch` (10 messages) |
//! | [`TradeArchive`](crate::trades::TradeArchive) | [`S3TradeArchive`] | `PutObject` |
//! | [`Notifier`](crate::trades::Notifier) | [`SnsNotifier`] | `PublishBatch` (10 messages) |
//! | [`Recommender`](crate::trades::Recommender) | [`SageMakerRecommender`] | `InvokeEndpoint` |
//!
//! Every adapter sorts SDK failures with [`crate::aws::is_transient`]: throttling, timeouts,
//! connection failures and 5xx are transient (the batch stops and Kinesis re-sends the rest),
//! anything else is permanent. The SDK's own retries ([`crate::aws::retry_config`]) run first.

pub mod batch;
pub mod dynamodb;
pub mod s3;
pub mod sagemaker;
pub mod sns;
pub mod sqs;

pub use dynamodb::{DynamoDbPortfolioStore, ItemError};
pub use s3::S3TradeArchive;
pub use sagemaker::SageMakerRecommender;
pub use sns::SnsNotifier;
pub use sqs::SqsDeadLetterSink;

pub(crate) use super::is_transient;

/// Per-entry error codes of the batch calls (`SendMessageBatch`, `PublishBatch`) worth sending
/// again, whatever `SenderFault` says.
const TRANSIENT_ENTRY_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "KMS.ThrottlingException",
    "KmsThrottled",
];

/// Whether a per-entry error code of a batch call (`SendMessageBatch`, `PublishBatch`) is
/// worth sending again.
pub(crate) fn is_transient_code(code: &str) -> bool {
    TRANSIENT_ENTRY_CODES.contains(&code) || code.contains("Throttl") || code.contains("Internal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_codes_that_are_worth_retrying() {
        assert!(is_transient_code("ThrottlingException"));
        assert!(is_transient_code("InternalError"));
        assert!(is_transient_code("KMS.ThrottlingException"));
        assert!(!is_transient_code("InvalidParameterValue"));
        assert!(!is_transient_code("AccessDenied"));
    }
}
