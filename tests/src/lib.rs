//! Meridian's black-box test suites and the harnesses they share.
//!
//! Suites are compiled as few binaries (see `Cargo.toml`: one `[[test]]` per
//! suite) so linking stays fast. Harnesses live here:
//! - [`sim`]: several CRDT keyspaces ("regions") doing random writes while their
//!   deltas are delivered in random order, duplicated and delayed, all from one
//!   seed.

#![deny(missing_docs)]

pub mod sim;
