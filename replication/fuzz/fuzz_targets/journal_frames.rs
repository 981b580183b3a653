//! Arbitrary bytes as a journal file: recovery must stop at the first bad
//! frame with a reason — never panic, never allocate beyond the input — and
//! the good prefix it reports must replay to the same state on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_crdt::{Keyspace, ReplicaId};
use meridian_replication::durability::replay_frames;

fuzz_target!(|data: &[u8]| {
    let mut keyspace = Keyspace::new(ReplicaId(1));
    let (good, applied, _, stopped) = replay_frames(data, &mut keyspace).expect("reading a slice cannot fail");
    assert!(good as usize <= data.len());
    assert_eq!(stopped.is_none(), good as usize == data.len(), "a clean end is the whole input");
    let mut again = Keyspace::new(ReplicaId(1));
    let (good_again, applied_again, _, stopped_again) =
        replay_frames(&data[..good as usize], &mut again).expect("reading a slice cannot fail");
    assert_eq!((good_again, applied_again, stopped_again), (good, applied, None));
    assert!(keyspace == again, "the good prefix alone rebuilds the same state");
    keyspace.validate().expect("a replayed keyspace is valid");
});
