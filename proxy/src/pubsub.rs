//! Pub/sub on one node: the subscription registry and message delivery.
//!
//! PUBLISH encodes the message once per subscriber protocol (a RESP2 array or
//! a RESP3 push) straight into each subscriber's mailbox on its
//! [`ClientHandle`] and wakes its connection, which writes the mailbox out.
//! A subscriber that does not read fast enough is bounded like Redis's
//! `client-output-buffer-limit pubsub` hard limit: once its unwritten
//! messages pass [`ServerState::pubsub_output_limit`] bytes, it is
//! disconnected instead of growing memory without bound.
//!
//! Messages are local to the node (and so to the database endpoint it
//! serves); see docs/semantics.md for what crosses nodes and regions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use crate::cmd::glob_match;
use crate::context::{ClientHandle, ServerState};
use crate::reply::{Protocol, Reply};

/// One subscriber of a channel or pattern.
struct Subscriber {
    handle: Arc<ClientHandle>,
    protocol: Protocol,
}

/// Who is subscribed to what.
#[derive(Default)]
pub struct PubSub {
    channels: HashMap<Bytes, HashMap<u64, Subscriber>>,
    patterns: HashMap<Bytes, HashMap<u64, Subscriber>>,
}

/// Which registry a subscription is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SUBSCRIBE: an exact channel name.
    Channel,
    /// PSUBSCRIBE: a glob pattern.
    Pattern,
}

impl PubSub {
    fn map(&mut self, kind: Kind) -> &mut HashMap<Bytes, HashMap<u64, Subscriber>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }
}

impl ServerState {
    fn pubsub_write(&self) -> std::sync::RwLockWriteGuard<'_, PubSub> {
        // Every update leaves the maps consistent before it can panic.
        self.pubsub.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pubsub_read(&self) -> std::sync::RwLockReadGuard<'_, PubSub> {
        self.pubsub.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes a client to a channel or pattern (again: updates the
    /// protocol its messages are written in).
    pub fn subscribe(&self, kind: Kind, name: &Bytes, handle: &Arc<ClientHandle>, protocol: Protocol) {
        self.pubsub_write()
            .map(kind)
            .entry(name.clone())
            .or_default()
            .insert(handle.id, Subscriber { handle: handle.clone(), protocol });
    }

    /// Removes a client's subscription to a channel or pattern.
    pub fn unsubscribe(&self, kind: Kind, name: &[u8], id: u64) {
        let mut pubsub = self.pubsub_write();
        let map = pubsub.map(kind);
        if let Some(subscribers) = map.get_mut(name) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                map.remove(name);
            }
        }
    }

    /// PUBLISH: delivers `message` to every subscriber of `channel` and of
    /// every pattern matching it; returns how many deliveries were made.
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let limit = self.pubsub_output_limit.load(Ordering::Relaxed);
        let pubsub = self.pubsub_read();
        let mut delivered = 0;
        let mut encoded: [Option<BytesMut>; 2] = [None, None];
        if let Some(subscribers) = pubsub.channels.get(channel) {
            for subscriber in subscribers.values() {
                let bytes = encoded[subscriber.protocol as usize].get_or_insert_with(|| {
                    let mut out = BytesMut::new();
                    let mut reply = Reply::new(&mut out, subscriber.protocol);
                    reply.push(3);
                    reply.bulk(b"message");
                    reply.bulk(channel);
                    reply.bulk(message);
                    out
                });
                deliver(&subscriber.handle, bytes, limit);
                delivered += 1;
            }
        }
        for (pattern, subscribers) in &pubsub.patterns {
            if !glob_match(pattern, channel, false) {
                continue;
            }
            for subscriber in subscribers.values() {
                let mut out = BytesMut::new();
                let mut reply = Reply::new(&mut out, subscriber.protocol);
                reply.push(4);
                reply.bulk(b"pmessage");
                reply.bulk(pattern);
                reply.bulk(channel);
                reply.bulk(message);
                deliver(&subscriber.handle, &out, limit);
                delivered += 1;
            }
        }
        delivered
    }

    /// PUBSUB CHANNELS: the channels with at least one subscriber, matching
    /// `pattern` if given.
    pub fn active_channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.pubsub_read()
            .channels
            .keys()
            .filter(|channel| pattern.is_none_or(|p| glob_match(p, channel, false)))
            .cloned()
            .collect()
    }

    /// PUBSUB NUMSUB: the number of subscribers of `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        self.pubsub_read().channels.get(channel).map_or(0, HashMap::len)
    }

    /// PUBSUB NUMPAT: the number of pattern subscriptions (over all clients).
    pub fn pattern_subscriptions(&self) -> usize {
        self.pubsub_read().patterns.values().map(HashMap::len).sum()
    }

    /// (channels, patterns) with at least one subscriber (INFO stats).
    pub fn pubsub_counts(&self) -> (usize, usize) {
        let pubsub = self.pubsub_read();
        (pubsub.channels.len(), pubsub.patterns.len())
    }
}

/// Appends a message to a subscriber's mailbox and wakes its connection; a
/// subscriber whose unwritten messages would pass `limit` bytes (0: no limit)
/// is killed instead.
fn deliver(handle: &ClientHandle, message: &[u8], limit: usize) {
    if handle.is_killed() {
        return;
    }
    {
        let mut mailbox = handle.mailbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if limit > 0 && mailbox.len() + message.len() > limit {
            drop(mailbox);
            tracing::warn!(
                client = handle.id,
                limit,
                "pub/sub subscriber too slow: output buffer limit reached, closing it"
            );
            handle.kill();
            return;
        }
        mailbox.extend_from_slice(message);
    }
    handle.wake.notify_one();
}
