//! The key schema (docs/CLUSTER.md has the table) and the route value encoding.
//!
//! Every key starts with a prefix (default [`DEFAULT_PREFIX`], `lc:`), so one Redis can
//! hold several clusters, or other data, side by side.

use longconn_server::{DeviceKey, Route};

/// The key prefix unless one is set.
pub const DEFAULT_PREFIX: &str = "lc:";

/// Builds keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `{prefix}r:{app length}:{app}:{device}`: the app's length makes the key
    /// unambiguous whatever bytes app and device hold.
    pub(crate) fn route(&self, app: &str, device: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 8 + app.len() + device.len());
        key.push_str(&self.prefix);
        key.push_str("r:");
        key.push_str(&app.len().to_string());
        key.push(':');
        key.push_str(app);
        key.push(':');
        key.push_str(device);
        key
    }

    pub(crate) fn route_of(&self, device: &DeviceKey) -> String {
        self.route(device.app(), device.device())
    }

    /// `{prefix}h:{group}`: the group's history stream (`RedisHistory`).
    pub(crate) fn history(&self, group: &str) -> String {
        format!("{}h:{group}", self.prefix)
    }

    /// `{prefix}g:{group}`: the group log hash (fields `e` epoch, `o` offset).
    pub(crate) fn group_log(&self, group: &str) -> String {
        format!("{}g:{group}", self.prefix)
    }

    /// `{prefix}{nodes}:n:<node id>`: one live node's entry. The literal `{nodes}` is a
    /// Redis Cluster hash tag: every entry and the node set share one slot, so the
    /// registry's scripts (entry and set together) and `MGET`s run on one shard.
    pub(crate) fn node(&self, node: u16) -> String {
        format!("{}{{nodes}}:n:{node}", self.prefix)
    }

    /// `{prefix}relay:{<node id>}`: the node's relay inbox, a sharded pub/sub channel
    /// (not a key). The braces are a hash tag: the channel's slot is that of the node id,
    /// so on a Redis Cluster each node's inbox lives on one shard and the inboxes of
    /// different nodes spread over the shards.
    pub(crate) fn relay(&self, node: u16) -> String {
        format!("{}relay:{{{node}}}", self.prefix)
    }

    /// `{prefix}gn:{group}`: the set of node ids with members of the group.
    pub(crate) fn group_nodes(&self, group: &str) -> String {
        format!("{}gn:{group}", self.prefix)
    }

    /// `{prefix}{nodes}:ids`: the set of node ids that registered (pruned of dead ones by
    /// `NodeRegistry::list`); same hash tag as the entries.
    pub(crate) fn nodes(&self) -> String {
        format!("{}{{nodes}}:ids", self.prefix)
    }
}

/// A route's value: `{node}:{conn_id}`, both in decimal ASCII (at most 26 bytes, so
/// Redis keeps it as an embedded string in the key's own allocation, the same size class
/// as a 10-byte binary form, and `redis-cli` shows it as it is). The connection id comes
/// last so that a script can compare it as the suffix `:{conn_id}`.
pub fn encode_route(route: Route) -> String {
    format!("{}:{}", route.node, route.conn_id)
}

/// Reads a value written by [`encode_route`]; `None` if it is not one.
pub fn decode_route(value: &str) -> Option<Route> {
    let (node, conn_id) = value.split_once(':')?;
    Some(Route {
        node: node.parse().ok()?,
        conn_id: conn_id.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_values_round_trip_and_reject_garbage() {
        let route = Route {
            conn_id: (7 << 48) | 12345,
            node: 7,
        };
        let value = encode_route(route);
        assert_eq!(value, "7:1970324836986937");
        assert_eq!(decode_route(&value), Some(route));
        let widest = encode_route(Route {
            conn_id: u64::MAX,
            node: u16::MAX,
        });
        assert_eq!(widest.len(), 26);
        for bad in ["", "7", "7:", ":1", "x:1", "7:1:2", "70000:1", "7:-1"] {
            assert_eq!(decode_route(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn route_keys_cannot_collide_across_apps() {
        let keys = Keys::new("lc:");
        assert_eq!(keys.route("app", "phone"), "lc:r:3:app:phone");
        // Without the length, ("a:b", "c") and ("a", "b:c") would share a key.
        assert_ne!(keys.route("a:b", "c"), keys.route("a", "b:c"));
        assert_eq!(
            keys.route_of(&DeviceKey::new("app", "phone")),
            "lc:r:3:app:phone"
        );
        assert_eq!(keys.group_log("room"), "lc:g:room");
        assert_eq!(keys.node(2), "lc:{nodes}:n:2");
        assert_eq!(keys.nodes(), "lc:{nodes}:ids");
        assert_eq!(keys.relay(7), "lc:relay:{7}");
        // Scripts touch an entry and the set together: one slot on a cluster.
        use crate::slot::key_slot;
        assert_eq!(
            key_slot(keys.node(2).as_bytes()),
            key_slot(keys.nodes().as_bytes())
        );
        assert_ne!(
            key_slot(keys.relay(1).as_bytes()),
            key_slot(keys.relay(2).as_bytes())
        );
    }
}
