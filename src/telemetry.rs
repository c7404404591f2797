//! Logs (tracing to standard error, text or JSON). Metrics are recorded where things happen, with the
//! `metrics` crate, and rendered by the Prometheus recorder at `/metrics`.

use crate::serve::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: `RUST_LOG` (default `info`), to standard error.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
