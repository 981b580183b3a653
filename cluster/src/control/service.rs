//! The `ClusterRaft` gRPC service: hands Raft RPCs to the local openraft
//! node, and serves joins and forwarded writes through the control plane.

use meridian_proto::v1::cluster_raft_server::ClusterRaft;
use meridian_proto::v1::{ClusterReply, JoinRequest, PingReply, PingRequest, RaftPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::ControlPlane;
use crate::raft::Proposal;

pub(super) struct RaftService {
    pub(super) control: ControlPlane,
}

fn decode<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data: data.into() }))
}

#[tonic::async_trait]
impl ClusterRaft for RaftService {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(self.control.answer_ping(request.get_ref())))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.control.shared.raft.vote(decode(request)?).await;
        encode(&result)
    }

    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.control.shared.raft.append_entries(decode(request)?).await;
        encode(&result)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.control.shared.raft.install_snapshot(decode(request)?).await;
        encode(&result)
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<ClusterReply>, Status> {
        let request = request.into_inner();
        if request.node_id == 0 {
            return Ok(Response::new(ClusterReply {
                data: Default::default(),
                error: "node id 0 is reserved; use 1 or more".into(),
                status: 400,
            }));
        }
        Ok(Response::new(self.control.handle_join(request).await))
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Result<Response<ClusterReply>, Status> {
        let command: Proposal = match decode(request) {
            Ok(command) => command,
            Err(status) => {
                return Ok(Response::new(ClusterReply {
                    data: Default::default(),
                    error: status.message().to_string(),
                    status: 400,
                }));
            }
        };
        Ok(Response::new(self.control.write_here(command).await))
    }
}
