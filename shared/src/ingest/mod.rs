//! The event-driven ingest pipeline's logic, shared by the four Lambda functions: what a landed
//! object is and which execution it starts (`landing`), the state machine's task inputs and
//! outputs (`task`), crawler control (`crawler`), the warehouse statements run through the
//! Redshift Data API (`statements`), metrics in CloudWatch Embedded Metric Format (`metrics`),
//! and in-memory adapters of every port for tests (`memory`).
//!
//! Nothing here depends on the AWS SDK: the ports are small async traits whose AWS adapters live
//! in [`crate::aws`] (feature `aws`). Futures returned by the ports are `Send`, so the Lambda
//! runtime can drive them from any tokio worker.

pub mod crawler;
pub mod env;
pub mod landing;
pub mod memory;
pub mod metrics;
pub mod statements;
pub mod task;

use std::error::Error as StdError;
use std::fmt;

/// A boxed error kept as the `source` of a port error, so the SDK's error (with its request id
/// and code) reaches the logs without the ports naming SDK types.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The stable error types a function reports through `lambda_runtime::Diagnostic`; the state
/// machine's `Retry` and `Catch` match on these names, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient (throttling, 5xx, network, an unavailable dependency): retry with backoff.
    Retryable,
    /// The event or task input cannot be processed as given: retrying will not help.
    InvalidInput,
    /// A named resource (object, crawler, statement, state machine) does not exist.
    NotFound,
    /// The warehouse refused or failed the load.
    LoadFailed,
    /// The work did not fit in the invocation's remaining time; nothing was committed.
    DeadlineExceeded,
    /// A bug or a broken invariant: not retried, reported with its detail.
    Internal,
}

impl ErrorKind {
    /// The `error_type` string given to `lambda_runtime::Diagnostic`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ErrorKind::Retryable => "Retryable",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::LoadFailed => "LoadFailed",
            ErrorKind::DeadlineExceeded => "DeadlineExceeded",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.error_type())
    }
}

/// An error that knows which stable [`ErrorKind`] it is.
pub trait Classified: StdError {
    fn kind(&self) -> ErrorKind;
}

/// The error and its chain of sources on one line (`outer: inner: root`), for the
/// `error_message` of a diagnostic and for logs. Sources already printed by their parent (as
/// `#[error("...: {0}")]` does) are not repeated.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = e.source();
    }
    out
}

/// `(error_type, error_message)` of a classified error, ready for a `Diagnostic`.
pub fn diagnostic_parts<E: Classified + 'static>(err: &E) -> (&'static str, String) {
    (err.kind().error_type(), error_chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] std::io::Error);

    impl Classified for Outer {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Retryable
        }
    }

    #[test]
    fn the_chain_keeps_every_source_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&e), "outer failed: connection reset");
        let (ty, msg) = diagnostic_parts(&e);
        assert_eq!(ty, "Retryable");
        assert_eq!(msg, "outer failed: connection reset");
    }
}
