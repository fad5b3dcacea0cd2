//! `s3-landing` — the ingest trigger. Invoked by S3 (bucket notification) or EventBridge (S3
//! "Object Created") for every object written under `raw/`; starts one execution of the ingest
//! state machine per new CSV file of a known dataset, named after the object's identity so a
//! duplicated event never starts a second run. See `docs/functions.md`.

use lago::aws::sfn::SfnStarter;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use s3_landing::{handle, Config, Deps};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let starter = SfnStarter::new(aws_sdk_sfn::Client::new(&sdk), &config.state_machine_arn);
    starter.warm().await;
    let deps = Deps { starter, config };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event).await.map_err(lago::runtime::diagnostic)
    }))
    .await
}
