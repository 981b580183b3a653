//! The configuration rules, applied without Raft.

use super::*;
use meridian_replication::slot::SLOT_COUNT;

fn node(uid: u64, rack: Option<&str>) -> NodeInfo {
    NodeInfo {
        uid,
        addr: format!("127.0.0.1:{}", 9000 + uid),
        admin_addr: format!("127.0.0.1:{}", 9500 + uid),
        rack_id: rack.map(str::to_string),
        status: NodeState::Active,
        sync_addr: None,
    }
}

fn spec(name: &str, port: u16, shards_count: u16, replication: bool) -> BdbSpec {
    BdbSpec { name: name.into(), port, shards_count, replication, password: None, oss_cluster: false, crdb: None }
}

fn cluster(nodes: &[(u64, Option<&str>)]) -> ClusterConfig {
    let mut config = ClusterConfig::default();
    config.apply(&Command::InitCluster { name: "c1".into(), region: "eu".into() }).unwrap();
    for (uid, rack) in nodes {
        config.apply(&Command::AddNode(node(*uid, *rack))).unwrap();
    }
    config
}

fn create(config: &mut ClusterConfig, spec: BdbSpec) -> u64 {
    match config.apply(&Command::CreateBdb(spec)).unwrap() {
        Applied::BdbCreated { uid } => uid,
        other => panic!("expected a created database, got {other:?}"),
    }
}

#[test]
fn a_replicated_database_puts_every_replica_on_another_node() {
    let mut config = cluster(&[(1, None), (2, None), (3, None)]);
    let uid = create(&mut config, spec("db", 12000, 3, true));
    let bdb = &config.bdbs[&uid];
    assert_eq!(bdb.shard_list.len(), 6);
    let masters: Vec<&ShardInfo> =
        config.shards.values().filter(|s| s.bdb_uid == uid && s.role == ShardRole::Master).collect();
    assert_eq!(masters.len(), 3);
    for master in masters {
        let group = config.shard_group(master.uid);
        assert_eq!(group.len(), 2);
        assert_ne!(group[0].node_uid, group[1].node_uid, "a replica shares its master's node");
        assert_eq!(group[1].role, ShardRole::Replica);
        assert_eq!(group[0].epoch, 1);
    }
    // Every node hosts two copies: the load spreads.
    assert!(config.load().values().all(|&n| n == 2), "{:?}", config.load());
    // The slots are split as split_slots says, in order.
    let first = &config.shards[&bdb.shard_list[0]];
    assert_eq!(first.assigned_slots, vec![SlotRange { start: 0, end: 5461 }]);
    config.validate().unwrap();
}

#[test]
fn racks_are_respected_when_there_are_racks_to_spare() {
    let mut config = cluster(&[(1, Some("a")), (2, Some("a")), (3, Some("b"))]);
    let uid = create(&mut config, spec("db", 12000, 1, true));
    let group = config.shard_group(config.bdbs[&uid].shard_list[0]);
    let racks: Vec<&Option<String>> = group.iter().map(|s| &config.nodes[&s.node_uid].rack_id).collect();
    assert_ne!(racks[0], racks[1], "master and replica share a rack: {group:?}");
}

#[test]
fn failover_swaps_roles_and_bumps_the_epoch_on_every_copy() {
    let mut config = cluster(&[(1, None), (2, None)]);
    let uid = create(&mut config, spec("db", 12000, 2, true));
    let master = config.bdbs[&uid].shard_list[0];
    let replica = config.shard_group(master)[1].uid;
    let replica_node = config.shards[&replica].node_uid;
    assert_eq!(
        config.apply(&Command::Failover { shard: master }).unwrap(),
        Applied::FailedOver { master: replica, node_uid: replica_node, epoch: 2 }
    );
    assert_eq!(config.shards[&replica].role, ShardRole::Master);
    assert_eq!(config.shards[&master].role, ShardRole::Replica);
    assert_eq!(config.shards[&master].epoch, 2);
    // Naming the replica (the old master now) fails back.
    assert_eq!(
        config.apply(&Command::Failover { shard: master }).unwrap(),
        Applied::FailedOver { master, node_uid: config.shards[&master].node_uid, epoch: 3 }
    );
    // The other shard was not touched.
    let other = config.bdbs[&uid].shard_list[2];
    assert_eq!(config.shards[&other].epoch, 1);
}

#[test]
fn bad_inputs_are_refused_and_change_nothing() {
    let mut config = cluster(&[(1, None), (2, None)]);
    create(&mut config, spec("db", 12000, 1, false));
    let before = config.clone();
    type Expected = fn(&CommandError) -> bool;
    let cases: Vec<(Command, Expected)> = vec![
        (
            Command::CreateBdb(spec("db", 12001, 1, false)),
            |e| matches!(e, CommandError::Conflict(m) if m.contains("named")),
        ),
        (
            Command::CreateBdb(spec("db2", 12000, 1, false)),
            |e| matches!(e, CommandError::Conflict(m) if m.contains("port")),
        ),
        (Command::CreateBdb(spec("db2", 12001, 0, false)), |e| matches!(e, CommandError::Invalid(_))),
        (
            Command::CreateBdb(spec("db2", 12001, SLOT_COUNT + 1, false)),
            |e| matches!(e, CommandError::Invalid(m) if m.contains("shards_count")),
        ),
        (Command::CreateBdb(spec("", 12001, 1, false)), |e| matches!(e, CommandError::Invalid(_))),
        (Command::CreateBdb(spec("bad name!", 12001, 1, false)), |e| matches!(e, CommandError::Invalid(_))),
        (Command::CreateBdb(spec("db2", 0, 1, false)), |e| matches!(e, CommandError::Invalid(_))),
        (Command::UpdateBdb { uid: 99, update: BdbUpdate::default() }, |e| matches!(e, CommandError::NotFound(_))),
        (Command::DeleteBdb { uid: 99 }, |e| matches!(e, CommandError::NotFound(_))),
        (Command::Failover { shard: 99 }, |e| matches!(e, CommandError::NotFound(_))),
        (Command::Failover { shard: 1 }, |e| matches!(e, CommandError::Conflict(m) if m.contains("no replica"))),
        (Command::RemoveNode { uid: 99 }, |e| matches!(e, CommandError::NotFound(_))),
        (Command::SetNodeState { uid: 99, status: NodeState::Down }, |e| matches!(e, CommandError::NotFound(_))),
        (Command::AddNode(node(0, None)), |e| matches!(e, CommandError::Invalid(_))),
        (Command::AddNode(NodeInfo { uid: 7, ..node(1, None) }), |e| matches!(e, CommandError::Conflict(_))),
        (Command::InitCluster { name: "again".into(), region: "eu".into() }, |e| {
            matches!(e, CommandError::Conflict(_))
        }),
    ];
    for (command, expected) in cases {
        let error = config.apply(&command).unwrap_err();
        assert!(expected(&error), "{command:?} gave {error:?}");
        assert_eq!(config, before, "{command:?} changed the configuration");
    }
}

#[test]
fn placement_needs_enough_active_nodes() {
    let mut config = cluster(&[(1, None), (2, None)]);
    config.apply(&Command::SetNodeState { uid: 2, status: NodeState::Maintenance }).unwrap();
    let error = config.apply(&Command::CreateBdb(spec("db", 12000, 1, true))).unwrap_err();
    assert!(matches!(&error, CommandError::Conflict(m) if m.contains("2 copies")), "{error:?}");
    // Without replication one node is enough, and only the active one is used.
    let uid = create(&mut config, spec("db", 12000, 4, false));
    assert!(config.bdbs[&uid].shard_list.iter().all(|s| config.shards[s].node_uid == 1));
}

#[test]
fn a_node_with_shards_cannot_be_removed_and_delete_frees_everything() {
    let mut config = cluster(&[(1, None), (2, None)]);
    let uid = create(&mut config, spec("db", 12000, 2, true));
    assert!(matches!(config.apply(&Command::RemoveNode { uid: 1 }), Err(CommandError::Conflict(_))));
    config.apply(&Command::DeleteBdb { uid }).unwrap();
    assert!(config.shards.is_empty());
    // Uids are never reused.
    let again = create(&mut config, spec("db", 12000, 1, false));
    assert!(again > uid);
    config.apply(&Command::DeleteBdb { uid: again }).unwrap();
    config.apply(&Command::RemoveNode { uid: 2 }).unwrap();
    assert_eq!(config.nodes.len(), 1);
}

#[test]
fn updates_keep_names_and_ports_unique_and_refuse_resharding() {
    let mut config = cluster(&[(1, None)]);
    let a = create(&mut config, spec("a", 12000, 1, false));
    create(&mut config, spec("b", 12001, 1, false));
    let rename = |name: &str| Command::UpdateBdb {
        uid: a,
        update: BdbUpdate { name: Some(name.into()), ..BdbUpdate::default() },
    };
    assert!(matches!(config.apply(&rename("b")), Err(CommandError::Conflict(_))));
    config.apply(&rename("a2")).unwrap();
    let update = BdbUpdate { port: Some(12005), password: Some("pw".into()), ..BdbUpdate::default() };
    config.apply(&Command::UpdateBdb { uid: a, update }).unwrap();
    assert_eq!((config.bdbs[&a].port, config.bdbs[&a].password.as_deref()), (12005, Some("pw")));
    let reshard = BdbUpdate { shards_count: Some(2), ..BdbUpdate::default() };
    assert!(matches!(config.apply(&Command::UpdateBdb { uid: a, update: reshard }), Err(CommandError::Invalid(_))));
    // Re-adding a node with the same id updates it in place.
    let mut moved = node(1, Some("r9"));
    moved.addr = "10.0.0.1:9000".into();
    config.apply(&Command::AddNode(moved.clone())).unwrap();
    assert_eq!(config.nodes[&1], moved);
}

#[test]
fn the_same_commands_give_the_same_configuration() {
    let commands = vec![
        Command::InitCluster { name: "c".into(), region: "r".into() },
        Command::AddNode(node(3, Some("x"))),
        Command::AddNode(node(1, Some("y"))),
        Command::AddNode(node(2, Some("x"))),
        Command::CreateBdb(spec("one", 1000, 5, true)),
        Command::CreateBdb(spec("two", 1001, 3, true)),
        Command::Failover { shard: 2 },
        Command::DeleteBdb { uid: 1 },
        Command::CreateBdb(spec("three", 1002, 2, false)),
    ];
    let run = || {
        let mut config = ClusterConfig::default();
        for command in &commands {
            let _ = config.apply(command);
        }
        config
    };
    let first = run();
    assert_eq!(first, run());
    let round_trip: ClusterConfig = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
    assert_eq!(round_trip, first);
}

#[test]
fn a_failed_nodes_replicas_move_to_other_racks_and_nodes_after_the_grace_period() {
    let mut config = cluster(&[(1, Some("a")), (2, Some("b")), (3, Some("a")), (4, Some("c"))]);
    let uid = create(&mut config, spec("db", 12000, 2, true));
    let on = |config: &ClusterConfig, node: u64| -> Vec<ShardInfo> {
        config.shards.values().filter(|s| s.bdb_uid == uid && s.node_uid == node).cloned().collect()
    };
    let victim = config.shards[&config.bdbs[&uid].shard_list[0]].node_uid;
    assert!(
        config.apply(&Command::ReplaceReplicas { uid: victim }).is_err(),
        "an active node's replicas stay where they are"
    );
    config.apply(&Command::NodeFailed { uid: victim, unsynced: Vec::new() }).unwrap();
    let before = on(&config, victim);
    assert!(!before.is_empty() && before.iter().all(|s| s.role == ShardRole::Replica), "its masters failed over");
    let moves = config.replica_moves(victim);
    assert_eq!(moves.len(), before.len());
    config.apply(&Command::ReplaceReplicas { uid: victim }).unwrap();
    assert!(on(&config, victim).is_empty(), "every replica left the failed node");
    for copy in &before {
        let group = config.shard_group(copy.uid);
        assert_eq!(group.len(), 2);
        let nodes: Vec<u64> = group.iter().map(|s| s.node_uid).collect();
        assert_ne!(nodes[0], nodes[1], "a shard's copies stay on distinct nodes");
        assert!(nodes.iter().all(|n| config.nodes[n].status == NodeState::Active));
        let racks: Vec<&Option<String>> = nodes.iter().map(|n| &config.nodes[n].rack_id).collect();
        assert_ne!(racks[0], racks[1], "a rack no other copy uses was free");
    }
    config.validate().unwrap();
    // With no node left to take it, a replica stays.
    let mut small = cluster(&[(1, None), (2, None)]);
    let uid = create(&mut small, spec("db", 12000, 1, true));
    let master = small.shards[&small.bdbs[&uid].shard_list[0]].node_uid;
    small.apply(&Command::NodeFailed { uid: master, unsynced: Vec::new() }).unwrap();
    assert!(small.replica_moves(master).is_empty());
    small.apply(&Command::ReplaceReplicas { uid: master }).unwrap();
    assert_eq!(small.shards.values().filter(|s| s.node_uid == master).count(), 1);
}

#[test]
fn a_failed_master_is_never_replaced_by_a_replica_that_never_synced() {
    let mut config = cluster(&[(1, None), (2, None), (3, None)]);
    let uid = create(&mut config, spec("db", 12000, 1, true));
    let group: Vec<ShardInfo> = config.shard_group(config.bdbs[&uid].shard_list[0]).into_iter().cloned().collect();
    let (master, replica) = (group[0].clone(), group[1].uid);
    // Synced: the replica is promoted.
    let mut synced = config.clone();
    synced.apply(&Command::NodeFailed { uid: master.node_uid, unsynced: vec![] }).unwrap();
    assert_eq!(synced.shards[&replica].role, ShardRole::Master);
    // Never synced (an empty copy, or its node just restarted): the master
    // stays where it is, on the failed node, and its data comes back with it.
    config.apply(&Command::NodeFailed { uid: master.node_uid, unsynced: vec![replica] }).unwrap();
    let kept = &config.shards[&master.uid];
    assert_eq!((kept.role, kept.node_uid, kept.epoch), (ShardRole::Master, master.node_uid, master.epoch));
    assert_eq!(config.shards[&replica].role, ShardRole::Replica);
    assert_eq!(config.nodes[&master.node_uid].status, NodeState::Failed);
    // The command as an older node wrote it (no list) still reads.
    let old: Command = serde_json::from_str(&format!(r#"{{"NodeFailed":{{"uid":{}}}}}"#, master.node_uid)).unwrap();
    assert!(matches!(old, Command::NodeFailed { unsynced, .. } if unsynced.is_empty()));
}

fn crdb(region_id: u16, shards: &[u16], granules: u16) -> CrdbInstance {
    let instances =
        shards.iter().enumerate().map(|(i, &n)| CrdbPeer::new(i as u16 + 1, format!("http://r{}", i + 1), n)).collect();
    CrdbInstance { guid: "g1".into(), region_id, instances, retired: Vec::new(), granules }
}

#[test]
fn an_active_active_instance_of_several_shards_holds_whole_granules() {
    let mut config = cluster(&[(1, None), (2, None)]);
    let uid = create(&mut config, BdbSpec { crdb: Some(crdb(2, &[1, 3], 16)), ..spec("aa", 12000, 3, false) });
    let mut slots: Vec<(u16, u16)> = config.bdbs[&uid]
        .shard_list
        .iter()
        .map(|s| config.shards[s].assigned_slots[0])
        .map(|r| (r.start, r.end))
        .collect();
    slots.sort_unstable();
    // 16 granules of 1,024 slots: 5, 5 and 6 granules.
    assert_eq!(slots, vec![(0, 5119), (5120, 10239), (10240, SLOT_COUNT - 1)]);
    let before = config.clone();
    let refused = [
        // The shard count is not the one the instance list gives this region.
        (BdbSpec { crdb: Some(crdb(2, &[1, 2], 16)), ..spec("bb", 12001, 3, false) }, "gives region 2 2 shards"),
        // More shards than granules; granules not a power of two.
        (BdbSpec { crdb: Some(crdb(1, &[2, 1], 1)), ..spec("bb", 12001, 2, false) }, "1 to 1"),
        (BdbSpec { crdb: Some(crdb(1, &[1, 1], 12)), ..spec("bb", 12001, 1, false) }, "power of two"),
    ];
    for (spec, expected) in refused {
        let error = config.apply(&Command::CreateBdb(spec.clone())).unwrap_err();
        assert!(error.to_string().contains(expected), "{spec:?} gave {error}");
    }
    // Region ids above 1,023 do not fit beside a granule in a replica id.
    let mut wide = crdb(1, &[1, 1], 16);
    wide.instances[1].region_id = 1024;
    let error = config.apply(&Command::CreateBdb(BdbSpec { crdb: Some(wide), ..spec("bb", 12001, 1, false) }));
    assert!(error.unwrap_err().to_string().contains("below 1024"));
    // The granules and shard count of an instance never change.
    let update = BdbUpdate { crdb: Some(crdb(2, &[1, 3], 32)), ..BdbUpdate::default() };
    assert!(config.apply(&Command::UpdateBdb { uid, update }).is_err());
    let update = BdbUpdate { crdb: Some(crdb(2, &[1, 2], 16)), ..BdbUpdate::default() };
    assert!(config.apply(&Command::UpdateBdb { uid, update }).is_err());
    assert_eq!(config, before);
}
