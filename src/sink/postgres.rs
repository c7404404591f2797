//! Call detail records into PostgreSQL (analytics.md): table `call_cdr` keyed by `cdr_id`, each batch
//! one transaction that upserts its records (a row changes only for a higher `version`) and moves the
//! consumer's position (`callgate_sink_progress`), so a sink killed anywhere goes on after the last
//! COMMIT and stores nothing twice. The table definition is `docs/sql/call_cdr.sql`, run at start.
//!
//! A batch travels as typed columns: each CDR is read here ([`Batch::encode`], off the connection's
//! thread) into one typed vector per column, which tokio-postgres sends as a PostgreSQL array, and
//! PostgreSQL `unnest`s them; the whole CDR goes as text, which PostgreSQL only validates (`record` is
//! `json`). Picking 35 members out of each
//! record in SQL and building `jsonb` cost PostgreSQL more than the rest of the insert
//! (docs/postgres.md).

use crate::journal::Position;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

/// The schema: tables and views, each created if absent.
pub const SCHEMA: &str = include_str!("../../docs/sql/call_cdr.sql");

/// `call_cdr`'s columns but `record` and `stored_at`, with the CDR member each comes from and its SQL
/// type (`text`, `integer`, `bigint`, `boolean` or `timestamptz`).
const COLUMNS: &[(&str, &str, &str)] = &[
    ("cdr_id", "cdrId", "text"),
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
    /// A record is not a CDR whose members fit the table (nothing of the batch is stored).
    #[error("a record that does not fit call_cdr: {0}")]
    Record(String),
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
            .prepare(&format!("{PROGRESS} VALUES ($1, $2) {PROGRESS_CONFLICT}"))
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

    /// Stores `batch` and the position it reaches in one transaction: both or neither. It is one
    /// statement (the upsert in a `WITH`, then the position), which PostgreSQL runs as one transaction
    /// and commits before it answers: returning `Ok` means committed.
    pub async fn store(
        &mut self,
        batch: &Encoded,
        position: Position,
    ) -> Result<(), PostgresError> {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        if batch.is_empty() {
            self.client
                .execute(&self.progress, &[&self.consumer, &position])
                .await?;
            return Ok(());
        }
        let params: Vec<&(dyn ToSql + Sync)> = batch
            .columns
            .iter()
            .map(Column::param)
            .chain([
                &batch.records as &(dyn ToSql + Sync),
                &self.consumer,
                &position,
            ])
            .collect();
        self.client.execute(&self.upsert, &params).await?;
        Ok(())
    }
}

/// The position's upsert, without its values.
const PROGRESS: &str = "INSERT INTO callgate_sink_progress (consumer, position)";
const PROGRESS_CONFLICT: &str =
    "ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position, updated_at = now()";

/// `WITH upserted AS (INSERT ... SELECT ... FROM unnest($1::text[], $2::integer[], ...) ON CONFLICT
/// ... WHERE version is higher) INSERT INTO callgate_sink_progress ...`: a batch's records and the
/// position it reaches, in one statement. Each column comes as one typed array, the whole CDR as
/// text that PostgreSQL validates as `json`.
fn upsert_statement() -> String {
    let names: Vec<&str> = COLUMNS
        .iter()
        .map(|(column, _, _)| *column)
        .chain(["record"])
        .collect();
    let arrays: Vec<String> = COLUMNS
        .iter()
        .map(|(_, _, sql)| *sql)
        .chain(["text"])
        .enumerate()
        .map(|(n, sql)| format!("${}::{sql}[]", n + 1))
        .collect();
    // The record's text becomes `json`: checked to be JSON, stored as written.
    let values: Vec<&str> = COLUMNS
        .iter()
        .map(|(column, _, _)| *column)
        .chain(["record::json"])
        .collect();
    let updates: Vec<String> = names
        .iter()
        .filter(|column| **column != "cdr_id")
        .map(|column| format!("{column} = EXCLUDED.{column}"))
        .collect();
    format!(
        "WITH upserted AS (\
         INSERT INTO call_cdr ({names}) \
         SELECT {values} FROM unnest({arrays}) AS u({names}) \
         ON CONFLICT (cdr_id) DO UPDATE SET {updates}, stored_at = now() \
         WHERE call_cdr.version < EXCLUDED.version) \
         {PROGRESS} VALUES (${consumer}, ${position}) {PROGRESS_CONFLICT}",
        names = names.join(", "),
        values = values.join(", "),
        arrays = arrays.join(", "),
        updates = updates.join(", "),
        consumer = names.len() + 1,
        position = names.len() + 2,
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

    /// The records as the upsert's parameters: one typed column per entry of [`COLUMNS`] and the
    /// records' text, in the records' order. Fails on a record that is not a JSON object whose
    /// members fit their columns' types (PostgreSQL would have refused it too).
    pub fn encode(&self) -> Result<Encoded, PostgresError> {
        let mut columns: Vec<Column> = COLUMNS
            .iter()
            .map(|(_, _, sql)| Column::new(sql, self.records.len()))
            .collect();
        for json in &self.records {
            // Each row starts NULL in every column: members the record lacks stay NULL (as `->>` made
            // them), and a member named twice ends with its last value (as in PostgreSQL's `jsonb`).
            for column in &mut columns {
                column.push_null();
            }
            let mut json_in = serde_json::Deserializer::from_str(json);
            Row {
                columns: &mut columns,
            }
            .deserialize(&mut json_in)
            .and_then(|()| json_in.end())
            .map_err(|error| PostgresError::Record(format!("{error}: {}", excerpt(json))))?;
        }
        Ok(Encoded {
            columns,
            records: self.records.clone(),
        })
    }
}

/// A batch's records as the upsert's parameters ([`Batch::encode`]).
#[derive(Debug)]
pub struct Encoded {
    /// One per entry of [`COLUMNS`], in its order.
    columns: Vec<Column>,
    /// Each record's JSON, sent as the last array (`text[]`).
    records: Vec<String>,
}

impl Encoded {
    /// Calls held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The start of a record, for an error message.
fn excerpt(json: &str) -> &str {
    let mut end = json.len().min(120);
    while !json.is_char_boundary(end) {
        end -= 1;
    }
    &json[..end]
}

/// One column's values, one per record: tokio-postgres sends a `Vec<Option<T>>` as a one-dimensional
/// PostgreSQL array (`None` as NULL), after checking it against the array type the statement names
/// (`$2::integer[]`, ...).
#[derive(Debug, PartialEq)]
enum Column {
    /// `text`.
    Text(Vec<Option<String>>),
    /// `integer`.
    Integer(Vec<Option<i32>>),
    /// `bigint`.
    BigInt(Vec<Option<i64>>),
    /// `boolean`.
    Boolean(Vec<Option<bool>>),
    /// `timestamptz`: tokio-postgres sends a `SystemTime` as PostgreSQL's µs since 2000, without a
    /// time crate's feature.
    Time(Vec<Option<SystemTime>>),
}

/// `$body` with `$values` bound to the column's vector, whatever its type.
macro_rules! each {
    ($column:expr, $values:ident => $body:expr) => {
        match $column {
            Column::Text($values) => $body,
            Column::Integer($values) => $body,
            Column::BigInt($values) => $body,
            Column::Boolean($values) => $body,
            Column::Time($values) => $body,
        }
    };
}

impl Column {
    /// An empty column of one of [`COLUMNS`]' SQL types, with room for `rows` values.
    fn new(sql: &str, rows: usize) -> Column {
        match sql {
            "text" => Column::Text(Vec::with_capacity(rows)),
            "integer" => Column::Integer(Vec::with_capacity(rows)),
            "bigint" => Column::BigInt(Vec::with_capacity(rows)),
            "boolean" => Column::Boolean(Vec::with_capacity(rows)),
            "timestamptz" => Column::Time(Vec::with_capacity(rows)),
            other => unreachable!("no column of type {other}"),
        }
    }

    /// Starts the next row, NULL until a member sets it.
    fn push_null(&mut self) {
        each!(self, values => values.push(None));
    }

    /// The current row's value back to NULL (a member written `null`).
    fn set_null(&mut self) {
        each!(self, values => if let Some(last) = values.last_mut() {
            *last = None;
        });
    }

    /// The column as the upsert's parameter.
    fn param(&self) -> &(dyn ToSql + Sync) {
        each!(self, values => values)
    }

    /// What its members must be, for an error message.
    fn name(&self) -> &'static str {
        match self {
            Column::Text(_) => "a string",
            Column::Integer(_) => "a 32-bit integer",
            Column::BigInt(_) => "an integer",
            Column::Boolean(_) => "a boolean",
            Column::Time(_) => "an RFC 3339 time",
        }
    }
}

/// Sets the current (last) row's value.
fn set<T>(values: &mut [Option<T>], value: T) {
    if let Some(last) = values.last_mut() {
        *last = Some(value);
    }
}

/// An RFC 3339 time: callgate's own `2025-11-23T12:13:20.369Z` directly, any other form through
/// `time`.
fn timestamp(text: &str) -> Option<SystemTime> {
    let micros = callgate_time(text).or_else(|| crate::cli::export::parse_time(text))?;
    let from_epoch = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(from_epoch)
    } else {
        UNIX_EPOCH.checked_sub(from_epoch)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (what callgate writes) in µs since the Unix epoch; `None` for any other
/// form.
fn callgate_time(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 24
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || bytes[19] != b'.'
        || bytes[23] != b'Z'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        bytes[from..to].iter().try_fold(0i64, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i64::from(digit - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let millis = number(20, 23)?;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + millis * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// One record read into the columns' current row: the members of [`COLUMNS`], the others skipped.
struct Row<'c> {
    columns: &'c mut [Column],
}

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a CDR object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        // callgate writes the members in the order of COLUMNS, with others between them: the column
        // after the last one found is tried first.
        let mut next = 0;
        while let Some(Key(key)) = map.next_key()? {
            let found = if COLUMNS
                .get(next)
                .is_some_and(|(_, member, _)| *member == &*key)
            {
                Some(next)
            } else {
                COLUMNS.iter().position(|(_, member, _)| *member == &*key)
            };
            let Some(at) = found else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            next = at + 1;
            map.next_value_seed(Cell {
                column: &mut self.columns[at],
                member: COLUMNS[at].1,
            })?;
        }
        Ok(())
    }
}

/// A member's name, borrowed from the record unless it holds escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = std::borrow::Cow<'de, str>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a member's name")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(std::borrow::Cow::Borrowed(text))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(std::borrow::Cow::Owned(text.to_owned()))
            }
        }
        deserializer.deserialize_str(Name).map(Key)
    }
}

/// One member's value, written as its column's value of the current row.
struct Cell<'c> {
    column: &'c mut Column,
    member: &'static str,
}

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            formatter,
            "{} or null as `{}`",
            self.column.name(),
            self.member
        )
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.column.set_null();
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        match self.column {
            Column::Text(values) => set(values, text.to_owned()),
            Column::Time(values) => match timestamp(text) {
                Some(time) => set(values, time),
                None => return Err(E::invalid_value(Unexpected::Str(text), &self)),
            },
            _ => return Err(E::invalid_type(Unexpected::Str(text), &self)),
        }
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<(), E> {
        match self.column {
            Column::Integer(values) => match i32::try_from(number) {
                Ok(number) => set(values, number),
                Err(_) => return Err(E::invalid_value(Unexpected::Signed(number), &self)),
            },
            Column::BigInt(values) => set(values, number),
            // `->>` gave a number's text.
            Column::Text(values) => set(values, number.to_string()),
            _ => return Err(E::invalid_type(Unexpected::Signed(number), &self)),
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<(), E> {
        match i64::try_from(number) {
            Ok(number) => self.visit_i64(number),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(number), &self)),
        }
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        match self.column {
            Column::Boolean(values) => set(values, value),
            Column::Text(values) => set(values, value.to_string()),
            _ => return Err(E::invalid_type(Unexpected::Bool(value), &self)),
        }
        Ok(())
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
        let declared: Vec<(&str, &str)> = table
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((words.next()?, words.next()?.trim_end_matches(',')))
            })
            .filter(|(name, _)| !name.starts_with("--"))
            .collect();
        let mut filled: Vec<(&str, &str)> = COLUMNS
            .iter()
            .map(|(column, _, sql)| (*column, *sql))
            .collect();
        filled.extend([("record", "json"), ("stored_at", "timestamptz")]);
        assert_eq!(declared, filled);
    }

    fn column<'e>(encoded: &'e Encoded, name: &str) -> &'e Column {
        let at = COLUMNS.iter().position(|(column, _, _)| *column == name);
        &encoded.columns[at.expect(name)]
    }

    fn text(values: &[Option<&str>]) -> Column {
        Column::Text(
            values
                .iter()
                .map(|value| value.map(str::to_owned))
                .collect(),
        )
    }

    /// A time `micros` µs after the Unix epoch.
    fn at(micros: i64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).expect("after 1970")))
    }

    #[test]
    fn a_batch_keeps_the_highest_version_of_each_call() {
        let mut batch = Batch::default();
        batch.push("a", 1, r#"{"cdrId":"a","version":1}"#);
        batch.push("b", 1, r#"{"cdrId":"b","version":1}"#);
        batch.push("a", 2, r#"{"cdrId":"a","version":2}"#);
        batch.push("a", 1, r#"{"cdrId":"a","version":1,"again":true}"#);
        assert_eq!(batch.len(), 2);
        let encoded = batch.encode().expect("encoded");
        assert_eq!(encoded.len(), 2);
        assert_eq!(column(&encoded, "cdr_id"), &text(&[Some("a"), Some("b")]));
        assert_eq!(
            column(&encoded, "version"),
            &Column::Integer(vec![Some(2), Some(1)])
        );
        assert_eq!(
            encoded.records,
            [
                r#"{"cdrId":"a","version":2}"#,
                r#"{"cdrId":"b","version":1}"#
            ]
        );
    }

    /// Each member into its column as PostgreSQL's `(record ->> 'member')::type` made it: absent and
    /// null members NULL, escapes resolved, times to the µs, a repeated member's last value.
    #[test]
    fn members_go_into_typed_columns() {
        let mut batch = Batch::default();
        let x = r#"{"schemaVersion":1,"cdrId":"x","version":3,"server":"TS\"1","queues":[{"dn":"1"}],
               "startTime":"2000-01-01T00:00:01.250Z","endTime":"2025-11-23T12:13:20.369+01:00",
               "answerTime":null,"durationMs":9007199254740993,"transferred":true,"ani":"+1",
               "ani":"+2","userData":{"version":"not this one"},"dnis":4,"callType":"a",
               "callType":null}"#;
        batch.push("x", 3, x);
        batch.push("y", 1, r#"{"cdrId":"y","version":1,"ani":null,"ani":"+3"}"#);
        let encoded = batch.encode().expect("encoded");
        assert_eq!(column(&encoded, "server"), &text(&[Some("TS\"1"), None]));
        assert_eq!(column(&encoded, "ani"), &text(&[Some("+2"), Some("+3")]));
        assert_eq!(column(&encoded, "dnis"), &text(&[Some("4"), None]));
        assert_eq!(column(&encoded, "call_type"), &text(&[None, None]));
        assert_eq!(column(&encoded, "call_uuid"), &text(&[None, None]));
        assert_eq!(
            column(&encoded, "version"),
            &Column::Integer(vec![Some(3), Some(1)])
        );
        assert_eq!(
            column(&encoded, "duration_ms"),
            &Column::BigInt(vec![Some(9_007_199_254_740_993), None])
        );
        assert_eq!(
            column(&encoded, "transferred"),
            &Column::Boolean(vec![Some(true), None])
        );
        assert_eq!(
            column(&encoded, "start_time"),
            &Column::Time(vec![at(946_684_801_250_000), None])
        );
        let end = crate::cli::export::parse_time("2025-11-23T11:13:20.369Z").expect("time");
        assert_eq!(
            column(&encoded, "end_time"),
            &Column::Time(vec![at(end), None])
        );
        assert_eq!(
            column(&encoded, "answer_time"),
            &Column::Time(vec![None, None])
        );
        for column in &encoded.columns {
            assert_eq!(each!(column, values => values.len()), 2);
        }
    }

    /// Each column goes as the array type the statement names for it (`$n::type[]`), NULLs and
    /// all, and times as PostgreSQL's µs since 2000.
    #[test]
    fn columns_are_sent_as_the_statements_array_types() {
        use bytes::BytesMut;
        use tokio_postgres::types::{Kind, Type};
        let mut batch = Batch::default();
        batch.push(
            "x",
            1,
            r#"{"cdrId":"x","version":1,"startTime":"2000-01-01T00:00:01.250Z"}"#,
        );
        batch.push("y", 1, r#"{"cdrId":"y","version":1}"#);
        let encoded = batch.encode().expect("encoded");
        let array = |sql: &str| match sql {
            "text" => Type::TEXT_ARRAY,
            "integer" => Type::INT4_ARRAY,
            "bigint" => Type::INT8_ARRAY,
            "boolean" => Type::BOOL_ARRAY,
            "timestamptz" => Type::TIMESTAMPTZ_ARRAY,
            other => panic!("{other}"),
        };
        let sent = |param: &dyn ToSql, ty: &Type| {
            let mut out = BytesMut::new();
            param.to_sql_checked(ty, &mut out).map(|_| out.to_vec())
        };
        for ((name, _, sql), column) in COLUMNS.iter().zip(&encoded.columns) {
            let ty = array(sql);
            let bytes = sent(column.param(), &ty).unwrap_or_else(|error| panic!("{name}: {error}"));
            let Kind::Array(element) = ty.kind() else {
                panic!("{ty} is an array")
            };
            // One dimension, element type, two rows from 1.
            assert_eq!(bytes[..4], 1i32.to_be_bytes(), "{name}");
            assert_eq!(bytes[8..12], element.oid().to_be_bytes(), "{name}");
            assert_eq!(bytes[12..20], [0, 0, 0, 2, 0, 0, 0, 1], "{name}");
            assert!(sent(column.param(), &Type::FLOAT8_ARRAY).is_err(), "{name}");
        }
        let times = sent(
            column(&encoded, "start_time").param(),
            &Type::TIMESTAMPTZ_ARRAY,
        );
        let times = times.expect("timestamptz[]");
        assert_eq!(times[4..8], 1i32.to_be_bytes(), "has a NULL");
        assert_eq!(times[20..24], 8i32.to_be_bytes());
        assert_eq!(times[24..32], 1_250_000i64.to_be_bytes());
        assert_eq!(times[32..], (-1i32).to_be_bytes());
        assert!(sent(&encoded.records, &Type::TEXT_ARRAY).is_ok());
    }

    #[test]
    fn an_empty_batch_is_empty_arrays() {
        let encoded = Batch::default().encode().expect("encoded");
        assert!(encoded.is_empty());
        assert!(encoded.records.is_empty());
        assert_eq!(encoded.columns.len(), COLUMNS.len());
        for column in &encoded.columns {
            assert_eq!(each!(column, values => values.len()), 0);
        }
    }

    #[test]
    fn a_member_of_the_wrong_type_fails_the_batch() {
        for json in [
            r#"{"cdrId":"x","version":"3"}"#,
            r#"{"cdrId":"x","version":4294967296}"#,
            r#"{"cdrId":"x","durationMs":1.5}"#,
            r#"{"cdrId":"x","startTime":"yesterday"}"#,
            r#"{"cdrId":"x","transferred":1}"#,
            r#"{"cdrId":{"nested":true}}"#,
            r#"["not", "an object"]"#,
            r#"{"cdrId":"x"} trailing"#,
        ] {
            let mut batch = Batch::default();
            batch.push("x", 1, json);
            assert!(
                matches!(batch.encode(), Err(PostgresError::Record(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn callgate_times_parse_like_rfc3339() {
        for text in [
            "2025-11-23T12:13:20.369Z",
            "1970-01-01T00:00:00.000Z",
            "2024-02-29T23:59:59.999Z",
            "2000-03-01T00:00:00.001Z",
            "2100-12-31T00:00:00.000Z",
        ] {
            assert_eq!(
                callgate_time(text),
                crate::cli::export::parse_time(text),
                "{text}"
            );
        }
        for text in [
            "2025-02-29T00:00:00.000Z",
            "2025-11-23T12:13:20.369+00:00",
            "2025-11-23 12:13:20.369Z",
        ] {
            assert_eq!(callgate_time(text), None, "{text}");
        }
        assert_eq!(timestamp("2000-01-01T00:00:00Z"), at(946_684_800_000_000));
        let before_1970 = UNIX_EPOCH.checked_sub(Duration::from_millis(500));
        assert_eq!(timestamp("1969-12-31T23:59:59.500Z"), before_1970);
        assert_eq!(timestamp("yesterday"), None);
    }
}
