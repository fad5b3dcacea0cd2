//! The [`Recommender`] on a SageMaker real-time endpoint: one `InvokeEndpoint` per batch
//! (`ContentType` and `Accept` `application/json`) with the [`ModelRequest`] body — one
//! instance per touched user, amounts as decimal strings — answered by a [`ModelResponse`] with
//! one prediction per instance, in order. Any failure (the call, a timeout, a body that does not
//! parse, the wrong count) is an error; wrapped in [`WithRuleFallback`](crate::trades::WithRuleFallback)
//! the built-in rule answers instead and the batch goes on.

use std::time::Duration;

use aws_sdk_sagemakerruntime::error::SdkError;
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use aws_sdk_sagemakerruntime::Client;
use tracing::instrument;

use crate::trades::ports::{
    ModelRequest, ModelResponse, RecommendError, Recommendation, RecommendationRequest, Recommender,
};

#[derive(Debug, thiserror::Error)]
pub enum SageMakerError {
    #[error("InvokeEndpoint on {endpoint} failed")]
    Invoke {
        endpoint: String,
        #[source]
        source: Box<SdkError<InvokeEndpointError>>,
    },
    #[error("InvokeEndpoint on {endpoint} took more than {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("the model's request could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("the model's answer is not the documented JSON")]
    Decode(#[source] serde_json::Error),
    #[error("the model answered with an empty body")]
    EmptyBody,
}

fn model_error(e: SageMakerError) -> RecommendError {
    RecommendError::Model(Box::new(e))
}

/// Asks a SageMaker endpoint for recommendations (see the module docs).
#[derive(Debug, Clone)]
pub struct SageMakerRecommender {
    client: Client,
    endpoint_name: String,
    timeout: Duration,
}

impl SageMakerRecommender {
    /// `timeout` bounds the whole call, retries included, so a slow model costs the batch at
    /// most that long before the rule answers.
    pub fn new(client: Client, endpoint_name: impl Into<String>, timeout: Duration) -> Self {
        Self {
            client,
            endpoint_name: endpoint_name.into(),
            timeout,
        }
    }
}

impl Recommender for SageMakerRecommender {
    #[instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint_name, instances = requests.len()))]
    async fn recommend(
        &self,
        requests: &[RecommendationRequest<'_>],
    ) -> Result<Vec<Recommendation>, RecommendError> {
        let body = serde_json::to_vec(&ModelRequest::from_requests(requests))
            .map_err(|e| model_error(SageMakerError::Encode(e)))?;
        let call = self
            .client
            .invoke_endpoint()
            .endpoint_name(&self.endpoint_name)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send();
        let output = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(model_error(SageMakerError::Invoke {
                    endpoint: self.endpoint_name.clone(),
                    source: Box::new(source),
                }))
            }
            Err(_) => {
                return Err(model_error(SageMakerError::Timeout {
                    endpoint: self.endpoint_name.clone(),
                    timeout: self.timeout,
                }))
            }
        };
        let body = output
            .body()
            .ok_or_else(|| model_error(SageMakerError::EmptyBody))?;
        let response: ModelResponse = serde_json::from_slice(body.as_ref())
            .map_err(|e| model_error(SageMakerError::Decode(e)))?;
        response.into_recommendations(requests.len())
    }
}
