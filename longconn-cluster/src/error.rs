//! The crate's one error type.

/// What can go wrong talking to the cluster's Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached, timed out, or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// [`crate::NodeRegistry::register`]: another live node holds this node id. Its key
    /// expires one TTL after its last heartbeat.
    #[error("node id {node} is already live (registered by instance {holder_instance})")]
    NodeIdTaken {
        /// The node id asked for.
        node: u16,
        /// The instance token of the live holder ("" if its entry could not be read).
        holder_instance: String,
    },
    /// A value read from Redis is not in the documented encoding (docs/CLUSTER.md).
    #[error("malformed value at {key}: {reason}")]
    Malformed {
        /// The key holding it.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Redis server lacks a command this crate needs (the relay's sharded pub/sub
    /// needs Redis >= 7.0).
    #[error("redis server too old: {0}")]
    Unsupported(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
