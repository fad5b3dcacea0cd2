//! Metrics as CloudWatch Embedded Metric Format: one JSON line on stdout per record, which
//! CloudWatch Logs turns into metrics with no API call and no agent.
//!
//! A dozen lines of JSON did not justify a crate with a global recorder and a flush protocol;
//! the format is small and stable (`_aws.CloudWatchMetrics` directives + top-level values).

use std::io::Write;

use serde_json::{json, Map, Value};

/// The namespace every lago metric is published under.
pub const NAMESPACE: &str = "lago";

/// Units lago publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

impl Unit {
    fn name(&self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF record: dimensions shared by its metrics, the metric values, and searchable
/// properties (keys, execution names) that are logged but not turned into metrics.
#[derive(Debug, Clone, Default)]
pub struct Emf {
    namespace: String,
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, u64)>,
    properties: Map<String, Value>,
}

impl Emf {
    pub fn new(namespace: &str) -> Emf {
        Emf {
            namespace: namespace.to_string(),
            ..Emf::default()
        }
    }

    /// lago's namespace with the `Function` dimension.
    pub fn for_function(function: &str) -> Emf {
        Emf::new(NAMESPACE).dimension("Function", function)
    }

    pub fn dimension(mut self, name: &str, value: impl Into<String>) -> Emf {
        self.dimensions.push((name.to_string(), value.into()));
        self
    }

    pub fn metric(mut self, name: &str, unit: Unit, value: u64) -> Emf {
        self.metrics.push((name.to_string(), unit, value));
        self
    }

    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Emf {
        self.properties.insert(name.to_string(), value.into());
        self
    }

    /// The record as one line of JSON, stamped `timestamp_ms` (milliseconds since the epoch).
    pub fn to_json(&self, timestamp_ms: i64) -> String {
        let mut root = self.properties.clone();
        for (k, v) in &self.dimensions {
            root.insert(k.clone(), Value::String(v.clone()));
        }
        for (k, _, v) in &self.metrics {
            root.insert(k.clone(), json!(v));
        }
        let dims: Vec<&str> = self.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        let defs: Vec<Value> = self
            .metrics
            .iter()
            .map(|(k, u, _)| json!({"Name": k, "Unit": u.name()}))
            .collect();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [dims],
                    "Metrics": defs,
                }],
            }),
        );
        Value::Object(root).to_string()
    }

    /// Writes the record to `out` as one line.
    pub fn write_to(&self, out: &mut dyn Write, timestamp_ms: i64) -> std::io::Result<()> {
        let mut line = self.to_json(timestamp_ms);
        line.push('\n');
        out.write_all(line.as_bytes())
    }

    /// Writes the record to stdout, where the Lambda log agent picks it up. Outside Lambda (no
    /// `AWS_LAMBDA_FUNCTION_NAME`: tests, local runs) it goes to the debug log instead, so test
    /// output stays readable. A failed write only loses a metric: it is logged, never raised.
    pub fn emit(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        if !in_lambda() {
            tracing::debug!(emf = %self.to_json(now), "metric record");
            return;
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if let Err(e) = self.write_to(&mut lock, now).and_then(|_| lock.flush()) {
            tracing::warn!(error = %e, "writing a metric record failed");
        }
    }
}

/// Whether this process is a Lambda function (the runtime sets the variable; so does
/// `cargo lambda watch`).
fn in_lambda() -> bool {
    static IN_LAMBDA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_declares_its_metrics_and_carries_their_values() -> Result<(), serde_json::Error> {
        let emf = Emf::for_function("transform")
            .dimension("Dataset", "clientes")
            .metric("RowsIn", Unit::Count, 10)
            .metric("Bytes", Unit::Bytes, 2048)
            .metric("Duration", Unit::Milliseconds, 35)
            .property("key", "raw/clientes/a.csv");
        let mut buf = Vec::new();
        emf.write_to(&mut buf, 1_746_900_000_000)
            .map_err(serde_json::Error::io)?;
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&buf)?;
        assert_eq!(
            v["_aws"],
            json!({
                "Timestamp": 1_746_900_000_000i64,
                "CloudWatchMetrics": [{
                    "Namespace": "lago",
                    "Dimensions": [["Function", "Dataset"]],
                    "Metrics": [
                        {"Name": "RowsIn", "Unit": "Count"},
                        {"Name": "Bytes", "Unit": "Bytes"},
                        {"Name": "Duration", "Unit": "Milliseconds"}
                    ]
                }]
            })
        );
        assert_eq!(v["Function"], "transform");
        assert_eq!(v["Dataset"], "clientes");
        assert_eq!(v["RowsIn"], 10);
        assert_eq!(v["Bytes"], 2048);
        assert_eq!(v["key"], "raw/clientes/a.csv");
        Ok(())
    }
}
