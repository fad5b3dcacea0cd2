//! What every Lambda function of lago shares, whichever pipeline it belongs to: the stable error
//! kinds the state machines match on and their `Diagnostic` ([`diagnostic`]), error chains,
//! reading the environment once at start-up ([`env`]), CloudWatch Embedded Metric Format
//! ([`metrics`]) and logging as Lambda's advanced logging controls configure it ([`logging`]).

pub mod env;
#[cfg(feature = "aws")]
pub mod logging;
pub mod metrics;

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
    /// trades-stream: the portfolio store refused for a reason that will not pass.
    StoreFailure,
    /// trades-stream: a batch's outputs could not be delivered, and a retry will not help.
    DeliveryFailed,
    /// The bytes of an object read or written do not match its checksum: retried once (a
    /// transfer can garble them), then reported.
    ChecksumMismatch,
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
            ErrorKind::StoreFailure => "StoreFailure",
            ErrorKind::DeliveryFailed => "DeliveryFailed",
            ErrorKind::ChecksumMismatch => "ChecksumMismatch",
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

/// Time left before an invocation's deadline (`lambda_runtime::Context::deadline`,
/// milliseconds since the epoch); `None` when the context has none (0, as in tests that build
/// a default context).
pub fn time_left(deadline_ms: u64) -> Option<std::time::Duration> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Some(std::time::Duration::from_millis(
        deadline_ms.saturating_sub(now_ms),
    ))
}

/// `(error_type, error_message)` of a classified error, ready for a `Diagnostic`.
pub fn diagnostic_parts<E: Classified + 'static>(err: &E) -> (&'static str, String) {
    (err.kind().error_type(), error_chain(err))
}

/// The `Diagnostic` the Lambda runtime reports for a classified error: its stable kind as
/// `errorType`, its chain as `errorMessage`. Every function's `main` maps its handler's error
/// through this one function.
#[cfg(feature = "aws")]
pub fn diagnostic<E: Classified + 'static>(err: E) -> lambda_runtime::Diagnostic {
    let (error_type, error_message) = diagnostic_parts(&err);
    lambda_runtime::Diagnostic {
        error_type: error_type.to_string(),
        error_message,
    }
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
