//! Meridian's black-box test suites and the harnesses they share.
//!
//! Suites are compiled as few binaries (see `Cargo.toml`: one `[[test]]` per
//! suite) so linking stays fast. Harnesses live here:
//! - [`sim`]: several CRDT keyspaces ("regions") doing random writes while their
//!   deltas are delivered in random order, duplicated and delayed, all from one
//!   seed.

#![deny(missing_docs)]

pub mod sim;

/// A port that was free a moment ago, below the kernel's ephemeral range
/// (32768 and up): a port from that range can be taken, between the caller
/// picking it and a node binding it, as the source port of some outgoing
/// connection. Each call in a process gets another port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u32);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919) ^ now) % COUNT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A multiplexed `redis` connection to `addr`, made within `connect`, whose
/// commands may take up to `response` each: redis-rs' default of 500 ms
/// counts a slow `WAIT` or a big MGET on a loaded two-core machine as
/// failed, which a drill would then count as unacknowledged.
pub async fn redis_connection(
    addr: std::net::SocketAddr,
    connect: std::time::Duration,
    response: std::time::Duration,
) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(connect)).set_response_timeout(Some(response));
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    tokio::time::timeout(connect * 2, connecting).await.ok()?.ok()
}
