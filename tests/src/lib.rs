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

/// Retries `check` every 50 ms until it returns something, for at most
/// `limit` (the drills and benchmarks; test suites panic instead, see their
/// `eventually`).
pub async fn until<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET base + path` on an admin API: the JSON body of a 200 answered
/// within 5 s, else nothing.
pub async fn admin_get(base: &str, path: &str) -> Option<serde_json::Value> {
    use meridian_cluster::ctl::{Method, StatusCode, request};
    let url = format!("{base}{path}");
    match tokio::time::timeout(std::time::Duration::from_secs(5), request(Method::GET, &url, None)).await {
        Ok(Ok((StatusCode::OK, body))) => Some(body),
        _ => None,
    }
}
