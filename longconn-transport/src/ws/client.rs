//! The client side of the WebSocket upgrade (RFC 6455, section 4.1): tungstenite
//! builds the request and parses the response; the checks of the response are here.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Response, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse;
use tungstenite::http::StatusCode;

use crate::stream::AsyncIo;

/// The largest response head accepted from a server.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Sends the upgrade request for `url` (`ws://host:port/path`) over `io` and checks the
/// server's answer. Returns the bytes received after the response's head (frames the
/// server sent right away).
///
/// # Errors
/// [`crate::Error::WebSocketStatus`] for an answer other than 101;
/// [`crate::Error::WebSocket`] for a bad URL, a response that is not a valid upgrade
/// (wrong `Sec-WebSocket-Accept`, missing `Upgrade` or `Connection`, an extension or a
/// subprotocol that was not offered) or an oversized
/// head; [`crate::Error::Io`] if the stream fails or ends first.
pub(super) async fn upgrade(io: &mut Box<dyn AsyncIo>, url: &str) -> crate::Result<BytesMut> {
    let request = url.into_client_request().map_err(handshake_error)?;
    let (request, key) = generate_request(request).map_err(handshake_error)?;
    io.write_all(&request).await?;
    io.flush().await?;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut head).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during the WebSocket upgrade response",
            )
            .into());
        }
        match Response::try_parse(&head).map_err(handshake_error)? {
            Some((len, response)) => {
                check(&response, &key)?;
                head.advance(len);
                return Ok(head);
            }
            None if head.len() >= MAX_RESPONSE_HEAD => {
                return Err(crate::Error::WebSocket(
                    "upgrade response head too large".into(),
                ));
            }
            None => head.reserve(1024),
        }
    }
}

/// RFC 6455, section 4.1: the status, `Upgrade`, `Connection`, the accept key, and no
/// extension or subprotocol (none is offered).
fn check(response: &Response, key: &str) -> crate::Result<()> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(crate::Error::WebSocketStatus {
            status: response.status().as_u16(),
        });
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    };
    if !header("upgrade").eq_ignore_ascii_case("websocket") {
        return Err(refused("no `Upgrade: websocket` in the response"));
    }
    if !header("connection")
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(refused("no `Connection: upgrade` in the response"));
    }
    if header("sec-websocket-accept") != derive_accept_key(key.as_bytes()) {
        return Err(refused("wrong Sec-WebSocket-Accept in the response"));
    }
    // Every field of the name, whatever its bytes: a value that is not visible ASCII
    // or a second field is not "no extension".
    let present = |name: &str| {
        response
            .headers()
            .get_all(name)
            .iter()
            .any(|value| !value.as_bytes().is_empty())
    };
    if present("sec-websocket-extensions") {
        return Err(refused(
            "the server chose an extension that was not offered",
        ));
    }
    if present("sec-websocket-protocol") {
        return Err(refused(
            "the server chose a subprotocol that was not offered",
        ));
    }
    Ok(())
}

fn refused(why: &str) -> crate::Error {
    crate::Error::WebSocket(format!("upgrade refused: {why}"))
}

fn handshake_error(err: tungstenite::Error) -> crate::Error {
    match err {
        tungstenite::Error::Io(io) => crate::Error::Io(io),
        other => crate::Error::WebSocket(other.to_string()),
    }
}
