//! callgate turns a Genesys T-Server's stream of telephony events into live GWS Voice API call resources.
//!
//! The crate follows the data's path. [`ingest`] holds the sources (line framing, the TCP socket, the
//! simulator); [`event`] decodes lines; [`reduce`] folds events into call resources and notifications (a
//! pure state machine shared by `fold` and `serve`); [`enrich`] turns phone numbers into GWS participants.
//! `serve` adds [`pipeline`] (sequencer, reducer shards, publisher), [`stream`] (the one ordered source:
//! seq, history), [`store`] (current documents), [`subscriptions`] (filters, scope, the subscriber index),
//! [`delivery`] (bounded outboxes) and the doors in [`api`] (HTTP, REST, WebSocket). [`json`] writes
//! everything written by hand.

pub mod access;
pub mod api;
pub mod cdr;
pub mod cli;
pub mod delivery;
pub mod enrich;
pub mod event;
pub mod export;
pub mod ingest;
pub mod jetstream;
pub mod journal;
pub mod json;
pub mod pipeline;
pub mod reduce;
pub mod serve;
pub mod sink;
pub mod store;
pub mod stream;
pub mod subscriptions;
pub mod supervise;
pub mod telemetry;
pub mod tls;
