//! Sinks: where records leave callgate for other systems' storage. Each one takes the records the
//! export's recorder writes, so a sink stores what `callgate export` would print.

pub mod postgres;
