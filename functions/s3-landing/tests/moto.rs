//! `s3-landing` against Step Functions in a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set): a real SDK
//! client starts executions, and moto's record of them is checked.

use aws_sdk_sfn::Client;
use lago::aws::moto::unique_name;
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
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: Some("lago-lake-dev".into()),
            sweep_lookback_hours: 48,
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
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: Some(bucket.clone()),
            sweep_lookback_hours: 48,
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
