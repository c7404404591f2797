//! `callgate cdr`: the call detail records of event files, offline (analytics.md), one JSON object a
//! line, in the order the records fall due; the end of the input counts as every linger being over.
//!
//! The input is event lines as a T-Server sends them, or an export (`callgate export`, `serve
//! --analytics-out`): of its CloudEvents lines the event records are folded, each at its
//! `recordedtime` (its arrival at the gateway), which moves the fold's clock as the gateway's ticks
//! did; the other records are passed over. So the CDRs of an export are the ones the gateway wrote,
//! and those of calls whose linger had not run out when the export ends.

use super::fold::{FoldError, read_frames};
use crate::cdr::{CdrConfig, CdrFold, Taken};
use crate::event::{Decoded, Event, Micros, decode_line};
use crate::ingest::framing::Frame;
use crate::ingest::lines::{Line, decode_frame};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

/// What `callgate cdr` read, for its summary and exit status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CdrCounts {
    /// Lines read (blank lines not counted).
    pub read: u64,
    /// Records printed.
    pub records: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Lines that are not valid events (named on standard error).
    pub rejected: u64,
}

/// Folds the events of `inputs` (none or `-`: standard input) and prints their records.
pub fn cdr(
    config: CdrConfig,
    inputs: &[PathBuf],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<CdrCounts, FoldError> {
    let mut fold = CdrFold::new(config);
    let mut out = BufWriter::with_capacity(256 * 1024, stdout);
    let mut counts = CdrCounts::default();
    let mut records = Vec::new();
    let mut line = String::with_capacity(4096);
    let stdin_only = [PathBuf::from("-")];
    let inputs = if inputs.is_empty() {
        &stdin_only[..]
    } else {
        inputs
    };
    for path in inputs {
        let name = path.display().to_string();
        let mut each = |frame: Frame| {
            let envelope = match &frame {
                Frame::Line { bytes, .. } => envelope(bytes),
                Frame::TooLong { .. } => None,
            };
            if let Some(envelope) = envelope {
                match envelope {
                    Ok(Some((event, arrival))) => {
                        counts.read += 1;
                        if fold.apply(&event, arrival, &mut records) == Taken::Duplicate {
                            counts.duplicates += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        counts.read += 1;
                        counts.rejected += 1;
                        writeln!(stderr, "{name}:{}: {err}", frame_number(&frame))?;
                    }
                }
                return print(&mut records, &mut line, &mut out, &mut counts);
            }
            match decode_frame(&frame) {
                (_, Line::Blank) => return Ok(()),
                (_, Line::Event(event)) => {
                    counts.read += 1;
                    if fold.apply(&event, None, &mut records) == Taken::Duplicate {
                        counts.duplicates += 1;
                    }
                }
                (_, Line::Unknown) => counts.read += 1,
                (number, Line::Rejected(err)) => {
                    counts.read += 1;
                    counts.rejected += 1;
                    writeln!(stderr, "{name}:{number}: {err}")?;
                }
            }
            print(&mut records, &mut line, &mut out, &mut counts)
        };
        if name == "-" {
            read_frames(&name, stdin, &mut each)?;
        } else {
            let mut file = std::fs::File::open(path).map_err(|source| FoldError::Input {
                path: name.clone(),
                source,
            })?;
            read_frames(&name, &mut file, &mut each)?;
        }
    }
    fold.finish(&mut records);
    print(&mut records, &mut line, &mut out, &mut counts)?;
    out.flush()?;
    writeln!(
        stderr,
        "callgate cdr: {} read, {} records, {} duplicates, {} rejected",
        counts.read, counts.records, counts.duplicates, counts.rejected
    )?;
    Ok(counts)
}

/// An event and when it arrived at the gateway.
type Timed<'a> = (Event<'a>, Option<Micros>);

/// A CloudEvents record of an export: `None` when the line is not one; else its event and arrival
/// (`Ok(None)`: a record of another type, passed over), or why it cannot be read.
fn envelope(bytes: &[u8]) -> Option<Result<Option<Timed<'_>>, String>> {
    if !bytes.trim_ascii_start().starts_with(b"{\"specversion\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        recordedtime: Option<Cow<'a, str>>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(bytes) {
        Ok(envelope) => envelope,
        Err(err) => return Some(Err(format!("not a CloudEvents record: {err}"))),
    };
    if envelope.kind != crate::export::cloudevent::EVENT_TYPE {
        return Some(Ok(None));
    }
    let Some(data) = envelope.data else {
        return Some(Err("an event record without data".to_owned()));
    };
    let arrival = envelope
        .recordedtime
        .as_deref()
        .and_then(super::export::parse_time);
    Some(match decode_line(data.get().as_bytes()) {
        Ok(Decoded::Event(event)) => Ok(Some((event, arrival))),
        Ok(Decoded::Unknown { .. }) => Ok(None),
        Err(err) => Err(err.to_string()),
    })
}

fn frame_number(frame: &Frame) -> u64 {
    match frame {
        Frame::Line { number, .. } | Frame::TooLong { number } => *number,
    }
}

fn print(
    records: &mut Vec<crate::cdr::record::Cdr>,
    line: &mut String,
    out: &mut dyn Write,
    counts: &mut CdrCounts,
) -> Result<(), FoldError> {
    for record in records.drain(..) {
        line.clear();
        record.write_json(line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        counts.records += 1;
    }
    Ok(())
}

/// The exit status of a run: 0, or 1 when a line was rejected.
pub fn exit_code(counts: &CdrCounts) -> u8 {
    u8::from(counts.rejected > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_input_prints_nothing() {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let counts = cdr(
            CdrConfig::default(),
            &[],
            &mut std::io::empty(),
            &mut stdout,
            &mut stderr,
        )
        .expect("runs");
        assert_eq!(counts, CdrCounts::default());
        assert!(stdout.is_empty());
    }
}
