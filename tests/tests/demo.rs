//! The `meridian demo` topology: regions on loopback syncing one
//! active-active database over the WAN syncer (gRPC). Writes in one region
//! reach the others; concurrent writes converge by the documented rules; a
//! client blocked in one region is woken by a push in another; the binary
//! prints one `region <name> redis://...` line per region.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use meridian_cluster::demo::Demo;
use tokio::time::{sleep, timeout};

/// Polls `command` in region `addr` until it answers `expected` (bounded).
async fn eventually(addr: SocketAddr, command: &[&str], expected: Resp) {
    let mut c = Client::connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c.cmd(command).await;
        if got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{command:?} at {addr}: still {got:?}, expected {expected:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_converge_over_the_wan() {
    let demo = timeout(Duration::from_secs(30), Demo::start(3, &[])).await.expect("start in time").expect("starts");
    let addrs: Vec<SocketAddr> = demo.regions.iter().map(|r| r.redis_addr).collect();
    let mut a = Client::connect(addrs[0]).await;
    let mut b = Client::connect(addrs[1]).await;
    let mut c = Client::connect(addrs[2]).await;

    // A write in one region shows up in the others.
    assert_eq!(a.cmd(&["SET", "greeting", "hello"]).await, ok());
    eventually(addrs[1], &["GET", "greeting"], bulk("hello")).await;
    eventually(addrs[2], &["GET", "greeting"], bulk("hello")).await;

    // Concurrent increments in every region add up everywhere.
    for (client, by) in [(&mut a, "5"), (&mut b, "7"), (&mut c, "30")] {
        assert!(matches!(client.cmd(&["INCRBY", "visits", by]).await, Resp::Int(_)));
    }
    for &addr in &addrs {
        eventually(addr, &["GET", "visits"], bulk("42")).await;
    }

    // Add wins over a concurrent remove of another member; every type syncs.
    assert_eq!(a.cmd(&["SADD", "tags", "x", "y"]).await, int(2));
    eventually(addrs[1], &["SCARD", "tags"], int(2)).await;
    assert_eq!(b.cmd(&["SREM", "tags", "x"]).await, int(1));
    assert_eq!(c.cmd(&["SADD", "tags", "z"]).await, int(1));
    for &addr in &addrs {
        eventually(addr, &["SCARD", "tags"], int(2)).await;
        eventually(addr, &["SISMEMBER", "tags", "z"], int(1)).await;
    }
    assert_eq!(c.cmd(&["HSET", "h", "f", "v"]).await, int(1));
    assert_eq!(a.cmd(&["ZADD", "z", "1.5", "m"]).await, int(1));
    eventually(addrs[0], &["HGET", "h", "f"], bulk("v")).await;
    eventually(addrs[2], &["ZSCORE", "z", "m"], bulk("1.5")).await;

    // A client blocked in one region is woken by a push in another.
    let mut blocked = Client::connect(addrs[0]).await;
    blocked.send(&encode(&["BLPOP", "jobs", "0"])).await;
    for _ in 0..500 {
        if a.cmd(&["INFO", "clients"]).await.text().contains("blocked_clients:1\r\n") {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.cmd(&["RPUSH", "jobs", "from-ap-south"]).await, int(1));
    assert_eq!(
        timeout(Duration::from_secs(20), blocked.read()).await.expect("woken in time"),
        Resp::Array(vec![bulk("jobs"), bulk("from-ap-south")])
    );
    // The pop replicated back: the list is gone everywhere.
    for &addr in &addrs {
        eventually(addr, &["EXISTS", "jobs"], int(0)).await;
    }

    // Every incoming link is connected and has moved deltas.
    for region in &demo.regions {
        for stats in region.link_stats() {
            assert!(stats.deltas > 0, "{}: {stats:?}", region.name);
        }
    }
    timeout(Duration::from_secs(30), demo.stop()).await.expect("stops in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_each_region_endpoint_and_serves_them() {
    let binary = tokio::task::spawn_blocking(meridian_binary).await.expect("locate the binary");
    let child = Command::new(binary)
        .args(["demo", "--regions", "2", "--base-port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian demo");
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("stdout piped");
    let lines = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read stdout");
            if let Some(rest) = line.strip_prefix("region ") {
                found.push(rest.to_string());
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        found
    });
    let lines = timeout(Duration::from_secs(60), lines).await.expect("the demo printed in time").expect("reader");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let addrs: Vec<SocketAddr> = lines
        .iter()
        .map(|line| {
            let (name, url) = line.split_once(' ').expect("name and url");
            assert!(["us-east", "eu-west"].contains(&name), "{line}");
            url.strip_prefix("redis://").expect("a redis:// url").parse().expect("an address")
        })
        .collect();
    let mut first = Client::connect(addrs[0]).await;
    assert_eq!(first.cmd(&["SET", "k", "v"]).await, ok());
    eventually(addrs[1], &["GET", "k"], bulk("v")).await;
}
