//! Deltas and snapshot keys encoded straight from the `crdt` types.
//!
//! [`crate::convert::delta_to_wire`] builds the prost messages of a delta —
//! an allocation for every key, value and list of the delta — and prost then
//! encodes them, computing each nested message's length once per enclosing
//! level. For an LPUSH delta that was about 3,200 instructions, more than
//! the write itself. This module writes the same protobuf bytes in one pass
//! with prost's own wire primitives (`encode_key`, `encode_varint`): a nested
//! message is written after a one-byte length slot that is filled in
//! afterwards (widened in place for the rare message of 128 bytes or more).
//!
//! The output is byte for byte what prost makes of `delta_to_wire` — proto3
//! field presence included: scalars at their default are omitted except
//! inside a oneof, a present message field is written even when empty — and
//! `tests/tests/wire.rs` checks exactly that for every delta of a random
//! workload. Decoding stays with prost ([`crate::convert::decode_delta`]).

use meridian_crdt::delta::{Delta, KeyDelta, TypedDelta};
use meridian_crdt::expiry::{Deadline, ExpiryDelta};
use meridian_crdt::list::{ListImage, ListOp};
use meridian_crdt::register::{Amount, Increment, RegisterDelta};
use meridian_crdt::value::KeySnapshot;
use meridian_crdt::zset::F64;
use meridian_crdt::{CausalContext, Dot, ShortBytes, Tag};
use prost::encoding::{WireType, encode_key, encode_varint};

/// Appends the protobuf encoding of `delta` (a `meridian.v1.Delta`) to `buf`.
pub fn encode_delta_into(delta: &Delta, buf: &mut Vec<u8>) {
    match delta {
        Delta::Key(key) => nested(buf, 1, |b| key_delta(b, key)),
        Delta::Flush(context) => nested(buf, 2, |b| causal_context(b, context)),
    }
}

/// Appends one key of a snapshot as it appears inside an encoded
/// `ShardSnapshot`: its `keys` field (number 2) holding the `KeySnapshot`.
pub fn encode_snapshot_key_into(key: &KeySnapshot, buf: &mut Vec<u8>) {
    nested(buf, 2, |b| {
        bytes(b, 1, &key.key);
        for part in &key.parts {
            nested(b, 2, |b| typed_delta(b, part));
        }
        for (entry_tag, deadline) in &key.expiry {
            nested(b, 3, |b| {
                tag(b, 1, *entry_tag);
                deadline_member(b, 2, *deadline);
            });
        }
        if let Some(image) = &key.list {
            nested(b, 4, |b| list_image(b, image));
        }
    });
}

fn list_image(buf: &mut Vec<u8>, image: &ListImage) {
    for element in &image.elements {
        nested(buf, 1, |b| {
            tag(b, 1, element.id);
            tag(b, 2, element.run_min);
            if let Some((value, value_tag)) = &element.value {
                varint(b, 3, 1);
                bytes(b, 4, value);
                tag(b, 5, *value_tag);
            }
            fixed64(b, 6, element.removed_by.map_or(0, |d| d.packed()));
        });
    }
    for pending in &image.pending {
        nested(buf, 2, |b| {
            fixed64(b, 1, pending.missing.packed());
            for (id, value, born_dead) in &pending.inserts {
                nested(b, 2, |b| {
                    tag(b, 1, *id);
                    bytes(b, 2, value);
                    varint(b, 3, u64::from(*born_dead));
                });
            }
            if let Some((assign_tag, value)) = &pending.assign {
                tag(b, 3, *assign_tag);
                bytes(b, 4, value);
            }
            fixed64(b, 5, pending.removed_by.map_or(0, |d| d.packed()));
        });
    }
    let floor = image.floor.iter().map(|(replica, seq)| Dot::new(replica, seq));
    packed_dots(buf, 3, image.floor.len(), floor);
}

/// A `deadline` oneof whose `at_unix_ms` is field `first` and `persist` the
/// next: written even at its default value, as a oneof member is.
fn deadline_member(buf: &mut Vec<u8>, first: u32, deadline: Deadline) {
    match deadline {
        Deadline::At(ms) => {
            encode_key(first, WireType::Varint, buf);
            encode_varint(ms, buf);
        }
        Deadline::Persist => {
            encode_key(first + 1, WireType::Varint, buf);
            encode_varint(1, buf);
        }
    }
}

/// A message field: its key, its length, then what `body` writes.
fn nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(field, WireType::LengthDelimited, buf);
    let slot = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - slot - 1;
    if len < 0x80 {
        buf[slot] = len as u8;
    } else {
        let mut prefix = [0u8; 10];
        let mut rest = &mut prefix[..];
        encode_varint(len as u64, &mut rest);
        let width = 10 - rest.len();
        buf.splice(slot..slot + 1, prefix[..width].iter().copied());
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        encode_key(field, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn varint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        encode_key(field, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

/// A packed `repeated fixed64` of dots (omitted when empty).
fn dots(buf: &mut Vec<u8>, field: u32, dots: &[Dot]) {
    packed_dots(buf, field, dots.len(), dots.iter().copied());
}

/// A packed `repeated fixed64` of the `count` dots of `dots` (omitted when
/// there are none).
fn packed_dots(buf: &mut Vec<u8>, field: u32, count: usize, dots: impl Iterator<Item = Dot>) {
    if count > 0 {
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(count as u64 * 8, buf);
        for dot in dots {
            buf.extend_from_slice(&dot.packed().to_le_bytes());
        }
    }
}

fn tag(buf: &mut Vec<u8>, field: u32, value: Tag) {
    nested(buf, field, |b| {
        fixed64(b, 1, value.dot.packed());
        fixed64(b, 2, value.hlc);
    });
}

fn amount(buf: &mut Vec<u8>, field: u32, value: Amount) {
    nested(buf, field, |b| match value {
        Amount::Int(v) => match i64::try_from(v) {
            Ok(small) => {
                encode_key(1, WireType::Varint, b);
                encode_varint(((small << 1) ^ (small >> 63)) as u64, b);
            }
            Err(_) => {
                encode_key(3, WireType::LengthDelimited, b);
                encode_varint(16, b);
                b.extend_from_slice(&v.to_le_bytes());
            }
        },
        Amount::Float(v) => {
            encode_key(2, WireType::SixtyFourBit, b);
            b.extend_from_slice(&v.to_le_bytes());
        }
    });
}

fn increment(buf: &mut Vec<u8>, field: u32, value: &Increment) {
    nested(buf, field, |b| {
        tag(b, 1, value.tag);
        amount(b, 2, value.amount);
        if value.is_merged() {
            varint(b, 3, value.first);
        }
    });
}

/// A removal's merged runs (`removed_run_last`, `removed_run_first`), as
/// packed lists (omitted when empty).
fn runs(buf: &mut Vec<u8>, runs: &[(Dot, u64)]) {
    if runs.is_empty() {
        return;
    }
    packed_dots(buf, 5, runs.len(), runs.iter().map(|&(last, _)| last));
    encode_key(6, WireType::LengthDelimited, buf);
    let len: usize = runs.iter().map(|(_, first)| prost::encoding::encoded_len_varint(*first)).sum();
    encode_varint(len as u64, buf);
    for (_, first) in runs {
        encode_varint(*first, buf);
    }
}

fn string_delta(buf: &mut Vec<u8>, delta: &RegisterDelta<ShortBytes>) {
    dots(buf, 1, &delta.removed);
    if let Some(entry) = &delta.entry {
        tag(buf, 2, entry.tag);
        bytes(buf, 3, &entry.value);
    }
    if let Some(value) = &delta.increment {
        increment(buf, 4, value);
    }
    runs(buf, &delta.removed_runs);
}

fn score_delta(buf: &mut Vec<u8>, delta: &RegisterDelta<F64>) {
    dots(buf, 1, &delta.removed);
    if let Some(entry) = &delta.entry {
        tag(buf, 2, entry.tag);
        if entry.value.0 != 0.0 {
            encode_key(3, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&entry.value.0.to_le_bytes());
        }
    }
    if let Some(value) = &delta.increment {
        increment(buf, 4, value);
    }
    runs(buf, &delta.removed_runs);
}

fn typed_delta(buf: &mut Vec<u8>, delta: &TypedDelta) {
    match delta {
        TypedDelta::Str(d) => nested(buf, 1, |b| string_delta(b, d)),
        TypedDelta::Set(d) => nested(buf, 2, |b| {
            for (member, added) in &d.adds {
                nested(b, 1, |b| {
                    bytes(b, 1, member);
                    tag(b, 2, *added);
                });
            }
            for (member, removed) in &d.removes {
                nested(b, 2, |b| {
                    bytes(b, 1, member);
                    dots(b, 2, removed);
                });
            }
        }),
        TypedDelta::Hash(d) => nested(buf, 3, |b| {
            for (field, change) in &d.fields {
                nested(b, 1, |b| {
                    bytes(b, 1, field);
                    nested(b, 2, |b| string_delta(b, change));
                });
            }
        }),
        TypedDelta::ZSet(d) => nested(buf, 4, |b| {
            for (member, change) in &d.changes {
                nested(b, 1, |b| {
                    bytes(b, 1, member);
                    nested(b, 2, |b| score_delta(b, change));
                });
            }
        }),
        TypedDelta::List(d) => nested(buf, 5, |b| {
            for op in &d.ops {
                nested(b, 1, |b| list_op(b, op));
            }
        }),
    }
}

fn list_op(buf: &mut Vec<u8>, op: &ListOp) {
    match op {
        ListOp::Insert { id, anchor, value } => nested(buf, 1, |b| {
            tag(b, 1, *id);
            fixed64(b, 2, anchor.map_or(0, |a| a.packed()));
            bytes(b, 3, value);
        }),
        ListOp::Remove { id, by } => nested(buf, 2, |b| {
            fixed64(b, 1, id.packed());
            fixed64(b, 2, by.packed());
        }),
        ListOp::Assign { id, tag: assigned, value } => nested(buf, 3, |b| {
            fixed64(b, 1, id.packed());
            tag(b, 2, *assigned);
            bytes(b, 3, value);
        }),
    }
}

fn expiry_delta(buf: &mut Vec<u8>, delta: &ExpiryDelta) {
    dots(buf, 1, &delta.removed);
    if let Some((entry_tag, deadline)) = delta.entry {
        tag(buf, 2, entry_tag);
        deadline_member(buf, 3, deadline);
    }
}

fn key_delta(buf: &mut Vec<u8>, delta: &KeyDelta) {
    bytes(buf, 1, &delta.key);
    for part in &delta.parts {
        nested(buf, 2, |b| typed_delta(b, part));
    }
    if let Some(expiry) = &delta.expiry {
        nested(buf, 3, |b| expiry_delta(b, expiry));
    }
}

fn causal_context(buf: &mut Vec<u8>, context: &CausalContext) {
    for (replica, seq) in context.vector().iter() {
        nested(buf, 1, |b| {
            varint(b, 1, u64::from(replica.0));
            varint(b, 2, seq);
        });
    }
    packed_dots(buf, 2, context.cloud_len(), context.cloud());
}

#[cfg(test)]
mod tests {
    use meridian_crdt::keyspace::{ExpiryChange, Keyspace, Moment};
    use meridian_crdt::{ReplicaId, Tag};
    use prost::Message;

    use super::*;
    use crate::convert::delta_to_wire;

    fn same_as_prost(delta: &Delta) {
        let mut direct = Vec::new();
        encode_delta_into(delta, &mut direct);
        assert_eq!(direct, delta_to_wire(delta).encode_to_vec(), "{delta:?}");
    }

    fn at(hlc: u64) -> Moment {
        Moment { hlc, wall_ms: 1_000 }
    }

    #[test]
    fn long_messages_get_wider_lengths() {
        let mut keyspace = Keyspace::new(ReplicaId(3));
        // 300 bytes: a two-byte length at every level.
        same_as_prost(&Delta::Key(keyspace.set(b"k", &[b'v'; 300], ExpiryChange::Keep, at(1 << 20))));
        // About 40 KB of members: three-byte lengths.
        let members: Vec<Vec<u8>> = (0..2_000u32).map(|i| format!("member-{i:08}").into_bytes()).collect();
        let refs: Vec<&[u8]> = members.iter().map(|m| m.as_slice()).collect();
        let (_, delta) = keyspace.sadd(b"s", &refs, at(2 << 20)).expect("sadd");
        same_as_prost(&Delta::Key(delta.expect("a delta")));
        same_as_prost(&keyspace.flush());
    }

    #[test]
    fn wide_negative_and_float_amounts() {
        let tag = Tag::new(Dot::new(ReplicaId(2), 7), 99);
        for amount in [
            Amount::Int(i128::from(i64::MAX) * 4),
            Amount::Int(-5),
            Amount::Int(0),
            Amount::Float(-0.0),
            Amount::Float(2.5),
        ] {
            let mut delta = KeyDelta::new(b"n");
            let register = RegisterDelta::<ShortBytes> {
                increment: Some(Increment::new(tag, amount)),
                ..RegisterDelta::default()
            };
            delta.parts.push(TypedDelta::Str(register));
            same_as_prost(&Delta::Key(delta));
        }
    }

    /// Merged increments (a snapshot's `first`) and the runs of a removal
    /// that observed them, through both encoders and back.
    #[test]
    fn merged_increments_and_their_removal_runs() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        for i in 0..4u64 {
            keyspace.incr_by(b"n", 1, at((10 + i) << 20)).expect("incr");
        }
        let stable = keyspace.context().vector().clone();
        keyspace.collect(&stable, 0, usize::MAX);
        let mut snapshot = Vec::new();
        for key in keyspace.snapshot() {
            snapshot.clear();
            encode_snapshot_key_into(&key, &mut snapshot);
            assert!(
                key.parts.iter().any(|p| matches!(p, TypedDelta::Str(r) if r.increment.is_some_and(|i| i.is_merged())))
            );
        }
        // The merged element survives a snapshot, `first` included.
        let restored = crate::convert::decode_snapshot(ReplicaId(2), &crate::convert::encode_snapshot(&keyspace));
        assert_eq!(restored.expect("decodes"), keyspace);
        let overwrite = Delta::Key(keyspace.set(b"n", b"v", ExpiryChange::Keep, at(20 << 20)));
        let Delta::Key(key) = &overwrite else { unreachable!() };
        assert!(matches!(&key.parts[..], [TypedDelta::Str(r)] if r.removed_runs.len() == 1));
        same_as_prost(&overwrite);
        let mut bytes = Vec::new();
        encode_delta_into(&overwrite, &mut bytes);
        assert_eq!(crate::convert::decode_delta(&bytes).expect("decodes"), overwrite);
    }

    /// A list that collected tombstones keeps its floor through both
    /// snapshot encoders and back (a full sync needs it, D97).
    #[test]
    fn a_collected_list_keeps_its_floor_through_a_snapshot() {
        use meridian_crdt::keyspace::End;
        let mut keyspace = Keyspace::new(ReplicaId(2));
        keyspace.push(b"l", &[b"a".as_slice(), b"b", b"c"], End::Back, at(1 << 20)).expect("push");
        keyspace.pop(b"l", End::Front, 2, at(2 << 20)).expect("pop");
        let stable = keyspace.context().vector().clone();
        keyspace.collect(&stable, 0, usize::MAX);
        let floor_of = |keyspace: &Keyspace| {
            let keys = keyspace.snapshot();
            keys[0].list.as_ref().expect("a list").floor.clone()
        };
        assert_eq!(floor_of(&keyspace), stable);
        let keys = keyspace.snapshot();
        assert_eq!(
            crate::convert::encode_snapshot_each(keyspace.context(), &keys),
            crate::convert::encode_snapshot(&keyspace),
        );
        let restored = crate::convert::decode_snapshot(ReplicaId(1), &crate::convert::encode_snapshot(&keyspace));
        assert_eq!(floor_of(&restored.expect("decodes")), stable);
    }

    #[test]
    fn malformed_runs_and_merges_are_refused() {
        use crate::v1;
        let tag = Some(v1::Tag { dot: (1 << 48) | 5, hlc: 1 });
        let amount = Some(v1::Amount { value: Some(v1::amount::Value::Int(1)) });
        let string = |change: v1::StringDelta| v1::Delta {
            kind: Some(v1::delta::Kind::Key(v1::KeyDelta {
                key: "k".into(),
                parts: vec![v1::TypedDelta { value: Some(v1::typed_delta::Value::String(change)) }],
                expiry: None,
            })),
        };
        let refused = [
            // Two run ends, one start.
            v1::StringDelta {
                removed_run_last: vec![(1 << 48) | 5, (1 << 48) | 9],
                removed_run_first: vec![2],
                ..Default::default()
            },
            // A run that starts at its end.
            v1::StringDelta { removed_run_last: vec![(1 << 48) | 5], removed_run_first: vec![5], ..Default::default() },
            // A merge that starts after its last increment.
            v1::StringDelta { increment: Some(v1::Increment { tag, amount, first: 6 }), ..Default::default() },
        ];
        for change in refused {
            let bytes = string(change.clone()).encode_to_vec();
            assert!(
                matches!(crate::convert::decode_delta(&bytes), Err(crate::convert::DecodeError::Invalid(_))),
                "{change:?}"
            );
        }
    }

    #[test]
    fn default_scalars_are_omitted_and_oneof_members_are_not() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        // An empty value, a score of zero, a deadline.
        same_as_prost(&Delta::Key(keyspace.set(b"e", b"", ExpiryChange::Keep, at(1 << 20))));
        let (_, zadd) = keyspace.zadd(b"z", &[(0.0, b"m".as_slice())], Default::default(), at(2 << 20)).expect("zadd");
        same_as_prost(&Delta::Key(zadd.expect("a delta")));
        let expiring = keyspace.set(b"x", b"v", ExpiryChange::At(5_000), at(3 << 20));
        same_as_prost(&Delta::Key(expiring));
    }
}
