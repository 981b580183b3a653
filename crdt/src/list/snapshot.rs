//! A list's replicated state as plain data, for shard snapshots.
//!
//! Unlike the other types, a list cannot be rebuilt by replaying inserts: an
//! element keeps `run_min` (the smallest tag of the collected tombstones that
//! stood before it) and may have been inserted after a tombstone that is gone,
//! so its original anchor no longer exists. The image carries the elements as
//! they stand, with their tombstones, and what is pending; importing it checks
//! every invariant, so a snapshot from a broken or hostile peer is refused.
//! It also carries the list's floor (every vector it collected with): a full
//! sync needs it to tell what the other side collected (D97), and a restored
//! list, to recognise late duplicates of what it collected.

use super::{Body, Element, PendingInsert, RgaList, Waiting};
use crate::context::VersionVector;
use crate::dot::{Dot, Tag};
use crate::short_bytes::ShortBytes;

/// One element of a list image.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementImage {
    /// Identity and time of the insert.
    pub id: Tag,
    /// Smallest tag among this element and the collected run before it.
    pub run_min: Tag,
    /// For a live element: its value and the tag that set it.
    pub value: Option<(ShortBytes, Tag)>,
    /// For a tombstone: the smallest removal dot known (none if a flush removed it).
    pub removed_by: Option<Dot>,
}

/// Everything waiting for one missing element.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingImage {
    /// The element waited for.
    pub missing: Dot,
    /// Inserts anchored on it: (id, value, integrates as a tombstone).
    pub inserts: Vec<(Tag, ShortBytes, bool)>,
    /// The greatest LSET of it.
    pub assign: Option<(Tag, ShortBytes)>,
    /// The smallest removal dot of it.
    pub removed_by: Option<Dot>,
}

/// A list's replicated state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListImage {
    /// Elements in list order, tombstones included.
    pub elements: Vec<ElementImage>,
    /// Operations waiting for missing elements, by the element waited for.
    pub pending: Vec<PendingImage>,
    /// Every vector the list collected with, joined (empty if it never
    /// dropped a tombstone): an element it covers was applied here, so one
    /// not held was collected.
    pub floor: VersionVector,
}

impl RgaList {
    /// The list's replicated state as plain data.
    pub fn image(&self) -> ListImage {
        let elements = self
            .elements
            .iter()
            .map(|e| match &e.body {
                Body::Live { value, value_tag } => ElementImage {
                    id: e.id,
                    run_min: e.run_min,
                    value: Some((value.clone(), *value_tag)),
                    removed_by: None,
                },
                Body::Removed { by } => ElementImage { id: e.id, run_min: e.run_min, value: None, removed_by: *by },
            })
            .collect();
        let pending = self
            .pending
            .iter()
            .map(|(missing, waiting)| PendingImage {
                missing: *missing,
                inserts: waiting.inserts.iter().map(|p| (p.id, p.value.clone(), p.born_dead)).collect(),
                assign: waiting.assign.clone(),
                removed_by: waiting.removed_by,
            })
            .collect();
        ListImage { elements, pending, floor: self.floor.as_deref().cloned().unwrap_or_default() }
    }

    /// Rebuilds a list from its image, refusing one that breaks an invariant.
    pub fn from_image(image: &ListImage) -> Result<RgaList, String> {
        let mut list = RgaList::default();
        for element in &image.elements {
            let body = match (&element.value, element.removed_by) {
                (Some((value, value_tag)), None) => Body::Live { value: value.clone(), value_tag: *value_tag },
                (None, by) => Body::Removed { by },
                (Some(_), Some(_)) => return Err(format!("element {:?} is both live and removed", element.id)),
            };
            list.elements.push_back(Element { id: element.id, run_min: element.run_min, body });
        }
        for pending in &image.pending {
            let mut inserts: Vec<PendingInsert> = pending
                .inserts
                .iter()
                .map(|(id, value, born_dead)| PendingInsert { id: *id, value: value.clone(), born_dead: *born_dead })
                .collect();
            inserts.sort_by_key(|a| a.id);
            let waiting = Waiting { inserts, assign: pending.assign.clone(), removed_by: pending.removed_by };
            if waiting.len() == 0 || list.pending.insert(pending.missing, waiting).is_some() {
                return Err(format!("pending entry for {:?} is empty or repeated", pending.missing));
            }
        }
        if !image.floor.is_empty() {
            // An insert that arrived for an element already collected (a
            // flush's race, `RgaList::remove_covered`) waits for nothing; the
            // next collection would drop it, and a restore must not refuse it.
            list.pending.retain(|missing, _| !image.floor.contains(*missing));
            list.floor = Some(Box::new(image.floor.clone()));
        }
        list.recount();
        list.validate()?;
        Ok(list)
    }
}
