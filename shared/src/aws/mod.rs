//! AWS adapters of lago's ports (feature `aws`): the lake on S3 ([`s3`]), Step Functions
//! ([`sfn`]), Glue crawlers ([`glue`]), the Redshift Data API ([`redshift`]), Secrets Manager
//! ([`secrets`]), the failure queues and Kinesis shards that redrives read ([`redrive`]); plus
//! the SDK configuration every Lambda builds at start-up (logging is
//! [`crate::runtime::logging`]).
//!
//! Each adapter turns SDK errors into the port's error with the SDK error kept as its `source`,
//! and sorts them into transient (throttling, 5xx, timeouts, dropped connections: retried by the
//! SDK first, then by the state machine) and the rest.

pub mod glue;
pub mod redrive;
pub mod redshift;
pub mod s3;
pub mod secrets;
pub mod sfn;
pub mod trades;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Attempts per SDK call (the first and three retries), with the standard jittered backoff.
pub const MAX_ATTEMPTS: u32 = 4;

/// The retry policy every client uses; tests build mocked clients with it to prove retries.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// The shared SDK configuration: region, credentials and endpoint from the environment (in
/// Lambda: the function's role; locally: `AWS_ENDPOINT_URL` may point at moto), our retries,
/// and a connect timeout so a black-holed endpoint fails fast instead of eating the deadline.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(None).await
}

/// [`sdk_config`] with an explicit endpoint (the integration tests' moto server).
pub async fn sdk_config_for(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Error codes that mean "slow down" whatever the service (the SDK retries these too; here
/// they decide whether the state machine should retry after the SDK gave up).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "InternalServiceError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "OperationTimeoutException",
    "KmsThrottlingException",
];

/// Whether a failed SDK call is worth retrying later: no response (timeout, connection), an
/// unreadable response, a 5xx or 429, or a throttling code.
pub fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500
                || status == 429
                || s.err()
                    .code()
                    .is_some_and(|c| THROTTLING_CODES.contains(&c))
        }
        _ => false,
    }
}

/// The HTTP status of a service error, if the call got that far.
pub fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The moto server the integration tests talk to (`LAGO_MOTO_ENDPOINT`, set by
/// `scripts/moto.sh`'s `moto_start`). Without it a test says it is skipped and returns `None`;
/// the test command sets `LAGO_REQUIRE_MOTO=1`, and then a missing server fails the test instead.
#[cfg(feature = "local")]
pub fn moto_endpoint(test: &str) -> Option<String> {
    use std::io::Write;
    match std::env::var("LAGO_MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(endpoint),
        _ => {
            assert!(
                std::env::var("LAGO_REQUIRE_MOTO").as_deref() != Ok("1"),
                "{test}: LAGO_MOTO_ENDPOINT is not set but LAGO_REQUIRE_MOTO=1"
            );
            // Straight to the terminal: the test harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: LAGO_MOTO_ENDPOINT is not set \
                 (source scripts/moto.sh && moto_start, or run make test)"
            );
            None
        }
    }
}

/// What the moto tests of the function crates share: a name no other run uses, an object's
/// bytes, a bucket's keys.
#[cfg(feature = "local")]
pub mod moto {
    use std::collections::BTreeSet;

    use std::io;

    /// `<prefix>-<process id>-<nanoseconds>`: unique across tests and runs sharing one server.
    pub fn unique_name(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    /// The whole body of `bucket/key`.
    pub async fn object_bytes(
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
    ) -> io::Result<Vec<u8>> {
        let out = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(io::Error::other)?;
        let body = out.body.collect().await.map_err(io::Error::other)?;
        Ok(body.into_bytes().to_vec())
    }

    /// Every key of `bucket` (up to one listing page, what a test bucket holds).
    pub async fn object_keys(
        s3: &aws_sdk_s3::Client,
        bucket: &str,
    ) -> io::Result<BTreeSet<String>> {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .map_err(io::Error::other)?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }
}
