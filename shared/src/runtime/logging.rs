//! Logs as Lambda's advanced logging controls configure them: `AWS_LAMBDA_LOG_LEVEL` (else
//! `RUST_LOG`, else `INFO`) and `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`), the rules of
//! `lambda_runtime`'s own tracing support. Text logs are exactly `lambda_runtime`'s default
//! subscriber. JSON logs are one object per line whose keys are the event's fields *and* the
//! fields of every span it is in — the runtime's `requestId`, the handler's `dataset` or `key` —
//! flattened to the top level (the default JSON format nests them under the innermost span), so a
//! CloudWatch Logs Insights query filters on `requestId` or `dataset` directly.

use std::fmt;
use std::str::FromStr;

use chrono::{SecondsFormat, Utc};
use lambda_runtime::tracing::subscriber::filter::{EnvFilter, LevelFilter};
use lambda_runtime::tracing::subscriber::fmt::format::{JsonFields, Writer};
use lambda_runtime::tracing::subscriber::fmt::{
    FmtContext, FormatEvent, FormatFields, FormattedFields,
};
use lambda_runtime::tracing::subscriber::registry::LookupSpan;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};

/// Installs the process's subscriber (once; a later call keeps the first).
pub fn init() {
    let format = std::env::var("AWS_LAMBDA_LOG_FORMAT").unwrap_or_default();
    if format.eq_ignore_ascii_case("json") {
        init_json(std::io::stdout);
    } else if tracing::dispatcher::has_been_set() {
        // lambda_runtime's default subscriber panics when one is already installed.
    } else {
        lambda_runtime::tracing::init_default_subscriber();
    }
}

/// The JSON subscriber, writing to `writer`.
pub fn init_json<W>(writer: W)
where
    W: for<'w> lambda_runtime::tracing::subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = lambda_runtime::tracing::subscriber::fmt()
        .with_env_filter(filter())
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(writer)
        .try_init();
}

/// The level of `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else `INFO`, as `lambda_runtime` reads
/// them; `RUST_LOG`'s per-target directives still apply.
fn filter() -> EnvFilter {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    let level =
        LevelFilter::from_str(level.as_deref().unwrap_or("INFO")).unwrap_or(LevelFilter::INFO);
    EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy()
}

/// One JSON object per event: `timestamp`, `level`, `message`, the fields of every enclosing
/// span (outermost first, so an inner span's value wins), then the event's own fields.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().into()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records an event's fields into the line's map.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(
            field.name().into(),
            Value::String(super::error_chain(value)),
        );
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_carries_the_request_id_and_the_span_fields_at_the_top_level(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // GIVEN the JSON subscriber, and an event inside the runtime's invocation span and a
        // handler span
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = lambda_runtime::tracing::subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _invoke = invoke.enter();
            let handler = tracing::info_span!("handler", dataset = "clientes", rows = 3u64);
            let _handler = handler.enter();
            // WHEN the handler logs
            tracing::info!(rows_ok = 2u64, ok = true, "transformed");
            tracing::debug!("filtered out");
        });
        // THEN one flat object per line, with the span fields beside the event's
        let text = String::from_utf8(captured.0.lock().map_err(|_| "poisoned")?.clone())?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0])?;
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["dataset"], "clientes");
        assert_eq!(line["rows"], 3);
        assert_eq!(line["rows_ok"], 2);
        assert_eq!(line["ok"], true);
        assert_eq!(line["message"], "transformed");
        assert_eq!(line["level"], "INFO");
        assert!(line.get("span").is_none() && line.get("spans").is_none());
        Ok(())
    }
}
