//! trades-stream: applies the app's dollar trades from Kinesis to exactly-once portfolios in
//! DynamoDB, archives them to the lake, dead-letters invalid records to SQS and notifies on SNS.
//!
//! Invoked by a Kinesis event source mapping with `ReportBatchItemFailures`; configured by
//! environment variables (see [`trades_stream::Config`]). Locally:
//! `cargo lambda invoke trades-stream --data-file events/kinesis-trades.json`.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{service_fn, LambdaEvent};
use trades_stream::{aws_trade_stream, AwsClients, Config, KinesisTradeEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lago::runtime::logging::init();
    let config = Config::from_env()?;
    let sdk = lago::aws::sdk_config().await;
    let clients = AwsClients::new(&sdk, &config);
    clients.warm_up(&config, Duration::from_secs(2)).await;
    let stream = Arc::new(aws_trade_stream(&clients, &config));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisTradeEvent>| {
        let stream = Arc::clone(&stream);
        async move {
            stream
                .handle_event(event)
                .await
                .map_err(lago::runtime::diagnostic)
        }
    }))
    .await
}
