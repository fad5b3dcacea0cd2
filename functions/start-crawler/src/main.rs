//! `start-crawler` — the catalog branch's task. Invoked by the ingest state machine with
//! `{action: "start" | "status", dataset, zone}`: `start` starts the Glue crawler of that dataset
//! and zone (a crawler already running is reported, not an error), `status` reports its state
//! and last crawl so the state machine can poll until it is READY. See `docs/functions.md`.

use lago::aws::glue::GlueCrawlers;
use lago::contract::Dataset;
use lago::ingest::crawler::{crawler_name, CrawlZone};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use start_crawler::{handle, Config, Deps};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let crawlers = GlueCrawlers::new(aws_sdk_glue::Client::new(&sdk));
    crawlers
        .warm(&crawler_name(
            &config.crawler_prefix,
            CrawlZone::Processed,
            Dataset::Clientes,
        ))
        .await;
    let deps = Deps { crawlers, config };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event).await.map_err(lago::runtime::diagnostic)
    }))
    .await
}
