//! Ingest: getting event lines into callgate (line framing; the TCP ingest socket).

pub mod framing;
pub mod tcp;
