//! The lake's read port on S3 ([`LakeRead`] for [`S3Lake`]) and the handler's error types,
//! against the real SDK client with mocked responses (`aws-smithy-mocks`) and the production
//! retry policy.

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use lago::aws::s3::{S3Error, S3Lake};
use lago::lake::{LakeError, LakeRead};
use lago::runtime::ErrorKind;
use lambda_runtime::{Context, LambdaEvent};
use std::time::Duration;
use trades_history::{handle, Config, Deps};

fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(lago::aws::retry_config()))
}

fn lake(rules: &[&Rule]) -> S3Lake {
    S3Lake::new(s3(rules), "lake", tokio::runtime::Handle::current())
}

const NO_SUCH_KEY: &str =
    "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_retried_through_503s() -> anyhow::Result<()> {
    // GIVEN S3 answering 503 twice (once as SlowDown), then the object
    let get = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("lake")
                && r.key() == Some("raw/trades/year=2026/month=11/day=28/b.ndjson.gz")
                && r.if_match().is_none()
                && r.version_id().is_none()
        })
        .sequence()
        .http_status(503, None)
        .http_status(
            503,
            Some("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into()),
        )
        .output(|| {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(b"line 1\nline 2\n"))
                .build()
        })
        .build();
    let lake = lake(&[&get]);
    // WHEN the object is read whole through the port
    let body = tokio::task::spawn_blocking(move || {
        lake.read_all("raw/trades/year=2026/month=11/day=28/b.ndjson.gz")
    })
    .await??;
    // THEN the SDK retried and the bytes are the object's
    assert_eq!(body, b"line 1\nline 2\n");
    assert_eq!(get.num_calls(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_not_found_and_not_retried() -> anyhow::Result<()> {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .sequence()
        .http_status(404, Some(NO_SUCH_KEY.into()))
        .build();
    let lake = lake(&[&get]);
    let result =
        tokio::task::spawn_blocking(move || lake.open("processed/trm/missing.parquet").map(|_| ()))
            .await?;
    let Err(LakeError::Io { key, source }) = result else {
        anyhow::bail!("expected LakeError::Io, got {result:?}");
    };
    assert_eq!(key, "processed/trm/missing.parquet");
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(S3Error::kind_of_io(&source), Some(ErrorKind::NotFound));
    assert_eq!(get.num_calls(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_is_a_classified_store_error() -> anyhow::Result<()> {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .sequence()
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into()),
        )
        .build();
    let lake = lake(&[&get]);
    let result =
        tokio::task::spawn_blocking(move || lake.open("raw/trades/x.ndjson.gz").map(|_| ()))
            .await?;
    let Err(e @ LakeError::Store(_)) = result else {
        anyhow::bail!("expected LakeError::Store, got {result:?}");
    };
    assert_eq!(S3Error::kind_in_chain(&e), Some(ErrorKind::InvalidInput));
    assert!(lago::runtime::error_chain(&e).contains("GetObject"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_that_keeps_failing_is_retryable_for_the_state_machine() -> anyhow::Result<()> {
    // GIVEN listing the archive fails with 503 every time
    let list = mock!(aws_sdk_s3::Client::list_objects_v2)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let deps = Deps {
        lake: lake(&[&list]),
        config: Config {
            lake_bucket: "lake".into(),
            deadline_margin: Duration::from_secs(10),
        },
    };
    // WHEN the scheduled task runs
    let event = LambdaEvent::new(serde_json::json!({}), Context::default());
    let Err(e) = handle(&deps, event).await else {
        anyhow::bail!("expected the task to fail");
    };
    // THEN after the SDK's own attempts it fails as Retryable, naming the call
    assert!(list.num_calls() >= lago::aws::MAX_ATTEMPTS as usize);
    let d = lago::runtime::diagnostic(e);
    assert_eq!(d.error_type, "Retryable");
    assert!(
        d.error_message.contains("ListObjectsV2"),
        "{}",
        d.error_message
    );
    Ok(())
}
