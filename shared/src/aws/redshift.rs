//! The Redshift Data API as the load's [`DataApi`]: no JDBC, no VPC plumbing, no passwords —
//! the function's IAM identity, or a Secrets Manager secret for a provisioned cluster.

use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementError;
use aws_sdk_redshiftdata::Client;
use tracing::instrument;

use super::is_transient;
use crate::ingest::statements::{
    Batch, DataApi, DataApiError, StatementState, StatementStatus, SubStatement,
};

/// Which warehouse runs the statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseTarget {
    /// Redshift Serverless: the workgroup; the caller's IAM identity (or a secret) signs in.
    Serverless {
        workgroup: String,
        secret_arn: Option<String>,
    },
    /// A provisioned cluster, with temporary credentials for a database user or a secret.
    Cluster {
        cluster_id: String,
        auth: ClusterAuth,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAuth {
    DbUser(String),
    SecretArn(String),
}

#[derive(Clone)]
pub struct RedshiftDataApi {
    client: Client,
    target: WarehouseTarget,
    database: String,
}

impl RedshiftDataApi {
    pub fn new(
        client: Client,
        target: WarehouseTarget,
        database: impl Into<String>,
    ) -> RedshiftDataApi {
        RedshiftDataApi {
            client,
            target,
            database: database.into(),
        }
    }

    /// Opens the connection during init with a cheap read.
    pub async fn warm(&self) {
        let r = self.client.list_statements().max_results(1).send().await;
        tracing::debug!(ok = r.is_ok(), "redshift data api connection warmed");
    }
}

impl DataApi for RedshiftDataApi {
    #[instrument(skip(self, batch), fields(statement_name = batch.statement_name, statements = batch.sqls.len()))]
    async fn batch_execute(&self, batch: Batch<'_>) -> Result<String, DataApiError> {
        let mut req = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(batch.sqls.to_vec()))
            .database(&self.database)
            .statement_name(batch.statement_name)
            .client_token(batch.client_token);
        req = match &self.target {
            WarehouseTarget::Serverless {
                workgroup,
                secret_arn,
            } => req
                .workgroup_name(workgroup)
                .set_secret_arn(secret_arn.clone()),
            WarehouseTarget::Cluster { cluster_id, auth } => {
                let req = req.cluster_identifier(cluster_id);
                match auth {
                    ClusterAuth::DbUser(u) => req.db_user(u),
                    ClusterAuth::SecretArn(s) => req.secret_arn(s),
                }
            }
        };
        match req.send().await {
            Ok(out) => out.id().map(str::to_owned).ok_or_else(|| {
                DataApiError::Refused("BatchExecuteStatement returned no id".into())
            }),
            Err(e) => Err(match e.as_service_error() {
                Some(
                    BatchExecuteStatementError::ActiveSessionsExceededException(_)
                    | BatchExecuteStatementError::ActiveStatementsExceededException(_)
                    | BatchExecuteStatementError::BatchExecuteStatementException(_)
                    | BatchExecuteStatementError::InternalServerException(_),
                ) => DataApiError::Transient(Box::new(e)),
                _ if is_transient(&e) => DataApiError::Transient(Box::new(e)),
                _ => DataApiError::Refused(Box::new(e)),
            }),
        }
    }

    #[instrument(skip(self))]
    async fn describe(&self, statement_id: &str) -> Result<StatementStatus, DataApiError> {
        let out = match self
            .client
            .describe_statement()
            .id(statement_id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return Err(match e.as_service_error() {
                    Some(DescribeStatementError::ResourceNotFoundException(_)) => {
                        DataApiError::NotFound {
                            id: statement_id.to_string(),
                            source: Box::new(e),
                        }
                    }
                    Some(
                        DescribeStatementError::InternalServerException(_)
                        | DescribeStatementError::ActiveWaitingRequestsExceededException(_),
                    ) => DataApiError::Transient(Box::new(e)),
                    _ if is_transient(&e) => DataApiError::Transient(Box::new(e)),
                    _ => DataApiError::Refused(Box::new(e)),
                })
            }
        };
        let raw = out.status().map(|s| s.as_str()).unwrap_or_default();
        let state = StatementState::parse(raw).ok_or_else(|| DataApiError::UnknownState {
            id: statement_id.to_string(),
            state: raw.to_string(),
        })?;
        let sub_statements = out
            .sub_statements()
            .iter()
            .map(|s| SubStatement {
                id: s.id().to_string(),
                state: s.status().and_then(|st| StatementState::parse(st.as_str())),
                error: s.error().map(str::to_owned),
            })
            .collect();
        Ok(StatementStatus {
            state,
            error: out.error().map(str::to_owned),
            sub_statements,
        })
    }
}
