//! A copy of the key table taken in steps, with writes between the steps
//! (the shard's lock released, D103), ends as the table stands at its last
//! step: the same keys and states as a copy taken at once then.

mod common;

use common::{Op, local, op};
use meridian_crdt::keyspace::{FrozenKeys, Moment};
use meridian_crdt::{Keyspace, ReplicaId};
use proptest::prelude::*;

/// Enough keys that the table spans many slots (and reuses vacant ones).
const KEY_COUNT: u8 = 40;

/// What happens between two steps of the copy.
#[derive(Clone, Debug)]
enum Event {
    /// A local write.
    Write(Op),
    /// A write from another region, merged.
    Remote(Op),
    /// A step copying this many slots.
    Step(u32),
    /// Another copy of the same table begins (and the first is given up).
    Rival,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        12 => op(KEY_COUNT).prop_map(Event::Write),
        4 => op(KEY_COUNT).prop_map(Event::Remote),
        6 => (1u32..12).prop_map(Event::Step),
        1 => Just(Event::Rival),
    ]
}

fn moment(time: usize) -> Moment {
    Moment { hlc: 1_000 + time as u64, wall_ms: 1_000 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_copy_in_steps_ends_as_the_table_stands(
        setup in proptest::collection::vec(op(KEY_COUNT), 0..60),
        events in proptest::collection::vec(event(), 0..80),
    ) {
        let names: Vec<Vec<u8>> = (0..KEY_COUNT).map(|k| format!("key:{k}").into_bytes()).collect();
        let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut keyspace = Keyspace::new(ReplicaId(1));
        let mut other = Keyspace::new(ReplicaId(2));
        let mut time = 0;
        for write in &setup {
            time += 1;
            local(&mut keyspace, write, moment(time), &keys);
        }
        let mut frozen = FrozenKeys::room_for(keyspace.len());
        let mut rival = FrozenKeys::default();
        let mut done = false;
        for event in &events {
            time += 1;
            match event {
                Event::Write(write) => {
                    local(&mut keyspace, write, moment(time), &keys);
                }
                Event::Remote(write) => {
                    for delta in local(&mut other, write, moment(time), &keys) {
                        keyspace.apply(&delta);
                    }
                }
                Event::Step(slots) => {
                    if !done {
                        done = keyspace.freeze_step(&mut frozen, *slots);
                    }
                }
                Event::Rival => {
                    keyspace.freeze_step(&mut rival, 1);
                }
            }
        }
        keyspace.freeze_finish(&mut frozen);
        prop_assert_eq!(frozen.len(), keyspace.len());
        prop_assert_eq!(frozen.into_snapshot(), keyspace.snapshot());
        // The rival's copy, given up or not, also ends as the table stands.
        keyspace.freeze_finish(&mut rival);
        prop_assert_eq!(rival.into_snapshot(), keyspace.snapshot());
    }
}

/// A copy whose passed slots change more often than it records gives up
/// and ends with a whole copy, still exact.
#[test]
fn a_copy_with_too_many_changes_ends_whole_and_exact() {
    let mut keyspace = Keyspace::new(ReplicaId(1));
    let at = moment(1);
    for k in 0..64u32 {
        keyspace.set(format!("k{k}").as_bytes(), b"v", meridian_crdt::keyspace::ExpiryChange::Keep, at);
    }
    let mut frozen = FrozenKeys::default();
    assert!(keyspace.freeze_step(&mut frozen, 1_000));
    // Far past the limit (a quarter of the keys plus one chunk of slots).
    for round in 0..1_200u32 {
        for k in 0..64u32 {
            let value = format!("{round}");
            keyspace.set(
                format!("k{k}").as_bytes(),
                value.as_bytes(),
                meridian_crdt::keyspace::ExpiryChange::Keep,
                moment(2 + round as usize),
            );
        }
    }
    keyspace.freeze_finish(&mut frozen);
    assert_eq!(frozen.into_snapshot(), keyspace.snapshot());
}
