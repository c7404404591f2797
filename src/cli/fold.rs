//! `callgate fold`: events from files or standard input to call resources or notifications (api.md).

use crate::ingest::framing::{Frame, LineFramer};
use crate::ingest::lines::{Line, decode_frame};
use crate::reduce::{Counts, Disposition, Fold, IgnoreReason, Notifications, ReducerConfig};
use bytes::BytesMut;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// What to fold and how to print it.
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// The base URL for `uri`, `deviceUri` and `parentCallUri`.
    pub base_url: String,
    /// Print every notification (with `seq`) instead of the final resources.
    pub updates: bool,
    /// Input files in order; empty or `-` means standard input.
    pub inputs: Vec<PathBuf>,
    /// The most resources held at once.
    pub max_calls: usize,
    /// `--service-level-secs` of the queues.
    pub service_level_secs: u64,
}

/// Why `fold` could not finish (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// An input could not be opened or read.
    #[error("{path}: {source}")]
    Input {
        /// The input's name.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Standard output or standard error could not be written.
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// Folds every input and writes the result; returns the counts (the caller turns them into an exit status).
pub fn fold(
    options: &FoldOptions,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Counts, FoldError> {
    let mut fold = Fold::new(ReducerConfig {
        base_url: options.base_url.clone(),
        max_calls: options.max_calls,
        service_level: crate::event::Micros::try_from(options.service_level_secs)
            .unwrap_or(crate::event::Micros::MAX)
            .saturating_mul(1_000_000),
        ..ReducerConfig::default()
    });
    let mut out = BufWriter::with_capacity(256 * 1024, stdout);
    let mut folder = Folder {
        fold: &mut fold,
        notifications: Notifications::default(),
        counts: Counts::default(),
        updates: options.updates,
        seq: 0,
        line: Vec::with_capacity(8192),
    };
    let stdin_only = [PathBuf::from("-")];
    let inputs = if options.inputs.is_empty() {
        &stdin_only[..]
    } else {
        &options.inputs[..]
    };
    for path in inputs {
        let name = path.display().to_string();
        if name == "-" {
            folder.fold_stream(&name, stdin, &mut out, stderr)?;
        } else {
            let mut file = std::fs::File::open(path).map_err(|source| FoldError::Input {
                path: name.clone(),
                source,
            })?;
            folder.fold_stream(&name, &mut file, &mut out, stderr)?;
        }
    }
    let counts = folder.counts;
    if !options.updates {
        let mut json = String::with_capacity(2048);
        let reducer = fold.reducer();
        for number in reducer.call_numbers() {
            if let Some(view) = reducer.view(number) {
                json.clear();
                view.write(&mut json);
                json.push('\n');
                out.write_all(json.as_bytes())?;
            }
        }
    }
    out.flush()?;
    writeln!(
        stderr,
        "callgate fold: {} read, {} applied, {} duplicates, {} orphans, {} ignored, {} rejected",
        counts.read,
        counts.applied,
        counts.duplicates,
        counts.orphans,
        counts.ignored,
        counts.rejected
    )?;
    Ok(counts)
}

struct Folder<'r> {
    fold: &'r mut Fold,
    notifications: Notifications,
    counts: Counts,
    updates: bool,
    seq: u64,
    /// The output of one event, written with one call.
    line: Vec<u8>,
}

impl Folder<'_> {
    fn fold_stream(
        &mut self,
        name: &str,
        input: &mut dyn Read,
        out: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<(), FoldError> {
        read_frames(name, input, |frame| {
            self.fold_frame(name, frame, out, stderr)
        })
    }

    fn fold_frame(
        &mut self,
        name: &str,
        frame: Frame,
        out: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<(), FoldError> {
        let (number, outcome) = match decode_frame(&frame) {
            (_, Line::Blank) => return Ok(()),
            (number, Line::Event(event)) => {
                (number, Ok(self.fold.apply(&event, &mut self.notifications)))
            }
            (number, Line::Unknown) => {
                (number, Ok(Disposition::Ignored(IgnoreReason::UnknownEvent)))
            }
            (number, Line::Rejected(err)) => (number, Err(err)),
        };
        self.counts.record(&outcome);
        if let Err(err) = &outcome {
            writeln!(stderr, "{name}:{number}: {err}")?;
        }
        if self.updates {
            self.line.clear();
            for notification in self.notifications.iter() {
                self.seq += 1;
                notification.write_line_with_seq(self.seq, &mut self.line);
            }
            out.write_all(&self.line)?;
        }
        self.notifications.clear();
        Ok(())
    }
}

/// Reads `input` (named `name` in errors) to its end, handing each line's frame to `each` in order.
pub(crate) fn read_frames(
    name: &str,
    input: &mut dyn Read,
    mut each: impl FnMut(Frame) -> Result<(), FoldError>,
) -> Result<(), FoldError> {
    let mut framer = LineFramer::default();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let read = match input.read(&mut chunk) {
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FoldError::Input {
                    path: name.to_owned(),
                    source,
                });
            }
        };
        if read == 0 {
            while let Some(frame) = framer.decode_eof(&mut buf) {
                each(frame)?;
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..read]);
        while let Some(frame) = framer.decode(&mut buf) {
            each(frame)?;
        }
    }
}
