//! Conversions between `meridian-crdt` types and the wire messages.
//!
//! Encoding cannot fail. Decoding checks everything a peer could get wrong:
//! missing required parts, a dot with sequence 0, a NaN score, an integer
//! amount of the wrong width, a flush context that is not a context. A bad
//! message is refused whole, so a half-applied delta never exists.

use bytes::Bytes;
use meridian_crdt::delta::{Delta, KeyDelta, TypedDelta};
use meridian_crdt::expiry::{Deadline, ExpiryDelta};
use meridian_crdt::hash::HashDelta;
use meridian_crdt::keyspace::Keyspace;
use meridian_crdt::list::{ElementImage, ListDelta, ListImage, ListOp, PendingImage};
use meridian_crdt::register::{Amount, Entry, Increment, RegisterDelta};
use meridian_crdt::set::SetDelta;
use meridian_crdt::value::KeySnapshot;
use meridian_crdt::zset::{F64, ZSetDelta};
use meridian_crdt::{CausalContext, Dot, ReplicaId, ShortBytes, Tag, VersionVector};
use prost::Message;
use thiserror::Error;

use crate::v1;

/// Why a message could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field the message cannot do without is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A dot whose sequence number is 0, or a replica id beyond 16 bits.
    #[error("invalid dot {0:#x}")]
    InvalidDot(u64),
    /// A score that is NaN.
    #[error("score is NaN")]
    NanScore,
    /// The message decodes but describes an impossible state.
    #[error("invalid state: {0}")]
    Invalid(String),
    /// A wide integer that is not 16 bytes.
    #[error("wide integer of {0} bytes (expected 16)")]
    WideInteger(usize),
}

fn dot(packed: u64) -> Result<Dot, DecodeError> {
    Dot::from_packed(packed).ok_or(DecodeError::InvalidDot(packed))
}

fn dots(packed: &[u64]) -> Result<Vec<Dot>, DecodeError> {
    packed.iter().map(|&p| dot(p)).collect()
}

fn packed(dots: &[Dot]) -> Vec<u64> {
    dots.iter().map(|d| d.packed()).collect()
}

fn tag_to_wire(tag: Tag) -> v1::Tag {
    v1::Tag { dot: tag.dot.packed(), hlc: tag.hlc }
}

fn tag_from_wire(tag: Option<&v1::Tag>, what: &'static str) -> Result<Tag, DecodeError> {
    let tag = tag.ok_or(DecodeError::Missing(what))?;
    Ok(Tag::new(dot(tag.dot)?, tag.hlc))
}

fn amount_to_wire(amount: Amount) -> v1::Amount {
    let value = match amount {
        Amount::Int(v) => match i64::try_from(v) {
            Ok(small) => v1::amount::Value::Int(small),
            Err(_) => v1::amount::Value::WideInt(Bytes::copy_from_slice(&v.to_le_bytes())),
        },
        Amount::Float(v) => v1::amount::Value::Float(v),
    };
    v1::Amount { value: Some(value) }
}

fn amount_from_wire(amount: Option<&v1::Amount>) -> Result<Amount, DecodeError> {
    match amount.and_then(|a| a.value.as_ref()).ok_or(DecodeError::Missing("increment.amount"))? {
        v1::amount::Value::Int(v) => Ok(Amount::Int(*v as i128)),
        v1::amount::Value::Float(v) => Ok(Amount::Float(*v)),
        v1::amount::Value::WideInt(bytes) => {
            let raw: [u8; 16] = bytes.as_ref().try_into().map_err(|_| DecodeError::WideInteger(bytes.len()))?;
            Ok(Amount::Int(i128::from_le_bytes(raw)))
        }
    }
}

fn increment_to_wire(increment: &Increment) -> v1::Increment {
    v1::Increment {
        tag: Some(tag_to_wire(increment.tag)),
        amount: Some(amount_to_wire(increment.amount)),
        first: if increment.is_merged() { increment.first } else { 0 },
    }
}

fn increment_from_wire(increment: Option<&v1::Increment>) -> Result<Option<Increment>, DecodeError> {
    increment
        .map(|i| {
            let tag = tag_from_wire(i.tag.as_ref(), "increment.tag")?;
            let first = match i.first {
                0 => tag.dot.seq(),
                first if first < tag.dot.seq() => first,
                first => return Err(DecodeError::Invalid(format!("increment {tag:?} merged from {first}"))),
            };
            Ok(Increment { tag, amount: amount_from_wire(i.amount.as_ref())?, first })
        })
        .transpose()
}

/// The (dot, first sequence) runs of merged increments a removal observed,
/// as two parallel packed lists.
fn runs_to_wire(runs: &[(Dot, u64)]) -> (Vec<u64>, Vec<u64>) {
    runs.iter().map(|(last, first)| (last.packed(), *first)).unzip()
}

fn runs_from_wire(lasts: &[u64], firsts: &[u64]) -> Result<Box<[(Dot, u64)]>, DecodeError> {
    if lasts.len() != firsts.len() {
        return Err(DecodeError::Invalid(format!("{} run ends for {} run starts", lasts.len(), firsts.len())));
    }
    lasts
        .iter()
        .zip(firsts)
        .map(|(&last, &first)| {
            let last = dot(last)?;
            if first == 0 || first >= last.seq() {
                return Err(DecodeError::Invalid(format!("run of {last:?} from {first}")));
            }
            Ok((last, first))
        })
        .collect()
}

fn string_to_wire(delta: &RegisterDelta<ShortBytes>) -> v1::StringDelta {
    let (removed_run_last, removed_run_first) = runs_to_wire(&delta.removed_runs);
    v1::StringDelta {
        removed: packed(&delta.removed),
        entry_tag: delta.entry.as_ref().map(|e| tag_to_wire(e.tag)),
        entry_value: delta.entry.as_ref().map(|e| Bytes::copy_from_slice(&e.value)).unwrap_or_default(),
        increment: delta.increment.as_ref().map(increment_to_wire),
        removed_run_last,
        removed_run_first,
    }
}

fn string_from_wire(delta: &v1::StringDelta) -> Result<RegisterDelta<ShortBytes>, DecodeError> {
    let entry = match &delta.entry_tag {
        Some(tag) => {
            Some(Entry { tag: tag_from_wire(Some(tag), "entry_tag")?, value: ShortBytes::new(&delta.entry_value) })
        }
        None => None,
    };
    Ok(RegisterDelta {
        removed: dots(&delta.removed)?.into(),
        entry,
        increment: increment_from_wire(delta.increment.as_ref())?,
        removed_runs: runs_from_wire(&delta.removed_run_last, &delta.removed_run_first)?,
    })
}

fn score_to_wire(delta: &RegisterDelta<F64>) -> v1::ScoreDelta {
    let (removed_run_last, removed_run_first) = runs_to_wire(&delta.removed_runs);
    v1::ScoreDelta {
        removed: packed(&delta.removed),
        entry_tag: delta.entry.as_ref().map(|e| tag_to_wire(e.tag)),
        entry_score: delta.entry.as_ref().map(|e| e.value.0).unwrap_or_default(),
        increment: delta.increment.as_ref().map(increment_to_wire),
        removed_run_last,
        removed_run_first,
    }
}

fn score_from_wire(delta: &v1::ScoreDelta) -> Result<RegisterDelta<F64>, DecodeError> {
    let entry = match &delta.entry_tag {
        Some(tag) => {
            if delta.entry_score.is_nan() {
                return Err(DecodeError::NanScore);
            }
            Some(Entry { tag: tag_from_wire(Some(tag), "entry_tag")?, value: F64(delta.entry_score) })
        }
        None => None,
    };
    let increment = increment_from_wire(delta.increment.as_ref())?;
    if let Some(Increment { amount: Amount::Float(v), .. }) = increment
        && v.is_nan()
    {
        return Err(DecodeError::NanScore);
    }
    let removed_runs = runs_from_wire(&delta.removed_run_last, &delta.removed_run_first)?;
    Ok(RegisterDelta { removed: dots(&delta.removed)?.into(), entry, increment, removed_runs })
}

fn typed_to_wire(delta: &TypedDelta) -> v1::TypedDelta {
    use v1::typed_delta::Value;
    let value = match delta {
        TypedDelta::Str(d) => Value::String(string_to_wire(d)),
        TypedDelta::Set(d) => Value::Set(v1::SetDelta {
            adds: d
                .adds
                .iter()
                .map(|(m, t)| v1::SetAdd { member: Bytes::copy_from_slice(m), tag: Some(tag_to_wire(*t)) })
                .collect(),
            removes: d
                .removes
                .iter()
                .map(|(m, ds)| v1::SetRemove { member: Bytes::copy_from_slice(m), dots: packed(ds) })
                .collect(),
        }),
        TypedDelta::Hash(d) => Value::Hash(v1::HashDelta {
            fields: d
                .fields
                .iter()
                .map(|(f, c)| v1::FieldDelta { field: Bytes::copy_from_slice(f), change: Some(string_to_wire(c)) })
                .collect(),
        }),
        TypedDelta::ZSet(d) => Value::Zset(v1::ZSetDelta {
            changes: d
                .changes
                .iter()
                .map(|(m, c)| v1::MemberDelta { member: Bytes::copy_from_slice(m), change: Some(score_to_wire(c)) })
                .collect(),
        }),
        TypedDelta::List(d) => Value::List(v1::ListDelta { ops: d.ops.iter().map(list_op_to_wire).collect() }),
    };
    v1::TypedDelta { value: Some(value) }
}

fn list_op_to_wire(op: &ListOp) -> v1::ListOp {
    use v1::list_op::Op;
    let op = match op {
        ListOp::Insert { id, anchor, value } => Op::Insert(v1::ListInsert {
            id: Some(tag_to_wire(*id)),
            anchor: anchor.map(|a| a.packed()).unwrap_or(0),
            value: Bytes::copy_from_slice(value),
        }),
        ListOp::Remove { id, by } => Op::Remove(v1::ListRemove { id: id.packed(), by: by.packed() }),
        ListOp::Assign { id, tag, value } => Op::Assign(v1::ListAssign {
            id: id.packed(),
            tag: Some(tag_to_wire(*tag)),
            value: Bytes::copy_from_slice(value),
        }),
    };
    v1::ListOp { op: Some(op) }
}

fn list_op_from_wire(op: &v1::ListOp) -> Result<ListOp, DecodeError> {
    use v1::list_op::Op;
    match op.op.as_ref().ok_or(DecodeError::Missing("list op"))? {
        Op::Insert(insert) => Ok(ListOp::Insert {
            id: tag_from_wire(insert.id.as_ref(), "insert.id")?,
            anchor: if insert.anchor == 0 { None } else { Some(dot(insert.anchor)?) },
            value: ShortBytes::new(&insert.value),
        }),
        Op::Remove(remove) => Ok(ListOp::Remove { id: dot(remove.id)?, by: dot(remove.by)? }),
        Op::Assign(assign) => Ok(ListOp::Assign {
            id: dot(assign.id)?,
            tag: tag_from_wire(assign.tag.as_ref(), "assign.tag")?,
            value: ShortBytes::new(&assign.value),
        }),
    }
}

fn typed_from_wire(delta: &v1::TypedDelta) -> Result<TypedDelta, DecodeError> {
    use v1::typed_delta::Value;
    Ok(match delta.value.as_ref().ok_or(DecodeError::Missing("typed delta"))? {
        Value::String(d) => TypedDelta::Str(string_from_wire(d)?),
        Value::Set(d) => TypedDelta::Set(SetDelta {
            adds: d
                .adds
                .iter()
                .map(|a| Ok((ShortBytes::new(&a.member), tag_from_wire(a.tag.as_ref(), "set add tag")?)))
                .collect::<Result<_, DecodeError>>()?,
            removes: d
                .removes
                .iter()
                .map(|r| Ok((ShortBytes::new(&r.member), dots(&r.dots)?.into())))
                .collect::<Result<_, DecodeError>>()?,
        }),
        Value::Hash(d) => TypedDelta::Hash(HashDelta {
            fields: d
                .fields
                .iter()
                .map(|f| {
                    let change = f.change.as_ref().ok_or(DecodeError::Missing("field change"))?;
                    Ok((ShortBytes::new(&f.field), string_from_wire(change)?))
                })
                .collect::<Result<_, DecodeError>>()?,
        }),
        Value::Zset(d) => TypedDelta::ZSet(ZSetDelta {
            changes: d
                .changes
                .iter()
                .map(|c| {
                    let change = c.change.as_ref().ok_or(DecodeError::Missing("member change"))?;
                    Ok((ShortBytes::new(&c.member), score_from_wire(change)?))
                })
                .collect::<Result<_, DecodeError>>()?,
        }),
        Value::List(d) => {
            let delta = ListDelta { ops: d.ops.iter().map(list_op_from_wire).collect::<Result<_, _>>()? };
            delta.validate().map_err(DecodeError::Invalid)?;
            TypedDelta::List(delta)
        }
    })
}

fn expiry_to_wire(delta: &ExpiryDelta) -> v1::ExpiryDelta {
    use v1::expiry_delta::Deadline as Wire;
    v1::ExpiryDelta {
        removed: packed(&delta.removed),
        entry_tag: delta.entry.map(|(tag, _)| tag_to_wire(tag)),
        deadline: delta.entry.map(|(_, deadline)| match deadline {
            Deadline::At(ms) => Wire::AtUnixMs(ms),
            Deadline::Persist => Wire::Persist(true),
        }),
    }
}

fn expiry_from_wire(delta: &v1::ExpiryDelta) -> Result<ExpiryDelta, DecodeError> {
    use v1::expiry_delta::Deadline as Wire;
    let entry = match &delta.entry_tag {
        Some(tag) => {
            let deadline = match delta.deadline.ok_or(DecodeError::Missing("expiry deadline"))? {
                Wire::AtUnixMs(ms) => Deadline::At(ms),
                Wire::Persist(_) => Deadline::Persist,
            };
            Some((tag_from_wire(Some(tag), "expiry tag")?, deadline))
        }
        None => None,
    };
    Ok(ExpiryDelta { removed: dots(&delta.removed)?, entry })
}

fn key_delta_to_wire(delta: &KeyDelta) -> v1::KeyDelta {
    v1::KeyDelta {
        key: Bytes::copy_from_slice(&delta.key),
        parts: delta.parts.iter().map(typed_to_wire).collect(),
        expiry: delta.expiry.as_ref().map(expiry_to_wire),
    }
}

fn key_delta_from_wire(delta: &v1::KeyDelta) -> Result<KeyDelta, DecodeError> {
    let mut decoded = KeyDelta::new(&delta.key);
    decoded.parts = delta.parts.iter().map(typed_from_wire).collect::<Result<_, _>>()?;
    decoded.expiry = delta.expiry.as_ref().map(expiry_from_wire).transpose()?;
    Ok(decoded)
}

fn context_to_wire(context: &CausalContext) -> v1::CausalContext {
    v1::CausalContext {
        vector: context.vector().iter().map(|(r, s)| v1::VectorEntry { replica: r.0 as u32, seq: s }).collect(),
        cloud: context.cloud().map(|d| d.packed()).collect(),
    }
}

fn context_from_wire(context: &v1::CausalContext) -> Result<CausalContext, DecodeError> {
    let mut vector = Vec::with_capacity(context.vector.len());
    for entry in &context.vector {
        let replica = u16::try_from(entry.replica).map_err(|_| DecodeError::InvalidDot(entry.replica as u64))?;
        if entry.seq > meridian_crdt::dot::DOT_SEQ_MAX {
            return Err(DecodeError::InvalidDot(entry.seq));
        }
        vector.push((ReplicaId(replica), entry.seq));
    }
    Ok(CausalContext::from_parts(VersionVector::from_entries(vector), dots(&context.cloud)?))
}

/// A delta as its wire message.
pub fn delta_to_wire(delta: &Delta) -> v1::Delta {
    let kind = match delta {
        Delta::Key(k) => v1::delta::Kind::Key(key_delta_to_wire(k)),
        Delta::Flush(context) => v1::delta::Kind::Flush(context_to_wire(context)),
    };
    v1::Delta { kind: Some(kind) }
}

/// A delta from its wire message.
pub fn delta_from_wire(delta: &v1::Delta) -> Result<Delta, DecodeError> {
    match delta.kind.as_ref().ok_or(DecodeError::Missing("delta kind"))? {
        v1::delta::Kind::Key(k) => Ok(Delta::Key(key_delta_from_wire(k)?)),
        v1::delta::Kind::Flush(c) => Ok(Delta::Flush(context_from_wire(c)?)),
    }
}

/// A delta encoded as protobuf bytes: the bytes prost makes of
/// [`delta_to_wire`], written straight from the delta
/// ([`crate::direct::encode_delta_into`]).
pub fn encode_delta(delta: &Delta) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    crate::direct::encode_delta_into(delta, &mut buf);
    buf
}

/// A delta decoded from protobuf bytes.
pub fn decode_delta(bytes: &[u8]) -> Result<Delta, DecodeError> {
    let wire = v1::Delta::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    delta_from_wire(&wire)
}

fn optional_dot(packed: u64) -> Result<Option<Dot>, DecodeError> {
    if packed == 0 { Ok(None) } else { dot(packed).map(Some) }
}

fn list_image_to_wire(image: &ListImage) -> v1::ListImage {
    v1::ListImage {
        elements: image
            .elements
            .iter()
            .map(|e| v1::ListElement {
                id: Some(tag_to_wire(e.id)),
                run_min: Some(tag_to_wire(e.run_min)),
                live: e.value.is_some(),
                value: e.value.as_ref().map(|(v, _)| Bytes::copy_from_slice(v)).unwrap_or_default(),
                value_tag: e.value.as_ref().map(|(_, t)| tag_to_wire(*t)),
                removed_by: e.removed_by.map(|d| d.packed()).unwrap_or(0),
            })
            .collect(),
        pending: image
            .pending
            .iter()
            .map(|p| v1::ListPending {
                missing: p.missing.packed(),
                inserts: p
                    .inserts
                    .iter()
                    .map(|(id, value, born_dead)| v1::ListPendingInsert {
                        id: Some(tag_to_wire(*id)),
                        value: Bytes::copy_from_slice(value),
                        born_dead: *born_dead,
                    })
                    .collect(),
                assign_tag: p.assign.as_ref().map(|(t, _)| tag_to_wire(*t)),
                assign_value: p.assign.as_ref().map(|(_, v)| Bytes::copy_from_slice(v)).unwrap_or_default(),
                removed_by: p.removed_by.map(|d| d.packed()).unwrap_or(0),
            })
            .collect(),
        floor: image.floor.iter().map(|(replica, seq)| Dot::new(replica, seq).packed()).collect(),
    }
}

fn list_image_from_wire(image: &v1::ListImage) -> Result<ListImage, DecodeError> {
    let elements = image
        .elements
        .iter()
        .map(|e| {
            let value = if e.live {
                Some((ShortBytes::new(&e.value), tag_from_wire(e.value_tag.as_ref(), "list value_tag")?))
            } else {
                None
            };
            Ok(ElementImage {
                id: tag_from_wire(e.id.as_ref(), "list element id")?,
                run_min: tag_from_wire(e.run_min.as_ref(), "list run_min")?,
                value,
                removed_by: optional_dot(e.removed_by)?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    let pending = image
        .pending
        .iter()
        .map(|p| {
            let assign = match &p.assign_tag {
                Some(tag) => Some((tag_from_wire(Some(tag), "assign tag")?, ShortBytes::new(&p.assign_value))),
                None => None,
            };
            Ok(PendingImage {
                missing: dot(p.missing)?,
                inserts: p
                    .inserts
                    .iter()
                    .map(|i| {
                        Ok((tag_from_wire(i.id.as_ref(), "pending insert id")?, ShortBytes::new(&i.value), i.born_dead))
                    })
                    .collect::<Result<_, DecodeError>>()?,
                assign,
                removed_by: optional_dot(p.removed_by)?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    let floor = VersionVector::from_entries(dots(&image.floor)?.into_iter().map(|d| (d.replica(), d.seq())));
    Ok(ListImage { elements, pending, floor })
}

fn key_snapshot_to_wire(key: &KeySnapshot) -> v1::KeySnapshot {
    use v1::expiry_entry::Deadline as Wire;
    v1::KeySnapshot {
        key: Bytes::copy_from_slice(&key.key),
        parts: key.parts.iter().map(typed_to_wire).collect(),
        expiry: key
            .expiry
            .iter()
            .map(|(tag, deadline)| v1::ExpiryEntry {
                tag: Some(tag_to_wire(*tag)),
                deadline: Some(match deadline {
                    Deadline::At(ms) => Wire::AtUnixMs(*ms),
                    Deadline::Persist => Wire::Persist(true),
                }),
            })
            .collect(),
        list: key.list.as_ref().map(list_image_to_wire),
    }
}

fn key_snapshot_from_wire(key: &v1::KeySnapshot) -> Result<KeySnapshot, DecodeError> {
    use v1::expiry_entry::Deadline as Wire;
    Ok(KeySnapshot {
        key: ShortBytes::new(&key.key),
        parts: key.parts.iter().map(typed_from_wire).collect::<Result<_, _>>()?,
        expiry: key
            .expiry
            .iter()
            .map(|e| {
                let deadline = match e.deadline.ok_or(DecodeError::Missing("expiry deadline"))? {
                    Wire::AtUnixMs(ms) => Deadline::At(ms),
                    Wire::Persist(_) => Deadline::Persist,
                };
                Ok((tag_from_wire(e.tag.as_ref(), "expiry tag")?, deadline))
            })
            .collect::<Result<_, DecodeError>>()?,
        list: key.list.as_ref().map(list_image_from_wire).transpose()?,
    })
}

/// A keyspace's whole state as a snapshot message. Keys are in byte order and
/// each value's elements in a fixed order, so equal keyspaces encode to equal
/// bytes.
pub fn snapshot_to_wire(keyspace: &Keyspace) -> v1::ShardSnapshot {
    v1::ShardSnapshot {
        context: Some(context_to_wire(keyspace.context())),
        keys: keyspace.snapshot().iter().map(key_snapshot_to_wire).collect(),
    }
}

/// Rebuilds a keyspace (whose local writes will originate at `replica`) from
/// a snapshot message. A snapshot that decodes but breaks an invariant is
/// refused with [`DecodeError::Invalid`].
pub fn snapshot_from_wire(replica: ReplicaId, snapshot: &v1::ShardSnapshot) -> Result<Keyspace, DecodeError> {
    let context = context_from_wire(snapshot.context.as_ref().ok_or(DecodeError::Missing("snapshot context"))?)?;
    // Key by key into the keyspace: no list of every key's snapshot.
    let mut undecodable = None;
    let keys = snapshot.keys.iter().map_while(|key| match key_snapshot_from_wire(key) {
        Ok(key) => Some(key),
        Err(error) => {
            undecodable = Some(error);
            None
        }
    });
    let restored = Keyspace::restore_each(replica, context, snapshot.keys.len(), keys);
    match undecodable {
        Some(error) => Err(error),
        None => restored.map_err(DecodeError::Invalid),
    }
}

/// A keyspace's snapshot encoded as protobuf bytes.
pub fn encode_snapshot(keyspace: &Keyspace) -> Vec<u8> {
    snapshot_to_wire(keyspace).encode_to_vec()
}

/// A snapshot taken earlier (its context and keys, as `Keyspace::context`
/// and `Keyspace::snapshot` gave them) encoded as protobuf bytes: the same
/// bytes as [`encode_snapshot`] of that keyspace, produced without holding it.
pub fn encode_snapshot_parts(context: &CausalContext, keys: &[KeySnapshot]) -> Vec<u8> {
    encode_snapshot_each(context, keys)
}

/// [`encode_snapshot_parts`] of keys produced one at a time (in byte
/// order), without a list of every key's wire form: the same bytes.
pub fn encode_snapshot_each<K: core::borrow::Borrow<KeySnapshot>>(
    context: &CausalContext,
    keys: impl IntoIterator<Item = K>,
) -> Vec<u8> {
    let mut bytes = v1::ShardSnapshot { context: Some(context_to_wire(context)), keys: Vec::new() }.encode_to_vec();
    for key in keys {
        encode_snapshot_key(key.borrow(), &mut bytes);
    }
    bytes
}

/// Appends one key of a snapshot to `buf` as it appears inside an encoded
/// `ShardSnapshot` (its `keys` field): a snapshot can be encoded key by key
/// into chunks whose concatenation decodes as one message.
/// Written straight from the key ([`crate::direct::encode_snapshot_key_into`]):
/// the bytes prost makes of its wire message.
pub fn encode_snapshot_key(key: &KeySnapshot, buf: &mut Vec<u8>) {
    crate::direct::encode_snapshot_key_into(key, buf);
}

/// A keyspace decoded from snapshot bytes held in `Bytes`: keys and values
/// are decoded as slices of `bytes` instead of copies (fewer allocations per
/// key than [`decode_snapshot`]).
pub fn decode_snapshot_shared(replica: ReplicaId, bytes: Bytes) -> Result<Keyspace, DecodeError> {
    let key = |range| v1::KeySnapshot::decode(bytes.slice(range));
    decode_snapshot_with(replica, &bytes, key, || v1::ShardSnapshot::decode(bytes.clone()))
}

/// A keyspace decoded from snapshot bytes.
pub fn decode_snapshot(replica: ReplicaId, bytes: &[u8]) -> Result<Keyspace, DecodeError> {
    decode_snapshot_with(
        replica,
        bytes,
        |range| v1::KeySnapshot::decode(&bytes[range]),
        || v1::ShardSnapshot::decode(bytes),
    )
}

/// Decodes `bytes` key by key when their layout allows it (with
/// `decode_key`), and as one whole message (`decode_whole`) otherwise.
fn decode_snapshot_with(
    replica: ReplicaId,
    bytes: &[u8],
    decode_key: impl Fn(core::ops::Range<usize>) -> Result<v1::KeySnapshot, prost::DecodeError>,
    decode_whole: impl FnOnce() -> Result<v1::ShardSnapshot, prost::DecodeError>,
) -> Result<Keyspace, DecodeError> {
    match snapshot_layout(bytes) {
        Some(layout) => decode_laid_out(replica, bytes, layout, decode_key),
        None => {
            let wire = decode_whole().map_err(|e| DecodeError::Malformed(e.to_string()))?;
            snapshot_from_wire(replica, &wire)
        }
    }
}

/// Where a `ShardSnapshot`'s fields lie in its encoding, read without
/// decoding them: the one `context` field and the number of `keys`.
struct SnapshotLayout {
    context: core::ops::Range<usize>,
    keys: usize,
}

/// The layout of a snapshot whose fields are all length-delimited `context`
/// (once) and `keys` fields — what [`encode_snapshot`] writes — so that its
/// keys can be decoded one at a time instead of into a list of every key's
/// wire form (at millions of keys that list was most of a snapshot's
/// decoding time and memory). `None` for anything else (unknown or repeated
/// fields, a truncated field: the whole-message decoder then decides, and
/// names the error).
fn snapshot_layout(bytes: &[u8]) -> Option<SnapshotLayout> {
    let (mut context, mut keys) = (None, 0);
    let mut fields = SnapshotFields { bytes, at: 0 };
    for field in &mut fields {
        match field? {
            (1, range) if context.is_none() => context = Some(range),
            (2, _) => keys += 1,
            _ => return None,
        }
    }
    Some(SnapshotLayout { context: context?, keys })
}

/// The length-delimited fields of a message, as (field number, byte range
/// of the payload); `Some(None)` ends the walk at anything else.
struct SnapshotFields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for SnapshotFields<'_> {
    type Item = Option<(u32, core::ops::Range<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let mut rest = &self.bytes[self.at..];
        let before = rest.len();
        let Ok((number, wire_type)) = prost::encoding::decode_key(&mut rest) else {
            return Some(None);
        };
        if wire_type != prost::encoding::WireType::LengthDelimited {
            return Some(None);
        }
        let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
            return Some(None);
        };
        let start = self.at + (before - rest.len());
        let Some(end) = usize::try_from(len).ok().and_then(|len| start.checked_add(len)) else {
            return Some(None);
        };
        if end > self.bytes.len() {
            return Some(None);
        }
        self.at = end;
        Some(Some((number, start..end)))
    }
}

/// Decodes a snapshot of a known layout key by key into the keyspace.
fn decode_laid_out(
    replica: ReplicaId,
    bytes: &[u8],
    layout: SnapshotLayout,
    decode_key: impl Fn(core::ops::Range<usize>) -> Result<v1::KeySnapshot, prost::DecodeError>,
) -> Result<Keyspace, DecodeError> {
    let wire_context =
        v1::CausalContext::decode(&bytes[layout.context.clone()]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let context = context_from_wire(&wire_context)?;
    let mut undecodable = None;
    let keys = SnapshotFields { bytes, at: 0 }.flatten().filter(|(number, _)| *number == 2).map_while(|(_, range)| {
        let decoded = decode_key(range)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
            .and_then(|wire| key_snapshot_from_wire(&wire));
        match decoded {
            Ok(key) => Some(key),
            Err(error) => {
                undecodable = Some(error);
                None
            }
        }
    });
    let restored = Keyspace::restore_each(replica, context, layout.keys, keys);
    match undecodable {
        Some(error) => Err(error),
        None => restored.map_err(DecodeError::Invalid),
    }
}

#[cfg(test)]
mod snapshot_layout_tests {
    use meridian_crdt::keyspace::{End, ExpiryChange, Moment};

    use super::*;

    fn at(n: u64) -> Moment {
        Moment { hlc: n << 20, wall_ms: 1_000 }
    }

    fn sample() -> Keyspace {
        let mut keyspace = Keyspace::new(ReplicaId(2));
        for i in 0..50u64 {
            keyspace.set(format!("s{i}").as_bytes(), b"value", ExpiryChange::Clear, at(i + 1));
        }
        keyspace.incr_by(b"n", 7, at(60)).expect("incr");
        keyspace.push(b"l", &[b"a".as_slice(), b"b"], End::Back, at(61)).expect("push");
        keyspace.sadd(b"set", &[b"m"], at(62)).expect("sadd");
        keyspace.hset(b"h", &[(b"f".as_slice(), b"v".as_slice())], at(63)).expect("hset");
        keyspace.delete(b"s3", at(64));
        keyspace
    }

    /// The whole-message decoder, as before the layout.
    fn whole(bytes: &[u8]) -> Result<Keyspace, DecodeError> {
        let wire = v1::ShardSnapshot::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        snapshot_from_wire(ReplicaId(1), &wire)
    }

    /// Key by key (both entry points) decodes what the whole-message
    /// decoder does, wherever the context lies; anything else falls back
    /// to it, errors included.
    #[test]
    fn keys_decoded_one_by_one_equal_the_whole_message() {
        let bytes = encode_snapshot(&sample());
        assert_eq!(snapshot_layout(&bytes).map(|layout| layout.keys), Some(sample().snapshot().len()));
        let expected = whole(&bytes).expect("decodes");
        assert_eq!(decode_snapshot(ReplicaId(1), &bytes).expect("decodes"), expected);
        assert_eq!(decode_snapshot_shared(ReplicaId(1), Bytes::from(bytes.clone())).expect("decodes"), expected);

        // The context after the keys.
        let wire = v1::ShardSnapshot::decode(bytes.as_slice()).expect("decodes");
        let mut moved = v1::ShardSnapshot { context: None, keys: wire.keys.clone() }.encode_to_vec();
        moved.extend(v1::ShardSnapshot { context: wire.context.clone(), keys: Vec::new() }.encode_to_vec());
        assert!(snapshot_layout(&moved).is_some());
        assert_eq!(decode_snapshot(ReplicaId(1), &moved).expect("decodes"), expected);

        // An unknown field: the whole-message decoder skips it.
        let mut unknown = bytes.clone();
        unknown.extend([0x18, 0x05]); // field 3, varint 5
        assert!(snapshot_layout(&unknown).is_none());
        assert_eq!(decode_snapshot(ReplicaId(1), &unknown).expect("decodes"), expected);

        // Cut anywhere: an error, never a partial keyspace.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_snapshot(ReplicaId(1), &bytes[..cut]).is_err(), "cut at {cut}");
        }
        // No context: the error names it.
        let keys_only = v1::ShardSnapshot { context: None, keys: wire.keys.clone() }.encode_to_vec();
        assert!(matches!(decode_snapshot(ReplicaId(1), &keys_only), Err(DecodeError::Missing(_))));
        // A key that does not decode is an error.
        let mut bad_key = v1::ShardSnapshot { context: wire.context.clone(), keys: Vec::new() }.encode_to_vec();
        bad_key.extend([0x12, 0x02, 0xff, 0xff]);
        assert!(decode_snapshot(ReplicaId(1), &bad_key).is_err());
    }
}
