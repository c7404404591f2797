//! `callgate hash-password` and `callgate access check` (access.md).

use crate::access::{Access, AccessError, password};
use std::io::{BufRead, Write};
use std::path::Path;

/// Why `hash-password` failed.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    /// Standard input could not be read.
    #[error("cannot read the password: {0}")]
    Input(#[source] std::io::Error),
    /// Standard input held no line.
    #[error("no password on standard input")]
    Empty,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// The hash could not be written.
    #[error("cannot write the hash: {0}")]
    Output(#[source] std::io::Error),
}

/// Reads one line (the password, without its line end) from `input` and writes its PHC string.
pub fn hash_password(
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<(), HashPasswordError> {
    let mut line = Vec::new();
    let read = input
        .read_until(b'\n', &mut line)
        .map_err(HashPasswordError::Input)?;
    if read == 0 {
        return Err(HashPasswordError::Empty);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let phc = password::hash(&line)?;
    writeln!(output, "{phc}").map_err(HashPasswordError::Output)
}

/// Checks the access file at `path`; writes a summary to `output`, or returns every problem.
pub fn check(path: &Path, output: &mut impl Write) -> Result<(), AccessError> {
    let access = Access::load(path)?;
    let _ = writeln!(
        output,
        "{}: valid: {} users, {} ingest sources, Bearer tokens {}",
        path.display(),
        access.user_count(),
        access.ingest_sources().len(),
        if access.jwt().is_some() {
            "accepted"
        } else {
            "not configured"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_end_is_not_part_of_the_password() {
        for input in ["s3cret\n", "s3cret\r\n", "s3cret"] {
            let mut out = Vec::new();
            hash_password(&mut input.as_bytes(), &mut out).unwrap();
            let phc = String::from_utf8(out).unwrap();
            assert!(password::verify(phc.trim_end(), b"s3cret"), "{input:?}");
        }
        let empty = hash_password(&mut &b""[..], &mut Vec::new());
        assert!(matches!(empty, Err(HashPasswordError::Empty)));
    }
}
