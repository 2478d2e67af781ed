//! The background task behind a [`crate::Client`]: connect, log in, serve the session,
//! and reconnect with backoff until told to stop.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{Code, Frame, Metadata, Text, Transmit};
use longconn_transport::quic::QuicClient;
use longconn_transport::tcp::{self, TcpConnection};
use longconn_transport::tls::TlsConnection;
use longconn_transport::ws::WsConnection;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::client::{ClientCommand, ConnState, Listeners, Push, Quality, Response};
use crate::config::{ClientConfig, Scheme};
use crate::error::ClientError;

/// How a session (or an attempt at one) ended, and so what the client does next.
#[derive(Debug)]
enum SessionEnd {
    /// The application closed the client: stop.
    ClosedByApp,
    /// Kicked as `replaced` or `kicked`: stop, do not reconnect in a loop.
    Kicked(Code),
    /// The gateway is draining: reconnect after its hint.
    GoAway(Duration),
    /// Connect or login failed, or the session was lost: back off and retry.
    Lost { logged_in: bool, why: String },
}

/// Everything a session needs from the driver, borrowed for its duration.
struct Ctx<'a> {
    config: &'a ClientConfig,
    commands: &'a mut mpsc::Receiver<ClientCommand>,
    state: &'a watch::Sender<ConnState>,
    pushes: &'a mpsc::Sender<Push>,
    listeners: &'a Listeners,
    quality: &'a Mutex<Quality>,
    groups: &'a mut BTreeSet<String>,
}

pub(crate) async fn run(
    config: ClientConfig,
    mut commands: mpsc::Receiver<ClientCommand>,
    state: watch::Sender<ConnState>,
    pushes: mpsc::Sender<Push>,
    listeners: Listeners,
    quality: Arc<Mutex<Quality>>,
) {
    let mut rng = fastrand::Rng::new();
    let mut groups = BTreeSet::new();
    let mut quic: Option<QuicClient> = None;
    let mut tls: Option<Arc<rustls::ClientConfig>> = None;
    let mut attempt = 0u32;
    let reason = loop {
        state.send_replace(ConnState::Connecting { attempt });
        let mut ctx = Ctx {
            config: &config,
            commands: &mut commands,
            state: &state,
            pushes: &pushes,
            listeners: &listeners,
            quality: &quality,
            groups: &mut groups,
        };
        let end = connect_and_serve(&mut ctx, &mut quic, &mut tls).await;
        debug!(?end, "session ended");
        let delay = match end {
            SessionEnd::ClosedByApp => break "closed by the application".to_owned(),
            SessionEnd::Kicked(code) => break format!("kicked by the gateway: {}", code.name()),
            SessionEnd::GoAway(hint) => {
                attempt = 0;
                // Everyone got the same hint: spread the returns over half of it again.
                let spread = (hint.as_millis() as u64 / 2).max(100);
                hint + Duration::from_millis(rng.u64(0..=spread))
            }
            SessionEnd::Lost { logged_in, why } => {
                if logged_in {
                    attempt = 0;
                }
                if config
                    .backoff
                    .max_attempts
                    .is_some_and(|max| attempt >= max)
                {
                    break format!("gave up after {attempt} attempts: {why}");
                }
                let delay = config.backoff.delay(attempt, &mut rng);
                attempt += 1;
                delay
            }
        };
        state.send_replace(ConnState::Reconnecting { attempt, delay });
        if wait_refusing(&mut commands, delay).await {
            break "closed by the application".to_owned();
        }
    };
    state.send_replace(ConnState::Disconnected { reason });
    // Whatever arrives from now on is refused.
    commands.close();
    while let Some(command) = commands.recv().await {
        refuse(command, ClientError::Closed("client stopped".into()));
    }
}

/// Waits `delay`, refusing calls meanwhile. Returns `true` if the application closed.
async fn wait_refusing(commands: &mut mpsc::Receiver<ClientCommand>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            command = commands.recv() => match command {
                None | Some(ClientCommand::Close) => return true,
                Some(command) => refuse(command, ClientError::NotConnected),
            },
        }
    }
}

fn refuse(command: ClientCommand, error: ClientError) {
    match command {
        ClientCommand::Request { reply, .. } => drop(reply.send(Err(error))),
        ClientCommand::Group { reply, .. } => drop(reply.send(Err(error))),
        ClientCommand::Close => {}
    }
}

/// Connects by the endpoint's scheme and serves the session. The TLS config and the
/// QUIC endpoint are built on first use and kept across reconnects (loading system root
/// certificates is not cheap).
async fn connect_and_serve(
    ctx: &mut Ctx<'_>,
    quic: &mut Option<QuicClient>,
    tls_cache: &mut Option<Arc<rustls::ClientConfig>>,
) -> SessionEnd {
    let config = ctx.config;
    let lost = |why: String| SessionEnd::Lost {
        logged_in: false,
        why,
    };
    let endpoint = &config.endpoint;
    let started = Instant::now();
    bump(ctx.quality, |q| q.connect_attempts += 1);
    let addr = match tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => addr,
            None => return lost(format!("{} resolves to nothing", endpoint.host)),
        },
        Err(err) => return lost(format!("resolving {}: {err}", endpoint.host)),
    };
    let max = config.max_frame_size;
    let mut tls = || -> Result<Arc<rustls::ClientConfig>, String> {
        if tls_cache.is_none() {
            let built = config.trust.client_config(&[], false).map_err(s)?;
            *tls_cache = Some(Arc::new(built));
        }
        Ok(tls_cache.clone().expect("set above"))
    };
    let from = config.local_ip;
    let dial = || async move { tcp::dial(addr, from).await.map_err(s) };
    let connecting = async {
        Ok(match endpoint.scheme {
            Scheme::Tcp => {
                Conn::Tcp(TcpConnection::from_stream(dial().await?, addr, max).map_err(s)?)
            }
            Scheme::Tls => Conn::Tls(
                TlsConnection::over_tcp(dial().await?, &endpoint.host, tls()?, max)
                    .await
                    .map_err(s)?,
            ),
            Scheme::Ws => Conn::Ws(Box::new(
                WsConnection::over_tcp(dial().await?, &endpoint.url, max)
                    .await
                    .map_err(s)?,
            )),
            Scheme::Wss => Conn::Ws(Box::new(
                WsConnection::over_tls_tcp(
                    dial().await?,
                    &endpoint.url,
                    &endpoint.host,
                    tls()?,
                    max,
                )
                .await
                .map_err(s)?,
            )),
            Scheme::Quic => {
                if quic.is_none() {
                    let unspecified = if addr.is_ipv4() {
                        std::net::Ipv4Addr::UNSPECIFIED.into()
                    } else {
                        std::net::Ipv6Addr::UNSPECIFIED.into()
                    };
                    let bind = SocketAddr::new(from.unwrap_or(unspecified), 0);
                    *quic = Some(QuicClient::new(bind, &config.trust).map_err(s)?);
                }
                let client = quic.as_ref().expect("set above");
                Conn::Quic(client.connect(addr, &endpoint.host, max).await.map_err(s)?)
            }
        })
    };
    let conn: Result<Conn, String> =
        match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(conn) => conn,
            Err(_) => Err("connect timed out".into()),
        };
    let conn = match conn {
        Ok(conn) => conn,
        Err(why) => return lost(why),
    };
    match conn {
        Conn::Tcp(c) => serve(c, ctx, started).await,
        Conn::Tls(c) => serve(c, ctx, started).await,
        Conn::Ws(c) => serve(*c, ctx, started).await,
        Conn::Quic(c) => serve(c, ctx, started).await,
    }
}

enum Conn {
    Tcp(TcpConnection),
    Tls(TlsConnection),
    Ws(Box<WsConnection>),
    Quic(longconn_transport::quic::QuicConnection),
}

fn s(err: impl std::fmt::Display) -> String {
    err.to_string()
}

fn bump(quality: &Mutex<Quality>, f: impl FnOnce(&mut Quality)) {
    f(&mut quality.lock().unwrap_or_else(|p| p.into_inner()));
}

/// What waits for an answer from the gateway, by frame id.
enum Pending {
    Request(oneshot::Sender<Result<Response, ClientError>>),
    Group {
        group: String,
        join: bool,
        reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    },
}

/// Logs in on `conn`, then serves the session until it ends.
async fn serve<C: Connection>(conn: C, ctx: &mut Ctx<'_>, started: Instant) -> SessionEnd {
    let config = ctx.config;
    let (mut reader, mut writer) = conn.split();
    let lost = |logged_in: bool, why: String| SessionEnd::Lost { logged_in, why };

    // Login.
    let token = match ctx.config.tokens.token().await {
        Ok(token) => token,
        Err(err) => return lost(false, format!("token provider: {err}")),
    };
    let login = Frame::Login {
        id: 1,
        app: Text::from(config.app.as_str()),
        device: Text::from(config.device.as_str()),
        token,
        meta: Metadata::new(),
    };
    if let Err(err) = send(&mut writer, login).await {
        return lost(false, err);
    }
    let answer = tokio::time::timeout(config.connect_timeout, async {
        loop {
            match reader.recv().await {
                Ok(Some(Frame::LoginAck {
                    conn_id,
                    heartbeat_ms,
                    ..
                })) => return Ok((conn_id, heartbeat_ms)),
                Ok(Some(Frame::Close { code, .. })) => {
                    return Err(format!("login refused: {}", code.name()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("connection ended during login".to_owned()),
                Err(err) => return Err(err.to_string()),
            }
        }
    })
    .await;
    let (conn_id, heartbeat_ms) = match answer {
        Ok(Ok(ack)) => ack,
        Ok(Err(why)) => return lost(false, why),
        Err(_) => return lost(false, "login timed out".into()),
    };
    bump(ctx.quality, |q| {
        q.connect_successes += 1;
        q.last_connect_latency = Some(started.elapsed());
    });
    ctx.state.send_replace(ConnState::Connected { conn_id });

    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut next_id: u32 = 2;
    let mut id = || {
        next_id = next_id.wrapping_add(1).max(2);
        next_id
    };
    // Rejoin the groups this client had joined.
    for group in ctx.groups.iter() {
        let frame_id = id();
        pending.insert(
            frame_id,
            Pending::Group {
                group: group.clone(),
                join: true,
                reply: None,
            },
        );
        let _ = writer.send(Transmit::Frame(Frame::JoinGroup {
            id: frame_id,
            group: Text::from(group.as_str()),
        }));
    }

    let interval = Duration::from_millis(u64::from(heartbeat_ms.max(100)));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut ping_sent: Option<(u32, Instant)> = None;
    let mut go_away: Option<Duration> = None;
    let end = loop {
        if writer.has_pending_writes()
            && let Err(err) = writer.flush().await
        {
            break lost(true, err.to_string());
        }
        tokio::select! {
            command = ctx.commands.recv() => match command {
                None | Some(ClientCommand::Close) => {
                    let _ = send(&mut writer, Frame::Close { code: Code::Normal, message: Text::new() }).await;
                    let _ = writer.close(longconn_core::CloseReason::Local(Code::Normal)).await;
                    break SessionEnd::ClosedByApp;
                }
                Some(ClientCommand::Request { business, meta, payload, reply }) => {
                    let frame_id = id();
                    pending.insert(frame_id, Pending::Request(reply));
                    let _ = writer.send(Transmit::Frame(Frame::Request { id: frame_id, business, meta, payload }));
                }
                Some(ClientCommand::Group { group, join, reply }) => {
                    let frame_id = id();
                    let text = Text::from(group.as_str());
                    let frame = if join {
                        Frame::JoinGroup { id: frame_id, group: text }
                    } else {
                        Frame::LeaveGroup { id: frame_id, group: text }
                    };
                    pending.insert(frame_id, Pending::Group { group, join, reply: Some(reply) });
                    let _ = writer.send(Transmit::Frame(frame));
                }
            },
            received = reader.recv() => match received {
                Ok(Some(frame)) => {
                    if let Some(end) = on_frame(frame, ctx, &mut writer, &mut pending, &mut ping_sent, &mut go_away).await {
                        break end;
                    }
                }
                Ok(None) => break match go_away {
                    Some(hint) => SessionEnd::GoAway(hint),
                    None => lost(true, "connection ended".into()),
                },
                Err(err) => break match go_away {
                    Some(hint) => SessionEnd::GoAway(hint),
                    None => lost(true, err.to_string()),
                },
            },
            _ = heartbeat.tick() => {
                if let Some((_, at)) = ping_sent && at.elapsed() > interval * 2 {
                    break lost(true, "heartbeat: no pong".into());
                }
                if ping_sent.is_none() {
                    let frame_id = id();
                    ping_sent = Some((frame_id, Instant::now()));
                    bump(ctx.quality, |q| q.pings_sent += 1);
                    let _ = writer.send(Transmit::Frame(Frame::Ping { id: frame_id, payload: bytes::Bytes::new() }));
                }
            }
        }
    };
    for (_, waiting) in pending.drain() {
        match waiting {
            Pending::Request(reply) => drop(reply.send(Err(ClientError::NotConnected))),
            Pending::Group {
                reply: Some(reply), ..
            } => drop(reply.send(Err(ClientError::NotConnected))),
            Pending::Group { reply: None, .. } => {}
        }
    }
    end
}

async fn send<W: FrameWriter>(writer: &mut W, frame: Frame) -> Result<(), String> {
    writer.send(Transmit::Frame(frame)).map_err(s)?;
    writer.flush().await.map_err(s)
}

/// Handles one frame from the gateway; `Some` ends the session.
async fn on_frame<W: FrameWriter>(
    frame: Frame,
    ctx: &mut Ctx<'_>,
    writer: &mut W,
    pending: &mut HashMap<u32, Pending>,
    ping_sent: &mut Option<(u32, Instant)>,
    go_away: &mut Option<Duration>,
) -> Option<SessionEnd> {
    match frame {
        Frame::Response {
            id,
            business,
            meta,
            payload,
        } => {
            if let Some(Pending::Request(reply)) = pending.remove(&id) {
                let _ = reply.send(Ok(Response {
                    business,
                    meta,
                    payload,
                }));
            }
        }
        Frame::Error { id, code, message } => match pending.remove(&id) {
            Some(Pending::Request(reply)) => {
                let _ = reply.send(Err(ClientError::Failed {
                    code,
                    message: message.as_str().to_owned(),
                }));
            }
            Some(Pending::Group {
                reply: Some(reply), ..
            }) => {
                let _ = reply.send(Err(ClientError::Failed {
                    code,
                    message: message.as_str().to_owned(),
                }));
            }
            _ => {}
        },
        Frame::JoinAck { id, .. } | Frame::LeaveAck { id, .. } => {
            if let Some(Pending::Group { group, join, reply }) = pending.remove(&id) {
                if join {
                    ctx.groups.insert(group);
                } else {
                    ctx.groups.remove(&group);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        Frame::Push {
            id,
            ack_required,
            business,
            group,
            seq,
            epoch,
            meta,
            payload,
        } => {
            if ack_required {
                let _ = writer.send(Transmit::Frame(Frame::PushAck { id }));
            }
            let push = Push {
                business,
                group,
                seq,
                epoch,
                meta,
                payload,
            };
            deliver(ctx, push);
        }
        Frame::Pong { id, .. } => {
            if let Some((sent_id, at)) = *ping_sent
                && sent_id == id
            {
                *ping_sent = None;
                let rtt = at.elapsed();
                bump(ctx.quality, |q| {
                    q.pongs_received += 1;
                    q.last_rtt = Some(rtt);
                });
            }
        }
        Frame::Ping { id, payload } => {
            let _ = writer.send(Transmit::Frame(Frame::Pong { id, payload }));
        }
        Frame::TokenExpiring { .. } => match ctx.config.tokens.token().await {
            Ok(token) => {
                let _ = writer.send(Transmit::Frame(Frame::TokenRefresh { id: 1, token }));
            }
            Err(err) => {
                debug!(%err, "token provider failed; the gateway will close at its deadline")
            }
        },
        Frame::GoAway { retry_after_ms, .. } => {
            *go_away = Some(Duration::from_millis(u64::from(retry_after_ms)));
        }
        Frame::Kick { code, .. } => {
            return Some(match code {
                Code::Replaced | Code::Kicked => SessionEnd::Kicked(code),
                other => SessionEnd::Lost {
                    logged_in: true,
                    why: format!("kicked: {}", other.name()),
                },
            });
        }
        Frame::Close { code, .. } => {
            return Some(match (*go_away, code) {
                (Some(hint), _) => SessionEnd::GoAway(hint),
                (None, Code::GoingAway) => SessionEnd::GoAway(Duration::ZERO),
                (None, other) => SessionEnd::Lost {
                    logged_in: true,
                    why: format!("closed by the gateway: {}", other.name()),
                },
            });
        }
        _ => {}
    }
    None
}

/// Hands a push to the config's push handler, or its business's listener, or the
/// general stream.
fn deliver(ctx: &Ctx<'_>, push: Push) {
    if let Some(handler) = &ctx.config.on_push {
        handler(push);
        return;
    }
    let listener = ctx
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&push.business)
        .filter(|tx| !tx.is_closed())
        .cloned();
    let sent = match listener {
        Some(tx) => tx.try_send(push).is_ok(),
        None => ctx.pushes.try_send(push).is_ok(),
    };
    if !sent {
        bump(ctx.quality, |q| q.pushes_dropped += 1);
    }
}
