//! `s3-landing` — the ingest trigger. Invoked by S3 (bucket notification) or EventBridge (S3
//! "Object Created") for every object written under `raw/`; starts one execution of the ingest
//! state machine per new CSV file of a known dataset, named after the object's identity so a
//! duplicated event never starts a second run. Invoked on a schedule with `{"action": "sweep"}`,
//! starts the runs of raw files that never got one; with `{"action": "redrive"}`, replays the
//! events of the landing DLQ. See `docs/functions.md`.

use lago::aws::redrive::SqsFailureQueue;
use lago::aws::s3::S3RawObjects;
use lago::aws::sfn::SfnStarter;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use s3_landing::{dispatch, Config, Deps};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let starter = SfnStarter::new(aws_sdk_sfn::Client::new(&sdk), &config.state_machine_arn);
    starter.warm().await;
    let raw = S3RawObjects::new(
        lago::aws::s3::client(&sdk),
        config.lake_bucket.clone().unwrap_or_default(),
    );
    let dlq = config
        .landing_dlq_url
        .as_deref()
        .map(|url| SqsFailureQueue::from_sdk(&sdk, url));
    let deps = Deps {
        starter,
        raw,
        dlq,
        config,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        dispatch(deps, event)
            .await
            .map_err(lago::runtime::diagnostic)
    }))
    .await
}
