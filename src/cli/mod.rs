//! The command line: one module per subcommand.

pub mod access;
pub mod cdr;
pub mod export;
pub mod fold;
pub mod health;
pub mod sim;
pub mod sink;
