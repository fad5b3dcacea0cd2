//! Secrets Manager as the transform's [`SecretSource`] (the PII salt).

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::Client;
use tracing::instrument;

use super::is_transient;
use crate::ingest::task::{SecretError, SecretSource};

#[derive(Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> SecretsManager {
        SecretsManager { client }
    }
}

impl SecretSource for SecretsManager {
    // The value is never logged: only the id is a span field.
    #[instrument(skip(self))]
    async fn secret_bytes(&self, id: &str) -> Result<Vec<u8>, SecretError> {
        match self.client.get_secret_value().secret_id(id).send().await {
            Ok(out) => Ok(match (out.secret_string(), out.secret_binary()) {
                (Some(s), _) => s.as_bytes().to_vec(),
                (None, Some(b)) => b.as_ref().to_vec(),
                (None, None) => Vec::new(),
            }),
            Err(e) => Err(match e.as_service_error() {
                Some(GetSecretValueError::ResourceNotFoundException(_)) => SecretError::NotFound {
                    id: id.to_string(),
                    source: Box::new(e),
                },
                Some(GetSecretValueError::InternalServiceError(_)) => {
                    SecretError::Transient(Box::new(e))
                }
                _ if is_transient(&e) => SecretError::Transient(Box::new(e)),
                _ => SecretError::Refused {
                    id: id.to_string(),
                    source: Box::new(e),
                },
            }),
        }
    }
}
