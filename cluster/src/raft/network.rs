//! The Raft transport: openraft's RPCs over the `ClusterRaft` gRPC service.
//!
//! Requests and responses are openraft's own types serialized to JSON and
//! carried as bytes ([`meridian_proto::v1::RaftPayload`]). A remote Raft
//! error travels inside the payload (`Result<response, RaftError>`); a gRPC
//! failure means the peer is unreachable, and openraft backs off and retries.
//! Channels connect lazily and reconnect by themselves, so a peer that is
//! down when a node starts is reached once it comes up.

use std::time::Duration;

use meridian_proto::v1::cluster_raft_client::ClusterRaftClient;
use meridian_proto::v1::{ClusterReply, JoinRequest, RaftPayload};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::{NodeId, TypeConfig};

/// Largest gRPC message a member sends or accepts, in bytes. Append batches
/// are bounded by openraft's `max_payload_entries` and snapshots are sent in
/// chunks of `snapshot_max_chunk_size` (set well below this), so only a broken
/// or hostile peer hits it.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A gRPC client of one member's `ClusterRaft` service.
#[derive(Clone)]
pub struct RpcClient {
    client: ClusterRaftClient<Channel>,
}

impl RpcClient {
    /// A client of the member at `addr` (`host:port`); connects on first use.
    pub fn new(addr: &str) -> Result<RpcClient, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = ClusterRaftClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        Ok(RpcClient { client })
    }

    /// Asks the member to add a node to the cluster.
    pub async fn join(&self, request: JoinRequest, deadline: Duration) -> Result<ClusterReply, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        Ok(self.client.clone().join(request).await?.into_inner())
    }

    /// The leader's liveness probe and write lease (see
    /// `control::liveness`).
    pub async fn ping(
        &self,
        request: meridian_proto::v1::PingRequest,
        deadline: Duration,
    ) -> Result<meridian_proto::v1::PingReply, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        Ok(self.client.clone().ping(request).await?.into_inner())
    }

    /// Asks the member (the leader) to apply a serialized command.
    pub async fn forward(&self, command: Vec<u8>, deadline: Duration) -> Result<ClusterReply, tonic::Status> {
        let mut request = tonic::Request::new(RaftPayload { data: command.into() });
        request.set_timeout(deadline);
        Ok(self.client.clone().forward(request).await?.into_inner())
    }
}

/// Makes a connection per peer, as openraft asks.
#[derive(Clone, Default)]
pub struct Network;

/// The connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<RpcClient, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection { target, client: RpcClient::new(&node.addr).map_err(|e| format!("bad address {}: {e}", node.addr)) }
    }
}

enum Call {
    Vote,
    Append,
    Snapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        call: Call,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(client) => client.client.clone(),
            Err(message) => return Err(RPCError::Unreachable(Unreachable::new(&io_error(message)))),
        };
        let data = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data: data.into() });
        request.set_timeout(option.hard_ttl());
        let mut client = client;
        let reply = match call {
            Call::Vote => client.vote(request).await,
            Call::Append => client.append_entries(request).await,
            Call::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn io_error(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_string())
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Call::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Call::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Call::Vote, &rpc, &option).await
    }
}
