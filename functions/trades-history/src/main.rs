//! `trades-history` — the trades-history state machine's first task. Invoked with `{}` (the
//! schedule: the archive partitions of today and yesterday, UTC) or `{"date": "YYYY-MM-DD"}`
//! (that day only); turns the archive objects of `raw/trades/` not yet processed into the
//! enriched history in `processed/trades/` (with rejects and manifests), rebuilds the user
//! features and the training set when the history changed, and returns the counts and the
//! Parquet parts for the warehouse load. See `docs/functions.md`.

use lago::aws::s3::S3Lake;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use trades_history::{handle, warm, Config, Deps};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let client = lago::aws::s3::client(&sdk);
    warm(&client, &config.lake_bucket).await;
    let lake = S3Lake::new(
        client,
        &config.lake_bucket,
        tokio::runtime::Handle::current(),
    );
    let deps = Deps { lake, config };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event).await.map_err(lago::runtime::diagnostic)
    }))
    .await
}
