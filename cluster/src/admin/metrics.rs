//! `GET /metrics`: the WAN sync figures in the Prometheus (OpenMetrics) text
//! format, one series per active-active database and peer region, and each
//! database endpoint's connections, keys and commands (`bdb_*`).
//!
//! Names follow Redis Enterprise's `database_syncer_*` metrics where one
//! fits. Every scrape builds a fresh [`Registry`] from the node's
//! [`MonitorRegistry`](meridian_wan::MonitorRegistry) readings — the same
//! the `SyncMonitor` gRPC service reads — rather than keeping metric objects
//! in step with links that come and go: a link that stops simply has no
//! series at the next scrape. Counters carry OpenMetrics' `_total` suffix
//! (prometheus-client adds it).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use meridian_wan::{LinkState, PeerReading};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::control::{BdbReading, ControlPlane};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one series: bdb, crdb_guid, local_region, peer_region, and the
/// shards the link joins (several links join one shard to one region when
/// the regions' shard counts differ, D102).
type Labels = Vec<(&'static str, String)>;

fn labels(reading: &PeerReading) -> Labels {
    vec![
        ("bdb", reading.bdb.to_string()),
        ("crdb_guid", reading.crdb_guid.clone()),
        ("local_region", reading.local_region.to_string()),
        ("peer_region", reading.peer_region.to_string()),
        ("local_shard", reading.local_shard.to_string()),
        ("peer_shard", reading.peer_shard.to_string()),
    ]
}

/// The text for the WAN links' `readings` and the database endpoints' `bdbs`.
pub fn render(readings: &[PeerReading], bdbs: &[BdbReading]) -> String {
    let mut registry = Registry::default();
    // Per database endpoint, named as Redis Enterprise's `bdb_*` metrics.
    let bdb_labels = |bdb: &BdbReading| vec![("bdb", bdb.uid.to_string())];
    let conns = Family::<Labels, Gauge>::default();
    let keys = Family::<Labels, Gauge>::default();
    let total_req = Family::<Labels, Counter>::default();
    for bdb in bdbs {
        conns.get_or_create(&bdb_labels(bdb)).set(i64::try_from(bdb.conns).unwrap_or(i64::MAX));
        keys.get_or_create(&bdb_labels(bdb)).set(i64::try_from(bdb.keys).unwrap_or(i64::MAX));
        total_req.get_or_create(&bdb_labels(bdb)).inc_by(bdb.total_req);
    }
    registry.register("bdb_conns", "Clients connected to the database endpoint", conns);
    registry.register("bdb_no_of_keys", "Keys in the database", keys);
    registry.register("bdb_total_req", "Commands the database endpoint processed", total_req);
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&PeerReading) -> u64| {
        let family = Family::<Labels, Gauge>::default();
        for reading in readings {
            family.get_or_create(&labels(reading)).set(i64::try_from(value(reading)).unwrap_or(i64::MAX));
        }
        registry.register(name, help, family);
    };
    gauge("database_syncer_lag_ms", "Milliseconds since this region last had every delta of the peer", &|r| {
        r.ingress.lag_ms
    });
    gauge("database_syncer_lag_ops", "Deltas the peer announced that this region has not applied", &|r| {
        r.ingress.lag_ops
    });
    gauge(
        "database_syncer_state",
        "State of the link from the peer: 0 idle, 1 connecting, 2 full sync, 3 streaming, 4 backoff",
        &|r| LinkState::from_name(r.ingress.state).map_or(0, |s| u64::from(s.code())),
    );
    let mut counter = |name: &str, help: &str, value: &dyn Fn(&PeerReading) -> u64| {
        let family = Family::<Labels, Counter>::default();
        for reading in readings {
            family.get_or_create(&labels(reading)).inc_by(value(reading));
        }
        registry.register(name, help, family);
    };
    let egress = |r: &PeerReading| r.egress.clone().unwrap_or_default();
    counter("database_syncer_ingress_bytes", "Payload bytes received from the peer, compressed", &|r| {
        r.ingress.bytes_in_wire
    });
    counter("database_syncer_ingress_bytes_decompressed", "Payload bytes received from the peer, raw", &|r| {
        r.ingress.bytes_in_raw
    });
    counter("database_syncer_egress_bytes", "Payload bytes sent to the peer, compressed", &|r| {
        egress(r).bytes_out_wire
    });
    counter("database_syncer_egress_bytes_decompressed", "Payload bytes sent to the peer, raw", &|r| {
        egress(r).bytes_out_raw
    });
    counter("database_syncer_ingress_deltas", "Deltas applied from the peer", &|r| r.ingress.deltas);
    counter("database_syncer_egress_deltas", "Deltas sent to the peer", &|r| egress(r).deltas);
    counter("database_syncer_full_syncs", "Streams from the peer that began with a snapshot", &|r| {
        r.ingress.full_syncs
    });
    counter("database_syncer_partial_syncs", "Streams from the peer that resumed from a cursor", &|r| {
        r.ingress.partial_syncs
    });
    counter("database_syncer_errors", "Streams from the peer that failed", &|r| r.ingress.errors);
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// The handler.
pub(super) async fn metrics(State(control): State<ControlPlane>) -> Response {
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], render(&control.monitor_peers(), &control.bdb_readings()))
        .into_response()
}

#[cfg(test)]
mod tests {
    use meridian_wan::LinkStatsSnapshot;

    use super::*;

    #[test]
    fn series_carry_the_peer_labels() {
        let reading = PeerReading {
            bdb: 2,
            crdb_guid: "g1".into(),
            local_region: 1,
            peer_region: 2,
            local_shard: 0,
            peer_shard: 1,
            endpoint: "http://b:9445".into(),
            ingress: LinkStatsSnapshot {
                state: "streaming",
                lag_ms: 12,
                bytes_in_wire: 100,
                full_syncs: 1,
                ..Default::default()
            },
            egress: None,
        };
        let text = render(&[reading], &[BdbReading { uid: 2, conns: 3, total_req: 40, keys: 5 }]);
        let labels = r#"{bdb="2",crdb_guid="g1",local_region="1",peer_region="2",local_shard="0",peer_shard="1"}"#;
        assert!(text.contains(&format!("database_syncer_lag_ms{labels} 12")), "{text}");
        assert!(text.contains(&format!("database_syncer_state{labels} 3")), "{text}");
        assert!(text.contains(&format!("database_syncer_ingress_bytes_total{labels} 100")), "{text}");
        assert!(text.contains(&format!("database_syncer_full_syncs_total{labels} 1")), "{text}");
        assert!(text.contains(&format!("database_syncer_egress_bytes_total{labels} 0")), "{text}");
        assert!(text.contains(r#"bdb_conns{bdb="2"} 3"#), "{text}");
        assert!(text.contains(r#"bdb_no_of_keys{bdb="2"} 5"#), "{text}");
        assert!(text.contains(r#"bdb_total_req_total{bdb="2"} 40"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
