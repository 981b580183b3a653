//! `meridian ctl`: the admin REST API from the command line.
//!
//! Each subcommand is one request to a node's admin API (`--url`, default
//! `http://127.0.0.1:9443`; any node will do — writes are forwarded to the
//! leader). Answers print as aligned tables, or as the API's raw JSON with
//! `--json`. An error answer prints the API's description and exits non-zero.
//! The HTTP client is hyper's, which the tree already has through tonic and
//! axum.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
/// The HTTP method and status types of [`request`].
pub use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The admin API a `ctl` command talks to by default.
pub const URL_DEFAULT: &str = "http://127.0.0.1:9443";
/// How long one request may take (a write may wait out an election).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest answer `ctl` reads, in bytes.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// `meridian ctl` arguments.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Admin API of any node of the cluster.
    #[arg(long, default_value = URL_DEFAULT, global = true)]
    pub url: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `ctl` subcommands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Databases.
    #[command(subcommand)]
    Bdb(BdbCommand),
    /// Shards.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Active-active databases across regions.
    #[command(subcommand)]
    Crdb(CrdbCommand),
}

/// `ctl crdb ...`
#[derive(Subcommand, Debug)]
pub enum CrdbCommand {
    /// Creates an active-active database with an instance in every given
    /// region; the region behind `--url` coordinates.
    Create {
        /// Name (the same in every region).
        #[arg(long)]
        name: String,
        /// Client port (the same in every region).
        #[arg(long)]
        port: u16,
        /// Admin API URL of one region's cluster; once per region, in region
        /// id order (1, 2, ...).
        #[arg(long = "instance", required = true)]
        instances: Vec<String>,
        /// Password of the default user.
        #[arg(long)]
        password: Option<String>,
        /// An in-memory replica of every instance on another node of its
        /// region; WAN deltas leave a region once the replica holds them.
        #[arg(long)]
        replication: bool,
        /// Shards of each instance: once for all, or once per `--instance`
        /// in the same order (counts may differ between regions).
        #[arg(long = "shards")]
        shards: Vec<u16>,
        /// Granules the slots are cut into (a power of two up to 64, at least
        /// the largest shard count; default 1 if every instance has one
        /// shard, else 16). Fixed for the crdb's life: it bounds the shard
        /// count of instances added later.
        #[arg(long)]
        granules: Option<u16>,
    },
    /// The active-active databases with an instance in this cluster.
    List,
    /// Every instance of one, with its WAN link figures.
    Status {
        /// The crdb's guid.
        guid: String,
    },
    /// Deletes every instance of one.
    Delete {
        /// The crdb's guid.
        guid: String,
    },
    /// Adds an instance in another region (it gets the next region id and
    /// a full sync from every peer).
    AddInstance {
        /// The crdb's guid.
        guid: String,
        /// Admin API URL of the new region's cluster.
        #[arg(long = "instance")]
        instance: String,
        /// Its shard count (at most the crdb's granules).
        #[arg(long, default_value_t = 1)]
        shards: u16,
    },
    /// Removes another region's instance (deleted there; the remaining
    /// regions resync from each other).
    RemoveInstance {
        /// The crdb's guid.
        guid: String,
        /// The region id of the instance to remove (see `crdb status`).
        #[arg(long = "region")]
        region: u16,
        /// Remove it even if its region cannot be reached.
        #[arg(long)]
        force: bool,
    },
}

/// `ctl cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Name, region, counts and this node's Raft state.
    Info,
}

/// `ctl node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Every node.
    List,
    /// One node.
    Get {
        /// Node id.
        uid: u64,
    },
    /// Sets a node's placement state (`maintenance` and `down` get no new shards).
    Update {
        /// Node id.
        uid: u64,
        /// `active`, `maintenance` or `down`.
        #[arg(long)]
        status: String,
    },
}

/// `ctl bdb ...`
#[derive(Subcommand, Debug)]
pub enum BdbCommand {
    /// Creates a database.
    Create {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Client port.
        #[arg(long)]
        port: u16,
        /// Number of master shards.
        #[arg(long, default_value_t = 1)]
        shards: u16,
        /// A replica for every shard, on another node.
        #[arg(long)]
        replication: bool,
        /// Password of the default user.
        #[arg(long)]
        password: Option<String>,
        /// OSS Cluster API mode.
        #[arg(long)]
        oss_cluster: bool,
    },
    /// Every database.
    List,
    /// One database.
    Get {
        /// Database uid.
        uid: u64,
    },
    /// Changes a database (only the given fields).
    Update {
        /// Database uid.
        uid: u64,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New port.
        #[arg(long)]
        port: Option<u16>,
        /// New password ("" removes it).
        #[arg(long)]
        password: Option<String>,
        /// OSS Cluster API mode on or off.
        #[arg(long)]
        oss_cluster: Option<bool>,
    },
    /// Deletes a database.
    Delete {
        /// Database uid.
        uid: u64,
    },
    /// Makes a replica of a shard its master.
    Failover {
        /// Database uid.
        uid: u64,
        /// Any copy of the shard.
        #[arg(long)]
        shard: u64,
    },
}

/// `ctl shard ...`
#[derive(Subcommand, Debug)]
pub enum ShardCommand {
    /// Every shard copy.
    List {
        /// Only this database's shards.
        #[arg(long)]
        bdb: Option<u64>,
    },
}

/// Runs one `ctl` command and prints its answer.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let (method, path, body, view): (Method, String, Option<Value>, View) = match args.command {
        CtlCommand::Cluster(ClusterCommand::Info) => (Method::GET, "/v1/cluster".into(), None, View::Cluster),
        CtlCommand::Node(NodeCommand::List) => (Method::GET, "/v1/nodes".into(), None, View::Nodes),
        CtlCommand::Node(NodeCommand::Get { uid }) => (Method::GET, format!("/v1/nodes/{uid}"), None, View::Nodes),
        CtlCommand::Node(NodeCommand::Update { uid, status }) => {
            (Method::PUT, format!("/v1/nodes/{uid}"), Some(json!({ "status": status })), View::Nodes)
        }
        CtlCommand::Bdb(BdbCommand::Create { name, port, shards, replication, password, oss_cluster }) => {
            let mut body = json!({
                "name": name, "port": port, "shards_count": shards,
                "replication": replication, "oss_cluster": oss_cluster,
            });
            if let Some(password) = password {
                body["password"] = json!(password);
            }
            (Method::POST, "/v1/bdbs".into(), Some(body), View::Bdbs)
        }
        CtlCommand::Bdb(BdbCommand::List) => (Method::GET, "/v1/bdbs".into(), None, View::Bdbs),
        CtlCommand::Bdb(BdbCommand::Get { uid }) => (Method::GET, format!("/v1/bdbs/{uid}"), None, View::Bdbs),
        CtlCommand::Bdb(BdbCommand::Update { uid, name, port, password, oss_cluster }) => {
            let mut body = serde_json::Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(port) = port {
                body.insert("port".into(), json!(port));
            }
            if let Some(password) = password {
                body.insert("password".into(), json!(password));
            }
            if let Some(oss_cluster) = oss_cluster {
                body.insert("oss_cluster".into(), json!(oss_cluster));
            }
            (Method::PUT, format!("/v1/bdbs/{uid}"), Some(Value::Object(body)), View::Bdbs)
        }
        CtlCommand::Bdb(BdbCommand::Delete { uid }) => (Method::DELETE, format!("/v1/bdbs/{uid}"), None, View::Raw),
        CtlCommand::Bdb(BdbCommand::Failover { uid, shard }) => {
            (Method::POST, format!("/v1/bdbs/{uid}/actions/failover"), Some(json!({ "shard_uid": shard })), View::Raw)
        }
        CtlCommand::Shard(ShardCommand::List { bdb }) => (Method::GET, "/v1/shards".into(), None, View::Shards(bdb)),
        CtlCommand::Crdb(CrdbCommand::Create { name, port, instances, password, replication, shards, granules }) => {
            let mut body = json!({ "name": name, "port": port, "instances": instances, "replication": replication,
                                   "shards": shards });
            if let Some(password) = password {
                body["password"] = json!(password);
            }
            if let Some(granules) = granules {
                body["granules"] = json!(granules);
            }
            (Method::POST, "/v1/crdbs".into(), Some(body), View::CrdbCreated)
        }
        CtlCommand::Crdb(CrdbCommand::List) => (Method::GET, "/v1/crdbs".into(), None, View::Crdbs),
        CtlCommand::Crdb(CrdbCommand::Status { guid }) => {
            (Method::GET, format!("/v1/crdbs/{guid}"), None, View::CrdbStatus)
        }
        CtlCommand::Crdb(CrdbCommand::AddInstance { guid, instance, shards }) => {
            let body = json!({ "instance": instance, "shards": shards });
            (Method::POST, format!("/v1/crdbs/{guid}/instances"), Some(body), View::Raw)
        }
        CtlCommand::Crdb(CrdbCommand::RemoveInstance { guid, region, force }) => {
            let query = if force { "?force=true" } else { "" };
            (Method::DELETE, format!("/v1/crdbs/{guid}/instances/{region}{query}"), None, View::Raw)
        }
        CtlCommand::Crdb(CrdbCommand::Delete { guid }) => {
            (Method::DELETE, format!("/v1/crdbs/{guid}"), None, View::CrdbDeleted)
        }
    };
    let (status, answer) = request(method, &format!("{base}{path}"), body).await?;
    if !status.is_success() {
        let description = answer.get("description").and_then(Value::as_str).map(str::to_string);
        anyhow::bail!("{status}: {}", description.unwrap_or_else(|| answer.to_string()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render(&view, &answer));
    }
    Ok(())
}

/// Sends one request; returns the status and the JSON answer.
pub async fn request(method: Method, url: &str, body: Option<Value>) -> anyhow::Result<(StatusCode, Value)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let bytes = match &body {
        Some(body) => Bytes::from(serde_json::to_vec(body)?),
        None => Bytes::new(),
    };
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| anyhow::anyhow!("bad URL {url}: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?
            .to_bytes();
        // A non-JSON answer (a proxy's or the HTTP layer's error page) is
        // shown as its text.
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| json!({ "description": String::from_utf8_lossy(&body).trim().to_string() }))
        };
        anyhow::Ok((status, value))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer in {}s", REQUEST_TIMEOUT.as_secs()))?
}

enum View {
    Cluster,
    Nodes,
    Bdbs,
    Shards(Option<u64>),
    Crdbs,
    CrdbCreated,
    CrdbStatus,
    CrdbDeleted,
    Raw,
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.contains_key("start") && map.contains_key("end") => {
            format!("{}-{}", cell(&map["start"]), cell(&map["end"]))
        }
        other => other.to_string(),
    }
}

fn rows(answer: &Value) -> Vec<&Value> {
    match answer {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Renders `rows` as a table of the given columns (header, JSON field).
fn table(columns: &[(&str, &str)], rows: &[&Value]) -> String {
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|(_, field)| cell(&row[*field])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, _))| cells.iter().map(|r| r[i].len()).chain([header.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<&str>| -> String {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn render(view: &View, answer: &Value) -> String {
    match view {
        View::Cluster => {
            let raft = &answer["raft"];
            format!(
                "name:    {}\nregion:  {}\nnodes:   {}\nbdbs:    {}\nshards:  {}\nnode:    {} ({})\nleader:  {}\nterm:    {}\nvoters:  {}\nlearners: {}\n",
                cell(&answer["name"]),
                cell(&answer["region"]),
                cell(&answer["nodes_count"]),
                cell(&answer["bdbs_count"]),
                cell(&answer["shards_count"]),
                cell(&raft["node_id"]),
                cell(&raft["role"]),
                cell(&raft["leader_id"]),
                cell(&raft["term"]),
                cell(&raft["voters"]),
                cell(&raft["learners"]),
            )
        }
        View::Nodes => table(
            &[
                ("ID", "uid"),
                ("ADDRESS", "addr"),
                ("ADMIN", "admin_addr"),
                ("SYNC", "sync_addr"),
                ("RACK", "rack_id"),
                ("STATUS", "status"),
                ("SHARDS", "shard_count"),
            ],
            &rows(answer),
        ),
        View::Bdbs => table(
            &[
                ("UID", "uid"),
                ("NAME", "name"),
                ("PORT", "port"),
                ("SHARDS", "shards_count"),
                ("REPLICATION", "replication"),
                ("OSS_CLUSTER", "oss_cluster"),
                ("AUTH", "authentication"),
                ("SHARD_LIST", "shard_list"),
            ],
            &rows(answer),
        ),
        View::Shards(bdb) => {
            let all = rows(answer);
            let shown: Vec<&Value> =
                all.into_iter().filter(|s| bdb.is_none_or(|b| s["bdb_uid"].as_u64() == Some(b))).collect();
            table(
                &[
                    ("UID", "uid"),
                    ("BDB", "bdb_uid"),
                    ("NODE", "node_uid"),
                    ("ROLE", "role"),
                    ("SLOTS", "assigned_slots"),
                    ("EPOCH", "epoch"),
                ],
                &shown,
            )
        }
        View::Crdbs => table(
            &[("GUID", "guid"), ("NAME", "name"), ("PORT", "port"), ("REGION", "region_id"), ("BDB", "bdb_uid")],
            &rows(answer),
        ),
        View::CrdbCreated => {
            let head = format!(
                "guid: {}\nname: {}\nport: {}\n",
                cell(&answer["guid"]),
                cell(&answer["name"]),
                cell(&answer["port"])
            );
            head + &table(
                &[
                    ("REGION", "region_id"),
                    ("ADMIN", "admin_url"),
                    ("SHARDS", "shards"),
                    ("SYNC", "sync_endpoint"),
                    ("BDB", "bdb_uid"),
                ],
                &rows(&answer["instances"]),
            )
        }
        View::CrdbDeleted => {
            format!("guid: {}\n", cell(&answer["guid"]))
                + &table(&[("REGION", "region_id"), ("RESULT", "result")], &rows(&answer["instances"]))
        }
        View::CrdbStatus => render_crdb_status(answer),
        View::Raw => {
            let mut out = String::new();
            if let Value::Object(map) = answer {
                for (key, value) in map {
                    out.push_str(&format!("{key}: {}\n", cell(value)));
                }
            }
            out
        }
    }
}

/// One block per instance: where it is, its endpoint's state, and one line
/// per WAN link with each peer region: its state, lag, bytes in (from the
/// peer) and out (to it) compressed and raw, full and partial syncs, errors.
fn render_crdb_status(answer: &Value) -> String {
    let mut out =
        format!("guid: {}\nname: {}\nport: {}\n", cell(&answer["guid"]), cell(&answer["name"]), cell(&answer["port"]));
    for instance in rows(&answer["instances"]) {
        let view = &instance["instance"];
        let status = &view["endpoint_status"];
        out.push_str(&format!(
            "\nregion {}  admin {}  sync {}\n",
            cell(&instance["region_id"]),
            cell(&instance["admin_url"]),
            cell(&instance["sync_endpoint"])
        ));
        if let Some(error) = view.get("error") {
            out.push_str(&format!("  unreachable: {}\n", cell(error)));
            continue;
        }
        out.push_str(&format!(
            "  bdb {}  node {}  endpoint {}  status {}\n",
            cell(&view["uid"]),
            cell(&status["node_uid"]),
            cell(&status["endpoint"]),
            cell(&status["status"])
        ));
        if let Some(error) = status.get("error") {
            out.push_str(&format!("  error: {}\n", cell(error)));
        }
        // A sharded instance: each shard this node serves has its own links.
        let shards: Vec<&Value> = rows(&status["local_shards"]).into_iter().filter(|s| s["links"].is_array()).collect();
        if shards.is_empty() {
            out.push_str(&links_table(&status["links"]));
        }
        for shard in shards {
            out.push_str(&format!("  shard {}  keys {}\n", cell(&shard["shard"]), cell(&shard["keys"])));
            out.push_str(&links_table(&shard["links"]));
        }
    }
    out
}

/// One aligned line per WAN link, indented under its instance.
fn links_table(links: &Value) -> String {
    let links = table(
        &[
            ("PEER", "region_id"),
            ("SHARD", "shard"),
            ("STATE", "state"),
            ("LAG_OPS", "lag_ops"),
            ("LAG_MS", "lag_ms"),
            ("DELTAS", "deltas"),
            ("IN_WIRE", "bytes_in_wire"),
            ("IN_RAW", "bytes_in_raw"),
            ("OUT_WIRE", "bytes_out_wire"),
            ("OUT_RAW", "bytes_out_raw"),
            ("FULL", "full_syncs"),
            ("PARTIAL", "partial_syncs"),
            ("ERRORS", "errors"),
            ("LAST_ERROR", "last_error"),
        ],
        &rows(links).into_iter().filter(|l| !l.is_null()).collect::<Vec<_>>(),
    );
    links.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_show_slot_ranges() {
        let shards = json!([
            {"uid": 1, "bdb_uid": 1, "node_uid": 2, "role": "master", "assigned_slots": [{"start": 0, "end": 16383}], "epoch": 1},
            {"uid": 12, "bdb_uid": 1, "node_uid": 3, "role": "replica", "assigned_slots": [{"start": 0, "end": 16383}], "epoch": 1},
        ]);
        let text = render(&View::Shards(None), &shards);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "UID  BDB  NODE  ROLE     SLOTS    EPOCH");
        assert_eq!(lines[2], "12   1    3     replica  0-16383  1");
        assert_eq!(render(&View::Shards(Some(9)), &shards).lines().count(), 1, "filtered to the header");
    }

    #[test]
    fn crdb_status_shows_each_instance_and_its_links() {
        let answer = json!({
            "guid": "g1", "name": "shared", "port": 12000,
            "instances": [
                {"region_id": 1, "admin_url": "http://a:9443", "sync_endpoint": "a:9445", "instance": {
                    "uid": 2, "endpoint_status": {"node_uid": 1, "endpoint": "a:12000", "status": "active",
                    "links": [{"region_id": 2, "shard": 0, "state": "streaming", "lag_ops": 0, "lag_ms": 0, "deltas": 7,
                               "bytes_in_wire": 321, "bytes_in_raw": 900, "bytes_out_wire": 50, "bytes_out_raw": 80,
                               "full_syncs": 1, "partial_syncs": 2, "errors": 0, "last_error": null}]}}},
                {"region_id": 2, "admin_url": "http://b:9443", "sync_endpoint": "b:9445",
                 "instance": {"error": "cannot reach http://b:9443"}},
            ]
        });
        let text = render(&View::CrdbStatus, &answer);
        assert!(text.contains("region 1  admin http://a:9443  sync a:9445"), "{text}");
        assert!(text.contains("bdb 2  node 1  endpoint a:12000  status active"), "{text}");
        assert!(
            text.contains(
                "  PEER  SHARD  STATE      LAG_OPS  LAG_MS  DELTAS  IN_WIRE  IN_RAW  OUT_WIRE  OUT_RAW  FULL  PARTIAL  ERRORS  LAST_ERROR"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  2     0      streaming  0        0       7       321      900     50        80       1     2        0       -"
            ),
            "{text}"
        );
        assert!(text.contains("unreachable: cannot reach http://b:9443"), "{text}");
    }
}
