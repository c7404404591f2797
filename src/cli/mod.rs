//! The command line: one module per subcommand.

pub mod access;
pub mod fold;
pub mod sim;
