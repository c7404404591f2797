//! The one line path shared by `fold` and the ingest socket: a framed line is blank, an event, an event
//! outside the table, or a rejection that names why. What the reducer then makes of an event is a
//! [`Disposition`](crate::reduce::Disposition); both paths count the two the same way.

use super::framing::Frame;
use crate::event::{DecodeError, Decoded, Event, decode_line};

/// What one framed line holds.
#[derive(Debug)]
// Made and taken apart once per line; boxing the event would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Line<'a> {
    /// Only white space: skipped, not counted.
    Blank,
    /// An event of the table, borrowing from the line.
    Event(Event<'a>),
    /// An event outside the table (for example EventRouteRequest): counted as ignored.
    Unknown,
    /// Not an event: reported with its line number and counted as rejected.
    Rejected(DecodeError),
}

/// The line's number and what it holds.
pub fn decode_frame(frame: &Frame) -> (u64, Line<'_>) {
    match frame {
        Frame::Line { number, bytes } => {
            let line = if bytes.iter().all(u8::is_ascii_whitespace) {
                Line::Blank
            } else {
                match decode_line(bytes) {
                    Ok(Decoded::Event(event)) => Line::Event(event),
                    Ok(Decoded::Unknown { .. }) => Line::Unknown,
                    Err(err) => Line::Rejected(err),
                }
            };
            (*number, line)
        }
        Frame::TooLong { number } => (*number, Line::Rejected(DecodeError::TooLong)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn line(text: &str) -> Frame {
        Frame::Line {
            number: 7,
            bytes: BytesMut::from(text),
        }
    }

    #[test]
    fn each_kind_of_line_is_told_apart() {
        assert!(matches!(decode_frame(&line(" \t\r")), (7, Line::Blank)));
        assert!(matches!(decode_frame(&line("")), (7, Line::Blank)));
        let ringing = line(r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}"#);
        assert!(matches!(decode_frame(&ringing), (7, Line::Event(_))));
        let route = line(r#"{"event":"EventRouteRequest","ConnID":"1","ThisDN":"7001"}"#);
        assert!(matches!(decode_frame(&route), (7, Line::Unknown)));
        assert!(matches!(
            decode_frame(&line("[1]")),
            (7, Line::Rejected(DecodeError::NotObject))
        ));
        assert!(matches!(
            decode_frame(&Frame::TooLong { number: 9 }),
            (9, Line::Rejected(DecodeError::TooLong))
        ));
    }
}
