//! [`RequestHandler`]: where upstream requests go. The built-in [`EchoHandler`] answers
//! business id 1; the forwarding router implements the same trait.

use async_trait::async_trait;
use bytes::Bytes;

use super::hub::DeviceKey;
use crate::protocol::{Code, Metadata, Text};

/// An upstream request with the common parameters the backend needs.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// The connection it came from.
    pub conn_id: u64,
    /// (app id, device id) of the logged-in client.
    pub device: DeviceKey,
    /// Business id that selects the backend.
    pub business: u32,
    /// Request metadata.
    pub meta: Metadata,
    /// Opaque payload.
    pub payload: Bytes,
}

/// A backend's successful answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendReply {
    /// Response metadata.
    pub meta: Metadata,
    /// Response payload.
    pub payload: Bytes,
}

/// A backend's failure, sent to the client as `Error { id, code, message }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// Wire code (`unknown_business`, `backend_timeout`, `backend_error`, `busy`).
    pub code: Code,
    /// Detail for the client.
    pub message: Text,
}

/// Serves upstream requests. Called from a task of its own per request, so a slow
/// backend never stalls the connection.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request.
    async fn handle(&self, request: BackendRequest) -> Result<BackendReply, BackendError>;
}

/// Business id of the built-in echo backend.
pub const ECHO_BUSINESS: u32 = 1;

/// Answers business id [`ECHO_BUSINESS`] with the request's own payload and metadata;
/// every other business id gets `unknown_business`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoHandler;

#[async_trait]
impl RequestHandler for EchoHandler {
    async fn handle(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        if request.business == ECHO_BUSINESS {
            Ok(BackendReply {
                meta: request.meta,
                payload: request.payload,
            })
        } else {
            Err(BackendError {
                code: Code::UnknownBusiness,
                message: Text::from(format!("no backend for business {}", request.business)),
            })
        }
    }
}
