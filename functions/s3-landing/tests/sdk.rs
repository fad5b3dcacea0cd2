//! The Step Functions adapter against the real SDK client with mocked responses
//! (`aws-smithy-mocks`): retries, the duplicate-event path, and error classification.

use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
use aws_sdk_sfn::types::error::{ExecutionAlreadyExists, InvalidName, StateMachineDoesNotExist};
use aws_sdk_sfn::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use lago::aws::sfn::SfnStarter;
use lago::ingest::memory::MemoryRawObjects;
use lago::redrive::MemoryQueue;
use lambda_runtime::{Context, LambdaEvent};
use s3_landing::{handle, Config, Deps};
use serde_json::Value;

const ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:lago-dev-ingest";
const EVENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/s3-landing/s3-notification.json"
));

fn deps(rules: &[&Rule]) -> Deps<SfnStarter, MemoryRawObjects, MemoryQueue> {
    let client: Client = mock_client!(aws_sdk_sfn, RuleMode::Sequential, rules, |c| c
        .retry_config(lago::aws::retry_config()));
    Deps {
        starter: SfnStarter::new(client, ARN),
        raw: MemoryRawObjects::default(),
        dlq: None,
        config: Config {
            state_machine_arn: ARN.into(),
            lake_bucket: Some("lago-lake-dev".into()),
            sweep_lookback_hours: 48,
            landing_dlq_url: None,
        },
    }
}

fn event() -> anyhow::Result<LambdaEvent<Value>> {
    Ok(LambdaEvent::new(
        serde_json::from_str(EVENT)?,
        Context::default(),
    ))
}

fn started() -> StartExecutionOutput {
    StartExecutionOutput::builder()
        .execution_arn("arn:aws:states:us-east-1:123456789012:execution:lago-dev-ingest:x")
        .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(1_746_884_712))
        .build()
        .unwrap_or_else(|_| unreachable!("all required fields are set"))
}

#[tokio::test]
async fn throttling_and_503_are_retried_by_the_sdk() -> anyhow::Result<()> {
    let rule = mock!(Client::start_execution)
        .match_requests(|r| {
            r.state_machine_arn() == Some(ARN)
                && r.name()
                    .is_some_and(|n| n.starts_with("clientes-clientes_bogota-"))
        })
        .sequence()
        .http_status(503, None)
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .output(started)
        .build();
    let deps = deps(&[&rule]);
    let report = handle(&deps, event()?).await?;
    assert_eq!(report.started, 1);
    assert_eq!(rule.num_calls(), 3);
    Ok(())
}

#[tokio::test]
async fn execution_already_exists_counts_as_success() -> anyhow::Result<()> {
    let rule = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::ExecutionAlreadyExists(
            ExecutionAlreadyExists::builder()
                .message("Execution Already Exists")
                .build(),
        )
    });
    let deps = deps(&[&rule]);
    let report = handle(&deps, event()?).await?;
    assert_eq!(
        (report.started, report.already_started, report.failed),
        (0, 1, 0)
    );
    Ok(())
}

#[tokio::test]
async fn a_persistent_503_fails_the_invocation_as_retryable() -> anyhow::Result<()> {
    let rule = mock!(Client::start_execution)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let deps = deps(&[&rule]);
    let Err(e) = handle(&deps, event()?).await else {
        anyhow::bail!("expected a failure");
    };
    assert_eq!(rule.num_calls(), lago::aws::MAX_ATTEMPTS as usize);
    assert_eq!(lago::runtime::diagnostic(e).error_type, "Retryable");
    Ok(())
}

#[tokio::test]
async fn a_missing_state_machine_is_retried_not_dropped() -> anyhow::Result<()> {
    let rule = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::StateMachineDoesNotExist(StateMachineDoesNotExist::builder().build())
    });
    let deps = deps(&[&rule]);
    let Err(e) = handle(&deps, event()?).await else {
        anyhow::bail!("expected a failure");
    };
    let d = lago::runtime::diagnostic(e);
    assert_eq!(d.error_type, "Retryable");
    assert!(
        d.error_message.contains("state machine"),
        "{}",
        d.error_message
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_name_is_reported_without_failing() -> anyhow::Result<()> {
    let rule = mock!(Client::start_execution)
        .then_error(|| StartExecutionError::InvalidName(InvalidName::builder().build()));
    let deps = deps(&[&rule]);
    let report = handle(&deps, event()?).await?;
    assert_eq!(report.failed, 1);
    assert_eq!(report.records[0].outcome, "failed");
    Ok(())
}
