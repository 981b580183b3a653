//! List commands.

use super::CommandSpec;
use super::docs::Doc;

/// The list commands.
pub fn commands() -> Vec<CommandSpec> {
    vec![]
}

/// COMMAND DOCS for the list commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[];
