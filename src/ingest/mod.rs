//! Ingest: getting event lines into callgate.

pub mod framing;
