//! The settings that shape a gateway's notifications and records, kept beside its journal
//! (`DIR/settings.json`): `callgate export` folds the journal with them, so its records are the
//! gateway's. Written at every start, so they are the latest run's (docs/export.md).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name in the journal's folder.
pub const FILE: &str = "settings.json";

/// What `callgate export` needs to fold as the gateway did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// `--node`.
    pub node: String,
    /// The base URL of `uri` members.
    pub base_url: String,
    /// Reducer shards (their count orders a tick's releases of stale calls).
    pub shards: usize,
    /// `--released-linger`, seconds.
    pub released_linger_secs: f64,
    /// `--stale-call-after`, seconds (0: never).
    pub stale_call_after_secs: f64,
    /// `--max-calls`.
    pub max_calls: usize,
    /// `--cdr-late-window`, seconds.
    pub cdr_late_window_secs: f64,
    /// `--cdr-disposition-key`.
    pub cdr_disposition_key: String,
    /// `--service-level-secs` (absent from the settings of gateways before queue resources).
    #[serde(default = "default_service_level_secs")]
    pub service_level_secs: u64,
}

fn default_service_level_secs() -> u64 {
    crate::reduce::DEFAULT_SERVICE_LEVEL_SECS
}

impl Settings {
    /// The settings of a gateway run with `config`, serving at `base_url`.
    pub fn of(config: &crate::serve::ServeConfig, base_url: &str) -> Settings {
        Settings {
            node: config.node.clone(),
            base_url: base_url.to_owned(),
            shards: config.shards,
            released_linger_secs: config.released_linger.as_secs_f64(),
            stale_call_after_secs: config
                .stale_call_after
                .map_or(0.0, |after| after.as_secs_f64()),
            max_calls: config.max_calls,
            cdr_late_window_secs: config.cdr.late_window as f64 / 1e6,
            cdr_disposition_key: config.cdr.disposition_key.clone(),
            service_level_secs: config.service_level_secs,
        }
    }

    /// The pipeline of a gateway with these settings: `serve` and `export` both fold with it, so their
    /// notifications cannot drift apart.
    pub fn pipeline(&self, tap: Option<crate::pipeline::Tap>) -> crate::pipeline::PipelineConfig {
        // Read back from a file or a stream: a value no duration holds is taken as the longest.
        let seconds = |secs: f64| {
            std::time::Duration::try_from_secs_f64(secs.max(0.0))
                .unwrap_or(std::time::Duration::MAX)
        };
        crate::pipeline::PipelineConfig {
            shards: self.shards,
            reducer: crate::reduce::ReducerConfig {
                base_url: self.base_url.clone(),
                max_calls: self.max_calls,
                max_devices: crate::reduce::DEFAULT_MAX_DEVICES,
                service_level: i64::try_from(self.service_level_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000),
            },
            released_linger: seconds(self.released_linger_secs),
            stale_call_after: (self.stale_call_after_secs > 0.0)
                .then(|| seconds(self.stale_call_after_secs)),
            queue_depth: crate::pipeline::SHARD_QUEUE,
            tap,
        }
    }

    /// Writes them to `dir` (a temporary file renamed over the last: never half written).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let temporary = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&temporary, text + "\n")?;
        std::fs::rename(&temporary, dir.join(FILE))
    }

    /// The settings kept in `dir`, if any.
    pub fn load(dir: &Path) -> std::io::Result<Option<Settings>> {
        match std::fs::read_to_string(dir.join(FILE)) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_pipeline_of_a_gateway_is_folded_with_its_own_flags() {
        let config = crate::serve::ServeArgs::default()
            .resolve()
            .expect("the defaults resolve");
        let settings = Settings::of(&config, "http://callgate.test");
        let pipeline = settings.pipeline(None);
        assert_eq!(pipeline.shards, config.shards);
        assert_eq!(pipeline.released_linger, config.released_linger);
        assert_eq!(pipeline.stale_call_after, config.stale_call_after);
        assert_eq!(pipeline.reducer.max_calls, config.max_calls);
        assert_eq!(pipeline.reducer.base_url, "http://callgate.test");
        assert_eq!(
            pipeline.reducer.service_level,
            config.service_level_secs as i64 * 1_000_000
        );
    }

    #[test]
    fn settings_no_duration_holds_are_read_as_the_longest_or_none() {
        let config = crate::serve::ServeArgs::default()
            .resolve()
            .expect("the defaults resolve");
        let mut settings = Settings::of(&config, "http://callgate.test");
        settings.released_linger_secs = -3.0;
        settings.stale_call_after_secs = 1e300;
        settings.service_level_secs = u64::MAX;
        let pipeline = settings.pipeline(None);
        assert_eq!(pipeline.released_linger, Duration::ZERO);
        assert_eq!(pipeline.stale_call_after, Some(Duration::MAX));
        assert_eq!(pipeline.reducer.service_level, i64::MAX);
        settings.stale_call_after_secs = 0.0;
        assert_eq!(settings.pipeline(None).stale_call_after, None);
    }
}
