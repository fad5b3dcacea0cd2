//! `start-crawler` against Glue in a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set).

use aws_sdk_glue::types::{CrawlerTargets, S3Target};
use aws_sdk_glue::Client;
use lago::aws::glue::GlueCrawlers;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use start_crawler::{handle, Config, Deps};

fn event(v: Value) -> LambdaEvent<Value> {
    LambdaEvent::new(v, Context::default())
}

#[tokio::test]
async fn start_and_poll_a_crawler_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let glue = Client::new(&sdk);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let prefix = format!("lago-moto-{}-{nanos}", std::process::id());
    let name = format!("{prefix}-processed-clientes");
    // GIVEN the dataset's crawler
    glue.create_crawler()
        .name(&name)
        .role("arn:aws:iam::123456789012:role/lago-crawler")
        .database_name("energy_processed_db")
        .targets(
            CrawlerTargets::builder()
                .s3_targets(
                    S3Target::builder()
                        .path("s3://lago-lake-dev/processed/clientes/")
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    let deps = Deps {
        crawlers: GlueCrawlers::new(glue.clone()),
        config: Config {
            crawler_prefix: prefix.clone(),
        },
    };
    let start = json!({"action": "start", "dataset": "clientes", "zone": "processed"});
    // WHEN it is started twice
    let first = handle(&deps, event(start.clone())).await?;
    let second = handle(&deps, event(start)).await?;
    // THEN the first started it and the second found it running
    assert_eq!(first["state"], "started");
    assert_eq!(second["state"], "already_running");
    // AND moto recorded one crawl
    let crawls = glue.list_crawls().crawler_name(&name).send().await?;
    assert_eq!(crawls.crawls().len(), 1);
    // AND polling its status reports RUNNING until moto finishes the crawl, then READY
    let mut states = Vec::new();
    for _ in 0..5 {
        let st = handle(
            &deps,
            event(json!({"action": "status", "dataset": "clientes", "zone": "processed"})),
        )
        .await?;
        let s = st["state"].as_str().unwrap_or_default().to_string();
        states.push(s.clone());
        if s == "READY" {
            break;
        }
        glue.get_crawler().name(&name).send().await?;
    }
    assert!(
        states.iter().all(|s| s == "RUNNING" || s == "READY"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("READY"),
        "{states:?}"
    );

    // An unknown crawler is a clear, non-retryable error.
    let Err(e) = handle(
        &deps,
        event(json!({"action": "start", "dataset": "transacciones", "zone": "raw"})),
    )
    .await
    else {
        anyhow::bail!("expected NotFound");
    };
    assert_eq!(lago::runtime::diagnostic(e).error_type, "NotFound");
    Ok(())
}
