//! Step Functions as the landing function's [`ExecutionStarter`].

use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use aws_sdk_sfn::Client;
use tracing::instrument;

use super::is_transient;
use crate::ingest::landing::{ExecutionStarter, StartError, StartedExecution};

/// Starts executions of one state machine.
#[derive(Clone)]
pub struct SfnStarter {
    client: Client,
    state_machine_arn: String,
}

impl SfnStarter {
    pub fn new(client: Client, state_machine_arn: impl Into<String>) -> SfnStarter {
        SfnStarter {
            client,
            state_machine_arn: state_machine_arn.into(),
        }
    }

    /// Opens the connection during init (the result does not matter: any answer leaves a warm
    /// TLS connection in the pool for the first event).
    pub async fn warm(&self) {
        let r = self
            .client
            .describe_state_machine()
            .state_machine_arn(&self.state_machine_arn)
            .send()
            .await;
        tracing::debug!(ok = r.is_ok(), "step functions connection warmed");
    }
}

impl ExecutionStarter for SfnStarter {
    /// DescribeExecution of `<state machine's execution prefix>:<name>`.
    #[instrument(skip(self), fields(state_machine = %self.state_machine_arn))]
    async fn execution_exists(&self, name: &str) -> Result<bool, StartError> {
        let arn = format!(
            "{}:{name}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        );
        match self
            .client
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeExecutionError::ExecutionDoesNotExist(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) if is_transient(&e) => Err(StartError::Transient(Box::new(e))),
            Err(e) => Err(StartError::Unavailable(Box::new(e))),
        }
    }

    #[instrument(skip(self, input), fields(state_machine = %self.state_machine_arn))]
    async fn start_execution(
        &self,
        name: &str,
        input: &str,
    ) -> Result<StartedExecution, StartError> {
        let res = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await;
        match res {
            Ok(out) => Ok(StartedExecution::Started {
                execution_arn: out.execution_arn().to_string(),
            }),
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(StartExecutionError::ExecutionAlreadyExists(_))
                ) {
                    return Ok(StartedExecution::AlreadyExists);
                }
                if is_transient(&e)
                    || matches!(
                        e.as_service_error(),
                        Some(StartExecutionError::ExecutionLimitExceeded(_))
                    )
                {
                    return Err(StartError::Transient(Box::new(e)));
                }
                let refused = matches!(
                    e.as_service_error(),
                    Some(
                        StartExecutionError::InvalidName(_)
                            | StartExecutionError::InvalidExecutionInput(_)
                    )
                );
                if refused {
                    Err(StartError::Refused(Box::new(e)))
                } else {
                    // Missing or deleting state machine, access or KMS denied, bad ARN: the
                    // deployment is wrong, so the event must come back, not be dropped.
                    Err(StartError::Unavailable(Box::new(e)))
                }
            }
        }
    }
}
