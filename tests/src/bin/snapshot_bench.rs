//! Times the steps of the WAN snapshot path (a full sync) on one core,
//! without a network: the source copying its shard out, encoding it, the
//! receiver decoding it, merging it into its own shard, and copying the merged
//! shard out again for its journal rewrite. The steps marked "locked" run with
//! the shard locked in the node, so their sum bounds how long a full sync
//! stalls commands on either side.
//!
//!     cargo run --release -p meridian-tests --bin snapshot_bench -- [keys] [shared-percent]
//!
//! Region a writes `keys` fresh string keys (12-byte keys, 16-byte values, as
//! the WAN benchmark writes); region b already holds the first
//! `shared-percent` of them (default 60), received as deltas, as after a
//! partition.

use std::time::Instant;

use meridian_crdt::keyspace::{ExpiryChange, FrozenKeys};
use meridian_crdt::{Delta, Keyspace, Moment, ReplicaId};

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().map(|a| a.parse().expect("keys: a number")).unwrap_or(2_000_000);
    let shared: u64 = args.next().map(|a| a.parse().expect("shared-percent: a number")).unwrap_or(60);
    let shared_keys = keys * shared.min(100) / 100;

    let mut a = Keyspace::new(ReplicaId(1));
    let mut b = Keyspace::new(ReplicaId(2));
    let started = Instant::now();
    for n in 0..keys {
        let key = format!("k:{n:010}");
        let value = format!("v:{n:014}");
        let at = Moment { hlc: (n + 1) << 16, wall_ms: 1_000 };
        let delta = a.set(key.as_bytes(), value.as_bytes(), ExpiryChange::Clear, at);
        if n < shared_keys {
            b.apply(&Delta::Key(delta));
        }
    }
    println!("setup: {keys} keys in a, {shared_keys} of them in b, {:.0} ms", ms(started));

    // Room for the copy is made before the lock, as the node does.
    let mut frozen = FrozenKeys::room_for(a.len());
    let t = Instant::now();
    let context = a.context().clone();
    a.freeze_into(&mut frozen);
    let copy_ms = ms(t);
    let t = Instant::now();
    let bytes = meridian_proto::convert::encode_snapshot_each(&context, frozen.into_sorted());
    let encode_ms = ms(t);
    let encoded = bytes.len();
    let t = Instant::now();
    let theirs = meridian_proto::convert::decode_snapshot_shared(ReplicaId(2), bytes.into()).expect("decodes");
    let decode_ms = ms(t);
    let t = Instant::now();
    let merge = b.merge_snapshot(&theirs);
    let merge_ms = ms(t);
    let mut rewrite = FrozenKeys::room_for(b.len());
    let t = Instant::now();
    b.freeze_into(&mut rewrite);
    let rewrite_ms = ms(t);
    assert_eq!(rewrite.len() as u64, keys, "b holds every key after the merge");
    assert_eq!(merge.lists_kept, 0);

    println!("a: copy out (locked)   {copy_ms:>8.0} ms");
    println!("a: sort + encode       {encode_ms:>8.0} ms  ({encoded} bytes)");
    println!("b: decode + restore    {decode_ms:>8.0} ms");
    println!("b: merge (locked)      {merge_ms:>8.0} ms  ({} keys merged)", merge.keys_merged);
    println!("b: copy out (locked)   {rewrite_ms:>8.0} ms");
    let locked = copy_ms + merge_ms + rewrite_ms;
    let total = locked + encode_ms + decode_ms;
    println!("snapshot_ms_total={total:.0} locked_ms={locked:.0} keys_per_s={:.0}", keys as f64 / (total / 1_000.0));
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1_000.0
}
