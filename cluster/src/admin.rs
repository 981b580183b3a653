//! The admin REST API (axum), shaped like Redis Enterprise's: `/v1/cluster`,
//! `/v1/nodes` (and a node's placement state), `/v1/bdbs`, `/v1/shards`,
//! the failover action, and `/v1/crdbs` (active-active databases across
//! regions, see `admin/crdb.rs`), and `GET /metrics` for Prometheus ([`metrics`]).
//!
//! Reads answer from this node's applied configuration (a follower may be a
//! few entries behind the leader). Writes become [`Command`]s and go through
//! Raft ([`ControlPlane::write`]), forwarded to the leader when this node is
//! not it. Every error is JSON — `{"error_code": ..., "description": ...}` —
//! with a 4xx status for bad input (400 malformed or invalid, 404 unknown id,
//! 409 conflict, 413 body too large) and 503 when no leader can take a write.
//! Request bodies are capped at [`REQUEST_BODY_BYTES_MAX`].

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::config::{
    Applied, Bdb, BdbSpec, BdbUpdate, ClusterConfig, Command, NodeInfo, NodeState, ShardInfo, ShardRole,
};
use crate::control::{ControlPlane, WriteError, refusal_status};

pub(crate) mod crdb;
pub mod metrics;

/// Largest request body the API reads, in bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a write's answer waits for this node to apply the leader's entry,
/// so a client reading back right after a write sees it.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(3);

/// The admin API's router over a control plane.
pub fn router(control: ControlPlane) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{uid}", get(node).put(update_node))
        .route("/v1/bdbs", get(bdbs).post(create_bdb))
        .route("/v1/bdbs/{uid}", get(bdb).put(update_bdb).delete(delete_bdb))
        .route("/v1/bdbs/{uid}/actions/failover", post(failover))
        .route("/v1/shards", get(shards))
        .route("/v1/crdbs", get(crdb::list).post(crdb::create))
        .route("/v1/crdbs/{guid}", get(crdb::status).delete(crdb::delete))
        .route(
            "/v1/crdbs/{guid}/instance",
            get(crdb::instance_status).put(crdb::put_instance).delete(crdb::delete_instance),
        )
        .route("/v1/crdbs/{guid}/instance/local", get(crdb::instance_local))
        .route("/v1/crdbs/{guid}/instances", post(crdb::add_instance))
        .route("/v1/crdbs/{guid}/instances/{region_id}", delete(crdb::remove_instance))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(control)
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, description: String) -> ApiError {
        ApiError { status, code, description }
    }

    pub(crate) fn bad_request(description: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn not_found(description: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error_code": self.code, "description": self.description}))).into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        match &error {
            WriteError::Refused(refused) => {
                let status = StatusCode::from_u16(refusal_status(refused)).unwrap_or(StatusCode::BAD_REQUEST);
                let code = match status {
                    StatusCode::NOT_FOUND => "not_found",
                    StatusCode::CONFLICT => "conflict",
                    _ => "invalid_request",
                };
                ApiError::new(status, code, refused.to_string())
            }
            WriteError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string())
            }
        }
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A request body as read (or refused: too large, broken connection).
pub(crate) type Body = Result<Bytes, BytesRejection>;

/// Parses a JSON body, answering malformed input with a JSON 400 and a body
/// over [`REQUEST_BODY_BYTES_MAX`] with a JSON 413.
pub(crate) fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_request" };
        ApiError::new(
            status,
            code,
            format!("request body: {} (at most {REQUEST_BODY_BYTES_MAX} bytes)", rejection.body_text()),
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn parse_uid(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("{what} {text:?} is not a number")))
}

/// A database as the API shows it: the password is never echoed back.
pub(crate) fn bdb_view(bdb: &Bdb) -> Value {
    let mut value = serde_json::to_value(bdb).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("password");
        map.insert("authentication".into(), Value::Bool(bdb.password.is_some()));
    }
    value
}

fn node_view(config: &ClusterConfig, node: &NodeInfo) -> Value {
    let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        let shards = config.shards.values().filter(|s| s.node_uid == node.uid).count();
        map.insert("shard_count".into(), shards.into());
    }
    value
}

async fn cluster(State(control): State<ControlPlane>) -> ApiResult {
    let raft = control.raft_status();
    let body = control.with_config(|config| {
        json!({
            "name": config.name,
            "region": config.region,
            "nodes_count": config.nodes.len(),
            "bdbs_count": config.bdbs.len(),
            "shards_count": config.shards.len(),
            "raft": raft,
            "unsynced_replicas": control.unsynced_replicas(),
        })
    });
    Ok(Json(body).into_response())
}

async fn nodes(State(control): State<ControlPlane>) -> ApiResult {
    let body: Vec<Value> = control.with_config(|c| c.nodes.values().map(|n| node_view(c, n)).collect());
    Ok(Json(body).into_response())
}

async fn node(State(control): State<ControlPlane>, Path(uid): Path<String>) -> ApiResult {
    let uid = parse_uid(&uid, "node id")?;
    control
        .with_config(|c| c.nodes.get(&uid).map(|n| node_view(c, n)))
        .map(|body| Json(body).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no node {uid}")))
}

/// The body of `PUT /v1/nodes/{uid}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    /// New placement state: `active`, `maintenance` or `down`.
    pub status: NodeState,
}

async fn update_node(State(control): State<ControlPlane>, Path(uid): Path<String>, body: Body) -> ApiResult {
    let uid = parse_uid(&uid, "node id")?;
    let update: NodeUpdate = parse_body(body)?;
    let status = update.status;
    control.write(Command::SetNodeState { uid, status }).await?;
    wait_applied(&control, |c| c.nodes.get(&uid).is_some_and(|n| n.status == status)).await;
    control
        .with_config(|c| c.nodes.get(&uid).map(|n| node_view(c, n)))
        .map(|body| Json(body).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no node {uid}")))
}

/// Adds this node's runtime view of the database (`endpoint_status`: served
/// here, its address or why it cannot be served), when this node serves it.
pub(crate) fn with_local_status(control: &ControlPlane, mut view: Value) -> Value {
    if let Some(uid) = view["uid"].as_u64()
        && let Some(status) = control.local_status(uid)
    {
        view["endpoint_status"] = status;
    }
    view
}

async fn bdbs(State(control): State<ControlPlane>) -> ApiResult {
    let views: Vec<Value> = control.with_config(|c| c.bdbs.values().map(bdb_view).collect());
    let body: Vec<Value> = views.into_iter().map(|v| with_local_status(&control, v)).collect();
    Ok(Json(body).into_response())
}

async fn bdb(State(control): State<ControlPlane>, Path(uid): Path<String>) -> ApiResult {
    let uid = parse_uid(&uid, "database uid")?;
    control
        .with_config(|c| c.bdbs.get(&uid).map(bdb_view))
        .map(|body| Json(with_local_status(&control, body)).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no database {uid}")))
}

/// Waits (bounded) until this node has applied a state where `ready` holds,
/// so the answer to a write forwarded to the leader shows its effect.
pub(crate) async fn wait_applied(control: &ControlPlane, ready: impl Fn(&ClusterConfig) -> bool) {
    let deadline = Instant::now() + READ_YOUR_WRITE_WAIT;
    while !control.with_config(&ready) && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until this node no longer serves database `uid`, so a
/// delete's answer means its port is closed here.
pub(crate) async fn wait_unserved(control: &ControlPlane, uid: u64) {
    let deadline = Instant::now() + READ_YOUR_WRITE_WAIT;
    while control.local_status(uid).is_some() && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
}

async fn create_bdb(State(control): State<ControlPlane>, body: Body) -> ApiResult {
    let spec: BdbSpec = parse_body(body)?;
    let uid = match control.write(Command::CreateBdb(spec)).await? {
        Applied::BdbCreated { uid } => uid,
        other => return Err(ApiError::bad_request(format!("unexpected outcome {other:?}"))),
    };
    wait_applied(&control, |c| c.bdbs.contains_key(&uid)).await;
    // When this node holds every master, answer once it serves the database
    // (or says why it cannot), so a client may connect right away.
    let node_id = control.node_id();
    let master_here = control.with_config(|c| {
        c.bdbs.get(&uid).is_some_and(|b| {
            let masters: Vec<u64> = b
                .shard_list
                .iter()
                .filter_map(|s| c.shards.get(s))
                .filter(|s| s.role == ShardRole::Master)
                .map(|s| s.node_uid)
                .collect();
            !masters.is_empty() && masters.iter().all(|&node| node == node_id)
        })
    });
    if master_here {
        let deadline = Instant::now() + READ_YOUR_WRITE_WAIT;
        while control.local_status(uid).is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
    }
    let body = control.with_config(|c| c.bdbs.get(&uid).map(bdb_view)).unwrap_or_else(|| json!({ "uid": uid }));
    Ok((StatusCode::CREATED, Json(with_local_status(&control, body))).into_response())
}

async fn update_bdb(State(control): State<ControlPlane>, Path(uid): Path<String>, body: Body) -> ApiResult {
    let uid = parse_uid(&uid, "database uid")?;
    let update: BdbUpdate = parse_body(body)?;
    let expected = update.clone();
    control.write(Command::UpdateBdb { uid, update }).await?;
    wait_applied(&control, |c| {
        c.bdbs.get(&uid).is_some_and(|b| {
            expected.name.as_ref().is_none_or(|n| *n == b.name) && expected.port.is_none_or(|p| p == b.port)
        })
    })
    .await;
    let body = control.with_config(|c| c.bdbs.get(&uid).map(bdb_view)).unwrap_or_else(|| json!({ "uid": uid }));
    Ok(Json(body).into_response())
}

async fn delete_bdb(State(control): State<ControlPlane>, Path(uid): Path<String>) -> ApiResult {
    let uid = parse_uid(&uid, "database uid")?;
    control.write(Command::DeleteBdb { uid }).await?;
    wait_applied(&control, |c| !c.bdbs.contains_key(&uid)).await;
    wait_unserved(&control, uid).await;
    Ok(Json(json!({ "uid": uid, "deleted": true })).into_response())
}

/// The body of `POST /v1/bdbs/{uid}/actions/failover`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// Any copy of the shard to fail over.
    pub shard_uid: u64,
}

/// How long a manual failover waits for the copy it would promote to
/// finish its first sync (a database just created, a node just restarted:
/// the copy is still receiving its master's state).
const FAILOVER_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Asks node `node` (admin API `admin`) whether its replica copy `copy`
/// has synced with its master, waiting up to [`FAILOVER_SYNC_WAIT`] for a
/// first sync under way. 409 if it never synced (promoting it would replace
/// the database with an empty copy, D105), 503 if the node does not answer.
async fn confirm_synced(copy: u64, node: u64, admin: &str) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + FAILOVER_SYNC_WAIT;
    loop {
        let view = crate::ctl::request(crate::ctl::Method::GET, &format!("http://{admin}/v1/cluster"), None).await;
        let unsynced = match view {
            Ok((StatusCode::OK, view)) => view["unsynced_replicas"]
                .as_array()
                .map(|copies| copies.iter().any(|c| c.as_u64() == Some(copy)))
                .unwrap_or(true),
            _ => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("node {node} does not answer: cannot confirm its replica copy {copy} holds the data"),
                ));
            }
        };
        if !unsynced {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "replica copy {copy} on node {node} has not synced with its master (waited {} s): a failover to it would replace the database with an empty copy",
                    FAILOVER_SYNC_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn failover(State(control): State<ControlPlane>, Path(uid): Path<String>, body: Body) -> ApiResult {
    let uid = parse_uid(&uid, "database uid")?;
    let request: FailoverRequest = parse_body(body)?;
    let belongs = control.with_config(|c| {
        if !c.bdbs.contains_key(&uid) {
            return Err(ApiError::not_found(format!("no database {uid}")));
        }
        match c.shards.get(&request.shard_uid) {
            Some(shard) if shard.bdb_uid == uid => Ok(()),
            Some(shard) => Err(ApiError::bad_request(format!(
                "shard {} belongs to database {}, not {uid}",
                shard.uid, shard.bdb_uid
            ))),
            None => Err(ApiError::not_found(format!("no shard {}", request.shard_uid))),
        }
    });
    belongs?;
    // The copy the failover would promote must hold the data: ask its node
    // whether it has synced (a never-synced copy is empty, and promoting it
    // replaces the database, D105).
    let target = control.with_config(|c| {
        let group = c.shard_group(request.shard_uid);
        let up = |copy: &ShardInfo| c.nodes.get(&copy.node_uid).is_some_and(|n| n.status.is_up());
        let copy = if group.first().is_some_and(|m| m.uid == request.shard_uid) {
            group.iter().skip(1).find(|copy| up(copy)).copied()
        } else {
            group.iter().find(|s| s.uid == request.shard_uid).copied()
        };
        copy.and_then(|copy| Some((copy.uid, copy.node_uid, c.nodes.get(&copy.node_uid)?.admin_addr.clone())))
    });
    if let Some((copy, node, admin)) = target {
        confirm_synced(copy, node, &admin).await?;
    }
    match control.write(Command::Failover { shard: request.shard_uid }).await? {
        Applied::FailedOver { master, node_uid, epoch } => {
            wait_applied(&control, |c| c.shards.get(&master).is_some_and(|s| s.epoch >= epoch)).await;
            Ok(Json(json!({ "bdb_uid": uid, "master_shard_uid": master, "node_uid": node_uid, "epoch": epoch }))
                .into_response())
        }
        other => Err(ApiError::bad_request(format!("unexpected outcome {other:?}"))),
    }
}

async fn shards(State(control): State<ControlPlane>) -> ApiResult {
    let body: Vec<ShardInfo> = control.with_config(|c| c.shards.values().cloned().collect());
    Ok(Json(body).into_response())
}
