//! Shard placement: which nodes host a database's masters and replicas.
//!
//! Pure decision logic (no I/O), so the control plane can test it exhaustively
//! and replay it. The rules, in order:
//! 1. a shard's master and its replicas are on different nodes — otherwise one
//!    node's death takes a shard's every copy;
//! 2. where nodes carry rack (zone) labels, a shard's copies go to different
//!    racks while there are racks to spare;
//! 3. among the nodes allowed, the one hosting the fewest shards is chosen
//!    (ties by node id), so load spreads evenly and the result is
//!    deterministic.

use std::collections::BTreeMap;

use thiserror::Error;

/// A node that can host shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Node id.
    pub node: u64,
    /// Rack or zone label, if the operator set one.
    pub rack: Option<String>,
}

/// Where one shard's copies live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    /// Node of the master.
    pub master: u64,
    /// Nodes of the replicas.
    pub replicas: Vec<u64>,
}

/// Why a placement is impossible.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Each copy of a shard needs its own node.
    #[error("{copies} copies of each shard need {copies} nodes, the cluster has {nodes}")]
    NotEnoughNodes {
        /// Copies per shard (1 + replicas).
        copies: usize,
        /// Nodes available.
        nodes: usize,
    },
    /// A database needs at least one shard.
    #[error("a database needs at least one shard")]
    NoShards,
}

/// Places `shards` shards with `replicas` replicas each on `nodes`, given how
/// many shards each node already hosts (`load`, by node id).
pub fn place(
    shards: usize,
    replicas: usize,
    nodes: &[Candidate],
    load: &BTreeMap<u64, usize>,
) -> Result<Vec<ShardPlacement>, PlacementError> {
    if shards == 0 {
        return Err(PlacementError::NoShards);
    }
    let copies = replicas + 1;
    if nodes.len() < copies {
        return Err(PlacementError::NotEnoughNodes { copies, nodes: nodes.len() });
    }
    let mut load: BTreeMap<u64, usize> =
        nodes.iter().map(|n| (n.node, load.get(&n.node).copied().unwrap_or(0))).collect();
    let mut placements = Vec::with_capacity(shards);
    for _ in 0..shards {
        let mut chosen: Vec<&Candidate> = Vec::with_capacity(copies);
        for _ in 0..copies {
            let used_racks: Vec<&Option<String>> = chosen.iter().map(|c| &c.rack).collect();
            let best = nodes
                .iter()
                .filter(|n| !chosen.iter().any(|c| c.node == n.node))
                .min_by_key(|n| {
                    let rack_taken = n.rack.is_some() && used_racks.contains(&&n.rack);
                    (rack_taken, load[&n.node], n.node)
                })
                .expect("enough nodes were checked above");
            *load.get_mut(&best.node).expect("every candidate has a load") += 1;
            chosen.push(best);
        }
        placements
            .push(ShardPlacement { master: chosen[0].node, replicas: chosen[1..].iter().map(|c| c.node).collect() });
    }
    Ok(placements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(node: u64, rack: Option<&str>) -> Candidate {
        Candidate { node, rack: rack.map(str::to_string) }
    }

    #[test]
    fn copies_of_a_shard_never_share_a_node_and_load_spreads() {
        let nodes = [node(1, None), node(2, None), node(3, None)];
        let placements = place(3, 1, &nodes, &BTreeMap::new()).unwrap();
        let mut per_node = BTreeMap::new();
        for p in &placements {
            assert!(!p.replicas.contains(&p.master));
            for n in std::iter::once(p.master).chain(p.replicas.iter().copied()) {
                *per_node.entry(n).or_insert(0) += 1;
            }
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let masters: Vec<u64> = placements.iter().map(|p| p.master).collect();
        assert_eq!(masters, vec![1, 3, 2]);
    }

    #[test]
    fn replicas_go_to_another_rack_when_there_is_one() {
        let nodes = [node(1, Some("a")), node(2, Some("a")), node(3, Some("b"))];
        let placements = place(1, 1, &nodes, &BTreeMap::new()).unwrap();
        assert_eq!(placements, vec![ShardPlacement { master: 1, replicas: vec![3] }]);
    }

    #[test]
    fn impossible_placements_are_refused() {
        let nodes = [node(1, None)];
        assert_eq!(place(1, 1, &nodes, &BTreeMap::new()), Err(PlacementError::NotEnoughNodes { copies: 2, nodes: 1 }));
        assert_eq!(place(0, 0, &nodes, &BTreeMap::new()), Err(PlacementError::NoShards));
    }
}
