//! A client of a shard served in this process, driven by a router without a
//! socket: the router's in-process call to a local shard.
//!
//! It runs commands with [`crate::connection::execute`] as a connection
//! would, and does in-process what a connection does around it: waits for a
//! lapsed write lease before a write, commits the writes before their
//! replies go out, answers WAIT once the replicas acknowledged, and waits
//! for a blocking command to be served. The client is registered with the
//! server like any other (CLIENT LIST shows it, CLIENT KILL and the server's
//! stop end it) and deregistered when dropped.

use std::sync::Arc;

use bytes::BytesMut;

use crate::connection::{awaits_lease, execute};
use crate::context::{ClientHandle, ClientState, ServerState};
use crate::reply::Reply;

/// The shard's server went away (stopped, failed over) or killed this
/// client: what it ran may or may not have taken effect.
#[derive(Debug)]
pub(crate) struct Lost;

/// What must happen, asynchronously, before a command's reply is complete.
pub(crate) enum FollowUp {
    None,
    /// A blocking command found nothing: wait until it is served.
    Blocked(crate::blocking::Block),
    /// WAIT: count the replicas that acknowledge the writes so far.
    Wait(usize, Option<std::time::Duration>),
    /// DEBUG SLEEP.
    Sleep(std::time::Duration),
}

/// One in-process client of a shard.
pub(crate) struct LocalClient {
    server: Arc<ServerState>,
    client: ClientState,
    handle: Arc<ClientHandle>,
}

impl LocalClient {
    /// A client of `server`, registered under `addr` (the router's client).
    pub(crate) fn new(server: Arc<ServerState>, addr: String) -> LocalClient {
        let mut client = ClientState::new(&server);
        let handle = server.register_client(client.id, addr, "in-process".into());
        client.handle = Some(handle.clone());
        LocalClient { server, client, handle }
    }

    /// True if the shard's server ended this client.
    pub(crate) fn lost(&self) -> bool {
        self.handle.is_killed()
    }

    /// True if `args` must wait for the write lease before it runs.
    pub(crate) fn needs_lease(&self, args: &[&[u8]]) -> bool {
        self.server.replication().is_some() && self.server.lease_lapsed() && awaits_lease(&self.client, args)
    }

    /// Waits (bounded) for the write lease, committing the writes before.
    pub(crate) async fn await_lease(&mut self) -> Result<(), Lost> {
        self.commit()?;
        tokio::select! {
            _ = self.server.await_write_lease(crate::replication::LEASE_WAIT) => Ok(()),
            _ = self.handle.kill.notified() => Err(Lost),
        }
    }

    /// Runs one command, its reply appended to `out` unless a follow-up
    /// completes it.
    pub(crate) fn execute(&mut self, args: &[&[u8]], out: &mut BytesMut) -> Result<FollowUp, Lost> {
        if self.lost() {
            return Err(Lost);
        }
        // One command per call, with time passing in between.
        self.client.wall.clear();
        execute(&self.server, &mut self.client, args, out);
        if let Some(block) = self.client.blocked.take() {
            return Ok(FollowUp::Blocked(block));
        }
        if let Some((replicas, timeout)) = self.client.wait.take() {
            return Ok(FollowUp::Wait(replicas, timeout));
        }
        if let Some(pause) = self.client.sleep.take() {
            return Ok(FollowUp::Sleep(pause));
        }
        Ok(FollowUp::None)
    }

    /// Completes a command's reply in `out`.
    pub(crate) async fn follow(&mut self, follow: FollowUp, out: &mut BytesMut) -> Result<(), Lost> {
        match follow {
            FollowUp::None => Ok(()),
            FollowUp::Blocked(block) => {
                let reply = self.wait_unblocked(block).await?;
                // The pop that served it is a write of its own.
                if self.server.is_journaling() {
                    self.client.sync_target = Some(self.server.journal_position());
                }
                out.extend_from_slice(&reply);
                Ok(())
            }
            FollowUp::Wait(replicas, timeout) => {
                self.commit()?;
                let acked = tokio::select! {
                    acked = self.server.wait_for_replicas(replicas, timeout) => acked,
                    _ = self.handle.kill.notified() => return Err(Lost),
                };
                Reply::new(out, self.client.protocol).integer(acked as i64);
                Ok(())
            }
            FollowUp::Sleep(pause) => {
                tokio::time::sleep(pause).await;
                Ok(())
            }
        }
    }

    /// Makes the writes run so far durable and replicated as the server's
    /// policy says: before their replies go out.
    pub(crate) fn commit(&mut self) -> Result<(), Lost> {
        match self.client.sync_target.take() {
            Some(target) if !self.server.commit_writes(target) => Err(Lost),
            _ => Ok(()),
        }
    }

    async fn wait_unblocked(&mut self, block: crate::blocking::Block) -> Result<BytesMut, Lost> {
        let id = self.client.id;
        let deadline = block.expired();
        tokio::pin!(deadline);
        let mut armed = true;
        loop {
            if let Some(reply) = self.handle.take_unblocked() {
                return Ok(reply);
            }
            if self.handle.is_killed() {
                self.server.unblock(id);
                return Err(Lost);
            }
            tokio::select! {
                _ = self.handle.wake.notified() => {}
                _ = self.handle.kill.notified() => {
                    self.server.unblock(id);
                    return Err(Lost);
                }
                _ = &mut deadline, if armed => {
                    if self.server.unblock(id) {
                        let mut reply = BytesMut::new();
                        Reply::new(&mut reply, self.client.protocol).null_array();
                        return Ok(reply);
                    }
                    // Served just as the deadline passed: its reply is on the way.
                    armed = false;
                }
            }
        }
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        crate::cmd::pubsub::unsubscribe_all(&self.server, &mut self.client);
        self.server.unblock(self.client.id);
        self.server.unwatch_all(self.client.id);
        self.server.deregister_client(self.client.id);
    }
}
