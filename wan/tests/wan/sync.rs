//! WAN sync over real tonic on 127.0.0.1: regions are in-process keyspaces
//! behind the syncer's `Outbound`/`Inbound` traits, each serving its outbox on
//! an ephemeral port and pulling from its peers with `Link`s. Every wait is
//! bounded by a timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_crdt::clock::{Observation, hlc_to_unix_ms, system_wall_ms};
use meridian_crdt::gc::Reporter;
use meridian_crdt::keyspace::{End, ExpiryChange, Moment};
use meridian_crdt::slot::Granules;
use meridian_crdt::{Clock, ClockError, Delta, Keyspace, ReplicaId, SnapshotMerge, VersionVector};
use meridian_proto::v1;
use meridian_wan::outbox::OUTBOX_BYTES_DEFAULT;
use meridian_wan::{Cursor, Inbound, Link, LinkConfig, Outbound, Outbox, Slice, Snapshot, Source, SyncSource};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};

const DB: &str = "db";
const WAIT: Duration = Duration::from_secs(30);

// ----- a region: one keyspace, its clock, its outbox, its cursors -----

struct RegionState {
    keyspace: Keyspace,
    cursors: HashMap<Source, Cursor>,
    reports: HashMap<Reporter, VersionVector>,
}

struct Region {
    id: u16,
    skew_ms: u64,
    clock: Clock<hlc_gen::source::ManualClock>,
    outbox: Outbox,
    state: Mutex<RegionState>,
    /// Deltas merged from peers (duplicates included).
    merged: AtomicU64,
    /// Local deltas appended to the outbox.
    originated: AtomicU64,
}

impl Region {
    fn new(id: u16) -> Arc<Region> {
        Region::with(id, 0, OUTBOX_BYTES_DEFAULT)
    }

    /// A region whose wall clock runs `skew_ms` ahead, with an outbox of `outbox_bytes`.
    fn with(id: u16, skew_ms: u64, outbox_bytes: usize) -> Arc<Region> {
        let mut keyspace = Keyspace::new(ReplicaId(id));
        keyspace.set_journal(true);
        Arc::new(Region {
            id,
            skew_ms,
            clock: Clock::manual(1_000, system_wall_ms() + skew_ms),
            outbox: Outbox::for_new_database(outbox_bytes),
            state: Mutex::new(RegionState { keyspace, cursors: HashMap::new(), reports: HashMap::new() }),
            merged: AtomicU64::new(0),
            originated: AtomicU64::new(0),
        })
    }

    fn tick(&self) {
        self.clock.set_wall_ms(system_wall_ms() + self.skew_ms);
    }

    /// A local write, then what the node's journal reader does: every entry
    /// goes to durability (not modelled), the local ones to the outbox.
    fn write<R>(&self, f: impl FnOnce(&mut Keyspace, Moment) -> R) -> R {
        let mut state = self.state.lock().unwrap();
        self.tick();
        let (hlc, wall_ms) = self.clock.now_with_wall().expect("clock");
        let result = f(&mut state.keyspace, Moment { hlc, wall_ms });
        let (entries, _) = state.keyspace.take_journal_entries();
        for entry in entries {
            assert!(entry.local, "a local write journals local deltas");
            self.outbox.push(&entry.delta);
            self.originated.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn set(&self, key: &str, value: &[u8]) {
        self.write(|ks, at| ks.set(key.as_bytes(), value, ExpiryChange::Keep, at));
    }

    fn incr(&self, key: &str) {
        self.write(|ks, at| ks.incr_by(key.as_bytes(), 1, at).expect("incr"));
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state.keyspace.get(key.as_bytes(), system_wall_ms()).expect("a string").map(|v| v.to_vec())
    }

    fn same_as(&self, other: &Region) -> bool {
        let a = self.state.lock().unwrap();
        let b = other.state.lock().unwrap();
        a.keyspace == b.keyspace
    }

    fn cursor(&self, source: u16) -> Option<Cursor> {
        self.load_cursor(Source::region(source))
    }

    /// A shard of region `id` in a database cut into `granules` (D102),
    /// with an outbox of `outbox_bytes`.
    fn shard(id: u16, granules: Granules, outbox_bytes: usize) -> Arc<Region> {
        let region = Region::with(id, 0, outbox_bytes);
        region.state.lock().unwrap().keyspace.set_granules(granules);
        region
    }
}

impl Outbound for Region {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn snapshot(&self) -> Result<Snapshot, String> {
        let state = self.state.lock().unwrap();
        // Appends happen under the same lock, so the offset and the state agree.
        Ok(Snapshot {
            resume_offset: self.outbox.next_offset(),
            context: state.keyspace.context().clone(),
            keys: state.keyspace.freeze(),
        })
    }

    fn peer_applied(&self, reader: Reporter, applied: VersionVector) {
        self.state.lock().unwrap().reports.insert(reader, applied);
    }
}

impl Inbound for Region {
    fn observe(&self, hlc: u64) -> Result<Observation, ClockError> {
        self.tick();
        self.clock.observe(hlc)
    }

    fn apply(&self, deltas: &[Delta]) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        for delta in deltas {
            state.keyspace.apply(delta);
        }
        // Merged deltas are journaled as remote: none reaches the outbox.
        let (entries, _) = state.keyspace.take_journal_entries();
        assert!(entries.iter().all(|e| !e.local), "a merged delta journaled as local");
        self.merged.fetch_add(deltas.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Keyspace) -> Result<SnapshotMerge, String> {
        let mut state = self.state.lock().unwrap();
        let merged = state.keyspace.merge_snapshot(snapshot);
        state.keyspace.validate()?;
        Ok(merged)
    }

    fn load_cursor(&self, source: Source) -> Option<Cursor> {
        self.state.lock().unwrap().cursors.get(&source).copied()
    }

    fn store_cursor(&self, source: Source, cursor: Cursor) -> Result<(), String> {
        self.state.lock().unwrap().cursors.insert(source, cursor);
        Ok(())
    }

    fn applied_vector(&self) -> VersionVector {
        self.state.lock().unwrap().keyspace.context().vector().clone()
    }
}

// ----- servers, links, a cuttable proxy -----

struct Server {
    addr: SocketAddr,
    source: SyncSource,
    _stop: oneshot::Sender<()>,
}

async fn serve(region: &Arc<Region>) -> Server {
    let source = SyncSource::new(region.id);
    source.add_database(DB, region.clone());
    serve_source(source).await
}

/// Serves `source` on an ephemeral port until the server is dropped.
async fn serve_source(source: SyncSource) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = source.clone();
    tokio::spawn(async move {
        meridian_wan::serve(listener, service, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Server { addr, source, _stop: stop }
}

fn link(to: &Arc<Region>, from: &Arc<Region>, addr: SocketAddr) -> Link {
    let mut config = LinkConfig::new(DB, to.id, from.id, format!("http://{addr}"));
    config.backoff_ms = (10, 200);
    config.idle_timeout = Duration::from_secs(5);
    Link::spawn(config, to.clone())
}

/// A TCP forwarder whose connections can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    cut: broadcast::Sender<()>,
    /// While set, new connections are closed at once (a partition).
    blocked: Arc<AtomicBool>,
}

async fn proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, _) = broadcast::channel(4);
    let cuts = cut.clone();
    let blocked = Arc::new(AtomicBool::new(false));
    let partitioned = Arc::clone(&blocked);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            if partitioned.load(Ordering::SeqCst) {
                continue;
            }
            let mut cut = cuts.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.recv() => {}
                }
            });
        }
    });
    Proxy { addr, cut, blocked }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mesh_links(regions: &[&Arc<Region>], servers: &[&Server]) -> Vec<Link> {
    let mut links = Vec::new();
    for (i, to) in regions.iter().enumerate() {
        for (j, from) in regions.iter().enumerate() {
            if i != j {
                links.push(link(to, from, servers[j].addr));
            }
        }
    }
    links
}

// ----- the tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_writing_the_same_keys_concurrently_converge() {
    let (a, b) = (Region::new(1), Region::new(2));
    let (sa, sb) = (serve(&a).await, serve(&b).await);
    let links = mesh_links(&[&a, &b], &[&sa, &sb]);
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|region| {
            tokio::spawn(async move {
                for i in 0..300u32 {
                    let key = format!("k{}", i % 7);
                    match i % 5 {
                        0 => region.set(&key, format!("{}-{i}", region.id).as_bytes()),
                        1 => region.incr("counter"),
                        2 => {
                            region.write(|ks, at| ks.sadd(b"set", &[format!("m{}", i % 11).as_bytes()], at).unwrap());
                        }
                        3 => {
                            region.write(|ks, at| ks.push(b"list", &[&i.to_be_bytes()], End::Back, at).unwrap());
                        }
                        _ => {
                            region.write(|ks, at| ks.delete(key.as_bytes(), at));
                        }
                    }
                    if i % 50 == 0 {
                        // Large, repetitive values: batches get compressed.
                        region.set("big", &vec![b'x'; 16 * 1024]);
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    eventually("a and b converge", || a.same_as(&b)).await;
    // 60 increments from each region add up.
    assert_eq!(a.get("counter"), Some(b"120".to_vec()));
    a.state.lock().unwrap().keyspace.validate().unwrap();
    eventually("links report no lag", || {
        links.iter().all(|l| {
            let stats = l.stats().read(system_wall_ms());
            stats.lag_ops == 0 && stats.lag_ms == 0 && stats.state == "streaming"
        })
    })
    .await;
    // Every link streamed, compressed, and the sources heard the applied vectors.
    for link in &links {
        let stats = link.stats().read(system_wall_ms());
        assert_eq!(stats.errors, 0, "{stats:?}");
        assert!(stats.bytes_in_wire < stats.bytes_in_raw, "compression: {stats:?}");
    }
    eventually("acks carry applied vectors", || {
        let heard = |region: &Region, from: u16| region.state.lock().unwrap().reports.keys().any(|r| r.region == from);
        heard(&a, 2) && heard(&b, 1)
    })
    .await;
    // What a sent to b, b applied, once.
    let sent = sa.source.stats(DB, 2).expect("a serves b").read(system_wall_ms());
    eventually("counted", || links[1].stats().read(0).deltas >= sent.deltas).await;
    let received = links[1].stats().read(system_wall_ms());
    assert_eq!(sent.deltas, received.deltas, "{sent:?} {received:?}");
    assert_eq!(received.deltas_redelivered, 0);
    assert!(a.originated.load(Ordering::Relaxed) >= received.deltas);
    for link in links {
        link.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_reconnects_resumes_from_its_cursor_without_loss_or_double_effect() {
    let (a, b) = (Region::new(1), Region::new(2));
    let sa = serve(&a).await;
    let cut = proxy(sa.addr).await;
    let link_b = link(&b, &a, cut.addr);
    eventually("b streaming", || link_b.stats().state() == meridian_wan::LinkState::Streaming).await;
    for _ in 0..100 {
        a.incr("n");
    }
    eventually("b has the first 100", || b.get("n") == Some(b"100".to_vec())).await;
    // The connection breaks (a WAN partition); writes go on meanwhile.
    let _ = cut.cut.send(());
    for _ in 0..100 {
        a.incr("n");
        let _ = cut.cut.send(());
    }
    eventually("b has all 200", || b.get("n") == Some(b"200".to_vec())).await;
    eventually("counted", || link_b.stats().read(0).deltas >= 200).await;
    assert!(a.same_as(&b));
    let stats = link_b.stats().read(system_wall_ms());
    assert!(stats.errors >= 1 && stats.connects >= 2, "the link reconnected: {stats:?}");
    assert_eq!(stats.full_syncs, 0, "a new database's log is read from offset 0: {stats:?}");
    assert!(stats.partial_syncs >= 2, "{stats:?}");
    assert_eq!(stats.deltas, 200, "every delta applied once: {stats:?}");
    assert_eq!(stats.deltas_redelivered, 0);
    link_b.stop().await;

    // A lost cursor write (a crash after applying, before persisting): the
    // source redelivers, the merge is idempotent, the counter does not double.
    let cursor = b.cursor(1).expect("a cursor");
    b.store_cursor(Source::region(1), Cursor { offset: cursor.offset - 50, ..cursor }).unwrap();
    for _ in 0..10 {
        a.incr("n");
    }
    let link_b = link(&b, &a, sa.addr);
    eventually("b has 210", || b.get("n") == Some(b"210".to_vec())).await;
    // The counters move right after the apply.
    eventually("counted", || link_b.stats().read(0).deltas >= 60).await;
    let stats = link_b.stats().read(system_wall_ms());
    assert_eq!((stats.partial_syncs, stats.full_syncs), (1, 0), "{stats:?}");
    assert_eq!(stats.deltas, 60, "50 redelivered and 10 new, all applied: {stats:?}");
    assert!(a.same_as(&b));
    link_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_whose_cursor_left_the_bounded_log_catches_up_by_snapshot() {
    // A's outbox holds about 4 KiB of deltas.
    let (a, b) = (Region::with(1, 0, 4 * 1024), Region::new(2));
    let (sa, sb) = (serve(&a).await, serve(&b).await);
    let link_b = link(&b, &a, sa.addr);
    a.set("before", b"1");
    eventually("b follows a", || b.get("before").is_some()).await;
    link_b.stop().await;
    // B is away while A writes far more than its outbox holds; B writes too.
    for i in 0..500u32 {
        a.set(&format!("a{}", i % 100), &i.to_be_bytes());
        a.incr("shared");
    }
    a.write(|ks, at| ks.delete(b"before", at));
    for i in 0..50u32 {
        b.set(&format!("b{i}"), b"mine");
        b.incr("shared");
    }
    let cursor = b.cursor(1).expect("b had a cursor");
    assert!(!a.outbox.covers(cursor.log_id, cursor.offset), "the cursor fell out of the log");
    let links = vec![link(&b, &a, sa.addr), link(&a, &b, sb.addr)];
    eventually("a and b converge", || a.same_as(&b)).await;
    assert_eq!(b.get("shared"), Some(b"550".to_vec()));
    assert_eq!(b.get("before"), None, "the delete reached b through the snapshot");
    assert_eq!(b.get("b7"), Some(b"mine".to_vec()), "b's own writes survive the merge");
    let stats = links[0].stats().read(system_wall_ms());
    assert_eq!((stats.full_syncs, stats.partial_syncs), (1, 0), "{stats:?}");
    assert_eq!(stats.snapshot_lists_kept, 0);
    // After the snapshot, B streams from the offset it covered.
    a.set("after", b"2");
    eventually("b streams again", || b.get("after").is_some()).await;
    assert_eq!(links[0].stats().read(system_wall_ms()).full_syncs, 1);
    for link in links {
        link.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_clock_far_ahead_is_clamped_and_counted() {
    // A's clock runs a minute ahead; B allows 1 s of skew.
    let (a, b) = (Region::with(1, 60_000, OUTBOX_BYTES_DEFAULT), Region::new(2));
    let sa = serve(&a).await;
    let link_b = link(&b, &a, sa.addr);
    for i in 0..20u32 {
        a.set(&format!("k{i}"), b"from the future");
    }
    eventually("b has a's writes", || a.same_as(&b)).await;
    let stats = link_b.stats().read(system_wall_ms());
    assert!(stats.clamped_timestamps >= 20, "{stats:?}");
    assert!(b.clock.stats().clamped_total.load(Ordering::Relaxed) >= 20);
    // B's own clock did not follow A a minute ahead.
    b.tick();
    let local = b.clock.now().unwrap();
    assert!(hlc_to_unix_ms(local) <= system_wall_ms() + 1_000 + 500, "b's clock jumped ahead");
    link_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_get_clear_errors_and_the_server_survives() {
    use meridian_proto::v1::wan_sync_client::WanSyncClient;
    use tonic::Code;

    let a = Region::new(1);
    let sa = serve(&a).await;
    a.set("k", b"v");

    // Garbage bytes instead of HTTP/2: the connection is dropped.
    let mut raw = TcpStream::connect(sa.addr).await.unwrap();
    raw.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(4096)).await.unwrap();
    drop(raw);

    let endpoint = format!("http://{}", sa.addr);
    let channel = tonic::transport::Endpoint::from_shared(endpoint).unwrap().connect().await.unwrap();
    let mut client = WanSyncClient::new(channel);
    let subscribe = |database: &str, source: u32, version: u32| v1::SyncRequest {
        kind: Some(v1::sync_request::Kind::Subscribe(v1::Subscribe {
            protocol_version: version,
            database: database.to_owned(),
            source_region: source,
            destination_region: 9,
            log_id: 0,
            cursor: 0,
            stream: 0,
            ..Default::default()
        })),
    };
    async fn open(client: &mut WanSyncClient<tonic::transport::Channel>, first: v1::SyncRequest) -> tonic::Status {
        let call = client.sync(tokio_stream::iter(vec![first]));
        let result = tokio::time::timeout(WAIT, call).await.expect("an answer in time");
        match result {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match tokio::time::timeout(WAIT, stream.message()).await.expect("an answer in time") {
                        Err(status) => return status,
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("the stream ended without an error"),
                    }
                }
            }
        }
    }
    let status = open(&mut client, subscribe("nope", 1, 1)).await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("has no shard stream 0"), "{status:?}");
    let status = open(&mut client, subscribe(DB, 7, 1)).await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not region 7"), "{status:?}");
    let status = open(&mut client, subscribe(DB, 1, 99)).await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("protocol version"), "{status:?}");
    let mut other_stream = subscribe(DB, 1, 1);
    if let Some(v1::sync_request::Kind::Subscribe(s)) = &mut other_stream.kind {
        s.stream = 5;
    }
    let status = open(&mut client, other_stream).await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("no shard stream 5"), "{status:?}");
    // Granules (D102): a run that is empty or past the cut, and a cut other
    // than the source's.
    let granular = |granules: u32, first: u32, end: u32| {
        let mut request = subscribe(DB, 1, 1);
        if let Some(v1::sync_request::Kind::Subscribe(s)) = &mut request.kind {
            (s.granules, s.first_granule, s.end_granule) = (granules, first, end);
        }
        request
    };
    let status = open(&mut client, granular(4, 3, 2)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("bad granule run 3..2 of 4"), "{status:?}");
    let status = open(&mut client, granular(3, 0, 3)).await;
    assert!(status.message().contains("power of two"), "{status:?}");
    let status = open(&mut client, granular(8, 0, 8)).await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("cut into 1 granules here, not 8"), "{status:?}");
    let ack = v1::SyncRequest { kind: Some(v1::sync_request::Kind::Ack(v1::Ack::default())) };
    let status = open(&mut client, ack).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("Subscribe"), "{status:?}");
    // A message over the bound: refused, not buffered.
    let huge = subscribe(&"x".repeat(meridian_wan::protocol::MESSAGE_BYTES_MAX + 1), 1, 1);
    let status = open(&mut client, huge).await;
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted | Code::Internal), "{status:?}");
    // An ack beyond what was sent ends that stream with a clear error.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(subscribe(DB, 1, 1)).await.unwrap();
    let response = client.sync(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    let mut stream = response.into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(v1::sync_response::Kind::Accepted(_))));
    tx.send(v1::SyncRequest {
        kind: Some(v1::sync_request::Kind::Ack(v1::Ack { applied_offset: 1_000_000, applied_vector: vec![] })),
    })
    .await
    .unwrap();
    let status = loop {
        match tokio::time::timeout(WAIT, stream.message()).await.expect("an answer in time") {
            Err(status) => break status,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("outside the window"), "{status:?}");

    // The server still serves an honest peer.
    let b = Region::new(2);
    let link_b = link(&b, &a, sa.addr);
    eventually("b syncs after the hostile peers", || a.same_as(&b)).await;
    link_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_merged_from_b_into_a_is_never_shipped_by_a_to_c() {
    let (a, b, c) = (Region::new(1), Region::new(2), Region::new(3));
    let (sa, sb) = (serve(&a).await, serve(&b).await);
    // A pulls from B; C pulls from A only.
    let a_from_b = link(&a, &b, sb.addr);
    let c_from_a = link(&c, &a, sa.addr);
    // Both links are past their (empty) initial snapshot: what follows is deltas.
    eventually("links streaming", || {
        a_from_b.stats().state() == meridian_wan::LinkState::Streaming
            && c_from_a.stats().state() == meridian_wan::LinkState::Streaming
    })
    .await;
    b.set("from-b", b"1");
    eventually("a merged b's write", || a.get("from-b").is_some()).await;
    a.set("from-a", b"1");
    eventually("c has a's write", || c.get("from-a").is_some()).await;
    // Give a wrong implementation time to forward b's delta.
    a.set("from-a-2", b"1");
    eventually("c has a's second write", || c.get("from-a-2").is_some()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get("from-b"), None, "a shipped a delta it did not originate");
    assert_eq!(a.outbox.next_offset(), 2, "a's outbox holds only a's own writes");
    assert_eq!(c_from_a.stats().read(system_wall_ms()).deltas, 2);
    // With a link from B, C converges with everyone.
    let c_from_b = link(&c, &b, sb.addr);
    eventually("c has b's write from b", || c.get("from-b").is_some()).await;
    for link in [a_from_b, c_from_a, c_from_b] {
        link.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_stops_acking_stalls_the_source_after_the_window() {
    use meridian_proto::v1::wan_sync_client::WanSyncClient;
    use meridian_wan::protocol::{BATCH_DELTAS_MAX, IN_FLIGHT_BATCHES_MAX, MESSAGE_BYTES_MAX};

    let a = Region::new(1);
    let sa = serve(&a).await;
    // Enough deltas for twice the window of full batches.
    let total = (2 * IN_FLIGHT_BATCHES_MAX * BATCH_DELTAS_MAX) as u32;
    for i in 0..total {
        a.set(&format!("k{}", i % 64), b"v");
    }
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", sa.addr)).unwrap().connect().await.unwrap();
    let mut client = WanSyncClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::SyncRequest {
        kind: Some(v1::sync_request::Kind::Subscribe(v1::Subscribe {
            protocol_version: 1,
            database: DB.into(),
            source_region: 1,
            destination_region: 2,
            log_id: 0,
            cursor: 0,
            stream: 0,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = client.sync(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    // Collects the batches the source sends until none came for a while
    // (heartbeats keep coming: they do not count).
    async fn batches_until_quiet(stream: &mut tonic::Streaming<v1::SyncResponse>) -> Vec<u64> {
        let mut ends = Vec::new();
        let mut quiet_until = tokio::time::Instant::now() + Duration::from_millis(1_500);
        while let Ok(message) = tokio::time::timeout_at(quiet_until, stream.message()).await {
            if let Some(v1::sync_response::Kind::Batch(batch)) = message.unwrap().unwrap().kind {
                ends.push(batch.first_offset + u64::from(batch.count));
                quiet_until = tokio::time::Instant::now() + Duration::from_millis(1_500);
            }
        }
        ends
    }
    let batch_ends = batches_until_quiet(&mut stream).await;
    assert_eq!(batch_ends.len(), IN_FLIGHT_BATCHES_MAX, "the source stops at the window");
    assert!(*batch_ends.last().unwrap() < u64::from(total));
    let source = sa.source.stats(DB, 2).unwrap().read(system_wall_ms());
    assert_eq!(source.lag_ops, u64::from(total), "nothing acknowledged: {source:?}");
    // One ack frees one batch's room: exactly one more batch comes.
    tx.send(v1::SyncRequest {
        kind: Some(v1::sync_request::Kind::Ack(v1::Ack { applied_offset: batch_ends[0], applied_vector: vec![] })),
    })
    .await
    .unwrap();
    assert_eq!(batches_until_quiet(&mut stream).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_broken_source_reports_the_error_and_keeps_retrying() {
    // A "source" that answers every connection with garbage.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicU64::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot grpc at all").await;
        }
    });
    let b = Region::new(2);
    let a = Region::new(1);
    let link_b = link(&b, &a, addr);
    eventually("several attempts", || accepts.load(Ordering::Relaxed) >= 3).await;
    let stats = link_b.stats().read(system_wall_ms());
    assert!(stats.errors >= 2, "{stats:?}");
    assert!(stats.last_error.is_some(), "{stats:?}");
    assert_eq!(stats.connects, 0);
    assert!(b.state.lock().unwrap().keyspace.is_empty());
    link_b.stop().await;
}

/// Three regions in a full mesh behind cuttable proxies; random writes (no
/// lists: see D55) interleaved with random cuts of random links; region 3's
/// outbox is tiny, so its peers fall back to snapshots now and then. Every
/// seed must converge; a failure names its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_converge_through_random_cuts_and_snapshots() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    for seed in [1u64, 2, 3] {
        let regions = [Region::new(1), Region::new(2), Region::with(3, 0, 2 * 1024)];
        let mut servers = Vec::new();
        let mut proxies = Vec::new();
        for region in &regions {
            let server = serve(region).await;
            proxies.push(proxy(server.addr).await);
            servers.push(server);
        }
        let mut links = Vec::new();
        for to in &regions {
            for (j, from) in regions.iter().enumerate() {
                if to.id != from.id {
                    links.push(link(to, from, proxies[j].addr));
                }
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut increments = 0u64;
        for step in 0..1_500u32 {
            let region = &regions[rng.random_range(0..3)];
            let key = format!("k{}", rng.random_range(0..5u8));
            match rng.random_range(0..7u8) {
                0 => region.set(&key, format!("{}-{step}", region.id).as_bytes()),
                1 => {
                    region.incr("counter");
                    increments += 1;
                }
                2 => {
                    region.write(|ks, at| ks.sadd(b"set", &[key.as_bytes()], at).unwrap());
                }
                3 => {
                    region.write(|ks, at| ks.srem(b"set", &[key.as_bytes()], at).unwrap());
                }
                4 => {
                    region.write(|ks, at| ks.hset(b"hash", &[(key.as_bytes(), b"v")], at).unwrap());
                }
                5 => {
                    region.write(|ks, at| ks.delete(key.as_bytes(), at));
                }
                _ => {
                    if rng.random_range(0..4u8) == 0 {
                        let _ = proxies[rng.random_range(0..3)].cut.send(());
                    }
                }
            }
            if step % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
            }
        }
        // Whatever the random cuts did, region 3 is then partitioned while
        // it writes past its 2 KiB outbox: its peers' cursors fall out of
        // its log, and they must catch up through a snapshot.
        proxies[2].blocked.store(true, Ordering::SeqCst);
        let _ = proxies[2].cut.send(());
        // Again, for a connection accepted just before the block.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = proxies[2].cut.send(());
        for i in 0..64 {
            regions[2].set(&format!("burst{i}"), &[b'x'; 64]);
        }
        proxies[2].blocked.store(false, Ordering::SeqCst);
        let converged = async {
            eventually("three regions converge", || regions[0].same_as(&regions[1]) && regions[1].same_as(&regions[2]))
                .await
        };
        if tokio::time::timeout(WAIT, converged).await.is_err() {
            panic!("seed {seed}: no convergence");
        }
        assert_eq!(regions[0].get("counter"), Some(increments.to_string().into_bytes()), "seed {seed}");
        let kept: u64 = links.iter().map(|l| l.stats().read(0).snapshot_lists_kept).sum();
        assert_eq!(kept, 0, "seed {seed}");
        let errors: u64 = links.iter().map(|l| l.stats().read(0).errors).sum();
        let full: u64 = links.iter().map(|l| l.stats().read(0).full_syncs).sum();
        let partial: u64 = links.iter().map(|l| l.stats().read(0).partial_syncs).sum();
        eprintln!("seed {seed}: {errors} link errors, {full} full syncs, {partial} partial syncs");
        assert!(errors >= 1 && full >= 1 && partial >= 1, "seed {seed}: the cuts exercised both paths");
        for link in links {
            link.stop().await;
        }
    }
}

/// A source that answers every stream with canned responses.
#[derive(Clone)]
struct CannedSource(Vec<v1::SyncResponse>);

#[tonic::async_trait]
impl v1::wan_sync_server::WanSync for CannedSource {
    type SyncStream = tokio_stream::Iter<std::vec::IntoIter<Result<v1::SyncResponse, tonic::Status>>>;

    async fn sync(
        &self,
        _request: tonic::Request<tonic::Streaming<v1::SyncRequest>>,
    ) -> Result<tonic::Response<Self::SyncStream>, tonic::Status> {
        let responses: Vec<_> = self.0.iter().cloned().map(Ok).collect();
        Ok(tonic::Response::new(tokio_stream::iter(responses)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_source_gets_a_clear_error_and_nothing_is_applied() {
    use v1::sync_response::Kind;
    let accepted = Kind::Accepted(v1::Accepted {
        protocol_version: 1,
        source_region: 1,
        log_id: 77,
        mode: v1::SyncMode::Partial as i32,
        start_offset: 0,
    });
    let batch = |first_offset: u64, count: u32, compression: v1::Compression, raw_bytes: u32, payload: &[u8]| {
        Kind::Batch(v1::DeltaBatch {
            first_offset,
            count,
            compression: compression as i32,
            raw_bytes,
            payload: bytes::Bytes::copy_from_slice(payload),
            source_next_offset: 0,
            source_wall_ms: 0,
            ..Default::default()
        })
    };
    // A batch filtered for a shard holding some granules (D102).
    let filtered = |first_offset: u64, count: u32, kept: &[u32], payload: &[u8]| {
        Kind::Batch(v1::DeltaBatch {
            first_offset,
            count,
            raw_bytes: payload.len() as u32,
            payload: bytes::Bytes::copy_from_slice(payload),
            filtered: true,
            kept: kept.to_vec(),
            ..Default::default()
        })
    };
    let one_delta = {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        let at = Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(system_wall_ms(), 0), wall_ms: system_wall_ms() };
        let delta = Delta::Key(keyspace.set(b"k", b"v", ExpiryChange::Keep, at));
        meridian_wan::protocol::delta_list(&[bytes::Bytes::from(meridian_proto::encode_delta(&delta))])
    };
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
    let cases: Vec<(Vec<Kind>, &str)> = vec![
        (vec![batch(0, 0, v1::Compression::None, 0, b"")], "the first response must be Accepted"),
        (vec![accepted.clone(), batch(5, 1, v1::Compression::None, 0, b"")], "batch from offset 5 where 0 was due"),
        (vec![accepted.clone(), batch(0, 1, v1::Compression::None, 3, b"\x0a\xff\xff")], "malformed delta list"),
        (vec![accepted.clone(), batch(0, 1, v1::Compression::Zstd, 1 << 30, &bomb)], "over the bound"),
        (vec![accepted.clone(), batch(0, 1, v1::Compression::Zstd, 10, &bomb)], "bad zstd payload"),
        (vec![accepted.clone(), batch(0, 2, v1::Compression::None, 0, b"")], "announced as 2"),
        (vec![accepted.clone(), filtered(0, 2, &[0], b"")], "0 deltas with 1 offsets"),
        (vec![accepted.clone(), filtered(0, 2, &[2], &one_delta)], "bad offsets [2] in a batch of 2"),
    ];
    for (responses, expected) in cases {
        let responses = responses.into_iter().map(|kind| v1::SyncResponse { kind: Some(kind) }).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = v1::wan_sync_server::WanSyncServer::new(CannedSource(responses));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let (a, b) = (Region::new(1), Region::new(2));
        let link_b = link(&b, &a, addr);
        eventually(expected, || link_b.stats().read(0).last_error.is_some_and(|e| e.contains(expected))).await;
        assert!(b.state.lock().unwrap().keyspace.is_empty(), "{expected}: nothing applied");
        assert_eq!(b.cursor(1), None, "{expected}: no cursor moved");
        link_b.stop().await;
    }
}

// ----- regions of different shard counts (D102) -----

/// Serves `shard` as shard stream `stream` of region `id`, holding `held`.
async fn serve_shard(shard: &Arc<Region>, stream: u32, held: std::ops::Range<u16>) -> Server {
    let granules = shard.state.lock().unwrap().keyspace.granules();
    let source = SyncSource::new(shard.id);
    source.add_stream(DB, shard.id, stream, granules, held, shard.clone());
    serve_source(source).await
}

/// A link to shard `to` (stream `to_stream`, holding `held`) from shard
/// stream `from_stream` of `from`, served at `addr`.
fn shard_link(
    (to, to_stream, held): (&Arc<Region>, u32, std::ops::Range<u16>),
    (from, from_stream): (&Arc<Region>, u32),
    addr: SocketAddr,
) -> Link {
    let mut config = LinkConfig::new(DB, to.id, from.id, format!("http://{addr}"));
    config.backoff_ms = (10, 200);
    config.idle_timeout = Duration::from_secs(5);
    config.stream = from_stream;
    config.destination_stream = to_stream;
    config.slice = Slice { granules: to.state.lock().unwrap().keyspace.granules(), held };
    Link::spawn(config, to.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_of_one_shard_and_one_of_two_converge_through_filtered_streams() {
    let granules = Granules::new(4).unwrap();
    // Region 1: one shard of all four granules, with a small outbox: the
    // second shard of region 2, linked late, takes a snapshot of its half.
    let a = Region::shard(1, granules, 4 * 1024);
    let (b0, b1) = (Region::shard(2, granules, OUTBOX_BYTES_DEFAULT), Region::shard(2, granules, OUTBOX_BYTES_DEFAULT));
    let (sa, sb0, sb1) =
        (serve_shard(&a, 0, 0..4).await, serve_shard(&b0, 0, 0..2).await, serve_shard(&b1, 1, 2..4).await);
    let holder = |key: &str| if granules.of_key(key.as_bytes()) < 2 { &b0 } else { &b1 };
    let mut links = vec![
        shard_link((&a, 0, 0..4), (&b0, 0), sb0.addr),
        shard_link((&a, 0, 0..4), (&b1, 1), sb1.addr),
        shard_link((&b0, 0, 0..2), (&a, 0), sa.addr),
    ];
    for i in 0..400u32 {
        let key = format!("k{}", i % 32);
        a.set(&key, format!("a-{i}").as_bytes());
        holder(&key).incr(&format!("c{}", i % 16));
        a.incr(&format!("c{}", i % 16));
        if i % 40 == 0 {
            holder(&key).write(|ks, at| ks.sadd(key.as_bytes(), &[b"from-b".as_slice()], at).ok());
        }
    }
    // FLUSHALL in region 2 runs on both of its shards.
    b0.write(|ks, _| ks.flush());
    b1.write(|ks, _| ks.flush());
    for i in 0..64u32 {
        a.set(&format!("after{i}"), b"v");
    }
    links.push(shard_link((&b1, 1, 2..4), (&a, 0), sa.addr));
    let converged = || {
        let a = a.state.lock().unwrap();
        let (b0, b1) = (b0.state.lock().unwrap(), b1.state.lock().unwrap());
        let mut of_b: Vec<_> = b0.keyspace.entries().into_iter().chain(b1.keyspace.entries()).collect();
        of_b.sort_by(|x, y| x.0.cmp(&y.0));
        a.keyspace.entries() == of_b
    };
    eventually("the regions hold the same keys", converged).await;
    // Each shard of region 2 holds only its granules, with no gap in its context.
    for (shard, held) in [(&b0, 0..2), (&b1, 2..4)] {
        let state = shard.state.lock().unwrap();
        assert!(state.keyspace.entries().iter().all(|(k, _)| held.contains(&granules.of_key(k))));
        assert_eq!(state.keyspace.context().cloud_len(), 0);
        state.keyspace.validate().unwrap();
    }
    assert_eq!(a.state.lock().unwrap().keyspace.context().cloud_len(), 0);
    assert_eq!(a.get("after7"), Some(b"v".to_vec()));
    // The late shard took a snapshot of its granules; the other streamed.
    let late = links[3].stats().read(system_wall_ms());
    assert_eq!(late.full_syncs, 1, "{late:?}");
    assert!(sa.source.stream_stats(DB, 2, 0, 1).is_some(), "streams are counted per shard pair");
    // Region 1 hears what each shard of region 2 applied, by its granules.
    eventually("both shards of region 2 report", || {
        let reports = &a.state.lock().unwrap().reports;
        [0..2, 2..4].iter().all(|held| reports.contains_key(&Reporter::new(2, held.clone())))
    })
    .await;
    for link in links {
        link.stop().await;
    }
}
