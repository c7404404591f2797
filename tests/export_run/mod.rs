//! What tests/export_schema.rs and tests/duckdb_check.rs share: the export of a journal that a real
//! gateway wrote, as a user gets it.

use crate::support::durable::{BASE_URL, export, send_acked_and_settle};
use crate::support::{Gateway, temp_dir};
use std::path::PathBuf;
use std::time::Duration;

/// `--node` of the gateway: every record's `source` is `callgate://NODE/...`.
pub const NODE: &str = "export-node";

/// A journal written by a gateway fed `lines` (each with its EventSequenceNumber; the last must have
/// one) and then stopped, and its export of every record type (`callgate export --types
/// event,notification,cdr`, standard output). Returns the folder of the run, for the caller to remove,
/// and the export.
pub fn export_of_a_run(name: &str, lines: &[(u64, String)]) -> (PathBuf, String) {
    let dir = temp_dir(name);
    let journal = dir.join("journal");
    let gateway = Gateway::start(&[
        "--base-url",
        BASE_URL,
        "--released-linger",
        "1",
        "--node",
        NODE,
        "--journal",
        journal.to_str().expect("path"),
    ]);
    send_acked_and_settle(&gateway, lines, Duration::from_millis(1500));
    assert!(gateway.terminate().success());
    let exported = export(&journal, &["--types", "event,notification,cdr"]);
    (dir, exported)
}
