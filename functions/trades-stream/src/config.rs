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
    /// S3 path-style addressing, for a local endpoint (moto): on when `AWS_ENDPOINT_URL` or
    /// `AWS_ENDPOINT_URL_S3` is set, unless `S3_FORCE_PATH_STYLE=false`.
    pub s3_force_path_style: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variables: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("environment variable {name}={value:?} is invalid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

pub const DEFAULT_RECOMMENDER_TIMEOUT: Duration = Duration::from_millis(2000);
pub const DEFAULT_STORE_CONCURRENCY: usize = lago::trades::DEFAULT_COMMIT_CONCURRENCY;
pub const DEFAULT_DELIVERY_RESERVE: Duration = Duration::from_millis(10_000);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`; reports every missing one at once.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut missing = Vec::new();
        let mut required = |name: &'static str| {
            get(name).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let portfolios_table = required("PORTFOLIOS_TABLE");
        let decisions_table = required("DECISIONS_TABLE");
        let dead_letter_queue_url = required("DEAD_LETTER_QUEUE_URL");
        let topic_arn = required("TRADES_TOPIC_ARN");
        let lake_bucket = required("LAKE_BUCKET");
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let recommender_timeout = match get("RECOMMENDER_TIMEOUT_MS") {
            None => DEFAULT_RECOMMENDER_TIMEOUT,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or(ConfigError::Invalid {
                    name: "RECOMMENDER_TIMEOUT_MS",
                    value: v,
                    expected: "a positive number of milliseconds",
                })?,
        };
        let number =
            |name: &'static str, range: std::ops::RangeInclusive<u64>, expected| match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .map(Some)
                    .ok_or(ConfigError::Invalid {
                        name,
                        value: v,
                        expected,
                    }),
            };
        let store_concurrency = number(
            "STORE_CONCURRENCY",
            1..=512,
            "a number of calls between 1 and 512",
        )?
        .map_or(DEFAULT_STORE_CONCURRENCY, |n| n as usize);
        let delivery_reserve = number(
            "DELIVERY_RESERVE_MS",
            0..=600_000,
            "milliseconds between 0 and 600000",
        )?
        .map_or(DEFAULT_DELIVERY_RESERVE, Duration::from_millis);
        let local_endpoint = get("AWS_ENDPOINT_URL").or_else(|| get("AWS_ENDPOINT_URL_S3"));
        let s3_force_path_style = match get("S3_FORCE_PATH_STYLE").as_deref().map(str::trim) {
            None => local_endpoint.is_some(),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "S3_FORCE_PATH_STYLE",
                    value: other.to_string(),
                    expected: "true or false",
                })
            }
        };
        Ok(Config {
            portfolios_table,
            decisions_table,
            dead_letter_queue_url,
            topic_arn,
            lake_bucket,
            recommender_endpoint: get("RECOMMENDER_ENDPOINT").map(|e| e.trim().to_string()),
            recommender_timeout,
            store_concurrency,
            delivery_reserve,
            s3_force_path_style,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
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
        let err = Config::from_lookup(lookup(&[("DECISIONS_TABLE", "d"), ("LAKE_BUCKET", " ")]));
        assert_eq!(
            err,
            Err(ConfigError::Missing(vec![
                "PORTFOLIOS_TABLE",
                "DEAD_LETTER_QUEUE_URL",
                "TRADES_TOPIC_ARN",
                "LAKE_BUCKET"
            ]))
        );
    }

    #[test]
    fn defaults_without_endpoint_or_model() -> Result<(), ConfigError> {
        let config = Config::from_lookup(lookup(&ALL))?;
        assert_eq!(config.recommender_endpoint, None);
        assert_eq!(config.recommender_timeout, DEFAULT_RECOMMENDER_TIMEOUT);
        assert_eq!(config.store_concurrency, DEFAULT_STORE_CONCURRENCY);
        assert_eq!(config.delivery_reserve, DEFAULT_DELIVERY_RESERVE);
        assert!(!config.s3_force_path_style);
        Ok(())
    }

    #[test]
    fn store_concurrency_and_delivery_reserve_are_bounded() -> Result<(), ConfigError> {
        let mut vars = ALL.to_vec();
        vars.push(("STORE_CONCURRENCY", "32"));
        vars.push(("DELIVERY_RESERVE_MS", "5000"));
        let config = Config::from_lookup(lookup(&vars))?;
        assert_eq!(config.store_concurrency, 32);
        assert_eq!(config.delivery_reserve, Duration::from_secs(5));
        for (name, bad) in [
            ("STORE_CONCURRENCY", "0"),
            ("STORE_CONCURRENCY", "513"),
            ("STORE_CONCURRENCY", "many"),
            ("DELIVERY_RESERVE_MS", "-1"),
        ] {
            let mut vars = ALL.to_vec();
            vars.push((name, bad));
            assert!(
                matches!(Config::from_lookup(lookup(&vars)), Err(ConfigError::Invalid { name: n, .. }) if n == name),
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
        let config = Config::from_lookup(lookup(&vars))?;
        assert!(config.s3_force_path_style);
        assert_eq!(
            config.recommender_endpoint.as_deref(),
            Some("lago-recommender")
        );
        assert_eq!(config.recommender_timeout, Duration::from_millis(750));
        vars.push(("S3_FORCE_PATH_STYLE", "maybe"));
        assert!(matches!(
            Config::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid {
                name: "S3_FORCE_PATH_STYLE",
                ..
            })
        ));
        Ok(())
    }
}
