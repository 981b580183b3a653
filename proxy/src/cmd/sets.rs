//! Set commands.

use super::CommandSpec;
use super::docs::Doc;

/// The set commands.
pub fn commands() -> Vec<CommandSpec> {
    vec![]
}

/// COMMAND DOCS for the set commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[];
