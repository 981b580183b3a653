//! Sorted-set commands.

use super::CommandSpec;
use super::docs::Doc;

/// The sorted-set commands.
pub fn commands() -> Vec<CommandSpec> {
    vec![]
}

/// COMMAND DOCS for the sorted-set commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[];
