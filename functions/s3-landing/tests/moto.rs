//! `s3-landing` against Step Functions in a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set): a real SDK
//! client starts executions, and moto's record of them is checked.

use aws_sdk_sfn::Client;
use lago::aws::moto::unique_name;
use lago::aws::sfn::SfnStarter;
use lambda_runtime::{Context, LambdaEvent};
use s3_landing::{handle, Config, Deps};
use serde_json::Value;

const EVENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/s3-landing/s3-notification.json"
));

#[tokio::test]
async fn a_duplicated_event_starts_one_execution_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let sfn = Client::new(&sdk);
    // GIVEN the ingest state machine
    let arn = sfn
        .create_state_machine()
        .name(unique_name("ingest"))
        .definition(r#"{"StartAt":"Transform","States":{"Transform":{"Type":"Pass","End":true}}}"#)
        .role_arn("arn:aws:iam::123456789012:role/lago-ingest")
        .send()
        .await?
        .state_machine_arn()
        .to_string();
    let starter = SfnStarter::new(sfn.clone(), &arn);
    starter.warm().await;
    let deps = Deps {
        starter,
        config: Config {
            state_machine_arn: arn.clone(),
            lake_bucket: Some("lago-lake-dev".into()),
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
