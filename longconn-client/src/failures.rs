//! The record of failed connection attempts behind [`crate::Client::last_connect_error`]
//! and [`crate::ClientError::Unreachable`].

use std::sync::{Arc, Mutex};

use longconn_transport::ConnectFailure;

use crate::error::ClientError;

/// Failed attempts since the last successful login, shared by the driver (which
/// records) and the handle (which reads).
#[derive(Debug, Clone, Default)]
pub(crate) struct Failures(Arc<Mutex<Record>>);

#[derive(Debug, Default)]
struct Record {
    last: Option<ConnectFailure>,
    attempts: u32,
}

impl Failures {
    /// One more attempt failed with `failure`.
    pub(crate) fn record(&self, failure: ConnectFailure) {
        let mut record = self.lock();
        record.attempts = record.attempts.saturating_add(1);
        record.last = Some(failure);
    }

    /// A login succeeded: the record starts over.
    pub(crate) fn clear(&self) {
        *self.lock() = Record::default();
    }

    /// The last failure, if an attempt failed since the last login.
    pub(crate) fn last(&self) -> Option<ConnectFailure> {
        self.lock().last.clone()
    }

    /// [`ClientError::Unreachable`] for the failures so far, if there are any.
    pub(crate) fn unreachable(&self) -> Option<ClientError> {
        let record = self.lock();
        record.last.clone().map(|last| ClientError::Unreachable {
            last,
            attempts: record.attempts,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
