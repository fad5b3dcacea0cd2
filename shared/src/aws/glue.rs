//! Glue crawlers as the catalog branch's [`CrawlerControl`].

use aws_sdk_glue::operation::get_crawler::GetCrawlerError;
use aws_sdk_glue::operation::start_crawler::StartCrawlerError;
use aws_sdk_glue::Client;
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::is_transient;
use crate::ingest::crawler::{
    CrawlStart, CrawlStatus, CrawlerControl, CrawlerError, CrawlerInfo, CrawlerState, LastCrawl,
};

#[derive(Clone)]
pub struct GlueCrawlers {
    client: Client,
}

impl GlueCrawlers {
    pub fn new(client: Client) -> GlueCrawlers {
        GlueCrawlers { client }
    }

    /// Opens the connection during init with a read the function is allowed anyway.
    pub async fn warm(&self, crawler: &str) {
        let r = self.client.get_crawler().name(crawler).send().await;
        tracing::debug!(ok = r.is_ok(), "glue connection warmed");
    }
}

fn to_utc(t: &aws_sdk_glue::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl CrawlerControl for GlueCrawlers {
    #[instrument(skip(self))]
    async fn start(&self, name: &str) -> Result<CrawlStart, CrawlerError> {
        match self.client.start_crawler().name(name).send().await {
            Ok(_) => Ok(CrawlStart::Started),
            Err(e) => match e.as_service_error() {
                Some(StartCrawlerError::CrawlerRunningException(_)) => {
                    Ok(CrawlStart::AlreadyRunning)
                }
                Some(StartCrawlerError::EntityNotFoundException(_)) => {
                    Err(CrawlerError::NotFound {
                        name: name.to_string(),
                        source: Box::new(e),
                    })
                }
                _ if is_transient(&e) => Err(CrawlerError::Transient(Box::new(e))),
                _ => Err(CrawlerError::Refused {
                    name: name.to_string(),
                    source: Box::new(e),
                }),
            },
        }
    }

    #[instrument(skip(self))]
    async fn info(&self, name: &str) -> Result<CrawlerInfo, CrawlerError> {
        let out = match self.client.get_crawler().name(name).send().await {
            Ok(o) => o,
            Err(e) => {
                return Err(match e.as_service_error() {
                    Some(GetCrawlerError::EntityNotFoundException(_)) => CrawlerError::NotFound {
                        name: name.to_string(),
                        source: Box::new(e),
                    },
                    _ if is_transient(&e) => CrawlerError::Transient(Box::new(e)),
                    _ => CrawlerError::Refused {
                        name: name.to_string(),
                        source: Box::new(e),
                    },
                })
            }
        };
        let unknown = |source| CrawlerError::UnknownState {
            name: name.to_string(),
            source,
        };
        let Some(c) = out.crawler() else {
            return Err(CrawlerError::NotFound {
                name: name.to_string(),
                source: "GetCrawler returned no crawler".into(),
            });
        };
        let state: CrawlerState = c
            .state()
            .map(|s| s.as_str())
            .unwrap_or("READY")
            .parse()
            .map_err(unknown)?;
        let last_crawl = c.last_crawl().map(|l| {
            let raw = l.status().map(|s| s.as_str()).unwrap_or_default();
            let status = raw.parse::<CrawlStatus>().ok();
            if status.is_none() && !raw.is_empty() {
                tracing::warn!(crawler = name, status = raw, "unknown last crawl status");
            }
            LastCrawl {
                status,
                error_message: l.error_message().map(str::to_owned),
                started_at: l.start_time().and_then(to_utc),
            }
        });
        Ok(CrawlerInfo { state, last_crawl })
    }
}
