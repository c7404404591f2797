//! One journal entry on disk: a length, a checksum, and the record.
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of the payload
//! payload:
//!   u8      kind (1 event, 2 tick)
//!   i64 LE  time: an event's arrival, a tick's wall clock (microseconds since 1970)
//!   u64 LE  connection (0 for a tick)
//!   u16 LE  server name length, then the server name (empty for a tick)
//!   ...     the event line as received (empty for a tick)
//! ```
//!
//! The checksum is what tells a torn last entry (a crash in the middle of a write) from a whole one.

use crate::event::Micros;

/// Bytes before the payload: its length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Bytes of the payload before the server name.
const PAYLOAD_HEADER: usize = 1 + 8 + 8 + 2;
/// The largest payload: a line of at most 1 MiB (events.md), its server name and the header.
pub const MAX_PAYLOAD: usize = crate::ingest::framing::MAX_LINE_BYTES + u16::MAX as usize + 64;

const EVENT: u8 = 1;
const TICK: u8 = 2;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// An event line, as received.
    Event {
        /// When it arrived (the gateway's wall clock, microseconds).
        arrival: Micros,
        /// The ingest connection it came on (numbered from 1 per gateway run).
        connection: u64,
        /// Its T-Server's name.
        server: &'a str,
        /// The line's bytes, without the line end.
        line: &'a [u8],
    },
    /// The gateway's clock as the pipeline's sweeper read it: replayed, it makes the same calls linger out
    /// and go stale at the same place in the stream.
    Tick {
        /// The wall clock, microseconds.
        wall: Micros,
    },
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Fewer bytes than the entry says it has (a torn write, or the end of the data).
    #[error("the entry is cut short")]
    Short,
    /// A length over [`MAX_PAYLOAD`] or under a payload's header.
    #[error("the entry's length is impossible")]
    BadLength,
    /// The checksum does not match.
    #[error("the entry's checksum does not match")]
    BadChecksum,
    /// The payload does not decode (an unknown kind, a server name that is not UTF-8 or overruns).
    #[error("the entry's payload is malformed")]
    Malformed,
}

/// Appends `record` as an entry to `out`; returns the entry's length in bytes. A server name over 65,535
/// bytes is cut (the reducer takes server names of at most a few hundred bytes).
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let (kind, time, connection, server, line): (u8, Micros, u64, &[u8], &[u8]) = match *record {
        Record::Event {
            arrival,
            connection,
            server,
            line,
        } => (EVENT, arrival, connection, server.as_bytes(), line),
        Record::Tick { wall } => (TICK, wall, 0, b"", b""),
    };
    let server = &server[..server.len().min(u16::MAX as usize)];
    out.push(kind);
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&connection.to_le_bytes());
    out.extend_from_slice(&(server.len() as u16).to_le_bytes());
    out.extend_from_slice(server);
    out.extend_from_slice(line);
    let payload = &out[start + FRAME_HEADER..];
    let length = payload.len() as u32;
    let checksum = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    out.len() - start
}

/// The payload length an entry's first [`FRAME_HEADER`] bytes announce, checked against the bounds.
pub fn payload_length(header: &[u8; FRAME_HEADER]) -> Result<usize, EntryError> {
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(PAYLOAD_HEADER..=MAX_PAYLOAD).contains(&length) {
        return Err(EntryError::BadLength);
    }
    Ok(length)
}

/// Decodes the entry at the start of `bytes`: the record and the entry's length.
pub fn decode(bytes: &[u8]) -> Result<(Record<'_>, usize), EntryError> {
    let header: &[u8; FRAME_HEADER] = bytes
        .get(..FRAME_HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or(EntryError::Short)?;
    let length = payload_length(header)?;
    let payload = bytes
        .get(FRAME_HEADER..FRAME_HEADER + length)
        .ok_or(EntryError::Short)?;
    let layout = Layout::of(header, payload)?;
    Ok((layout.record(payload), FRAME_HEADER + length))
}

/// Where a checked payload's parts are: a record without the borrow, so a reader can keep it beside the
/// buffer it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    kind: u8,
    time: Micros,
    connection: u64,
    server: std::ops::Range<usize>,
    line: std::ops::Range<usize>,
}

impl Layout {
    /// Checks the payload whose frame header is `header` (checksum, kind, server name) and says where its
    /// parts are.
    pub fn of(header: &[u8; FRAME_HEADER], payload: &[u8]) -> Result<Layout, EntryError> {
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if crc32fast::hash(payload) != checksum {
            return Err(EntryError::BadChecksum);
        }
        let fixed = payload.get(..PAYLOAD_HEADER).ok_or(EntryError::Malformed)?;
        let mut time = [0u8; 8];
        time.copy_from_slice(&fixed[1..9]);
        let mut connection = [0u8; 8];
        connection.copy_from_slice(&fixed[9..17]);
        let server_end = PAYLOAD_HEADER + u16::from_le_bytes([fixed[17], fixed[18]]) as usize;
        let server = payload
            .get(PAYLOAD_HEADER..server_end)
            .ok_or(EntryError::Malformed)?;
        if std::str::from_utf8(server).is_err() || !matches!(fixed[0], EVENT | TICK) {
            return Err(EntryError::Malformed);
        }
        Ok(Layout {
            kind: fixed[0],
            time: Micros::from_le_bytes(time),
            connection: u64::from_le_bytes(connection),
            server: PAYLOAD_HEADER..server_end,
            line: server_end..payload.len(),
        })
    }

    /// The record, from the payload this layout was made of.
    pub fn record<'a>(&self, payload: &'a [u8]) -> Record<'a> {
        match self.kind {
            EVENT => Record::Event {
                arrival: self.time,
                connection: self.connection,
                server: payload
                    .get(self.server.clone())
                    .and_then(|server| std::str::from_utf8(server).ok())
                    .unwrap_or(""),
                line: payload.get(self.line.clone()).unwrap_or(b""),
            },
            _ => Record::Tick { wall: self.time },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_written() {
        let records = [
            Record::Event {
                arrival: 1_700_000_000_123_456,
                connection: 7,
                server: "SIPTS750",
                line: br#"{"event":"EventRinging"}"#,
            },
            Record::Tick { wall: -5 },
            Record::Event {
                arrival: 0,
                connection: u64::MAX,
                server: "",
                line: b"",
            },
        ];
        let mut bytes = Vec::new();
        let lengths: Vec<usize> = records.iter().map(|r| encode(r, &mut bytes)).collect();
        let mut at = 0;
        for (record, length) in records.iter().zip(lengths) {
            let (decoded, used) = decode(&bytes[at..]).expect("decodes");
            assert_eq!(&decoded, record);
            assert_eq!(used, length);
            at += used;
        }
        assert_eq!(at, bytes.len());
    }

    #[test]
    fn a_cut_or_changed_entry_is_told_apart() {
        let mut bytes = Vec::new();
        encode(
            &Record::Event {
                arrival: 1,
                connection: 1,
                server: "S",
                line: b"line",
            },
            &mut bytes,
        );
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).map(|_| ()), Err(EntryError::Short));
        }
        for at in FRAME_HEADER..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x20;
            assert_eq!(
                decode(&changed).map(|_| ()),
                Err(EntryError::BadChecksum),
                "byte {at}"
            );
        }
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge).map(|_| ()), Err(EntryError::BadLength));
    }
}
