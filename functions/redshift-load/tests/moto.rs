//! `redshift-load` against a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set): statement
//! status through DescribeStatement, and manifests read from S3. moto has no
//! BatchExecuteStatement; the batch is proven with `aws-smithy-mocks` in `tests/sdk.rs`.

use aws_sdk_redshiftdata::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use lago::aws::redshift::{ClusterAuth, RedshiftDataApi, WarehouseTarget};
use lago::aws::s3::S3Manifests;
use lago::contract::Dataset;
use lago::ingest::memory::sample_manifest;
use lago::ingest::statements::{exclusive_parts_prefix, parts_stem, LoadTarget, ManifestReader};
use lago::ingest::task::S3Uri;
use lago::load::RedshiftCopy;
use lambda_runtime::{Context, LambdaEvent};
use redshift_load::{handle, Deps};
use serde_json::{json, Value};

/// moto's redshift-data writes `CreatedAt` / `UpdatedAt` as ISO-8601 strings where the Data API's
/// JSON protocol has epoch seconds (botocore tolerates that, the Rust SDK rightly does not). This
/// HTTP client, used only by these tests, rewrites those two fields and changes nothing else.
#[derive(Debug)]
struct EpochTimestamps(SharedHttpClient);

impl HttpClient for EpochTimestamps {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(EpochConnector(self.0.http_connector(settings, components)))
    }
}

#[derive(Debug)]
struct EpochConnector(SharedHttpConnector);

impl HttpConnector for EpochConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.0.clone();
        HttpConnectorFuture::new(async move {
            let mut resp = inner.call(request).await?;
            let body = ByteStream::new(resp.take_body())
                .collect()
                .await
                .map_err(|e| ConnectorError::io(Box::new(e)))?
                .into_bytes();
            let fixed = match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(mut map)) => {
                    for field in ["CreatedAt", "UpdatedAt"] {
                        let epoch = map
                            .get(field)
                            .and_then(Value::as_str)
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .map(|t| t.timestamp());
                        if let Some(secs) = epoch {
                            map.insert(field.to_string(), Value::from(secs));
                        }
                    }
                    serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| body.to_vec())
                }
                _ => body.to_vec(),
            };
            resp.headers_mut().remove("content-length");
            *resp.body_mut() = ByteStream::from(fixed).into_inner();
            Ok(resp)
        })
    }
}

#[tokio::test]
async fn statement_status_and_manifests_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    // The SDK's default HTTPS client (rustls on aws-lc), wrapped.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let rsd = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .http_client(SharedHttpClient::new(EpochTimestamps(http)))
            .build(),
    );
    let s3 = lago::aws::s3::client(&sdk);
    let bucket = format!(
        "lago-moto-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    );
    s3.create_bucket().bucket(&bucket).send().await?;
    // GIVEN a manifest in the lake and a statement moto ran
    let m = sample_manifest(Dataset::Clientes, 2);
    s3.put_object()
        .bucket(&bucket)
        .key(&m.outputs.manifest)
        .body(serde_json::to_vec(&m)?.into())
        .send()
        .await?;
    let id = rsd
        .execute_statement()
        .cluster_identifier("lago-dev-cluster")
        .database("dev")
        .db_user("loader")
        .sql("SELECT COUNT(*) FROM energy.clientes")
        .send()
        .await?
        .id()
        .unwrap_or_default()
        .to_string();
    let api = RedshiftDataApi::new(
        rsd.clone(),
        WarehouseTarget::Cluster {
            cluster_id: "lago-dev-cluster".into(),
            auth: ClusterAuth::DbUser("loader".into()),
        },
        "dev",
    );
    api.warm().await;
    let manifests = S3Manifests::new(s3.clone());
    // THEN the adapter reads the manifest back as written
    let uri = S3Uri::new(&bucket, &m.outputs.manifest);
    assert_eq!(manifests.read_manifest(&uri).await?, m);
    // AND the parts' prefix is theirs alone only while nothing else is under it: one COPY
    // over it, then one per part once an earlier run's part is there too
    for part in &m.outputs.processed {
        s3.put_object()
            .bucket(&bucket)
            .key(&part.key)
            .body(b"PAR1".to_vec().into())
            .send()
            .await?;
    }
    let prefix = exclusive_parts_prefix(&manifests, &bucket, &m).await;
    let stem = parts_stem(m.outputs.processed.iter().map(|p| p.key.as_str()));
    assert_eq!(prefix, stem.map(|s| format!("s3://{bucket}/{s}")));
    assert!(prefix.is_some());
    let stale = m.outputs.processed[0]
        .key
        .replace("-00000.parquet", "-00007.parquet");
    s3.put_object()
        .bucket(&bucket)
        .key(&stale)
        .body(b"PAR1".to_vec().into())
        .send()
        .await?;
    assert_eq!(exclusive_parts_prefix(&manifests, &bucket, &m).await, None);
    let deps = Deps {
        api,
        manifests,
        warehouse: LoadTarget::redshift(
            "energy",
            RedshiftCopy::new("arn:aws:iam::123456789012:role/lago-copy", None)?,
        )?,
    };
    // AND `status` reports what moto says about the statement
    let out = handle(
        &deps,
        LambdaEvent::new(
            json!({"action": "status", "statement_id": id}),
            Context::default(),
        ),
    )
    .await?;
    let described = rsd.describe_statement().id(&id).send().await?;
    let moto_state = described.status().map(|s| s.as_str()).unwrap_or_default();
    assert_eq!(out["state"], moto_state);
    assert_eq!(out["statement_id"], id.as_str());
    // AND an unknown statement is NotFound, a missing manifest too
    let Err(e) = handle(
        &deps,
        LambdaEvent::new(
            json!({"action": "status", "statement_id": "00000000-0000-4000-8000-000000000000"}),
            Context::default(),
        ),
    )
    .await
    else {
        anyhow::bail!("expected NotFound");
    };
    assert_eq!(lago::runtime::diagnostic(e).error_type, "NotFound");
    let Err(e) = handle(
        &deps,
        LambdaEvent::new(
            json!({"action": "submit", "dataset": "clientes", "manifest": format!("s3://{bucket}/manifests/none.json")}),
            Context::default(),
        ),
    )
    .await
    else {
        anyhow::bail!("expected NotFound");
    };
    assert_eq!(lago::runtime::diagnostic(e).error_type, "NotFound");
    Ok(())
}
