//! Structured logs (tracing): text by default, JSON by configuration.
//!
//! Lists (recipients, addresses listened on, matched rules, settings) are logged
//! as one comma-separated field, `recipients=a@x,b@y`, which reads well in text;
//! in JSON they become arrays, so a log pipeline need not split strings.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

/// The fields that hold a list, written with [`list`].
pub const LIST_FIELDS: &[&str] = &["recipients", "listen", "rules", "settings"];

/// A list field's value: the items joined with commas (no spaces, so that a
/// text log line stays one `key=value` per field).
pub fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(JsonLists(Format::default().json().flatten_event(true)))
            .try_init(),
    };
}

/// tracing-subscriber's JSON lines, with the list fields turned into arrays.
struct JsonLists(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonLists
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    Format<Json>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&lists_as_arrays(&line))
    }
}

/// One JSON log line with its list fields as arrays; anything that does not
/// parse is passed on as it was.
fn lists_as_arrays(line: &str) -> String {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(line.trim_end()) else {
        return line.to_string();
    };
    for field in LIST_FIELDS {
        if let Some(serde_json::Value::String(joined)) = object.get(*field) {
            let items: Vec<serde_json::Value> = joined
                .split(',')
                .filter(|item| !item.is_empty())
                .map(|item| serde_json::Value::String(item.to_string()))
                .collect();
            object.insert(field.to_string(), serde_json::Value::Array(items));
        }
    }
    let mut out = serde_json::Value::Object(object).to_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_fields_become_arrays_and_the_rest_stays() {
        let line = r#"{"timestamp":"t","level":"INFO","recipients":"a@example.test,b@example.test","rules":"","sender":"x,y@example.test","message":"message"}"#;
        let out: serde_json::Value = serde_json::from_str(&lists_as_arrays(line)).unwrap();
        assert_eq!(
            out["recipients"],
            serde_json::json!(["a@example.test", "b@example.test"])
        );
        assert_eq!(out["rules"], serde_json::json!([]));
        assert_eq!(out["sender"], "x,y@example.test");
        assert_eq!(lists_as_arrays("not json\n"), "not json\n");
    }
}
