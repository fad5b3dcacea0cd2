//! The Glue adapter against the real SDK client with mocked responses (`aws-smithy-mocks`).

use aws_sdk_glue::operation::get_crawler::{GetCrawlerError, GetCrawlerOutput};
use aws_sdk_glue::operation::start_crawler::{StartCrawlerError, StartCrawlerOutput};
use aws_sdk_glue::types::error::{CrawlerRunningException, EntityNotFoundException};
use aws_sdk_glue::types::{Crawler, CrawlerState, LastCrawlInfo, LastCrawlStatus};
use aws_sdk_glue::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use lago::aws::glue::GlueCrawlers;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use start_crawler::{handle, Config, Deps};

const NAME: &str = "lago-dev-processed-clientes";

fn deps(rules: &[&Rule]) -> Deps<GlueCrawlers> {
    let client: Client = mock_client!(aws_sdk_glue, RuleMode::MatchAny, rules, |c| c
        .retry_config(lago::aws::retry_config()));
    Deps {
        crawlers: GlueCrawlers::new(client),
        config: Config {
            crawler_prefix: "lago-dev".into(),
        },
    }
}

fn event(v: Value) -> LambdaEvent<Value> {
    LambdaEvent::new(v, Context::default())
}

#[tokio::test]
async fn a_running_crawler_is_already_running_not_an_error() -> anyhow::Result<()> {
    let rule = mock!(Client::start_crawler)
        .match_requests(|r| r.name() == Some(NAME))
        .then_error(|| {
            StartCrawlerError::CrawlerRunningException(
                CrawlerRunningException::builder()
                    .message("Crawler with name lago-dev-processed-clientes has already started")
                    .build(),
            )
        });
    let deps = deps(&[&rule]);
    let out = handle(
        &deps,
        event(json!({"action": "start", "dataset": "clientes", "zone": "processed"})),
    )
    .await?;
    assert_eq!(out["state"], "already_running");
    assert_eq!(out["started_at"], Value::Null);
    assert_eq!(rule.num_calls(), 1);
    Ok(())
}

#[tokio::test]
async fn throttled_calls_are_retried() -> anyhow::Result<()> {
    let rule = mock!(Client::start_crawler)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .http_status(503, None)
        .output(|| StartCrawlerOutput::builder().build())
        .build();
    let deps = deps(&[&rule]);
    let out = handle(
        &deps,
        event(json!({"action": "start", "dataset": "clientes", "zone": "processed"})),
    )
    .await?;
    assert_eq!(out["state"], "started");
    assert_eq!(rule.num_calls(), 3);
    Ok(())
}

#[tokio::test]
async fn status_maps_the_crawler_and_its_last_crawl() -> anyhow::Result<()> {
    let rule = mock!(Client::get_crawler)
        .match_requests(|r| r.name() == Some(NAME))
        .then_output(|| {
            GetCrawlerOutput::builder()
                .crawler(
                    Crawler::builder()
                        .name(NAME)
                        .state(CrawlerState::Ready)
                        .last_crawl(
                            LastCrawlInfo::builder()
                                .status(LastCrawlStatus::Failed)
                                .error_message("Insufficient Lake Formation permission(s)")
                                .start_time(aws_sdk_glue::primitives::DateTime::from_secs(
                                    1_746_884_790,
                                ))
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let deps = deps(&[&rule]);
    let out = handle(
        &deps,
        event(json!({"action": "status", "dataset": "clientes", "zone": "processed"})),
    )
    .await?;
    assert_eq!(out["state"], "READY");
    assert_eq!(out["last_crawl"]["status"], "FAILED");
    assert_eq!(
        out["last_crawl"]["error_message"],
        "Insufficient Lake Formation permission(s)"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_crawler_is_not_found_and_not_retried() -> anyhow::Result<()> {
    let rule = mock!(Client::get_crawler).then_error(|| {
        GetCrawlerError::EntityNotFoundException(
            EntityNotFoundException::builder()
                .message("Crawler entry with name lago-dev-raw-clientes does not exist")
                .build(),
        )
    });
    let deps = deps(&[&rule]);
    let Err(e) = handle(
        &deps,
        event(json!({"action": "status", "dataset": "clientes", "zone": "raw"})),
    )
    .await
    else {
        anyhow::bail!("expected NotFound");
    };
    assert_eq!(rule.num_calls(), 1);
    let d = lago::runtime::diagnostic(e);
    assert_eq!(d.error_type, "NotFound");
    assert!(
        d.error_message.contains("lago-dev-raw-clientes"),
        "{}",
        d.error_message
    );
    Ok(())
}
