//! Ingest: the sources of event lines. Line framing, the TCP ingest socket, and the simulator (a source
//! like the others: `callgate sim` writes it to a socket or a file, `serve --demo` feeds it straight into
//! the pipeline).

pub mod framing;
pub mod intake;
pub mod lines;
pub mod sim;
pub mod tcp;
