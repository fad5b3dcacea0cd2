//! The `start-crawler` function's handler: parses the task input and runs
//! [`lago::ingest::crawler::start`] or [`lago::ingest::crawler::status`] on a crawler port.

use lago::ingest::crawler::{self, CrawlerControl, CrawlerError, CrawlerTask};
use lago::runtime::env::{ConfigError, Env};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{Classified, ErrorKind};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// Settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CRAWLER_PREFIX`: crawlers are named `<prefix>-<zone>-<dataset>`.
    pub crawler_prefix: String,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let crawler_prefix = env.required("CRAWLER_PREFIX")?;
        let ok = crawler_prefix.len() <= 200
            && crawler_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(ConfigError::Invalid {
                name: "CRAWLER_PREFIX",
                value: crawler_prefix,
                reason: "use letters, digits, '-' and '_' only".into(),
            });
        }
        Ok(Config { crawler_prefix })
    }
}

pub struct Deps<C> {
    pub crawlers: C,
    pub config: Config,
}

#[derive(Debug, thiserror::Error)]
pub enum CrawlerTaskError {
    #[error("invalid task input (expected {{action: start|status, dataset, zone}})")]
    Input(#[source] serde_json::Error),
    #[error(transparent)]
    Crawler(#[from] CrawlerError),
    #[error("serializing the output failed")]
    Output(#[source] serde_json::Error),
}

impl Classified for CrawlerTaskError {
    fn kind(&self) -> ErrorKind {
        match self {
            CrawlerTaskError::Input(_) => ErrorKind::InvalidInput,
            CrawlerTaskError::Crawler(e) => e.kind(),
            CrawlerTaskError::Output(_) => ErrorKind::Internal,
        }
    }
}

/// One task: `start` or `status`.
pub async fn handle<C: CrawlerControl>(
    deps: &Deps<C>,
    event: LambdaEvent<Value>,
) -> Result<Value, CrawlerTaskError> {
    let task: CrawlerTask =
        serde_json::from_value(event.payload).map_err(CrawlerTaskError::Input)?;
    let prefix = &deps.config.crawler_prefix;
    let started = std::time::Instant::now();
    let (out, emf) = match task {
        CrawlerTask::Start { dataset, zone } => {
            let out =
                crawler::start(&deps.crawlers, prefix, dataset, zone, chrono::Utc::now()).await?;
            let emf = Emf::for_function("start-crawler")
                .dimension("Dataset", dataset.name())
                .metric(
                    "CrawlsStarted",
                    Unit::Count,
                    u64::from(out.state == "started"),
                )
                .property("crawler", out.crawler.clone());
            (serde_json::to_value(&out), emf)
        }
        CrawlerTask::Status {
            dataset,
            zone,
            since,
        } => {
            let out = crawler::status(&deps.crawlers, prefix, dataset, zone, since).await?;
            let failed = out
                .last_crawl
                .as_ref()
                .is_some_and(|l| l.status == Some(crawler::CrawlStatus::Failed));
            let emf = Emf::for_function("start-crawler")
                .dimension("Dataset", dataset.name())
                .metric("FailedCrawlsSeen", Unit::Count, u64::from(failed))
                .property("crawler", out.crawler.clone());
            (serde_json::to_value(&out), emf)
        }
    };
    emf.metric(
        "Duration",
        Unit::Milliseconds,
        started.elapsed().as_millis() as u64,
    )
    .emit();
    out.map_err(CrawlerTaskError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lago::ingest::crawler::{CrawlStatus, CrawlerState, LastCrawl};
    use lago::ingest::memory::MemoryCrawlers;
    use lambda_runtime::Context;

    const START: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/start-crawler/start.json"
    ));
    const STATUS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/start-crawler/status.json"
    ));

    fn deps() -> Deps<MemoryCrawlers> {
        Deps {
            crawlers: MemoryCrawlers::with(&["lago-dev-processed-clientes"]),
            config: Config {
                crawler_prefix: "lago-dev".into(),
            },
        }
    }

    fn event(json: &str) -> anyhow::Result<LambdaEvent<Value>> {
        Ok(LambdaEvent::new(
            serde_json::from_str(json)?,
            Context::default(),
        ))
    }

    #[tokio::test]
    async fn start_starts_the_crawler_once() -> anyhow::Result<()> {
        let deps = deps();
        let out = handle(&deps, event(START)?).await?;
        assert_eq!(out["state"], "started");
        assert_eq!(out["crawler"], "lago-dev-processed-clientes");
        let again = handle(&deps, event(START)?).await?;
        assert_eq!(again["state"], "already_running");
        assert_eq!(deps.crawlers.runs("lago-dev-processed-clientes"), 1);
        Ok(())
    }

    #[tokio::test]
    async fn status_reports_state_and_last_crawl() -> anyhow::Result<()> {
        let deps = deps();
        deps.crawlers.set_state(
            "lago-dev-processed-clientes",
            CrawlerState::Ready,
            Some(LastCrawl {
                status: Some(CrawlStatus::Failed),
                error_message: Some("Insufficient Lake Formation permission(s)".into()),
                started_at: "2025-05-10T13:46:30Z".parse().ok(),
            }),
        );
        let out = handle(&deps, event(STATUS)?).await?;
        assert_eq!(out["state"], "READY");
        assert_eq!(out["last_crawl"]["status"], "FAILED");
        assert_eq!(
            out["last_crawl"]["error_message"],
            "Insufficient Lake Formation permission(s)"
        );
        Ok(())
    }

    #[tokio::test]
    async fn every_sample_event_runs_through_the_handler() -> anyhow::Result<()> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/start-crawler");
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let body = std::fs::read_to_string(&path)?;
            let out = handle(&deps(), event(&body)?).await?;
            assert!(out["state"].is_string(), "{}", path.display());
            n += 1;
        }
        assert!(n >= 2);
        Ok(())
    }

    #[tokio::test]
    async fn errors_carry_stable_types() -> anyhow::Result<()> {
        let deps = deps();
        let cases = [
            (
                r#"{"action":"start","dataset":"clientes","zone":"raw"}"#,
                "NotFound",
            ),
            (
                r#"{"action":"start","dataset":"otros","zone":"raw"}"#,
                "InvalidInput",
            ),
            (
                r#"{"action":"restart","dataset":"clientes","zone":"raw"}"#,
                "InvalidInput",
            ),
            (r#"[]"#, "InvalidInput"),
        ];
        for (body, ty) in cases {
            let Err(e) = handle(&deps, event(body)?).await else {
                anyhow::bail!("{body} should fail");
            };
            assert_eq!(lago::runtime::diagnostic(e).error_type, ty, "{body}");
        }
        deps.crawlers.throttle_next(1);
        let Err(e) = handle(&deps, event(START)?).await else {
            anyhow::bail!("throttled start should fail");
        };
        assert_eq!(lago::runtime::diagnostic(e).error_type, "Retryable");
        Ok(())
    }

    #[test]
    fn config_requires_a_safe_prefix() {
        assert!(Config::from(&Env::from_pairs(&[])).is_err());
        assert!(Config::from(&Env::from_pairs(&[("CRAWLER_PREFIX", "a b")])).is_err());
        assert!(Config::from(&Env::from_pairs(&[("CRAWLER_PREFIX", "lago-dev")])).is_ok());
    }
}
