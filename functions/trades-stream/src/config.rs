//! The function's configuration, read once from the environment at start-up.

use std::time::Duration;

/// Everything the function needs to know about its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `PORTFOLIOS_TABLE`: DynamoDB table of portfolios (key `user_id`).
    pub portfolios_table: String,
    /// `DECISIONS_TABLE`: DynamoDB table of decided trades (key `trade_id`).
    pub decisions_table: String,
    /// `DEAD_LETTER_QUEUE_URL`: SQS queue for invalid records and rejected trades.
    pub dead_letter_queue_url: String,
    /// `TRADES_TOPIC_ARN`: SNS topic for `TradeConfirmed` / `TradeRejected`.
    pub topic_arn: String,
    /// `LAKE_BUCKET`: the lake bucket; the archive goes under `raw/trades/`.
    pub lake_bucket: String,
    /// `RECOMMENDER_ENDPOINT`: SageMaker endpoint name; unset or empty = the built-in rule.
    pub recommender_endpoint: Option<String>,
    /// `RECOMMENDER_TIMEOUT_MS` (default 2000): the longest a model call may take.
    pub recommender_timeout: Duration,
    /// `STORE_CONCURRENCY` (default 64, 1–512): DynamoDB calls a batch has in flight at
    /// once — the portfolio reads, then the users committed concurrently (each user's
    /// transactions stay in order).
    pub store_concurrency: usize,
    /// `DELIVERY_RESERVE_MS` (default 10000): time kept before the invocation's deadline for
    /// delivering the batch's outputs; commits and their retries stop that much earlier.
    pub delivery_reserve: Duration,
    /// `STREAM_FAILURE_QUEUE_URL` (optional): the event source's on-failure queue, which a
    /// redrive (`{"action": "redrive"}`) reads.
    pub stream_failure_queue_url: Option<String>,
    /// `STREAM_RETENTION_HOURS` (24–8760, default 168): how long the stream keeps a record, so
    /// how long a failed batch can still be redriven.
    pub stream_retention_hours: u32,
    /// S3 path-style addressing, for a local endpoint (moto): on when `AWS_ENDPOINT_URL` or
    /// `AWS_ENDPOINT_URL_S3` is set, unless `S3_FORCE_PATH_STYLE=false`.
    pub s3_force_path_style: bool,
}

pub use lago::runtime::env::ConfigError;
use lago::runtime::env::Env;

pub const DEFAULT_RECOMMENDER_TIMEOUT: Duration = Duration::from_millis(2000);
pub const DEFAULT_STORE_CONCURRENCY: usize = lago::trades::DEFAULT_COMMIT_CONCURRENCY;
pub const DEFAULT_DELIVERY_RESERVE: Duration = Duration::from_millis(10_000);
pub const DEFAULT_STREAM_RETENTION_HOURS: u32 = 168;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&Env::from_process())
    }

    /// Reads the settings from `env`; reports every missing one at once.
    pub fn from_vars(env: &Env) -> Result<Config, ConfigError> {
        let [portfolios_table, decisions_table, dead_letter_queue_url, topic_arn, lake_bucket] =
            env.required_all([
                "PORTFOLIOS_TABLE",
                "DECISIONS_TABLE",
                "DEAD_LETTER_QUEUE_URL",
                "TRADES_TOPIC_ARN",
                "LAKE_BUCKET",
            ])?;
        let recommender_timeout = Duration::from_millis(env.in_range(
            "RECOMMENDER_TIMEOUT_MS",
            DEFAULT_RECOMMENDER_TIMEOUT.as_millis() as u64,
            1..=900_000,
        )?);
        let store_concurrency =
            env.in_range("STORE_CONCURRENCY", DEFAULT_STORE_CONCURRENCY, 1..=512)?;
        let delivery_reserve = Duration::from_millis(env.in_range(
            "DELIVERY_RESERVE_MS",
            DEFAULT_DELIVERY_RESERVE.as_millis() as u64,
            0..=600_000,
        )?);
        let local_endpoint = env
            .optional("AWS_ENDPOINT_URL")
            .or_else(|| env.optional("AWS_ENDPOINT_URL_S3"));
        let s3_force_path_style = env.flag("S3_FORCE_PATH_STYLE", local_endpoint.is_some())?;
        Ok(Config {
            portfolios_table,
            decisions_table,
            dead_letter_queue_url,
            topic_arn,
            lake_bucket,
            recommender_endpoint: env.optional("RECOMMENDER_ENDPOINT"),
            recommender_timeout,
            store_concurrency,
            delivery_reserve,
            stream_failure_queue_url: env.optional("STREAM_FAILURE_QUEUE_URL"),
            stream_retention_hours: env.in_range(
                "STREAM_RETENTION_HOURS",
                DEFAULT_STREAM_RETENTION_HOURS,
                24..=8760,
            )?,
            s3_force_path_style,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars)
    }

    const ALL: [(&str, &str); 5] = [
        ("PORTFOLIOS_TABLE", "lago-portfolios"),
        ("DECISIONS_TABLE", "lago-trade-decisions"),
        (
            "DEAD_LETTER_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/lago-trades-dlq",
        ),
        ("TRADES_TOPIC_ARN", "arn:aws:sns:us-east-1:1:lago-trades"),
        ("LAKE_BUCKET", "lago-lake"),
    ];

    #[test]
    fn every_missing_variable_is_named() {
        let err = Config::from_vars(&lookup(&[("DECISIONS_TABLE", "d"), ("LAKE_BUCKET", " ")]));
        assert_eq!(
            err,
            Err(ConfigError::MissingAll(vec![
                "PORTFOLIOS_TABLE",
                "DEAD_LETTER_QUEUE_URL",
                "TRADES_TOPIC_ARN",
                "LAKE_BUCKET"
            ]))
        );
    }

    #[test]
    fn defaults_without_endpoint_or_model() -> Result<(), ConfigError> {
        let config = Config::from_vars(&lookup(&ALL))?;
        assert_eq!(config.recommender_endpoint, None);
        assert_eq!(config.recommender_timeout, DEFAULT_RECOMMENDER_TIMEOUT);
        assert_eq!(config.store_concurrency, DEFAULT_STORE_CONCURRENCY);
        assert_eq!(config.delivery_reserve, DEFAULT_DELIVERY_RESERVE);
        assert_eq!(config.stream_failure_queue_url, None);
        assert_eq!(
            config.stream_retention_hours,
            DEFAULT_STREAM_RETENTION_HOURS
        );
        assert!(!config.s3_force_path_style);
        Ok(())
    }

    #[test]
    fn store_concurrency_and_delivery_reserve_are_bounded() -> Result<(), ConfigError> {
        let mut vars = ALL.to_vec();
        vars.push(("STORE_CONCURRENCY", "32"));
        vars.push(("DELIVERY_RESERVE_MS", "5000"));
        let config = Config::from_vars(&lookup(&vars))?;
        assert_eq!(config.store_concurrency, 32);
        assert_eq!(config.delivery_reserve, Duration::from_secs(5));
        for (name, bad) in [
            ("STORE_CONCURRENCY", "0"),
            ("STORE_CONCURRENCY", "513"),
            ("STORE_CONCURRENCY", "many"),
            ("DELIVERY_RESERVE_MS", "-1"),
            ("STREAM_RETENTION_HOURS", "12"),
        ] {
            let mut vars = ALL.to_vec();
            vars.push((name, bad));
            assert!(
                matches!(Config::from_vars(&lookup(&vars)), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_local_endpoint_and_a_model() -> Result<(), ConfigError> {
        let mut vars = ALL.to_vec();
        vars.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"));
        vars.push(("RECOMMENDER_ENDPOINT", "lago-recommender"));
        vars.push(("RECOMMENDER_TIMEOUT_MS", "750"));
        let config = Config::from_vars(&lookup(&vars))?;
        assert!(config.s3_force_path_style);
        assert_eq!(
            config.recommender_endpoint.as_deref(),
            Some("lago-recommender")
        );
        assert_eq!(config.recommender_timeout, Duration::from_millis(750));
        vars.push(("S3_FORCE_PATH_STYLE", "maybe"));
        assert!(matches!(
            Config::from_vars(&lookup(&vars)),
            Err(ConfigError::Invalid {
                name: "S3_FORCE_PATH_STYLE",
                ..
            })
        ));
        Ok(())
    }
}
