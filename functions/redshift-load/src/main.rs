//! `redshift-load` — the warehouse task of the state machines (and of the deployment, once, for
//! `setup`), with `{action: "setup" | "submit" | "submit_tables" | "status", …}`: `setup` applies
//! the warehouse DDL, `submit` runs the load plan of one transformed file as one Data API batch
//! (a single transaction), `submit_tables` loads the trade history's day folders and the features
//! the same way, `status` reports a batch's state for the state machine's poll.
//! See `docs/functions.md`.

use lago::aws::redshift::RedshiftDataApi;
use lago::aws::s3::S3Manifests;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use redshift_load::{handle, Config, Deps};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let api = RedshiftDataApi::new(
        aws_sdk_redshiftdata::Client::new(&sdk),
        config.target.clone(),
        &config.database,
    );
    api.warm().await;
    let deps = Deps {
        api,
        manifests: S3Manifests::new(lago::aws::s3::client(&sdk)),
        warehouse: config.warehouse.clone(),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event).await.map_err(lago::runtime::diagnostic)
    }))
    .await
}
