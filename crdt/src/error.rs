//! Errors of the CRDT crate.
//!
//! Two families, kept apart as the style guide asks: [`ClockError`] for the
//! clock, and [`CommandError`] for a local mutator that refuses a request (the
//! client gets the Redis error text, nothing is changed and no delta exists).

use thiserror::Error;

/// Errors of the hybrid logical clock.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClockError {
    /// The 22-bit logical counter is exhausted for the current millisecond
    /// (the clock was pushed far ahead of the wall clock); retry shortly.
    #[error("hybrid logical clock exhausted its logical counter; retry")]
    LogicalCounterExhausted,
    /// A value that is not a valid HLC timestamp.
    #[error("invalid hybrid logical clock timestamp {0:#x}")]
    InvalidTimestamp(u64),
}

/// Why a local command was refused. `Display` is the Redis error reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The key holds another type.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// The stored value is not an integer, or the result leaves `i64`.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// The stored value is not a float.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// An increment would overflow.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// The result would be NaN or infinite.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// A hash field holds a non-integer for HINCRBY.
    #[error("ERR hash value is not an integer")]
    HashNotInteger,
    /// A hash field holds a non-float for HINCRBYFLOAT.
    #[error("ERR hash value is not a float")]
    HashNotFloat,
    /// A sorted-set score operation produced NaN.
    #[error("ERR resulting score is not a number (NaN)")]
    ScoreNan,
    /// An index outside the list (LSET).
    #[error("ERR index out of range")]
    IndexOutOfRange,
    /// The key does not exist where it must (LSET on a missing key).
    #[error("ERR no such key")]
    NoSuchKey,
    /// A string would exceed the maximum size (SETRANGE, APPEND).
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    /// The clock could not issue a timestamp.
    #[error("ERR {0}")]
    Clock(#[from] ClockError),
}
