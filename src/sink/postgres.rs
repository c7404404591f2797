//! Call detail records into PostgreSQL (analytics.md): table `call_cdr` keyed by `cdr_id`, each batch
//! one transaction that upserts its records (a row changes only for a higher `version`) and moves the
//! consumer's position (`callgate_sink_progress`), so a sink killed anywhere goes on after the last
//! COMMIT and stores nothing twice. The table definition is `docs/sql/call_cdr.sql`, run at start.
//!
//! A batch travels as typed columns: each CDR is read here ([`Batch::encode`], off the connection's
//! thread) into one binary PostgreSQL array per column, and PostgreSQL `unnest`s them; the whole CDR
//! goes as text, which PostgreSQL only validates (`record` is `json`). Picking 35 members out of each
//! record in SQL and building `jsonb` cost PostgreSQL more than the rest of the insert
//! (docs/postgres.md).

use crate::journal::Position;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::collections::HashMap;
use tokio_postgres::types::{IsNull, ToSql, Type, WrongType};
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
            .arrays
            .iter()
            .map(|array| array as &(dyn ToSql + Sync))
            .chain([
                &self.consumer as &(dyn ToSql + Sync),
                &position as &(dyn ToSql + Sync),
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

    /// The records as the upsert's parameters: one binary array per column of [`COLUMNS`] and one of
    /// the records' text, in the records' order. Fails on a record that is not a JSON object whose
    /// members fit their columns' types (PostgreSQL would have refused it too).
    pub fn encode(&self) -> Result<Encoded, PostgresError> {
        let rows = self.records.len();
        let mut columns: Vec<ArrayBuilder> = COLUMNS
            .iter()
            .map(|(_, _, sql)| ArrayBuilder::new(Kind::of(sql), rows, 16))
            .collect();
        let mut record =
            ArrayBuilder::new(Kind::Text, rows, self.records.iter().map(String::len).sum());
        for json in &self.records {
            let mut json_in = serde_json::Deserializer::from_str(json);
            Row {
                columns: &mut columns,
            }
            .deserialize(&mut json_in)
            .and_then(|()| json_in.end())
            .map_err(|error| PostgresError::Record(format!("{error}: {}", excerpt(json))))?;
            // Members the record lacks are NULL (as `->>` made them).
            for column in &mut columns {
                column.end_row();
            }
            record.start_value();
            record.bytes.put_slice(json.as_bytes());
            record.end_value();
            record.end_row();
        }
        Ok(Encoded {
            arrays: columns
                .into_iter()
                .chain([record])
                .map(ArrayBuilder::finish)
                .collect(),
            rows,
        })
    }
}

/// A batch's records as the upsert's parameters ([`Batch::encode`]).
#[derive(Debug)]
pub struct Encoded {
    arrays: Vec<Array>,
    rows: usize,
}

impl Encoded {
    /// Calls held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
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

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    BigInt,
    Boolean,
    Time,
}

impl Kind {
    fn of(sql: &str) -> Kind {
        match sql {
            "text" => Kind::Text,
            "integer" => Kind::Integer,
            "bigint" => Kind::BigInt,
            "boolean" => Kind::Boolean,
            "timestamptz" => Kind::Time,
            other => unreachable!("no column of type {other}"),
        }
    }

    /// The array's type and its elements' type.
    fn types(self) -> (Type, Type) {
        match self {
            Kind::Text => (Type::TEXT_ARRAY, Type::TEXT),
            Kind::Integer => (Type::INT4_ARRAY, Type::INT4),
            Kind::BigInt => (Type::INT8_ARRAY, Type::INT8),
            Kind::Boolean => (Type::BOOL_ARRAY, Type::BOOL),
            Kind::Time => (Type::TIMESTAMPTZ_ARRAY, Type::TIMESTAMPTZ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Integer => "a 32-bit integer",
            Kind::BigInt => "an integer",
            Kind::Boolean => "a boolean",
            Kind::Time => "an RFC 3339 time",
        }
    }
}

/// Length of the one-dimensional array header: dimensions, null flag, element type, length, lower
/// bound.
const ARRAY_HEADER: usize = 20;

/// A one-dimensional array in PostgreSQL's binary form, written one element per row.
struct ArrayBuilder {
    kind: Kind,
    bytes: BytesMut,
    rows: usize,
    has_null: bool,
    /// Where the current row's element starts, once it has one.
    row_value: Option<usize>,
}

impl ArrayBuilder {
    fn new(kind: Kind, rows: usize, bytes_per_row: usize) -> ArrayBuilder {
        let mut bytes = BytesMut::with_capacity(ARRAY_HEADER + rows * (4 + bytes_per_row));
        bytes.put_bytes(0, ARRAY_HEADER);
        ArrayBuilder {
            kind,
            bytes,
            rows: 0,
            has_null: false,
            row_value: None,
        }
    }

    /// Starts the current row's element (replacing one written before: a member named twice counts
    /// with its last value, as in PostgreSQL's `jsonb`), its length to be filled in by `end_value`.
    fn start_value(&mut self) {
        if let Some(at) = self.row_value {
            self.bytes.truncate(at);
        }
        self.row_value = Some(self.bytes.len());
        self.bytes.put_i32(0);
    }

    fn end_value(&mut self) {
        if let Some(at) = self.row_value {
            let length = i32::try_from(self.bytes.len() - at - 4).unwrap_or(i32::MAX);
            self.bytes[at..at + 4].copy_from_slice(&length.to_be_bytes());
        }
    }

    /// A NULL element for the current row.
    fn null(&mut self) {
        self.start_value();
        let end = self.bytes.len();
        self.bytes[end - 4..].copy_from_slice(&(-1i32).to_be_bytes());
    }

    /// Ends the current row, with a NULL if it has no element.
    fn end_row(&mut self) {
        if self.row_value.is_none() {
            self.null();
        }
        let at = self.row_value.take().unwrap_or_default();
        self.has_null |= self.bytes[at..at + 4] == (-1i32).to_be_bytes();
        self.rows += 1;
    }

    fn finish(mut self) -> Array {
        let (ty, element) = self.kind.types();
        if self.rows == 0 {
            // No dimensions: an empty array.
            self.bytes.truncate(12);
            let mut header = &mut self.bytes[..];
            header.put_i32(0);
            header.put_i32(0);
            header.put_u32(element.oid());
        } else {
            let rows = i32::try_from(self.rows).unwrap_or(i32::MAX);
            let mut header = &mut self.bytes[..ARRAY_HEADER];
            header.put_i32(1);
            header.put_i32(i32::from(self.has_null));
            header.put_u32(element.oid());
            header.put_i32(rows);
            header.put_i32(1);
        }
        Array {
            ty,
            bytes: self.bytes.freeze(),
        }
    }
}

/// A parameter already in PostgreSQL's binary form.
#[derive(Debug)]
struct Array {
    ty: Type,
    bytes: Bytes,
}

impl ToSql for Array {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(&self.bytes);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT_ARRAY,
            Type::INT4_ARRAY,
            Type::INT8_ARRAY,
            Type::BOOL_ARRAY,
            Type::TIMESTAMPTZ_ARRAY,
        ]
        .contains(ty)
    }

    /// Checked against this array's own type.
    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty != self.ty {
            return Err(Box::new(WrongType::new::<Array>(ty.clone())));
        }
        self.to_sql(ty, out)
    }
}

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in µs since the Unix epoch.
const POSTGRES_EPOCH: i64 = 946_684_800_000_000;

/// An RFC 3339 time in µs since PostgreSQL's epoch: callgate's own `2025-11-23T12:13:20.369Z`
/// directly, any other form through `time`.
fn postgres_time(text: &str) -> Option<i64> {
    let micros = callgate_time(text).or_else(|| crate::cli::export::parse_time(text))?;
    micros.checked_sub(POSTGRES_EPOCH)
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
    columns: &'c mut [ArrayBuilder],
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
                array: &mut self.columns[at],
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

/// One member's value, written as its column's element of the current row.
struct Cell<'c> {
    array: &'c mut ArrayBuilder,
    member: &'static str,
}

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Cell<'_> {
    /// Writes one element of this column's type.
    fn put(self, write: impl FnOnce(&mut BytesMut)) {
        self.array.start_value();
        write(&mut self.array.bytes);
        self.array.end_value();
    }
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            formatter,
            "{} or null as `{}`",
            self.array.kind.name(),
            self.member
        )
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.array.null();
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        match self.array.kind {
            Kind::Text => self.put(|out| out.put_slice(text.as_bytes())),
            Kind::Time => match postgres_time(text) {
                Some(time) => self.put(|out| out.put_i64(time)),
                None => return Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
            },
            _ => return Err(E::invalid_type(serde::de::Unexpected::Str(text), &self)),
        }
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<(), E> {
        match self.array.kind {
            Kind::Integer => match i32::try_from(number) {
                Ok(number) => self.put(|out| out.put_i32(number)),
                Err(_) => {
                    return Err(E::invalid_value(
                        serde::de::Unexpected::Signed(number),
                        &self,
                    ));
                }
            },
            Kind::BigInt => self.put(|out| out.put_i64(number)),
            // `->>` gave a number's text.
            Kind::Text => self.put(|out| out.put_slice(number.to_string().as_bytes())),
            _ => {
                return Err(E::invalid_type(
                    serde::de::Unexpected::Signed(number),
                    &self,
                ));
            }
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<(), E> {
        match i64::try_from(number) {
            Ok(number) => self.visit_i64(number),
            Err(_) => Err(E::invalid_value(
                serde::de::Unexpected::Unsigned(number),
                &self,
            )),
        }
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        match self.array.kind {
            Kind::Boolean => self.put(|out| out.put_u8(u8::from(value))),
            Kind::Text => self.put(|out| out.put_slice(if value { b"true" } else { b"false" })),
            _ => return Err(E::invalid_type(serde::de::Unexpected::Bool(value), &self)),
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

    /// The elements of a binary array, and its element type's OID.
    fn elements(array: &Array) -> (u32, Vec<Option<Vec<u8>>>) {
        fn int(bytes: &[u8], at: &mut usize) -> i32 {
            let value = i32::from_be_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes"));
            *at += 4;
            value
        }
        let (bytes, mut at) = (&array.bytes[..], 0);
        let dimensions = int(bytes, &mut at);
        let has_null = int(bytes, &mut at);
        let oid = int(bytes, &mut at) as u32;
        if dimensions == 0 {
            assert_eq!(bytes.len(), 12);
            return (oid, Vec::new());
        }
        assert_eq!(dimensions, 1);
        let length = int(bytes, &mut at);
        assert_eq!(int(bytes, &mut at), 1, "lower bound");
        let mut values = Vec::new();
        for _ in 0..length {
            let size = int(bytes, &mut at);
            if size < 0 {
                values.push(None);
            } else {
                values.push(Some(bytes[at..at + size as usize].to_vec()));
                at += size as usize;
            }
        }
        assert_eq!(at, bytes.len());
        assert_eq!(has_null == 1, values.iter().any(Option::is_none));
        (oid, values)
    }

    fn column(encoded: &Encoded, name: &str) -> (u32, Vec<Option<Vec<u8>>>) {
        let at = COLUMNS.iter().position(|(column, _, _)| *column == name);
        elements(&encoded.arrays[at.expect(name)])
    }

    fn text(value: &str) -> Option<Vec<u8>> {
        Some(value.as_bytes().to_vec())
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
        assert_eq!(column(&encoded, "cdr_id"), (25, vec![text("a"), text("b")]));
        let versions = vec![
            Some(2i32.to_be_bytes().to_vec()),
            Some(1i32.to_be_bytes().to_vec()),
        ];
        assert_eq!(column(&encoded, "version"), (23, versions));
        let records = elements(encoded.arrays.last().expect("record"));
        assert_eq!(
            records,
            (
                25,
                vec![
                    text(r#"{"cdrId":"a","version":2}"#),
                    text(r#"{"cdrId":"b","version":1}"#)
                ]
            )
        );
    }

    /// Each member into its column as PostgreSQL's `(record ->> 'member')::type` made it: absent and
    /// null members NULL, escapes resolved, times in µs since 2000, a repeated member's last value.
    #[test]
    fn members_go_into_typed_columns() {
        let mut batch = Batch::default();
        let x = r#"{"schemaVersion":1,"cdrId":"x","version":3,"server":"TS\"1","queues":[{"dn":"1"}],
               "startTime":"2000-01-01T00:00:01.250Z","endTime":"2025-11-23T12:13:20.369+01:00",
               "answerTime":null,"durationMs":9007199254740993,"transferred":true,"ani":"+1",
               "ani":"+2","userData":{"version":"not this one"},"dnis":4}"#;
        batch.push("x", 3, x);
        batch.push("y", 1, r#"{"cdrId":"y","version":1,"ani":null,"ani":"+3"}"#);
        let encoded = batch.encode().expect("encoded");
        assert_eq!(column(&encoded, "server"), (25, vec![text("TS\"1"), None]));
        assert_eq!(column(&encoded, "ani"), (25, vec![text("+2"), text("+3")]));
        assert_eq!(column(&encoded, "dnis"), (25, vec![text("4"), None]));
        assert_eq!(column(&encoded, "call_uuid"), (25, vec![None, None]));
        let version = |v: i32| Some(v.to_be_bytes().to_vec());
        assert_eq!(
            column(&encoded, "version"),
            (23, vec![version(3), version(1)])
        );
        let long = |v: i64| Some(v.to_be_bytes().to_vec());
        assert_eq!(
            column(&encoded, "duration_ms"),
            (20, vec![long(9_007_199_254_740_993), None])
        );
        assert_eq!(
            column(&encoded, "transferred"),
            (16, vec![Some(vec![1]), None])
        );
        assert_eq!(
            column(&encoded, "start_time"),
            (1184, vec![long(1_250_000), None])
        );
        let end = crate::cli::export::parse_time("2025-11-23T11:13:20.369Z").expect("time");
        assert_eq!(
            column(&encoded, "end_time"),
            (1184, vec![long(end - POSTGRES_EPOCH), None])
        );
        assert_eq!(column(&encoded, "answer_time"), (1184, vec![None, None]));
        for array in &encoded.arrays {
            assert_eq!(elements(array).1.len(), 2);
        }
    }

    #[test]
    fn an_empty_batch_is_empty_arrays() {
        let encoded = Batch::default().encode().expect("encoded");
        assert!(encoded.is_empty());
        assert_eq!(encoded.arrays.len(), COLUMNS.len() + 1);
        for array in &encoded.arrays {
            assert_eq!(elements(array).1, Vec::<Option<Vec<u8>>>::new());
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
        assert_eq!(postgres_time("2000-01-01T00:00:00Z"), Some(0));
        assert_eq!(postgres_time("yesterday"), None);
    }
}
