//! Crawler control for the catalog branch of the state machine: one Glue crawler per dataset and
//! zone, started once per file and polled until it is ready again.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::Dataset;
use crate::runtime::{BoxError, Classified, ErrorKind};

/// The lake zones that have crawlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrawlZone {
    Raw,
    Processed,
}

impl CrawlZone {
    pub fn name(&self) -> &'static str {
        match self {
            CrawlZone::Raw => "raw",
            CrawlZone::Processed => "processed",
        }
    }
}

/// The crawler of a dataset's zone: `<prefix>-<zone>-<dataset>` (the template names them so).
pub fn crawler_name(prefix: &str, zone: CrawlZone, dataset: Dataset) -> String {
    format!("{prefix}-{}-{}", zone.name(), dataset.name())
}

/// The task input of the `start-crawler` function.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CrawlerTask {
    Start {
        dataset: Dataset,
        zone: CrawlZone,
    },
    Status {
        dataset: Dataset,
        zone: CrawlZone,
        /// `started_at` of the `start` output: a crawler still READY with an older last crawl
        /// has not picked the request up yet, and is reported as RUNNING.
        #[serde(default)]
        since: Option<DateTime<Utc>>,
    },
}

/// A crawler's state as Glue reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CrawlerState {
    Running,
    Stopping,
    Ready,
}

impl FromStr for CrawlerState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RUNNING" => Ok(CrawlerState::Running),
            "STOPPING" => Ok(CrawlerState::Stopping),
            "READY" => Ok(CrawlerState::Ready),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// The outcome of a crawler's last crawl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CrawlStatus {
    Succeeded,
    Cancelled,
    Failed,
}

impl FromStr for CrawlStatus {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SUCCEEDED" => Ok(CrawlStatus::Succeeded),
            "CANCELLED" => Ok(CrawlStatus::Cancelled),
            "FAILED" => Ok(CrawlStatus::Failed),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// A state string this code does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCrawl {
    /// `None` when Glue reports a status this code does not know (it is logged).
    pub status: Option<CrawlStatus>,
    pub error_message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
}

/// What GetCrawler says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlerInfo {
    pub state: CrawlerState,
    pub last_crawl: Option<LastCrawl>,
}

/// What StartCrawler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlStart {
    Started,
    AlreadyRunning,
}

/// Why the crawler could not be controlled.
#[derive(Debug, thiserror::Error)]
pub enum CrawlerError {
    #[error("crawler {name:?} does not exist")]
    NotFound {
        name: String,
        #[source]
        source: BoxError,
    },
    #[error("Glue is unavailable or throttling")]
    Transient(#[source] BoxError),
    #[error("Glue refused the request for crawler {name:?}")]
    Refused {
        name: String,
        #[source]
        source: BoxError,
    },
    #[error("crawler {name:?} reported an unknown state")]
    UnknownState {
        name: String,
        #[source]
        source: UnknownState,
    },
}

impl Classified for CrawlerError {
    fn kind(&self) -> ErrorKind {
        match self {
            CrawlerError::NotFound { .. } => ErrorKind::NotFound,
            CrawlerError::Transient(_) => ErrorKind::Retryable,
            CrawlerError::Refused { .. } => ErrorKind::InvalidInput,
            CrawlerError::UnknownState { .. } => ErrorKind::Internal,
        }
    }
}

/// Starts and inspects crawlers.
pub trait CrawlerControl: Send + Sync {
    fn start(&self, name: &str) -> impl Future<Output = Result<CrawlStart, CrawlerError>> + Send;
    fn info(&self, name: &str) -> impl Future<Output = Result<CrawlerInfo, CrawlerError>> + Send;
}

/// The task output of `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOutput {
    pub crawler: String,
    pub dataset: Dataset,
    pub zone: CrawlZone,
    /// `started` or `already_running`.
    pub state: String,
    /// When this request started a crawl; pass it to `status` as `since`.
    pub started_at: Option<DateTime<Utc>>,
}

/// The task output of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutput {
    pub crawler: String,
    pub dataset: Dataset,
    pub zone: CrawlZone,
    pub state: CrawlerState,
    pub last_crawl: Option<LastCrawl>,
}

impl fmt::Display for CrawlerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrawlerState::Running => "RUNNING",
            CrawlerState::Stopping => "STOPPING",
            CrawlerState::Ready => "READY",
        })
    }
}

/// `start`: a crawler already running is not an error (the running crawl, or the next one the
/// state machine's poll waits for, will catalog the new partition).
pub async fn start<C: CrawlerControl>(
    crawlers: &C,
    prefix: &str,
    dataset: Dataset,
    zone: CrawlZone,
    now: DateTime<Utc>,
) -> Result<StartOutput, CrawlerError> {
    let crawler = crawler_name(prefix, zone, dataset);
    let (state, started_at) = match crawlers.start(&crawler).await? {
        CrawlStart::Started => ("started", Some(now)),
        CrawlStart::AlreadyRunning => ("already_running", None),
    };
    tracing::info!(%dataset, zone = zone.name(), %crawler, state, "crawler start requested");
    Ok(StartOutput {
        crawler,
        dataset,
        zone,
        state: state.to_string(),
        started_at,
    })
}

/// Seconds of clock skew allowed between our `since` and Glue's crawl start time.
const SKEW_SECONDS: i64 = 5;

/// `status`: the crawler's state and last crawl. A READY crawler whose last crawl began before
/// `since` has not started the requested crawl yet (StartCrawler is asynchronous), so it is
/// reported as RUNNING and the state machine keeps polling.
pub async fn status<C: CrawlerControl>(
    crawlers: &C,
    prefix: &str,
    dataset: Dataset,
    zone: CrawlZone,
    since: Option<DateTime<Utc>>,
) -> Result<StatusOutput, CrawlerError> {
    let crawler = crawler_name(prefix, zone, dataset);
    let info = crawlers.info(&crawler).await?;
    let pending = match (info.state, since, &info.last_crawl) {
        (
            CrawlerState::Ready,
            Some(since),
            Some(LastCrawl {
                started_at: Some(t),
                ..
            }),
        ) => *t < since - chrono::Duration::seconds(SKEW_SECONDS),
        (CrawlerState::Ready, Some(_), None) => true,
        _ => false,
    };
    let state = if pending {
        CrawlerState::Running
    } else {
        info.state
    };
    tracing::info!(%dataset, zone = zone.name(), %crawler, %state, pending, "crawler status");
    Ok(StatusOutput {
        crawler,
        dataset,
        zone,
        state,
        last_crawl: info.last_crawl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::memory::{block_on, MemoryCrawlers};
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 5, 10, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn crawlers_are_named_by_prefix_zone_and_dataset() {
        assert_eq!(
            crawler_name("lago-prod", CrawlZone::Processed, Dataset::Clientes),
            "lago-prod-processed-clientes"
        );
    }

    #[test]
    fn task_inputs_parse_with_their_action() -> Result<(), serde_json::Error> {
        let t: CrawlerTask = serde_json::from_str(
            r#"{"action":"start","dataset":"clientes","zone":"processed","extra":1}"#,
        )?;
        assert_eq!(
            t,
            CrawlerTask::Start {
                dataset: Dataset::Clientes,
                zone: CrawlZone::Processed
            }
        );
        assert!(serde_json::from_str::<CrawlerTask>(r#"{"action":"delete"}"#).is_err());
        Ok(())
    }

    #[test]
    fn a_running_crawler_is_not_an_error() -> Result<(), CrawlerError> {
        // GIVEN a crawler that is running
        let c = MemoryCrawlers::with(&["p-processed-clientes"]);
        c.set_state("p-processed-clientes", CrawlerState::Running, None);
        // WHEN it is started
        let out = block_on(start(
            &c,
            "p",
            Dataset::Clientes,
            CrawlZone::Processed,
            t(1, 0),
        ))?;
        // THEN the output says so, and no crawl was added
        assert_eq!(out.state, "already_running");
        assert_eq!(out.started_at, None);
        assert_eq!(c.runs("p-processed-clientes"), 0);
        Ok(())
    }

    #[test]
    fn an_unknown_crawler_is_not_found() {
        let c = MemoryCrawlers::with(&[]);
        let err = block_on(start(&c, "p", Dataset::Clientes, CrawlZone::Raw, t(1, 0)));
        assert!(matches!(err, Err(ref e) if e.kind() == ErrorKind::NotFound));
        let err = block_on(status(&c, "p", Dataset::Clientes, CrawlZone::Raw, None));
        assert!(matches!(err, Err(ref e) if e.kind() == ErrorKind::NotFound));
    }

    #[test]
    fn a_crawl_not_yet_picked_up_is_reported_running() -> Result<(), CrawlerError> {
        // GIVEN a READY crawler whose last crawl is older than our start request
        let c = MemoryCrawlers::with(&["p-raw-clientes"]);
        let old = LastCrawl {
            status: Some(CrawlStatus::Succeeded),
            error_message: None,
            started_at: Some(t(0, 0)),
        };
        c.set_state("p-raw-clientes", CrawlerState::Ready, Some(old.clone()));
        // WHEN its status is asked since the start
        let out = block_on(status(
            &c,
            "p",
            Dataset::Clientes,
            CrawlZone::Raw,
            Some(t(1, 0)),
        ))?;
        // THEN it is RUNNING; without `since` it is READY
        assert_eq!(out.state, CrawlerState::Running);
        let out = block_on(status(&c, "p", Dataset::Clientes, CrawlZone::Raw, None))?;
        assert_eq!(out.state, CrawlerState::Ready);
        // AND once the new crawl finished it is READY with that crawl's outcome
        let failed = LastCrawl {
            status: Some(CrawlStatus::Failed),
            error_message: Some("Access denied".into()),
            started_at: Some(t(1, 1)),
        };
        c.set_state("p-raw-clientes", CrawlerState::Ready, Some(failed.clone()));
        let out = block_on(status(
            &c,
            "p",
            Dataset::Clientes,
            CrawlZone::Raw,
            Some(t(1, 0)),
        ))?;
        assert_eq!(out.state, CrawlerState::Ready);
        assert_eq!(out.last_crawl, Some(failed));
        Ok(())
    }

    #[test]
    fn status_output_uses_glue_state_names() -> Result<(), serde_json::Error> {
        let out = StatusOutput {
            crawler: "c".into(),
            dataset: Dataset::Proveedores,
            zone: CrawlZone::Processed,
            state: CrawlerState::Ready,
            last_crawl: Some(LastCrawl {
                status: Some(CrawlStatus::Succeeded),
                error_message: None,
                started_at: None,
            }),
        };
        let v = serde_json::to_value(&out)?;
        assert_eq!(v["state"], "READY");
        assert_eq!(v["last_crawl"]["status"], "SUCCEEDED");
        Ok(())
    }
}
