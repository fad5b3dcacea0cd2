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

/// The partitions the transform wrote, registered in the Glue catalog with
/// `BatchCreatePartition` (storage and columns as the template declares the tables).
#[derive(Clone)]
pub struct GluePartitions {
    client: Client,
}

impl GluePartitions {
    pub fn new(client: Client) -> GluePartitions {
        GluePartitions { client }
    }
}

fn partition_input(
    p: &crate::catalog::PartitionSpec,
) -> Result<aws_sdk_glue::types::PartitionInput, aws_sdk_glue::error::BuildError> {
    use aws_sdk_glue::types::{Column, PartitionInput, SerDeInfo, StorageDescriptor};
    let mut sd = StorageDescriptor::builder()
        .location(&p.location)
        .input_format(crate::catalog::PARQUET_INPUT_FORMAT)
        .output_format(crate::catalog::PARQUET_OUTPUT_FORMAT)
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(crate::catalog::PARQUET_SERDE)
                .parameters("serialization.format", "1")
                .build(),
        );
    for (name, ty) in &p.columns {
        sd = sd.columns(Column::builder().name(name).r#type(ty).build()?);
    }
    Ok(PartitionInput::builder()
        .set_values(Some(p.values.to_vec()))
        .storage_descriptor(sd.build())
        .build())
}

impl crate::catalog::PartitionCatalog for GluePartitions {
    #[instrument(skip(self, partitions), fields(partitions = partitions.len()))]
    async fn register(
        &self,
        database: &str,
        partitions: &[crate::catalog::PartitionSpec],
    ) -> Result<crate::catalog::Registered, crate::catalog::CatalogError> {
        use crate::catalog::{CatalogError, Registered};
        let Some(first) = partitions.first() else {
            return Ok(Registered::default());
        };
        let table = first.dataset.name();
        let error = |code: &str, transient, source| CatalogError {
            database: database.to_string(),
            table: table.to_string(),
            code: code.to_string(),
            transient,
            source,
        };
        let mut request = self
            .client
            .batch_create_partition()
            .database_name(database)
            .table_name(table);
        for p in partitions {
            if p.dataset != first.dataset {
                return Err(error("PartitionsOfSeveralTables", false, None));
            }
            let input = partition_input(p)
                .map_err(|e| error("InvalidPartition", false, Some(Box::new(e))))?;
            request = request.partition_input_list(input);
        }
        let out = request.send().await.map_err(|e| {
            let code = aws_sdk_glue::error::ProvideErrorMetadata::code(&e)
                .unwrap_or("BatchCreatePartition")
                .to_string();
            error(&code, is_transient(&e), Some(Box::new(e)))
        })?;
        let mut registered = Registered {
            created: partitions.len() as u32,
            existed: 0,
        };
        for failed in out.errors() {
            let detail = failed.error_detail();
            let code = detail.and_then(|d| d.error_code()).unwrap_or("Unknown");
            registered.created -= 1;
            if code == "AlreadyExistsException" {
                registered.existed += 1;
                continue;
            }
            let transient = matches!(
                code,
                "InternalServiceException" | "OperationTimeoutException" | "ThrottlingException"
            );
            let message = detail.and_then(|d| d.error_message()).unwrap_or_default();
            return Err(error(
                code,
                transient,
                Some(format!("partition {:?}: {message}", failed.partition_values()).into()),
            ));
        }
        Ok(registered)
    }
}
