//! trades-stream: applies the app's dollar trades from Kinesis to exactly-once portfolios in
//! DynamoDB, archives them to the lake, dead-letters invalid records to SQS and notifies on SNS.
//!
//! Invoked by a Kinesis event source mapping with `ReportBatchItemFailures`, and on demand with
//! `{"action": "redrive"}` to replay the batches the event source gave up on; configured by
//! environment variables (see [`trades_stream::Config`]). Locally:
//! `cargo lambda invoke trades-stream --data-file events/kinesis-trades.json`.

use std::sync::Arc;
use std::time::Duration;

use lago::aws::redrive::{KinesisShardReader, SqsFailureQueue};
use lambda_runtime::{service_fn, LambdaEvent};
use trades_stream::{aws_trade_stream, AwsClients, Config, Invocation, Redriver};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let clients = AwsClients::new(&sdk, &config);
    clients.warm_up(&config, Duration::from_secs(2)).await;
    let stream = Arc::new(aws_trade_stream(&clients, &config));
    // Redrives read the on-failure queue and the stream; clients built only when configured.
    let redriver = Arc::new(
        config
            .stream_failure_queue_url
            .as_deref()
            .map(|url| Redriver {
                queue: SqsFailureQueue::new(clients.sqs.clone(), url),
                reader: KinesisShardReader::from_sdk(&sdk),
                retention_hours: config.stream_retention_hours,
            }),
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Invocation>| {
        let (stream, redriver) = (Arc::clone(&stream), Arc::clone(&redriver));
        async move {
            stream
                .invoke(event, redriver.as_ref().as_ref())
                .await
                .map_err(lago::runtime::diagnostic)
        }
    }))
    .await
}
