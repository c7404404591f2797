//! The command line: one module per subcommand.

pub mod fold;
pub mod sim;
