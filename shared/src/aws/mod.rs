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

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

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
/// a connect timeout so a black-holed endpoint fails fast instead of eating the deadline, and
/// the HTTPS client of [`https_client`].
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(None).await
}

/// [`sdk_config`] with an explicit endpoint (the integration tests' moto server).
///
/// Lambda hands a function its region and its role's credentials in the environment; when they
/// are there they are taken from it directly, so start-up does not build the providers of the
/// default chains (web identity and its STS client, ECS, the instance metadata service) that
/// would only ever fall through to the same variables.
pub async fn sdk_config_for(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .retry_config(retry_config())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(region) = non_empty_var("AWS_REGION") {
        loader = loader.region(Region::new(region));
    }
    if non_empty_var("AWS_ACCESS_KEY_ID").is_some()
        && non_empty_var("AWS_SECRET_ACCESS_KEY").is_some()
    {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where the functions' TLS connections find the certificates they trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustRoots {
    /// The Mozilla root certificates compiled into the binary (`webpki-root-certs`): nothing
    /// read from disk, the same trust on every host.
    Compiled,
    /// The system's store as `SSL_CERT_FILE` / `SSL_CERT_DIR` name it (e.g. a proxy's own
    /// certificate authority), read from disk when the first connection is made.
    System,
}

impl TrustRoots {
    /// [`TrustRoots::System`] when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (the operator
    /// named a store), else [`TrustRoots::Compiled`].
    pub fn from_env() -> TrustRoots {
        TrustRoots::from_vars(non_empty_var)
    }

    /// [`TrustRoots::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> TrustRoots {
        let set = |name| var(name).is_some_and(|v: String| !v.is_empty());
        if set("SSL_CERT_FILE") || set("SSL_CERT_DIR") {
            TrustRoots::System
        } else {
            TrustRoots::Compiled
        }
    }
}

/// The HTTPS client every SDK client of a function shares: rustls on aws-lc, as the SDK's
/// default client, trusting [`TrustRoots::from_env`]. With the compiled-in roots a function's
/// first connection does not read and parse the system's certificate files (every file of a
/// hashed certificate directory, on some hosts hundreds), which was most of the functions'
/// start-up beyond the runtime's own.
pub fn https_client() -> SharedHttpClient {
    https_client_trusting(TrustRoots::from_env())
}

/// [`https_client`] with the trust roots given.
pub fn https_client_trusting(roots: TrustRoots) -> SharedHttpClient {
    SharedHttpClient::new(ConnectorPerSettings(https_client_inner(roots)))
}

fn https_client_inner(roots: TrustRoots) -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    if roots == TrustRoots::System {
        return builder.build_https();
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::empty().with_pem_certificate(compiled_roots_pem()))
        .build();
    match context {
        Ok(context) => builder.tls_context(context).build_https(),
        // Not reached with the compiled-in certificates; the system's store is the safe way out.
        Err(_) => builder.build_https(),
    }
}

/// The SDK's HTTPS client, whose connectors (one per distinct timeout settings, each with its
/// TLS configuration and so its parsed trust store) are built when a request first needs
/// them. The SDK's own client also builds a whole connector each time a service client is
/// created, only to throw it away (to load the system's certificates early); a function
/// creating three clients parsed its trust store four times before its first request.
#[derive(Debug)]
struct ConnectorPerSettings<H = SharedHttpClient>(H);

impl<H: HttpClient> HttpClient for ConnectorPerSettings<H> {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The compiled-in root certificates as one PEM text, the form the SDK's trust store takes.
pub fn compiled_roots_pem() -> Vec<u8> {
    use base64::Engine as _;
    let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
    let mut pem = Vec::with_capacity(roots.iter().map(|c| c.len() * 4 / 3 + 64).sum());
    for cert in roots {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        pem.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(cert)
                .as_bytes(),
        );
        pem.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
    }
    pem
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn compiled_roots_pem_holds_every_root_certificate_unchanged() {
        let pem = String::from_utf8(compiled_roots_pem()).expect("ASCII");
        let decoded: Vec<Vec<u8>> = pem
            .split("-----BEGIN CERTIFICATE-----\n")
            .filter(|block| !block.is_empty())
            .map(|block| {
                let body = block
                    .strip_suffix("\n-----END CERTIFICATE-----\n")
                    .expect("each block ends with its END line");
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .expect("base64")
            })
            .collect();
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert!(roots.len() > 100, "{} roots", roots.len());
        assert_eq!(decoded.len(), roots.len());
        for (got, want) in decoded.iter().zip(roots) {
            assert_eq!(got.as_slice(), want.as_ref());
        }
    }

    #[test]
    fn a_named_certificate_store_is_trusted_instead_of_the_compiled_roots() {
        let vars = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(TrustRoots::from_vars(vars(&[])), TrustRoots::Compiled);
        assert_eq!(
            TrustRoots::from_vars(vars(&[("SSL_CERT_FILE", "")])),
            TrustRoots::Compiled
        );
        assert_eq!(
            TrustRoots::from_vars(vars(&[("SSL_CERT_FILE", "/etc/proxy-ca.pem")])),
            TrustRoots::System
        );
        assert_eq!(
            TrustRoots::from_vars(vars(&[("SSL_CERT_DIR", "/etc/ssl/certs")])),
            TrustRoots::System
        );
    }

    /// An inner client counting what is asked of it.
    #[derive(Debug, Default)]
    struct Counts {
        validations: std::sync::atomic::AtomicUsize,
        connectors: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug, Clone, Default)]
    struct Counting(std::sync::Arc<Counts>);

    impl HttpClient for Counting {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.0
                .connectors
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            https_client_inner(TrustRoots::Compiled).http_connector(settings, components)
        }

        fn validate_base_client_config(
            &self,
            _: &aws_sdk_s3::config::RuntimeComponentsBuilder,
            _: &aws_sdk_s3::config::ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            self.0
                .validations
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn creating_service_clients_builds_no_connector() {
        let inner = Counting::default();
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .http_client(SharedHttpClient::new(ConnectorPerSettings(inner.clone())))
            .build();
        let _s3 = aws_sdk_s3::Client::new(&sdk);
        let _sfn = aws_sdk_sfn::Client::new(&sdk);
        let _sqs = aws_sdk_sqs::Client::new(&sdk);
        assert_eq!(
            inner
                .0
                .validations
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the SDK's eager connector build per client is skipped"
        );
        assert_eq!(
            inner.0.connectors.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn the_first_request_builds_the_connector_through_the_wrapper() {
        let inner = Counting::default();
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                aws_sdk_s3::config::Credentials::for_tests(),
            ))
            .endpoint_url("http://127.0.0.1:9")
            .http_client(SharedHttpClient::new(ConnectorPerSettings(inner.clone())))
            .retry_config(RetryConfig::disabled())
            .build();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        // Port 9 refuses the connection: the request fails, after asking for a connector.
        assert!(sqs.list_queues().send().await.is_err());
        assert!(inner.0.connectors.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert_eq!(
            inner
                .0
                .validations
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}
