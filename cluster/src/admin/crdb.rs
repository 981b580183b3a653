//! `/v1/crdbs`: active-active databases across regions.
//!
//! The admin API that receives `POST /v1/crdbs` coordinates: it numbers the
//! instances 1, 2, ... in the order given (their region ids, also the replica
//! ids of their writes), then asks every instance's admin API to create its
//! local instance (`PUT /v1/crdbs/{guid}/instance`) — a database flagged as a
//! crdb instance in that cluster's replicated configuration. A first round
//! creates the instances and learns where each serves WAN sync (the sync
//! address of the node holding the master); a second round hands every
//! instance the full list with those endpoints, and the nodes start their
//! links. If the first round fails somewhere, the instances already created
//! are deleted again. Status and delete fan out the same way, each region
//! answering for itself.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::{Instant, sleep};

use super::{ApiError, ApiResult, Body, bdb_view, parse_body, wait_applied, wait_unserved, with_local_status};
use crate::config::{
    Applied, Bdb, BdbSpec, BdbUpdate, CRDB_INSTANCES_MAX, ClusterConfig, Command, CrdbInstance, CrdbPeer, ShardRole,
};
use crate::control::ControlPlane;
use crate::ctl::{Method, request};

/// How long `PUT /v1/crdbs/{guid}/instance` waits for the master's node to
/// serve the instance before answering anyway.
const INSTANCE_READY_WAIT: Duration = Duration::from_secs(10);

/// The body of `POST /v1/crdbs`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrdbRequest {
    /// The database's name in every region.
    pub name: String,
    /// Its client port in every region.
    pub port: u16,
    /// Password of the default user.
    #[serde(default)]
    pub password: Option<String>,
    /// The admin API of every region's cluster (`http://host:port`), in
    /// region id order.
    pub instances: Vec<String>,
    /// Every instance keeps an in-memory replica on another node of its
    /// region (regions of one node cannot hold one).
    #[serde(default)]
    pub replication: bool,
    /// Each instance's shard count, in the order of `instances` (one value:
    /// every instance; none: one shard each). Counts may differ (D102).
    #[serde(default)]
    pub shards: Vec<u16>,
    /// The granules the slots are cut into: a power of two up to 64, at
    /// least the largest shard count. Default: 1 if every instance has one
    /// shard, else 16.
    #[serde(default)]
    pub granules: Option<u16>,
}

/// Granules of a crdb whose instances may have several shards, unless asked.
pub const CRDB_GRANULES_DEFAULT: u16 = 16;

/// The body of `PUT /v1/crdbs/{guid}/instance`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    /// The database's name.
    pub name: String,
    /// Its client port.
    pub port: u16,
    /// Password of the default user.
    #[serde(default)]
    pub password: Option<String>,
    /// This region's part.
    pub crdb: CrdbInstance,
    /// With an in-memory replica on another node of the region.
    #[serde(default)]
    pub replication: bool,
}

fn crdb_bdb<'c>(config: &'c ClusterConfig, guid: &str) -> Option<&'c Bdb> {
    config.bdbs.values().find(|b| b.crdb.as_ref().is_some_and(|c| c.guid == guid))
}

/// The sync endpoint and admin address of the node holding `bdb`'s master.
fn master_node(config: &ClusterConfig, bdb: &Bdb) -> Option<(Option<String>, String)> {
    let master =
        bdb.shard_list.iter().filter_map(|uid| config.shards.get(uid)).find(|s| s.role == ShardRole::Master)?;
    let node = config.nodes.get(&master.node_uid)?;
    Some((node.sync_addr.clone(), node.admin_addr.clone()))
}

/// Where each shard of `bdb` serves WAN sync, in slot order: the sync
/// address of the node holding its master (None while unknown).
fn shard_endpoints(config: &ClusterConfig, bdb: &Bdb) -> Vec<Option<String>> {
    let mut masters: Vec<&crate::config::ShardInfo> = bdb
        .shard_list
        .iter()
        .filter_map(|uid| config.shards.get(uid))
        .filter(|s| s.role == ShardRole::Master)
        .collect();
    masters.sort_by_key(|s| s.assigned_slots.first().map(|r| r.start));
    masters.iter().map(|s| config.nodes.get(&s.node_uid).and_then(|n| n.sync_addr.clone())).collect()
}

/// The endpoints an instance answered, dialable from `admin_url`.
fn answered_endpoints(answer: &Value, admin_url: &str) -> Vec<Option<String>> {
    match answer["sync_endpoints"].as_array() {
        Some(list) => list.iter().map(|e| e.as_str().map(|e| dialable(e, admin_url))).collect(),
        None => vec![answer["sync_endpoint"].as_str().map(|e| dialable(e, admin_url))],
    }
}

fn upstream(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "instance_failed", format!("{what}: {error}"))
}

/// A guid nobody else picks: the time in nanoseconds, this process and a counter.
fn new_guid() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:016x}-{:08x}-{count}", std::process::id())
}

/// A sync endpoint a peer can dial: an unspecified address (the node binds
/// 0.0.0.0) takes the host of the admin URL that reached the region.
fn dialable(endpoint: &str, admin_url: &str) -> String {
    let Ok(addr) = endpoint.parse::<std::net::SocketAddr>() else { return endpoint.to_string() };
    if !addr.ip().is_unspecified() {
        return endpoint.to_string();
    }
    let host = admin_url.split("://").nth(1).unwrap_or(admin_url);
    let host = host.split('/').next().unwrap_or(host);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    format!("{host}:{}", addr.port())
}

async fn call(method: Method, url: String, body: Option<Value>) -> Result<Value, ApiError> {
    let (status, answer) = request(method.clone(), &url, body).await.map_err(|e| upstream(&url, e))?;
    if !status.is_success() {
        let description = answer.get("description").and_then(Value::as_str).map(str::to_string);
        return Err(upstream(&format!("{method} {url}"), format!("{status}: {}", description.unwrap_or_default())));
    }
    Ok(answer)
}

pub(super) async fn create(State(_control): State<ControlPlane>, body: Body) -> ApiResult {
    let spec: CrdbRequest = parse_body(body)?;
    let urls: Vec<String> = spec.instances.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
    if urls.len() < 2 || urls.len() > CRDB_INSTANCES_MAX {
        return Err(ApiError::bad_request(format!(
            "an active-active database has 2 to {CRDB_INSTANCES_MAX} instances, not {}",
            urls.len()
        )));
    }
    let mut distinct = urls.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != urls.len() {
        return Err(ApiError::bad_request("each instance's admin URL must be given once".into()));
    }
    let shards: Vec<u16> = match spec.shards.as_slice() {
        [] => vec![1; urls.len()],
        [all] => vec![*all; urls.len()],
        each if each.len() == urls.len() => each.to_vec(),
        each => {
            return Err(ApiError::bad_request(format!(
                "{} shard counts for {} instances: give one for all or one per instance",
                each.len(),
                urls.len()
            )));
        }
    };
    let granules = spec.granules.unwrap_or(if shards.iter().all(|&n| n == 1) { 1 } else { CRDB_GRANULES_DEFAULT });
    check_layout(granules, &shards)?;
    let guid = new_guid();
    let mut instances: Vec<CrdbPeer> = urls
        .iter()
        .zip(&shards)
        .enumerate()
        .map(|(index, (url, &shards))| CrdbPeer::new(index as u16 + 1, url.clone(), shards))
        .collect();
    let shared = Shared {
        name: spec.name.clone(),
        port: spec.port,
        password: spec.password.clone(),
        replication: spec.replication,
        granules,
    };
    // Round one: create every instance (no endpoints yet), learn its sync
    // endpoint.
    let unknown = instances.clone();
    let mut uids = Vec::new();
    for index in 0..instances.len() {
        let peer = &instances[index];
        let url = format!("{}/v1/crdbs/{guid}/instance", peer.admin_url);
        match call(Method::PUT, url, Some(instance_request(&shared, &guid, peer.region_id, &unknown, &[]))).await {
            Ok(answer) => {
                let endpoints = answered_endpoints(&answer, &instances[index].admin_url);
                instances[index].set_endpoints(endpoints);
                uids.push(answer["bdb_uid"].clone());
            }
            Err(error) => {
                for created in &instances[..index] {
                    let url = format!("{}/v1/crdbs/{guid}/instance", created.admin_url);
                    if let Err(undo) = call(Method::DELETE, url, None).await {
                        tracing::warn!(guid, "rolling back a crdb instance failed: {}", undo.description);
                    }
                }
                return Err(error);
            }
        }
    }
    // Round two: every instance gets every endpoint.
    distribute(&shared, &guid, &instances, &[]).await?;
    tracing::info!(guid, name = spec.name, instances = instances.len(), "active-active database created");
    let listed: Vec<Value> = instances
        .iter()
        .zip(uids)
        .map(|(peer, uid)| {
            json!({ "region_id": peer.region_id, "admin_url": peer.admin_url, "shards": peer.shards,
                    "sync_endpoint": peer.sync_endpoint, "sync_endpoints": peer.endpoints(), "bdb_uid": uid })
        })
        .collect();
    let body = json!({ "guid": guid, "name": spec.name, "port": spec.port, "granules": granules,
                       "instances": listed });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn crdb_view(control: &ControlPlane, bdb: &Bdb) -> Value {
    let crdb = bdb.crdb.as_ref().expect("a crdb instance");
    json!({
        "guid": crdb.guid, "name": bdb.name, "port": bdb.port, "region_id": crdb.region_id,
        "bdb_uid": bdb.uid, "instances": crdb.instances, "retired": crdb.retired,
        "endpoint_status": control.local_status(bdb.uid),
    })
}

pub(super) async fn list(State(control): State<ControlPlane>) -> ApiResult {
    let bdbs: Vec<Bdb> = control.with_config(|c| c.bdbs.values().filter(|b| b.crdb.is_some()).cloned().collect());
    let body: Vec<Value> = bdbs.iter().map(|b| crdb_view(&control, b)).collect();
    Ok(Json(body).into_response())
}

/// Every instance's view, each asked through its own admin API.
pub(super) async fn status(State(control): State<ControlPlane>, Path(guid): Path<String>) -> ApiResult {
    let bdb = control
        .with_config(|c| crdb_bdb(c, &guid).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))?;
    let crdb = bdb.crdb.clone().expect("found by guid");
    let mut instances = Vec::new();
    for peer in &crdb.instances {
        let view = if peer.region_id == crdb.region_id {
            instance_view(&control, &guid).await.unwrap_or_else(|e| json!({ "error": e.description }))
        } else {
            let url = format!("{}/v1/crdbs/{guid}/instance", peer.admin_url);
            call(Method::GET, url, None).await.unwrap_or_else(|e| json!({ "error": e.description }))
        };
        instances.push(json!({ "region_id": peer.region_id, "admin_url": peer.admin_url,
                               "sync_endpoint": peer.sync_endpoint, "instance": view }));
    }
    Ok(Json(json!({ "guid": guid, "name": bdb.name, "port": bdb.port, "instances": instances })).into_response())
}

pub(super) async fn delete(State(control): State<ControlPlane>, Path(guid): Path<String>) -> ApiResult {
    let crdb = control
        .with_config(|c| crdb_bdb(c, &guid).and_then(|b| b.crdb.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))?;
    let mut results = Vec::new();
    for peer in &crdb.instances {
        let url = format!("{}/v1/crdbs/{guid}/instance", peer.admin_url);
        let outcome = match call(Method::DELETE, url, None).await {
            Ok(_) => json!("deleted"),
            Err(e) => json!(e.description),
        };
        results.push(json!({ "region_id": peer.region_id, "result": outcome }));
    }
    Ok(Json(json!({ "guid": guid, "deleted": true, "instances": results })).into_response())
}

/// Creates this region's instance, or updates its instance list.
pub(super) async fn put_instance(
    State(control): State<ControlPlane>,
    Path(guid): Path<String>,
    body: Body,
) -> ApiResult {
    let request: InstanceRequest = parse_body(body)?;
    if request.crdb.guid != guid {
        return Err(ApiError::bad_request(format!("the body is for crdb {}, not {guid}", request.crdb.guid)));
    }
    let existing = control.with_config(|c| crdb_bdb(c, &guid).map(|b| b.uid));
    let uid = match existing {
        Some(uid) => {
            let update = BdbUpdate { crdb: Some(request.crdb.clone()), ..BdbUpdate::default() };
            control.write(Command::UpdateBdb { uid, update }).await?;
            let expected = request.crdb.clone();
            wait_applied(&control, |c| c.bdbs.get(&uid).is_some_and(|b| b.crdb.as_ref() == Some(&expected))).await;
            uid
        }
        None => {
            let spec = BdbSpec {
                name: request.name.clone(),
                port: request.port,
                shards_count: request.crdb.own().map_or(1, |own| own.shards),
                replication: request.replication,
                password: request.password.clone(),
                oss_cluster: false,
                crdb: Some(request.crdb.clone()),
            };
            match control.write(Command::CreateBdb(spec)).await? {
                Applied::BdbCreated { uid } => {
                    wait_applied(&control, |c| c.bdbs.contains_key(&uid)).await;
                    uid
                }
                other => return Err(ApiError::bad_request(format!("unexpected outcome {other:?}"))),
            }
        }
    };
    // The masters' nodes record their sync addresses once they have joined:
    // wait (bounded) for them.
    let known = |c: &ClusterConfig| c.bdbs.get(&uid).map(|b| shard_endpoints(c, b));
    wait_applied(&control, |c| known(c).is_some_and(|e| !e.is_empty() && e.iter().all(Option::is_some))).await;
    let endpoints = control.with_config(known).unwrap_or_default();
    let endpoint = endpoints.first().cloned().flatten();
    // Answer once the master's node serves the instance (or says why it
    // cannot), so a client may connect as soon as the crdb is created.
    let deadline = Instant::now() + INSTANCE_READY_WAIT;
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = instance_view(&control, &guid).await.map(|v| v["endpoint_status"].clone()).unwrap_or(Value::Null);
        if status["status"].is_string() {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    Ok(Json(json!({ "guid": guid, "bdb_uid": uid, "sync_endpoint": endpoint, "sync_endpoints": endpoints,
                    "endpoint_status": status }))
    .into_response())
}

/// The body of `POST /v1/crdbs/{guid}/instances`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddInstanceRequest {
    /// The admin API of the new region's cluster (`http://host:port`).
    pub instance: String,
    /// Its shard count (at most the crdb's granules).
    #[serde(default = "one_shard")]
    pub shards: u16,
}

fn one_shard() -> u16 {
    1
}

/// Checks that every instance's shard count fits the granules (before any
/// region is asked; each region's configuration checks it again).
fn check_layout(granules: u16, shards: &[u16]) -> Result<(), ApiError> {
    crate::config::check_layout(granules, shards.iter().copied()).map(|_| ()).map_err(ApiError::bad_request)
}

/// The query of `DELETE /v1/crdbs/{guid}/instances/{region_id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveInstanceQuery {
    /// Remove it even if its region cannot be reached (a region that is gone).
    #[serde(default)]
    pub force: bool,
}

/// This region's crdb `guid`: its database and instance record.
fn local_crdb(control: &ControlPlane, guid: &str) -> Result<(Bdb, CrdbInstance), ApiError> {
    control
        .with_config(|c| crdb_bdb(c, guid).cloned())
        .and_then(|bdb| bdb.crdb.clone().map(|crdb| (bdb, crdb)))
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))
}

/// The body that creates or updates region `region_id`'s instance.
/// What every instance of a crdb has alike.
struct Shared {
    name: String,
    port: u16,
    password: Option<String>,
    replication: bool,
    granules: u16,
}

impl Shared {
    /// As this region's instance `bdb` has it.
    fn of(bdb: &Bdb) -> Shared {
        Shared {
            name: bdb.name.clone(),
            port: bdb.port,
            password: bdb.password.clone(),
            replication: bdb.replication,
            granules: bdb.crdb.as_ref().map_or(1, |c| c.granules),
        }
    }
}

fn instance_request(shared: &Shared, guid: &str, region_id: u16, instances: &[CrdbPeer], retired: &[u16]) -> Value {
    let body = InstanceRequest {
        name: shared.name.clone(),
        port: shared.port,
        password: shared.password.clone(),
        crdb: CrdbInstance {
            guid: guid.to_string(),
            region_id,
            instances: instances.to_vec(),
            retired: retired.to_vec(),
            granules: shared.granules,
        },
        replication: shared.replication,
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// Hands every instance of `instances` the list (and the retired ids).
async fn distribute(shared: &Shared, guid: &str, instances: &[CrdbPeer], retired: &[u16]) -> Result<(), ApiError> {
    for peer in instances {
        let url = format!("{}/v1/crdbs/{guid}/instance", peer.admin_url);
        call(Method::PUT, url, Some(instance_request(shared, guid, peer.region_id, instances, retired))).await?;
    }
    Ok(())
}

/// Adds an instance in another region: it gets the next unused region id,
/// starts empty and takes a full sync from every peer; the other instances
/// start streaming to it.
pub(super) async fn add_instance(
    State(control): State<ControlPlane>,
    Path(guid): Path<String>,
    body: Body,
) -> ApiResult {
    let request: AddInstanceRequest = parse_body(body)?;
    let url = request.instance.trim_end_matches('/').to_string();
    let (bdb, crdb) = local_crdb(&control, &guid)?;
    let shared = Shared::of(&bdb);
    if crdb.instances.iter().any(|peer| peer.admin_url == url) {
        return Err(ApiError::bad_request(format!("{url} already holds an instance of crdb {guid}")));
    }
    if crdb.instances.len() >= CRDB_INSTANCES_MAX {
        return Err(ApiError::bad_request(format!("crdb {guid} already has {CRDB_INSTANCES_MAX} instances")));
    }
    let used = crdb.instances.iter().map(|peer| peer.region_id).chain(crdb.retired.iter().copied());
    let region_id = used
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| ApiError::bad_request(format!("crdb {guid} has used every region id")))?;
    check_layout(crdb.granules, &[request.shards])?;
    let mut instances = crdb.instances.clone();
    instances.push(CrdbPeer::new(region_id, url.clone(), request.shards));
    // The new instance first (it learns its peers, and they do not dial it
    // yet); then everyone gets the list with its endpoint.
    let create = format!("{url}/v1/crdbs/{guid}/instance");
    let answer =
        call(Method::PUT, create.clone(), Some(instance_request(&shared, &guid, region_id, &instances, &crdb.retired)))
            .await?;
    instances.last_mut().expect("just pushed").set_endpoints(answered_endpoints(&answer, &url));
    if let Err(error) = distribute(&shared, &guid, &instances, &crdb.retired).await {
        // Back to the list before: the new instance goes away again.
        if let Err(undo) = call(Method::DELETE, create, None).await {
            tracing::warn!(guid, "removing the half-added instance failed: {}", undo.description);
        }
        if let Err(undo) = distribute(&shared, &guid, &crdb.instances, &crdb.retired).await {
            tracing::warn!(guid, "restoring the instance list failed: {}", undo.description);
        }
        return Err(error);
    }
    tracing::info!(guid, region_id, instance = url, "crdb instance added");
    let body = json!({ "guid": guid, "region_id": region_id, "admin_url": url,
                       "sync_endpoint": instances.last().and_then(|p| p.sync_endpoint.clone()),
                       "bdb_uid": answer["bdb_uid"] });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Removes another region's instance: it is deleted there (skipped with
/// `force` if that region cannot be reached), its region id is retired, and
/// the remaining instances take a full sync from each other — the removed
/// region's last writes may have reached some of them and not others.
pub(super) async fn remove_instance(
    State(control): State<ControlPlane>,
    Path((guid, region_id)): Path<(String, u16)>,
    Query(query): Query<RemoveInstanceQuery>,
) -> ApiResult {
    let (bdb, crdb) = local_crdb(&control, &guid)?;
    if region_id == crdb.region_id {
        return Err(ApiError::bad_request(format!(
            "region {region_id} is this one: remove it through another region's admin API"
        )));
    }
    let removed = crdb
        .instances
        .iter()
        .find(|peer| peer.region_id == region_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("crdb {guid} has no instance in region {region_id}")))?;
    let remaining: Vec<CrdbPeer> = crdb.instances.iter().filter(|p| p.region_id != region_id).cloned().collect();
    if remaining.len() < 2 {
        return Err(ApiError::bad_request(format!("crdb {guid} would keep one instance: delete the crdb instead")));
    }
    let url = format!("{}/v1/crdbs/{guid}/instance", removed.admin_url);
    match call(Method::DELETE, url, None).await {
        Ok(_) => {}
        Err(error) if query.force => {
            tracing::warn!(guid, region_id, "removing an unreachable instance (forced): {}", error.description)
        }
        Err(error) => {
            return Err(ApiError::new(
                error.status,
                "instance_failed",
                format!("{} (use force to remove an instance whose region is gone)", error.description),
            ));
        }
    }
    let mut retired = crdb.retired.clone();
    retired.push(region_id);
    retired.sort_unstable();
    distribute(&Shared::of(&bdb), &guid, &remaining, &retired).await?;
    tracing::info!(guid, region_id, forced = query.force, "crdb instance removed");
    Ok(Json(json!({ "guid": guid, "removed_region_id": region_id, "instances": remaining })).into_response())
}

/// After a failover moved this region's instance of `guid` to another node:
/// records `endpoint` (the new master node's sync address) as the
/// instance's sync endpoint in this cluster and hands the new list to every
/// peer region, whose links then dial it. Idempotent; the caller retries
/// until it succeeds.
pub(crate) async fn announce_endpoint(
    control: &ControlPlane,
    guid: &str,
    shard: u16,
    endpoint: &str,
) -> Result<(), String> {
    let (bdb, crdb) = local_crdb(control, guid).map_err(|e| e.description)?;
    let mut instances = crdb.instances.clone();
    let own = instances
        .iter_mut()
        .find(|peer| peer.region_id == crdb.region_id)
        .ok_or_else(|| format!("crdb {guid} does not list its own region"))?;
    let mut endpoints = own.endpoints();
    let slot = endpoints.get_mut(usize::from(shard)).ok_or_else(|| format!("crdb {guid} has no shard {shard} here"))?;
    *slot = Some(endpoint.to_string());
    own.set_endpoints(endpoints);
    if instances != crdb.instances {
        let update = BdbUpdate {
            crdb: Some(CrdbInstance { instances: instances.clone(), ..crdb.clone() }),
            ..BdbUpdate::default()
        };
        control.write(Command::UpdateBdb { uid: bdb.uid, update }).await.map_err(|e| e.to_string())?;
    }
    let shared = Shared::of(&bdb);
    for peer in instances.iter().filter(|peer| peer.region_id != crdb.region_id) {
        let url = format!("{}/v1/crdbs/{guid}/instance/local", peer.admin_url);
        // A PUT would create an instance the peer does not hold (deleted).
        if matches!(request(Method::GET, &url, None).await, Ok((StatusCode::NOT_FOUND, _))) {
            continue;
        }
        let url = format!("{}/v1/crdbs/{guid}/instance", peer.admin_url);
        let body = instance_request(&shared, guid, peer.region_id, &instances, &crdb.retired);
        call(Method::PUT, url, Some(body)).await.map_err(|e| e.description)?;
    }
    tracing::info!(guid, endpoint, "announced the instance's new sync endpoint to its peers");
    Ok(())
}

pub(super) async fn delete_instance(State(control): State<ControlPlane>, Path(guid): Path<String>) -> ApiResult {
    let uid = control
        .with_config(|c| crdb_bdb(c, &guid).map(|b| b.uid))
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))?;
    control.write(Command::DeleteBdb { uid }).await?;
    wait_applied(&control, |c| !c.bdbs.contains_key(&uid)).await;
    wait_unserved(&control, uid).await;
    Ok(Json(json!({ "guid": guid, "bdb_uid": uid, "deleted": true })).into_response())
}

/// This region's instance: the database and the status reported by the node
/// serving it as master (asked through that node's admin API if it is not
/// this one).
async fn instance_view(control: &ControlPlane, guid: &str) -> Result<Value, ApiError> {
    let (bdb, master) = control
        .with_config(|c| crdb_bdb(c, guid).map(|b| (b.clone(), master_node(c, b))))
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))?;
    // The master's node serves the instance: its status, even where this
    // node holds a replica copy.
    let mut view = with_local_status(control, bdb_view(&bdb));
    if let Some((_, admin)) = master
        && admin != control.admin_addr().to_string()
    {
        let url = format!("http://{admin}/v1/crdbs/{guid}/instance/local");
        match call(Method::GET, url, None).await {
            Ok(remote) => view["endpoint_status"] = remote["endpoint_status"].clone(),
            Err(e) => view["endpoint_status"] = json!({ "error": e.description }),
        }
    }
    Ok(view)
}

pub(super) async fn instance_status(State(control): State<ControlPlane>, Path(guid): Path<String>) -> ApiResult {
    Ok(Json(instance_view(&control, &guid).await?).into_response())
}

/// This node's view only (never forwarded, so forwards cannot loop).
pub(super) async fn instance_local(State(control): State<ControlPlane>, Path(guid): Path<String>) -> ApiResult {
    let bdb = control
        .with_config(|c| crdb_bdb(c, &guid).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no crdb {guid} in this cluster")))?;
    Ok(Json(with_local_status(&control, bdb_view(&bdb))).into_response())
}
