//! The crate's one error type.

use longconn_core::Code;

/// Everything that can go wrong in `longconn-group`. [`Error::code`] is the wire code a
/// client gets for a refused `JoinGroup`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection is in as many groups as it may be.
    #[error("the connection is already in {max} groups")]
    GroupLimit {
        /// [`crate::GroupConfig::max_groups_per_connection`].
        max: usize,
    },
    /// The group has as many members as it may have.
    #[error("the group already has {max} members")]
    GroupFull {
        /// [`crate::GroupConfig::max_members_per_group`].
        max: usize,
    },
    /// The join authorizer refused the join.
    #[error("not allowed to join this group")]
    Forbidden,
    /// The group id is empty or longer than [`crate::GroupConfig::max_group_id_len`].
    #[error("invalid group id: {reason}")]
    InvalidGroupId {
        /// Why.
        reason: &'static str,
    },
    /// The connection closed before the join completed.
    #[error("the connection is closed")]
    Closed,
    /// A configuration value is out of its documented range.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The config field.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The push could not be encoded (larger than the maximum frame size).
    #[error(transparent)]
    Encode(#[from] longconn_core::EncodeError),
    /// The group's fan-out is saturated ([`crate::GroupConfig::max_group_backlog`]) or
    /// has as many publishes waiting as it may
    /// ([`crate::GroupConfig::max_pending_publishes`]): the publish was refused before
    /// it was numbered, nothing was sent. Retry after `retry_after`.
    #[error("group fan-out saturated ({reason}); retry in {} ms", retry_after.as_millis())]
    Saturated {
        /// Which bound was reached.
        reason: &'static str,
        /// [`crate::GroupConfig::saturated_retry_after`].
        retry_after: std::time::Duration,
    },
    /// The group log could not number the publish; nothing was sent.
    #[error(transparent)]
    Log(#[from] longconn_server::GroupLogError),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The wire code for a refused join: `group_limit` (310), `group_full` (311) or
    /// `group_forbidden` (312, also for a bad group id or a closed connection).
    pub fn code(&self) -> Code {
        match self {
            Error::GroupLimit { .. } => Code::GroupLimit,
            Error::GroupFull { .. } => Code::GroupFull,
            Error::Forbidden | Error::InvalidGroupId { .. } | Error::Closed => Code::GroupForbidden,
            Error::InvalidConfig { .. }
            | Error::Saturated { .. }
            | Error::Encode(_)
            | Error::Log(_) => Code::Internal,
        }
    }
}
