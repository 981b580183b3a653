//! Hash commands.

use super::CommandSpec;
use super::docs::Doc;

/// The hash commands.
pub fn commands() -> Vec<CommandSpec> {
    vec![]
}

/// COMMAND DOCS for the hash commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[];
