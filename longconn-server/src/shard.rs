//! [`ShardedMap`]: a hash map split into independently locked shards, so that tasks
//! working on different keys rarely wait for each other. The hub, the route store and the
//! group registry all keep their tables in one.
//!
//! The maps hash with [`MapHasher`] (foldhash, seeded at random per map), not std's
//! SipHash: a login inserts into two hub maps and a close removes from both, and with
//! SipHash picking the shard and hashing again inside it, hashing was ~5 % of a
//! gateway's CPU in a login burst (docs/BENCHMARKS.md, "Logins: the gateway's CPU per
//! login").

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

/// The hasher of every [`ShardedMap`] shard (and of the shard choice): foldhash's fast
/// variant, seeded at random per map. Keys here come from clients (device and group
/// ids), so the seed matters: without it, colliding ids could be computed offline.
/// foldhash is not a cryptographic hash (its own documentation calls it "minimally
/// DoS-resistant"); std's SipHash is the stronger and slower choice.
#[derive(Debug, Clone, Default)]
pub struct MapHasher(foldhash::fast::RandomState);

impl BuildHasher for MapHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// One shard's map.
pub type Shard<K, V> = HashMap<K, V, MapHasher>;

/// Number of shards: enough that 2 to 64 cores rarely meet on one lock, few enough that a
/// full walk (`len`, `for_each_shard`) stays cheap.
const SHARDS: usize = 64;

/// A hash map split into 64 mutex-protected maps, chosen by the key's hash.
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    hasher: MapHasher,
    shards: Box<[Mutex<Shard<K, V>>]>,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap::new()
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        ShardedMap {
            hasher: MapHasher::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(MapHasher::default())))
                .collect(),
        }
    }

    /// Locks and returns the shard that holds `key`. Hold the guard briefly: every key of
    /// the shard waits for it.
    pub fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        lock(&self.shards[index])
    }

    /// Number of entries over all shards (each shard locked in turn, so the total is
    /// not a snapshot under concurrent writes).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether every shard is empty.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(s).is_empty())
    }

    /// Calls `f` on each shard in turn, locked.
    pub fn for_each_shard(&self, mut f: impl FnMut(&mut Shard<K, V>)) {
        for shard in self.shards.iter() {
            f(&mut lock(shard));
        }
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves its map
/// consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
