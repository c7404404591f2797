//! Call detail records into PostgreSQL (analytics.md): table `call_cdr` keyed by `cdr_id`, each batch
//! one transaction that upserts its records (a row changes only for a higher `version`) and moves the
//! consumer's position (`callgate_sink_progress`), so a sink killed anywhere goes on after the last
//! COMMIT and stores nothing twice. The table definition is `docs/sql/call_cdr.sql`, run at start.

use crate::journal::Position;
use std::collections::HashMap;
use tokio_postgres::{Client, NoTls, Statement};

/// The schema: tables and views, each created if absent.
pub const SCHEMA: &str = include_str!("../../docs/sql/call_cdr.sql");

/// `call_cdr`'s columns after `cdr_id`, with the CDR member each comes from and its SQL type.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("version", "version", "integer"),
    ("server", "server", "text"),
    ("call_uuid", "callUuid", "text"),
    ("root_conn_id", "rootConnId", "text"),
    ("call_type", "callType", "text"),
    ("direction", "direction", "text"),
    ("ani", "ani", "text"),
    ("dnis", "dnis", "text"),
    ("ani_e164", "aniE164", "text"),
    ("start_time", "startTime", "timestamptz"),
    ("answer_time", "answerTime", "timestamptz"),
    ("end_time", "endTime", "timestamptz"),
    ("duration_ms", "durationMs", "bigint"),
    ("time_to_answer_ms", "timeToAnswerMs", "bigint"),
    ("queue_wait_ms", "queueWaitMs", "bigint"),
    ("ring_ms", "ringMs", "bigint"),
    ("alerts", "alerts", "integer"),
    ("talk_ms", "talkMs", "bigint"),
    ("hold_count", "holdCount", "integer"),
    ("hold_ms", "holdMs", "bigint"),
    ("longest_hold_ms", "longestHoldMs", "bigint"),
    ("transferred", "transferred", "boolean"),
    ("transfer_count", "transferCount", "integer"),
    ("consult_count", "consultCount", "integer"),
    ("conferenced", "conferenced", "boolean"),
    ("conference_count", "conferenceCount", "integer"),
    ("monitored", "monitored", "boolean"),
    ("recorded", "recorded", "boolean"),
    ("abandoned", "abandoned", "boolean"),
    ("abandon_phase", "abandonPhase", "text"),
    ("abandon_time", "abandonTime", "timestamptz"),
    ("released_by", "releasedBy", "text"),
    ("outcome", "outcome", "text"),
    ("disposition", "disposition", "text"),
];

/// Why the sink cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The server cannot be reached, or refused the login.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed (the transaction is rolled back; nothing of the batch is stored).
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// A connection that stores batches of CDRs for one consumer.
pub struct PostgresSink {
    client: Client,
    consumer: String,
    upsert: Statement,
    progress: Statement,
}

impl PostgresSink {
    /// Connects with `dsn` (`host=... user=...` or `postgresql://...`), creates the schema if absent
    /// and prepares the statements. The connection's task runs on the current runtime.
    pub async fn connect(dsn: &str, consumer: &str) -> Result<PostgresSink, PostgresError> {
        let (client, connection) = tokio_postgres::connect(dsn, NoTls)
            .await
            .map_err(PostgresError::Connect)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!("PostgreSQL connection: {error}");
            }
        });
        client.batch_execute(SCHEMA).await?;
        // A CDR's `record` (a few KB) is compressed in TOAST: lz4 takes a fraction of the default
        // pglz's time. A server built without lz4 refuses the setting and keeps its default.
        if let Err(error) = client
            .batch_execute("SET default_toast_compression = 'lz4'")
            .await
        {
            tracing::debug!("lz4 compression is not available: {error}");
        }
        let upsert = client.prepare(&upsert_statement()).await?;
        let progress = client
            .prepare(
                "INSERT INTO callgate_sink_progress (consumer, position) VALUES ($1, $2) \
                 ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            )
            .await?;
        Ok(PostgresSink {
            client,
            consumer: consumer.to_owned(),
            upsert,
            progress,
        })
    }

    /// The position this consumer stored up to (0: none yet).
    pub async fn position(&self) -> Result<Position, PostgresError> {
        let row = self
            .client
            .query_opt(
                "SELECT position FROM callgate_sink_progress WHERE consumer = $1",
                &[&self.consumer],
            )
            .await?;
        Ok(row
            .map(|row| row.get::<_, i64>(0))
            .and_then(|position| Position::try_from(position).ok())
            .unwrap_or(0))
    }

    /// Stores `batch` and the position it reaches in one transaction: both or neither.
    pub async fn store(&mut self, batch: &Batch, position: Position) -> Result<(), PostgresError> {
        let transaction = self.client.transaction().await?;
        if !batch.is_empty() {
            transaction
                .execute(&self.upsert, &[&batch.json_array()])
                .await?;
        }
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        transaction
            .execute(&self.progress, &[&self.consumer, &position])
            .await?;
        transaction.commit().await?;
        Ok(())
    }
}

/// `INSERT ... SELECT ... FROM jsonb_array_elements($1) ON CONFLICT ... WHERE version is higher`:
/// one statement per batch, the records sent as one JSON array.
fn upsert_statement() -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|(column, _, _)| *column).collect();
    let values: Vec<String> = COLUMNS
        .iter()
        .map(|(_, member, sql)| match *sql {
            "text" => format!("r ->> '{member}'"),
            sql => format!("(r ->> '{member}')::{sql}"),
        })
        .collect();
    let updates: Vec<String> = names
        .iter()
        .chain(["record"].iter())
        .map(|column| format!("{column} = EXCLUDED.{column}"))
        .collect();
    format!(
        "INSERT INTO call_cdr (cdr_id, {names}, record) \
         SELECT r ->> 'cdrId', {values}, r FROM jsonb_array_elements($1::text::jsonb) AS r \
         ON CONFLICT (cdr_id) DO UPDATE SET {updates}, stored_at = now() \
         WHERE call_cdr.version < EXCLUDED.version",
        names = names.join(", "),
        values = values.join(", "),
        updates = updates.join(", "),
    )
}

/// CDRs gathered for one transaction, the highest version of each call only (one statement cannot
/// update a row twice).
#[derive(Debug, Default)]
pub struct Batch {
    /// Each record's JSON, in order of first appearance.
    records: Vec<String>,
    /// Where each call's record is in `records`, and its version.
    index: HashMap<String, (usize, u32)>,
}

impl Batch {
    /// Adds a CDR (its JSON, as written), replacing a lower version of the same call.
    pub fn push(&mut self, cdr_id: &str, version: u32, json: &str) {
        match self.index.get_mut(cdr_id) {
            Some((at, held)) => {
                if version > *held {
                    *held = version;
                    self.records[*at] = json.to_owned();
                }
            }
            None => {
                self.index
                    .insert(cdr_id.to_owned(), (self.records.len(), version));
                self.records.push(json.to_owned());
            }
        }
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties it for the next transaction.
    pub fn clear(&mut self) {
        self.records.clear();
        self.index.clear();
    }

    fn json_array(&self) -> String {
        let length = self.records.iter().map(|r| r.len() + 1).sum::<usize>() + 2;
        let mut json = String::with_capacity(length);
        json.push('[');
        for (n, record) in self.records.iter().enumerate() {
            if n > 0 {
                json.push(',');
            }
            json.push_str(record);
        }
        json.push(']');
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_the_shipped_table_is_filled() {
        let table = SCHEMA
            .split("CREATE TABLE IF NOT EXISTS call_cdr (")
            .nth(1)
            .and_then(|rest| rest.split(");").next())
            .expect("the call_cdr table");
        let declared: Vec<&str> = table
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| !name.is_empty() && !name.starts_with("--"))
            .collect();
        let mut filled: Vec<&str> = vec!["cdr_id"];
        filled.extend(COLUMNS.iter().map(|(column, _, _)| *column));
        filled.extend(["record", "stored_at"]);
        assert_eq!(declared, filled);
    }

    #[test]
    fn a_batch_keeps_the_highest_version_of_each_call() {
        let mut batch = Batch::default();
        batch.push("a", 1, r#"{"v":"a1"}"#);
        batch.push("b", 1, r#"{"v":"b1"}"#);
        batch.push("a", 2, r#"{"v":"a2"}"#);
        batch.push("a", 1, r#"{"v":"a1 again"}"#);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.json_array(), r#"[{"v":"a2"},{"v":"b1"}]"#);
    }
}
