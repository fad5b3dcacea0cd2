//! `transform` — the ingest state machine's first task. Invoked with the execution input
//! `{bucket, key, version_id, etag, size, dataset, load_date}`; streams that raw object from S3
//! through the transform engine into `processed/` (Parquet, multipart-uploaded), `rejected/` and
//! `manifests/`, and returns the counts and output URIs. Invoked with `{"action": "verify",
//! "manifest": "s3://…"}`, recomputes the checksums of that manifest's outputs; with
//! `{"action": "register", …}`, registers its Glue partition. See `docs/functions.md`.

use lago::aws::glue::GluePartitions;
use lago::aws::secrets::SecretsManager;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use transform::{dispatch, Config, Deps, S3Storage};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let storage = S3Storage::new(
        lago::aws::s3::client(&sdk),
        tokio::runtime::Handle::current(),
        &config,
    );
    storage.warm().await;
    // Partitions are registered under GLUE_DATABASE; the client costs nothing until used.
    let deps = Deps::new(
        storage,
        SecretsManager::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        config,
    )
    .with_catalog(GluePartitions::new(aws_sdk_glue::Client::new(&sdk)));
    // The salt is read once per container; reading it now also warms that connection. A failure
    // here is not fatal: the first invocation tries again and reports it.
    deps.warm_salt().await;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        dispatch(deps, event)
            .await
            .map_err(lago::runtime::diagnostic)
    }))
    .await
}
