//! The Redshift Data API and S3 manifest adapters against the real SDK clients with mocked
//! responses (`aws-smithy-mocks`). moto has no BatchExecuteStatement, so the batch — the exact
//! SQL list, in order, as one call (one transaction) — is proven here.

use std::sync::{Arc, Mutex};

use aws_sdk_redshiftdata::operation::batch_execute_statement::{
    BatchExecuteStatementError, BatchExecuteStatementOutput,
};
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::error::{ActiveStatementsExceededException, ValidationException};
use aws_sdk_redshiftdata::types::{StatementStatusString, StatusString, SubStatementData};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use lago::aws::redshift::{RedshiftDataApi, WarehouseTarget};
use lago::aws::s3::S3Manifests;
use lago::contract::Dataset;
use lago::ingest::memory::sample_manifest;
use lago::ingest::statements::{load_statements, LoadTarget};
use lago::ingest::task::S3Uri;
use lago::load::RedshiftCopy;
use lago::transform::Manifest;
use lambda_runtime::{Context, LambdaEvent};
use redshift_load::{handle, Deps};
use serde_json::{json, Value};

const ROLE: &str = "arn:aws:iam::123456789012:role/lago-dev-redshift-copy";
const STATEMENT_ID: &str = "d9b6c0c9-0747-4bf4-b142-e8883122f766";

fn warehouse() -> anyhow::Result<LoadTarget> {
    Ok(LoadTarget::redshift(
        "energy",
        RedshiftCopy::new(ROLE, None)?,
    )?)
}

/// A transacciones manifest whose source key tries to break out of its SQL literal.
fn hostile_manifest() -> Manifest {
    let mut m = sample_manifest(Dataset::Transacciones, 2);
    m.source.key = r"raw/transacciones/ventas'; DROP TABLE energy.clientes; -- \x.csv".into();
    m
}

fn s3_with(manifest: &Manifest) -> anyhow::Result<(aws_sdk_s3::Client, Rule)> {
    let body = serde_json::to_vec(manifest)?;
    let len = body.len() as i64;
    let key = manifest.outputs.manifest.clone();
    let rule = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(move |r| {
            r.bucket() == Some("lago-lake-dev") && r.key() == Some(key.as_str())
        })
        .then_output(move || {
            GetObjectOutput::builder()
                .content_length(len)
                .body(ByteStream::from(body.clone()))
                .build()
        });
    // The parts' prefix lists exactly the manifest's parts: one COPY over it.
    let parts: Vec<String> = manifest
        .outputs
        .processed
        .iter()
        .map(|p| p.key.clone())
        .collect();
    let list = mock!(aws_sdk_s3::Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("lago-lake-dev"))
        .then_output(move || {
            let mut out = aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder();
            for key in &parts {
                out = out.contents(aws_sdk_s3::types::Object::builder().key(key).build());
            }
            out.build()
        });
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule, &list]);
    Ok((client, rule))
}

fn data_api(rules: &[&Rule]) -> RedshiftDataApi {
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, rules, |c| c
        .retry_config(lago::aws::retry_config()));
    RedshiftDataApi::new(
        client,
        WarehouseTarget::Serverless {
            workgroup: "lago-dev".into(),
            secret_arn: None,
        },
        "dev",
    )
}

fn submit_event(m: &Manifest) -> LambdaEvent<Value> {
    LambdaEvent::new(
        json!({
            "action": "submit",
            "dataset": m.dataset,
            "manifest": S3Uri::new("lago-lake-dev", &m.outputs.manifest).to_string(),
        }),
        Context::default(),
    )
}

#[tokio::test]
async fn submit_sends_the_plan_as_one_batch_exactly_in_order() -> anyhow::Result<()> {
    // GIVEN a two-part transacciones manifest with a hostile source key
    let m = hostile_manifest();
    let (s3, get) = s3_with(&m)?;
    let stem =
        lago::ingest::statements::parts_stem(m.outputs.processed.iter().map(|p| p.key.as_str()))
            .unwrap_or_default();
    let expected = load_statements(
        &warehouse()?,
        &S3Uri::new("lago-lake-dev", &m.outputs.manifest),
        &m,
        Some(&format!("s3://lago-lake-dev/{stem}")),
    )?;
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen_in = seen.clone();
    let batch = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement)
        .match_requests(move |r| {
            if let Ok(mut s) = seen_in.lock() {
                s.push(r.sqls().to_vec());
            }
            r.workgroup_name() == Some("lago-dev")
                && r.database() == Some("dev")
                && r.cluster_identifier().is_none()
                && r.db_user().is_none()
                && r.client_token().is_some_and(|t| t.len() == 64)
                && r.statement_name()
                    .is_some_and(|n| n.starts_with("lago-load-transacciones-"))
        })
        .then_output(|| {
            BatchExecuteStatementOutput::builder()
                .id(STATEMENT_ID)
                .build()
        });
    let deps = Deps {
        api: data_api(&[&batch]),
        manifests: S3Manifests::new(s3),
        warehouse: warehouse()?,
    };
    // WHEN it is submitted
    let out = handle(&deps, submit_event(&m)).await?;
    // THEN one BatchExecuteStatement call carried the whole plan — one transaction
    assert_eq!(batch.num_calls(), 1);
    assert_eq!(get.num_calls(), 1);
    assert_eq!(out["statement_id"], STATEMENT_ID);
    assert_eq!(out["state"], "SUBMITTED");
    let sent = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let sqls = &sent[0];
    // AND the list is exactly the rendered plan, in order: stage, one COPY over the parts'
    // prefix (a listing of it gives exactly the two parts), replace, drop
    assert_eq!(sqls, &expected);
    let kinds: Vec<&str> = sqls
        .iter()
        .map(|s| s.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["CREATE", "COPY", "DELETE", "INSERT", "DROP"]);
    assert!(sqls[0].starts_with("CREATE TEMP TABLE lago_stage_transacciones"));
    let copy = &sqls[1];
    assert!(
        copy.contains(&format!("FROM 's3://lago-lake-dev/{stem}'")),
        "{copy}"
    );
    assert!(m
        .outputs
        .processed
        .iter()
        .all(|part| part.key.starts_with(&stem)));
    assert!(copy.contains(&format!("IAM_ROLE '{ROLE}'")), "{copy}");
    assert!(copy.contains("FORMAT AS PARQUET"), "{copy}");
    // AND the hostile key is data: quote and backslash doubled, the statement not split
    assert!(
        sqls[2].contains(r"'raw/transacciones/ventas''; DROP TABLE energy.clientes; -- \\x.csv'"),
        "{}",
        sqls[2]
    );
    for s in sqls {
        assert!(!s.contains("ventas'; DROP"), "{s}");
        assert!(s.len() < 100_000);
    }
    Ok(())
}

#[tokio::test]
async fn busy_and_unavailable_are_retried_then_reported_retryable() -> anyhow::Result<()> {
    let m = sample_manifest(Dataset::Clientes, 1);
    let (s3, _get) = s3_with(&m)?;
    // 503 then a throttle, then accepted: the SDK retries.
    let flaky = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement)
        .sequence()
        .http_status(503, None)
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .output(|| {
            BatchExecuteStatementOutput::builder()
                .id(STATEMENT_ID)
                .build()
        })
        .build();
    let deps = Deps {
        api: data_api(&[&flaky]),
        manifests: S3Manifests::new(s3.clone()),
        warehouse: warehouse()?,
    };
    let out = handle(&deps, submit_event(&m)).await?;
    assert_eq!(out["statement_id"], STATEMENT_ID);
    assert_eq!(flaky.num_calls(), 3);

    // Too many statements running: the state machine retries later.
    let busy = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement).then_error(|| {
        BatchExecuteStatementError::ActiveStatementsExceededException(
            ActiveStatementsExceededException::builder()
                .message("Active statements exceeded the allowed quota (200)")
                .build(),
        )
    });
    let deps = Deps {
        api: data_api(&[&busy]),
        manifests: S3Manifests::new(s3),
        warehouse: warehouse()?,
    };
    let Err(e) = handle(&deps, submit_event(&m)).await else {
        anyhow::bail!("expected Retryable");
    };
    assert_eq!(lago::runtime::diagnostic(e).error_type, "Retryable");
    Ok(())
}

#[tokio::test]
async fn a_refused_batch_is_load_failed() -> anyhow::Result<()> {
    let m = sample_manifest(Dataset::Proveedores, 1);
    let (s3, _get) = s3_with(&m)?;
    let refused = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement).then_error(|| {
        BatchExecuteStatementError::ValidationException(
            ValidationException::builder()
                .message("Workgroup lago-dev not found")
                .build(),
        )
    });
    let deps = Deps {
        api: data_api(&[&refused]),
        manifests: S3Manifests::new(s3),
        warehouse: warehouse()?,
    };
    let Err(e) = handle(&deps, submit_event(&m)).await else {
        anyhow::bail!("expected LoadFailed");
    };
    let d = lago::runtime::diagnostic(e);
    assert_eq!(d.error_type, "LoadFailed");
    assert!(
        d.error_message.contains("Workgroup lago-dev not found"),
        "{}",
        d.error_message
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_statement_is_reported_with_its_error() -> anyhow::Result<()> {
    let describe = mock!(aws_sdk_redshiftdata::Client::describe_statement)
        .match_requests(|r| r.id() == Some(STATEMENT_ID))
        .then_output(|| {
            DescribeStatementOutput::builder()
                .id(STATEMENT_ID)
                .status(StatusString::Failed)
                .sub_statements(
                    SubStatementData::builder()
                        .id(format!("{STATEMENT_ID}:1"))
                        .status(StatementStatusString::Finished)
                        .build()
                        .unwrap_or_else(|_| unreachable!("id is set")),
                )
                .sub_statements(
                    SubStatementData::builder()
                        .id(format!("{STATEMENT_ID}:2"))
                        .status(StatementStatusString::Failed)
                        .error("S3ServiceException:Access Denied,Status 403")
                        .build()
                        .unwrap_or_else(|_| unreachable!("id is set")),
                )
                .build()
                .unwrap_or_else(|_| unreachable!("id is set"))
        });
    let deps = Deps {
        api: data_api(&[&describe]),
        manifests: S3Manifests::new(mock_client!(aws_sdk_s3, [])),
        warehouse: warehouse()?,
    };
    let out = handle(
        &deps,
        LambdaEvent::new(
            json!({"action": "status", "statement_id": STATEMENT_ID}),
            Context::default(),
        ),
    )
    .await?;
    assert_eq!(out["state"], "FAILED");
    assert_eq!(
        out["error"],
        "statement 2 of the batch: S3ServiceException:Access Denied,Status 403"
    );
    Ok(())
}

#[tokio::test]
async fn setup_sends_the_ddl_to_a_provisioned_cluster_with_a_secret() -> anyhow::Result<()> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_in = seen.clone();
    let batch = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement)
        .match_requests(move |r| {
            if let Ok(mut s) = seen_in.lock() {
                *s = r.sqls().to_vec();
            }
            r.cluster_identifier() == Some("lago-dev-cluster")
                && r.secret_arn()
                    == Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift-loader")
                && r.workgroup_name().is_none()
        })
        .then_output(|| {
            BatchExecuteStatementOutput::builder()
                .id(STATEMENT_ID)
                .build()
        });
    let client = mock_client!(aws_sdk_redshiftdata, [&batch]);
    let api = RedshiftDataApi::new(
        client,
        WarehouseTarget::Cluster {
            cluster_id: "lago-dev-cluster".into(),
            auth: lago::aws::redshift::ClusterAuth::SecretArn(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift-loader".into(),
            ),
        },
        "dev",
    );
    let deps = Deps {
        api,
        manifests: S3Manifests::new(mock_client!(aws_sdk_s3, [])),
        warehouse: warehouse()?,
    };
    let out = handle(
        &deps,
        LambdaEvent::new(json!({"action": "setup"}), Context::default()),
    )
    .await?;
    assert_eq!(out["statement_id"], STATEMENT_ID);
    let sqls = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(sqls[0], "CREATE SCHEMA IF NOT EXISTS energy");
    // The schema, each dataset's table, trades_history and user_features, then the KPI views.
    let tables = Dataset::ALL.len() + 2;
    assert_eq!(sqls.len(), 1 + tables + lago::load::KPI_VIEWS.len());
    assert!(sqls[1..=tables]
        .iter()
        .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS energy.")));
    assert!(sqls[1 + tables..]
        .iter()
        .all(|s| s.starts_with("CREATE OR REPLACE VIEW energy.kpi_")));
    Ok(())
}
