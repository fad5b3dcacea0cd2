//! `s3-landing` against Step Functions in a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set): a real SDK
//! client starts executions, and moto's record of them is checked.

use aws_sdk_sfn::Client;
use lago::aws::moto::unique_name;
use lago::aws::redrive::SqsFailureQueue;
use lago::aws::s3::S3RawObjects;
use lago::aws::sfn::SfnStarter;
use lago::contract::Dataset;
use lago::ingest::landing::execution_name;
use lago::ingest::memory::MemoryRawObjects;
use lago::ingest::task::ExecutionInput;
use lambda_runtime::{Context, LambdaEvent};
use s3_landing::{dispatch, handle, Config, Deps};
use serde_json::Value;

const EVENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/s3-landing/s3-notification.json"
));

/// A stand-in for the ingest state machine in moto; its ARN.
async fn ingest_state_machine(sfn: &Client) -> anyhow::Result<String> {
    Ok(sfn
        .create_state_machine()
        .name(unique_name("ingest"))
        .definition(r#"{"StartAt":"Transform","States":{"Transform":{"Type":"Pass","End":true}}}"#)
        .role_arn("arn:aws:iam::123456789012:role/lago-ingest")
        .send()
        .await?
        .state_machine_arn()
        .to_string())
}

#[tokio::test]
async fn a_duplicated_event_starts_one_execution_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let sfn = Client::new(&sdk);
    // GIVEN the ingest state machine
    let arn = ingest_state_machine(&sfn).await?;
    let starter = SfnStarter::new(sfn.clone(), &arn);
    starter.warm().await;
    let deps = Deps {
        starter,
        raw: MemoryRawObjects::default(),
        dlq: None::<SqsFailureQueue>,
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: Some("lago-lake-dev".into()),
            sweep_lookback_hours: 48,
            landing_dlq_url: None,
        },
    };
    // WHEN the same S3 event arrives twice
    for _ in 0..2 {
        let ev: Value = serde_json::from_str(EVENT)?;
        handle(&deps, LambdaEvent::new(ev, Context::default())).await?;
    }
    // THEN moto has exactly one execution, with the documented input
    let list = sfn.list_executions().state_machine_arn(&arn).send().await?;
    let executions = list.executions();
    assert_eq!(executions.len(), 1);
    let ex = &executions[0];
    assert!(
        ex.name().starts_with("clientes-clientes_bogota-"),
        "{}",
        ex.name()
    );
    let described = sfn
        .describe_execution()
        .execution_arn(ex.execution_arn())
        .send()
        .await?;
    let input: Value = serde_json::from_str(described.input().unwrap_or("{}"))?;
    assert_eq!(
        input["key"],
        "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv"
    );
    assert_eq!(input["version_id"], "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY");

    // AND once that execution has ended, the event again meets ExecutionAlreadyExists: success,
    // and still one execution
    sfn.stop_execution()
        .execution_arn(ex.execution_arn())
        .send()
        .await?;
    let ev: Value = serde_json::from_str(EVENT)?;
    let report = handle(&deps, LambdaEvent::new(ev, Context::default())).await?;
    assert_eq!((report.started, report.already_started), (0, 1));
    let list = sfn.list_executions().state_machine_arn(&arn).send().await?;
    assert_eq!(list.executions().len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_sweep_starts_exactly_the_raw_files_without_a_manifest_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let (sfn, s3) = (Client::new(&sdk), lago::aws::s3::client(&sdk));
    // GIVEN a versioned lake with three raw files: one processed (its manifest is there), two
    // whose events never arrived, and an archived trade batch (not a dataset file)
    let bucket = unique_name("lago-sweep");
    s3.create_bucket().bucket(&bucket).send().await?;
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await?;
    let mut versions = Vec::new();
    for key in [
        "raw/clientes/year=2026/month=12/day=06/done.csv",
        "raw/clientes/year=2026/month=12/day=06/missed.csv",
        "raw/transacciones/year=2026/month=12/day=07/ventas diciembre.csv",
        "raw/trades/year=2026/month=12/day=07/shard-1-2-x.ndjson.gz",
    ] {
        let put = s3
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(b"id\n1\n".to_vec().into())
            .send()
            .await?;
        versions.push((key, put.version_id().unwrap_or_default().to_string()));
    }
    let done = ExecutionInput {
        bucket: bucket.clone(),
        key: versions[0].0.into(),
        version_id: Some(versions[0].1.clone()),
        etag: None,
        size: 5,
        dataset: Dataset::Clientes,
        load_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap_or_default(),
    };
    let manifest = lago::transform::manifest_key(&done.transform_request());
    s3.put_object()
        .bucket(&bucket)
        .key(&manifest)
        .body(b"{}".to_vec().into())
        .send()
        .await?;
    let arn = ingest_state_machine(&sfn).await?;
    let deps = Deps {
        starter: SfnStarter::new(sfn.clone(), &arn),
        raw: S3RawObjects::new(s3.clone(), &bucket),
        dlq: None::<SqsFailureQueue>,
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: Some(bucket.clone()),
            sweep_lookback_hours: 48,
            landing_dlq_url: None,
        },
    };
    let sweep = serde_json::json!({"action": "sweep"});

    // WHEN the sweep runs
    let report = dispatch(&deps, LambdaEvent::new(sweep.clone(), Context::default())).await?;

    // THEN the two missed files are started, under the names their S3 events would have given
    assert_eq!(report["listed"], 4, "{report}");
    assert_eq!(report["processed"], 1, "{report}");
    assert_eq!(report["ignored"], 1, "{report}");
    assert_eq!(report["started"], 2, "{report}");
    let list = sfn.list_executions().state_machine_arn(&arn).send().await?;
    let mut names: Vec<String> = list
        .executions()
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    names.sort();
    let mut expected = vec![
        execution_name(Dataset::Clientes, &bucket, versions[1].0, &versions[1].1),
        execution_name(
            Dataset::Transacciones,
            &bucket,
            versions[2].0,
            &versions[2].1,
        ),
    ];
    expected.sort();
    assert_eq!(names, expected);

    // WHEN it runs again before they wrote their manifests THEN nothing starts twice
    let again = dispatch(&deps, LambdaEvent::new(sweep, Context::default())).await?;
    assert_eq!(
        (again["started"].as_u64(), again["already_started"].as_u64()),
        (Some(0), Some(2))
    );
    let list = sfn.list_executions().state_machine_arn(&arn).send().await?;
    assert_eq!(list.executions().len(), 2);
    Ok(())
}

/// The landing DLQ's two shapes of message: the event EventBridge could not deliver, and
/// Lambda's on-failure record of an invocation that failed (the event in `requestPayload`).
fn dlq_messages() -> anyhow::Result<[String; 2]> {
    let eventbridge: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/s3-landing/eventbridge-object-created.json"
    )))?;
    let notification: Value = serde_json::from_str(EVENT)?;
    let on_failure = serde_json::json!({
        "version": "1.0",
        "timestamp": "2026-12-07T10:00:00.000Z",
        "requestContext": {
            "requestId": "5b2f4d0e-7a51-4a53-a0c1-1d6c1c1a2f00",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:lago-dev-s3-landing:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": notification,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Retryable", "errorMessage": "1 execution(s) could not be started"}
    });
    Ok([eventbridge.to_string(), on_failure.to_string()])
}

#[tokio::test]
async fn the_landing_dlq_is_redriven_once_whatever_the_number_of_redrives_in_moto(
) -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let (sfn, sqs) = (Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    // GIVEN a landing DLQ holding both shapes of failed landing, and a message that is neither
    let arn = ingest_state_machine(&sfn).await?;
    let url = sqs
        .create_queue()
        .queue_name(unique_name("lago-landing-dlq"))
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    for body in dlq_messages()?
        .into_iter()
        .chain(["{\"not\": \"an event\"}".to_string()])
    {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    let deps = Deps {
        starter: SfnStarter::new(sfn.clone(), &arn),
        raw: MemoryRawObjects::default(),
        dlq: Some(SqsFailureQueue::from_sdk(&sdk, &url)),
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: None,
            sweep_lookback_hours: 48,
            landing_dlq_url: Some(url.clone()),
        },
    };
    let redrive = |dry_run: bool| {
        let payload = serde_json::json!({"action": "redrive", "dry_run": dry_run});
        dispatch(&deps, LambdaEvent::new(payload, Context::default()))
    };
    let executions = || async {
        let list = sfn.list_executions().state_machine_arn(&arn).send().await?;
        anyhow::Ok(list.executions().len())
    };
    let depth = || async {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await?;
        let n = |name| {
            attrs
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        anyhow::Ok((
            n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    };

    // WHEN a dry run looks at it
    let dry = redrive(true).await?;
    // THEN it says what would start, starts nothing and leaves every message visible
    assert_eq!(dry["would_redrive"], 2, "{dry}");
    assert_eq!(dry["unreadable"], 1, "{dry}");
    assert_eq!(dry["items"], 2, "{dry}");
    assert_eq!(executions().await?, 0);
    assert_eq!(depth().await?, (3, 0));

    // WHEN it is redriven
    let first = redrive(false).await?;
    // THEN both files' executions start under the landing names, their messages are deleted,
    // and the unreadable one stays (visible again, its alarm still firing)
    assert_eq!(
        (first["redriven"].as_u64(), first["items"].as_u64()),
        (Some(2), Some(2)),
        "{first}"
    );
    assert_eq!(executions().await?, 2);
    assert_eq!(depth().await?, (1, 0));
    let names: Vec<String> = sfn
        .list_executions()
        .state_machine_arn(&arn)
        .send()
        .await?
        .executions()
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("clientes-clientes_bogota-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("transacciones-")),
        "{names:?}"
    );

    // WHEN the same events come back (the original delivery finally went through) and the
    // queue is redriven again
    for body in dlq_messages()? {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    let second = redrive(false).await?;
    // THEN nothing starts twice: both are recognised by name and deleted
    assert_eq!(second["redriven"], 2, "{second}");
    assert_eq!(second["items"], 0, "{second}");
    assert_eq!(second["items_already_done"], 2, "{second}");
    assert_eq!(executions().await?, 2);
    assert_eq!(depth().await?, (1, 0));
    Ok(())
}
