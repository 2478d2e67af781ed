//! Recovery after a reconnect, as the application sees it.
//!
//! The client remembers, for every joined group, the last position it saw (from the
//! `JoinAck` or the group's last push) and rejoins from it after each reconnect. A
//! gateway that keeps the group's history answers `recovered`: the pushes missed while
//! the client was away arrive next, in order, before live ones. Otherwise the missed
//! pushes are lost (no history, a new epoch, or older than the history) and the
//! application should resync the group from its own source.
//! [`crate::Client::rejoins`] reports each rejoin's outcome.

use std::collections::HashMap;

/// The outcome of the last rejoin of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejoin {
    /// Whether the pushes missed while disconnected were recovered (they follow, in
    /// order). `false`: resync the group.
    pub recovered: bool,
    /// Rejoins of this group so far (one per reconnect while it was joined).
    pub count: u64,
}

/// Group name -> its last rejoin's outcome.
pub type Rejoins = HashMap<String, Rejoin>;
