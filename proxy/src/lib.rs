//! Meridian's client-facing proxy: it speaks the Redis protocol to clients
//! and forwards their commands to the shards that own the keys.
//!
//! [`request`] turns client bytes into commands, with Redis's limits and
//! without trusting the client.

pub mod request;
