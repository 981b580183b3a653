//! Pub/sub commands.

use super::CommandSpec;
use super::docs::Doc;

/// The pub/sub commands.
pub fn commands() -> Vec<CommandSpec> {
    vec![]
}

/// COMMAND DOCS for the pub/sub commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[];
