//! Endpoint choice: which nodes, in which order, over which transports.
//!
//! Nodes are ranked per device by weighted rendezvous hashing: node `i` scores
//! `w_i / -ln(u_i)`, where `u_i` in (0, 1) is a hash of (device, node id) and
//! `w_i = 1 / (connections_i + load_smoothing)`. The probability that a node ranks
//! first is proportional to its weight, so new devices go mostly to the least loaded
//! nodes without all of them piling onto the single emptiest one; and a device keeps its
//! ranking while the loads stay put (a node that joins or leaves only moves the devices
//! that rank it first). Draining nodes, and nodes outside the rule's node set, are left
//! out.

use serde::Serialize;

use crate::nodes::{Node, Transport};
use crate::rules::Outcome;

/// One endpoint in an access answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// URL the SDK dials (`tcp://host:port`, `ws://host:port/ws`, ...).
    pub url: String,
    /// `host:port`.
    pub address: String,
    /// Transport.
    pub transport: Transport,
    /// 0 first; the client tries endpoints in this order.
    pub priority: u32,
    /// The node id.
    pub node: u16,
}

/// What shapes the choice besides the nodes and the rule outcome.
#[derive(Debug, Clone, Copy)]
pub struct SelectLimits {
    /// Nodes per answer.
    pub max_nodes: usize,
    /// Endpoints per answer.
    pub max_endpoints: usize,
    /// Added to each node's connection count when weighting.
    pub load_smoothing: u64,
}

/// The endpoints for `device`: for each of the best `max_nodes` nodes (by weighted
/// rendezvous), its addresses in the outcome's transport order, except that transports
/// for which `demoted` says yes (bad reported quality) go after the others.
pub fn select(
    nodes: &[Node],
    outcome: &Outcome,
    device: &str,
    demoted: impl Fn(Transport) -> bool,
    limits: SelectLimits,
) -> Vec<Endpoint> {
    let mut transports: Vec<Transport> = outcome
        .transports
        .iter()
        .copied()
        .filter(|&t| !demoted(t))
        .collect();
    transports.extend(outcome.transports.iter().copied().filter(|&t| demoted(t)));

    let device_hash = fnv1a(device.as_bytes());
    let mut ranked: Vec<(f64, &Node)> = nodes
        .iter()
        .filter(|n| !n.draining)
        .filter(|n| outcome.nodes.as_ref().is_none_or(|ids| ids.contains(&n.id)))
        .filter(|n| transports.iter().any(|t| n.addrs.contains_key(t)))
        .map(|n| (score(device_hash, n, limits.load_smoothing), n))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));

    let mut endpoints = Vec::new();
    'nodes: for (_, node) in ranked.into_iter().take(limits.max_nodes) {
        for t in &transports {
            if endpoints.len() == limits.max_endpoints {
                break 'nodes;
            }
            if let Some(addr) = node.addrs.get(t) {
                endpoints.push(Endpoint {
                    url: addr.url.clone(),
                    address: addr.address.clone(),
                    transport: *t,
                    priority: endpoints.len() as u32,
                    node: node.id,
                });
            }
        }
    }
    endpoints
}

/// Weighted rendezvous score of `node` for the device whose id hashes to
/// `device_hash`.
fn score(device_hash: u64, node: &Node, load_smoothing: u64) -> f64 {
    let h = mix(device_hash ^ mix(u64::from(node.id).wrapping_add(0x9e37_79b9_7f4a_7c15)));
    // 53 random bits, strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let weight = 1.0 / (node.connections.saturating_add(load_smoothing)) as f64;
    weight / -u.ln()
}

/// 64-bit FNV-1a: stable across builds and machines.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::nodes::NodeAddr;

    fn node(id: u16, connections: u64, draining: bool) -> Node {
        let mut addrs = BTreeMap::new();
        for (t, port) in [(Transport::Tcp, 7100), (Transport::Quic, 7102)] {
            let addr = NodeAddr::new(t, &format!("10.0.0.{id}:{port}")).unwrap();
            addrs.insert(t, addr);
        }
        Node {
            id,
            addrs,
            connections,
            draining,
        }
    }

    fn outcome(transports: Vec<Transport>, nodes: Option<Vec<u16>>) -> Outcome {
        Outcome {
            bucket: "default".into(),
            transports,
            nodes,
            flags: BTreeMap::new(),
        }
    }

    const LIMITS: SelectLimits = SelectLimits {
        max_nodes: 2,
        max_endpoints: 8,
        load_smoothing: 1_000,
    };

    #[test]
    fn spreads_by_load_and_is_stable_per_device() {
        let nodes = vec![
            node(1, 10_000, false),
            node(2, 10_000, false),
            node(3, 30_000, false),
            node(4, 0, true),
        ];
        let o = outcome(vec![Transport::Tcp], None);
        let mut first = BTreeMap::<u16, u32>::new();
        for i in 0..30_000 {
            let device = format!("d{i}");
            let a = select(&nodes, &o, &device, |_| false, LIMITS);
            assert_eq!(a, select(&nodes, &o, &device, |_| false, LIMITS));
            assert!(a.iter().all(|e| e.node != 4), "draining node offered");
            *first.entry(a[0].node).or_default() += 1;
        }
        // Weights 1/11000, 1/11000, 1/31000: shares 0.369, 0.369, 0.262... of first
        // places; the two equally loaded nodes get the same share and more than the
        // loaded one, and nobody gets them all.
        let (n1, n2, n3) = (first[&1], first[&2], first[&3]);
        assert!((n1 as i64 - n2 as i64).abs() < 800, "{first:?}");
        assert!(n3 < n1 && n3 > 3_000, "{first:?}");
    }

    #[test]
    fn transports_follow_the_rule_and_quality_and_node_sets() {
        let nodes = vec![node(1, 0, false), node(2, 0, false), node(3, 0, false)];
        let o = outcome(vec![Transport::Quic, Transport::Tcp], Some(vec![2, 3]));
        let answer = select(&nodes, &o, "d", |_| false, LIMITS);
        assert_eq!(answer.len(), 4);
        assert!(answer.iter().all(|e| e.node != 1));
        assert_eq!(answer[0].transport, Transport::Quic);
        assert_eq!(answer[1].transport, Transport::Tcp);
        assert_eq!(answer[0].node, answer[1].node);
        assert_eq!(
            answer.iter().map(|e| e.priority).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        let demoted = select(&nodes, &o, "d", |t| t == Transport::Quic, LIMITS);
        assert_eq!(demoted[0].transport, Transport::Tcp);
        let few = SelectLimits {
            max_endpoints: 3,
            ..LIMITS
        };
        assert_eq!(select(&nodes, &o, "d", |_| false, few).len(), 3);
        let ws_only = outcome(vec![Transport::Ws], None);
        assert!(select(&nodes, &ws_only, "d", |_| false, LIMITS).is_empty());
    }
}
