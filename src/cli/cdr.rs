//! `callgate cdr`: the call detail records of event files, offline (analytics.md), one JSON object a
//! line, in the order the records fall due; the end of the input counts as every linger being over.

use super::fold::{FoldError, read_frames};
use crate::cdr::{CdrConfig, CdrFold, Taken};
use crate::ingest::lines::{Line, decode_frame};
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
        let mut each = |frame| {
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
