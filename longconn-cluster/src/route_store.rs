//! [`RedisRouteStore`]: device routes in Redis, one pipeline per batch.

use std::time::Duration;

use async_trait::async_trait;
use longconn_server::{DeviceKey, Route, RouteStore, RouteStoreError};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Pipeline, Script};
use tracing::warn;

use crate::keys::{DEFAULT_PREFIX, Keys, decode_route, encode_route};
use crate::script::{push_evalsha, query_scripted};
use crate::{Error, Result, ttl_millis};

/// Deletes KEYS[1] only if it still holds the connection id ARGV[1]: its value ends in
/// `:{conn_id}` (see [`encode_route`]). A late close on one node never removes the
/// device's newer route on another.
const COMPARE_AND_DELETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local suffix = ':' .. ARGV[1]
  if #v > #suffix and string.sub(v, -#suffix) == suffix then
    return redis.call('DEL', KEYS[1])
  end
end
return 0
";

/// Sets KEYS[1] to ARGV[1] with TTL ARGV[2] ms if it is absent or already holds
/// ARGV[1]: a refresh extends this node's route, re-creates it if Redis lost it, and
/// never overwrites the route of a newer login elsewhere.
const REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// [`REFRESH`] for many keys in one call: KEYS are routes, ARGV[1] the TTL in ms and
/// ARGV[i + 1] the value KEYS[i] should hold. One script call per chunk instead of one
/// per route: a call's own cost (finding the script, setting up Lua, converting its
/// arguments) was most of Redis's CPU in the route refreshes of a large node.
const REFRESH_MANY: &str = r"
local n = 0
for i, key in ipairs(KEYS) do
  local want = ARGV[i + 1]
  local v = redis.call('GET', key)
  if (not v) or v == want then
    redis.call('SET', key, want, 'PX', ARGV[1])
    n = n + 1
  end
end
return n
";

/// Routes per [`REFRESH_MANY`] call: Redis runs a script alone, so a call stays well
/// under a millisecond.
const REFRESH_PER_CALL: usize = 200;

/// A [`RouteStore`] on Redis. Routes are string keys (`{prefix}r:{app len}:{app}:{device}`,
/// value `{node}:{conn_id}`) with a TTL that every write and refresh sets again.
///
/// Every trait call is one pipeline, one round trip, whatever the batch size (`register`:
/// `SET .. PX`; `register_replacing`: `SET .. PX .. GET`; `unregister`: a
/// compare-and-delete script per device; `refresh`: a set-if-absent-or-same script per
/// device, or for up to 200 devices per call with [`RedisRouteStore::with_multi_key_refresh`];
/// `lookup`: one `MGET`). An empty batch costs nothing. Each command touches one key
/// (the multi-key refresh aside, which is for one Redis only), so on a Redis Cluster
/// ([`crate::connect_cluster`]) a batch is split by shard: one pipeline per shard its
/// keys live on, sent at once.
///
/// `C` is the connection: [`ConnectionManager`] by default (see [`crate::connect`]); any
/// cloneable [`ConnectionLike`] works (tests wrap one to count round trips).
#[derive(Clone)]
pub struct RedisRouteStore<C = ConnectionManager> {
    conn: C,
    keys: Keys,
    ttl_ms: u64,
    compare_and_delete: Script,
    refresh: Script,
    refresh_many: Option<Script>,
}

impl<C> std::fmt::Debug for RedisRouteStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRouteStore")
            .field("keys", &self.keys)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisRouteStore {
    /// The route TTL unless set: 30 s. The server refreshes every route each third of
    /// the TTL ([`RouteStore::refresh_interval`], 10 s), so a live node's routes survive
    /// two missed refreshes (a Redis blip, a slow refresh of a large node); a dead node's
    /// routes are gone at most 30 s after its last refresh.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
}

impl<C> RedisRouteStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on `conn` with the default prefix ([`DEFAULT_PREFIX`]) and TTL
    /// ([`RedisRouteStore::DEFAULT_TTL`]).
    pub fn new(conn: C) -> RedisRouteStore<C> {
        RedisRouteStore {
            conn,
            keys: Keys::new(DEFAULT_PREFIX),
            ttl_ms: RedisRouteStore::DEFAULT_TTL.as_millis() as u64,
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
            refresh: Script::new(REFRESH),
            refresh_many: None,
        }
    }

    /// Refreshes up to 200 routes per script call instead of one (with 100,000 idle
    /// routes over six nodes, Redis's CPU while idle went from 0.067 to 0.042 s/s,
    /// docs/BENCHMARKS.md). Only on one Redis: on a Redis Cluster a script's keys
    /// must share a slot, and routes spread over every slot. Off by default;
    /// [`crate::ClusterNode`] turns it on for `RedisTarget::Single`.
    pub fn with_multi_key_refresh(mut self, on: bool) -> RedisRouteStore<C> {
        self.refresh_many = on.then(|| Script::new(REFRESH_MANY));
        self
    }

    /// Sets the route TTL (at least 1 ms; whole milliseconds). The server refreshes
    /// every route each third of it; short TTLs (a second) are for tests.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<RedisRouteStore<C>> {
        self.ttl_ms = ttl_millis(ttl, "route ttl must be at least 1 ms")?;
        Ok(self)
    }

    /// Sets the key prefix (default [`DEFAULT_PREFIX`]).
    pub fn with_prefix(mut self, prefix: &str) -> RedisRouteStore<C> {
        self.keys = Keys::new(prefix);
        self
    }

    /// The route TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    fn set_pipeline(&self, routes: &[(DeviceKey, Route)], get: bool) -> Pipeline {
        let mut pipe = Pipeline::with_capacity(routes.len());
        for (device, route) in routes {
            pipe.cmd("SET")
                .arg(self.keys.route_of(device))
                .arg(encode_route(*route))
                .arg("PX")
                .arg(self.ttl_ms);
            if get {
                pipe.arg("GET");
            }
        }
        pipe
    }

    async fn register_inner(&self, routes: &[(DeviceKey, Route)]) -> Result<()> {
        if routes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        self.set_pipeline(routes, false)
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn register_replacing_inner(
        &self,
        routes: &[(DeviceKey, Route)],
    ) -> Result<Vec<Option<Route>>> {
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let old: Vec<Option<String>> = self
            .set_pipeline(routes, true)
            .query_async(&mut conn)
            .await?;
        Ok(routes
            .iter()
            .zip(old)
            .map(|((device, _), value)| self.decode(device.app(), device.device(), value))
            .collect())
    }

    async fn unregister_inner(&self, routes: &[(DeviceKey, u64)]) -> Result<()> {
        if routes.is_empty() {
            return Ok(());
        }
        let mut pipe = Pipeline::with_capacity(routes.len());
        for (device, conn_id) in routes {
            let key = self.keys.route_of(device);
            push_evalsha(&mut pipe, &self.compare_and_delete, key.as_bytes())
                .arg(*conn_id)
                .ignore();
        }
        let mut conn = self.conn.clone();
        query_scripted::<(), _>(&mut conn, &self.compare_and_delete, &pipe).await?;
        Ok(())
    }

    async fn refresh_inner(&self, routes: &[(DeviceKey, Route)]) -> Result<()> {
        if routes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        if let Some(refresh_many) = &self.refresh_many {
            let mut pipe = Pipeline::with_capacity(routes.len().div_ceil(REFRESH_PER_CALL));
            for chunk in routes.chunks(REFRESH_PER_CALL) {
                pipe.cmd("EVALSHA")
                    .arg(refresh_many.get_hash())
                    .arg(chunk.len());
                for (device, _) in chunk {
                    pipe.arg(self.keys.route_of(device));
                }
                pipe.arg(self.ttl_ms);
                for (_, route) in chunk {
                    pipe.arg(encode_route(*route));
                }
                pipe.ignore();
            }
            query_scripted::<(), _>(&mut conn, refresh_many, &pipe).await?;
            return Ok(());
        }
        let mut pipe = Pipeline::with_capacity(routes.len());
        for (device, route) in routes {
            let key = self.keys.route_of(device);
            push_evalsha(&mut pipe, &self.refresh, key.as_bytes())
                .arg(encode_route(*route))
                .arg(self.ttl_ms)
                .ignore();
        }
        query_scripted::<(), _>(&mut conn, &self.refresh, &pipe).await?;
        Ok(())
    }

    async fn lookup_inner(&self, app: &str, devices: &[&str]) -> Result<Vec<Option<Route>>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = devices.iter().map(|d| self.keys.route(app, d)).collect();
        let mut conn = self.conn.clone();
        // `MGET` answers one value per key, in order (nil for a missing key).
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(devices
            .iter()
            .zip(values)
            .map(|(device, value)| self.decode(app, device, value))
            .collect())
    }

    /// A stored value as a route; a value in another encoding is reported and treated
    /// as no route (the next login or refresh of the device overwrites it).
    fn decode(&self, app: &str, device: &str, value: Option<String>) -> Option<Route> {
        let value = value?;
        let route = decode_route(&value);
        if route.is_none() {
            let err = Error::Malformed {
                key: self.keys.route(app, device),
                reason: format!("{value:?} is not {{node}}:{{conn_id}}"),
            };
            warn!(error = %err, "ignoring a malformed route");
        }
        route
    }
}

fn store_error(err: Error) -> RouteStoreError {
    RouteStoreError(Box::new(err))
}

#[async_trait]
impl<C> RouteStore for RedisRouteStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn register(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        self.register_inner(routes).await.map_err(store_error)
    }

    async fn register_replacing(
        &self,
        routes: &[(DeviceKey, Route)],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        self.register_replacing_inner(routes)
            .await
            .map_err(store_error)
    }

    async fn unregister(&self, routes: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError> {
        self.unregister_inner(routes).await.map_err(store_error)
    }

    async fn refresh(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        self.refresh_inner(routes).await.map_err(store_error)
    }

    async fn lookup(
        &self,
        app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        self.lookup_inner(app, devices).await.map_err(store_error)
    }

    /// A third of the TTL: a live route survives two failed refreshes.
    fn refresh_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis((self.ttl_ms / 3).max(1)))
    }
}
