//! The crate's one error type.

use longconn_core::{ConfigError, EncodeError};

use crate::route_store::RouteStoreError;

/// Everything a `longconn-server` API can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config or router builder was given a value outside its documented range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A push message does not fit the maximum frame size; nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The route store failed during a batched push.
    #[error(transparent)]
    RouteStore(#[from] RouteStoreError),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
