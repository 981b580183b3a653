//! With no peer region (solo) every dot is stable at once: a list popped
//! empty leaves no key behind — live, replayed from the journal, or from a
//! snapshot and the journal — as Redis deletes it. (A restarted node's
//! DBSIZE counted it until its first GC pass.)

use meridian_crdt::keyspace::{End, Moment};
use meridian_crdt::{Delta, Keyspace, ReplicaId};

#[test]
fn a_list_popped_empty_leaves_no_key_live_or_replayed() {
    let at = Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(1_790_000_000_000, 0), wall_ms: 1_000 };
    let mut live = Keyspace::new(ReplicaId(1));
    live.set_solo(true);
    let (_, d1) = live.push(b"queue", &[b"job"], End::Back, at).unwrap();
    let snapshot = (live.context().clone(), live.snapshot());
    let (_, d2) = live.pop(b"queue", End::Front, 1, at).unwrap();
    let d2 = d2.expect("a pop delta");
    assert_eq!(live.len(), 0, "live");
    let mut replay = Keyspace::new(ReplicaId(1));
    replay.set_solo(true);
    replay.apply(&Delta::Key(d1));
    replay.apply(&Delta::Key(d2.clone()));
    assert_eq!(replay.len(), 0, "journal replay: {replay:?}");
    let mut restored = Keyspace::restore(ReplicaId(1), snapshot.0, &snapshot.1).unwrap();
    restored.set_solo(true);
    restored.apply(&Delta::Key(d2));
    assert_eq!(restored.len(), 0, "snapshot + journal: {restored:?}");
}
