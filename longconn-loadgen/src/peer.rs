//! Minimal subscribers and publishers for the peers the benchmark report compares
//! against: NATS (`nats://host:port`, one subject per group) and MQTT 3.1.1
//! (`mqtt://host:port`, one topic per group, QoS 0). Multicast phases only.
//!
//! `raw://host:port` is longconn itself through a lean raw-protocol subscriber: plain
//! TCP, `Login` with a minted token, `JoinGroup`, then frames read with the core codec
//! into one buffer per connection (no SDK: no session, no callbacks, no heartbeats).
//! Publishes still go through the gateway's HTTP API.
//!
//! They are written by hand on purpose: a subscriber here is one task and one small read
//! buffer per connection, no more than a longconn SDK client costs, so the load side
//! never makes a peer look slower than it is. The full client crates (async-nats,
//! rumqttc) carry far more per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use longconn_core::{Frame, FrameCodec, FrameType, Metadata, Text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fleet::{ConnectSchedule, LoadCtx, stamped};
use super::publish::Published;
use super::slow::{SLOW_RECV_BUFFER, SlowOutcome, hold_then_read, is_slow};
use super::stats::{Recorder, unix_us};

/// A peer broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// nats-server.
    Nats,
    /// An MQTT 3.1.1 broker (mosquitto).
    Mqtt,
    /// A longconn gateway's TCP listener, read by the raw-protocol subscriber.
    Raw,
}

impl Peer {
    /// The peer a target URL names, and its address; `None` for longconn targets.
    ///
    /// # Errors
    /// A peer URL without a valid `host:port` (IP addresses only).
    pub fn from_target(target: &str) -> Result<Option<(Peer, SocketAddr)>, String> {
        let (peer, rest) = if let Some(rest) = target.strip_prefix("nats://") {
            (Peer::Nats, rest)
        } else if let Some(rest) = target.strip_prefix("mqtt://") {
            (Peer::Mqtt, rest)
        } else if let Some(rest) = target.strip_prefix("raw://") {
            (Peer::Raw, rest)
        } else {
            return Ok(None);
        };
        let addr = rest
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("`{target}`: expected ip:port ({e})"))?;
        Ok(Some((peer, addr)))
    }
}

/// MQTT's variable-length "remaining length".
fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn mqtt_packet(kind: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(kind);
    put_remaining_length(&mut buf, body.len());
    buf.put_slice(body);
    buf
}

fn mqtt_string(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// CONNECT (clean session, no keep-alive) for `client_id`.
fn mqtt_connect(client_id: &str) -> BytesMut {
    let mut body = BytesMut::new();
    mqtt_string(&mut body, "MQTT");
    body.put_u8(4); // protocol level 3.1.1
    body.put_u8(0x02); // clean session
    body.put_u16(0); // keep-alive off
    mqtt_string(&mut body, client_id);
    mqtt_packet(0x10, &body)
}

/// A complete MQTT packet at the front of `buf`: (first byte, header length, body length).
fn mqtt_frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            return (buf.len() >= header + len).then_some((buf[0], header, len));
        }
    }
    None
}

/// Connects one subscriber of `group` and waits until the subscription is in place.
/// Without a group (unicast), a raw subscriber only logs in; brokers need one.
pub(crate) async fn subscribe(
    peer: Peer,
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    client_id: &str,
    group: Option<&str>,
    login: Option<(&str, Bytes)>,
    recv_buffer: Option<u32>,
) -> Result<(TcpStream, BytesMut), String> {
    let group_or_err = || group.ok_or_else(|| format!("{peer:?} subscribers need a group"));
    let mut stream = match recv_buffer {
        None => longconn_transport::tcp::dial(addr, from).await,
        Some(size) => dial_small(addr, from, size).await,
    }
    .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(256);
    match peer {
        Peer::Nats => {
            let group = group_or_err()?;
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false}}\r\nSUB {group} 1\r\nPING\r\n"
            );
            stream
                .write_all(hello.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // INFO first, then PONG once CONNECT and SUB are processed.
            loop {
                if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("nats closed during subscribe".into());
                }
                if let Some(at) = find(&buf, b"PONG\r\n") {
                    buf.advance(at + 6);
                    return Ok((stream, buf));
                }
                if find(&buf, b"-ERR").is_some() {
                    return Err(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
        Peer::Mqtt => {
            let group = group_or_err()?;
            let mut hello = mqtt_connect(client_id);
            let mut body = BytesMut::new();
            body.put_u16(1); // packet id
            mqtt_string(&mut body, group);
            body.put_u8(0); // QoS 0
            hello.extend_from_slice(&mqtt_packet(0x82, &body));
            stream.write_all(&hello).await.map_err(|e| e.to_string())?;
            // CONNACK, then SUBACK.
            let mut acks = 0;
            while acks < 2 {
                match mqtt_frame(&buf) {
                    Some((kind, header, len)) => {
                        if kind == 0x20 && buf.get(header + 1) != Some(&0) {
                            return Err("mqtt refused the connection".into());
                        }
                        buf.advance(header + len);
                        acks += 1;
                    }
                    None => {
                        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                            return Err("mqtt closed during subscribe".into());
                        }
                    }
                }
            }
            Ok((stream, buf))
        }
        Peer::Raw => {
            let (app, token) = login.ok_or("raw subscribers need a login token")?;
            let mut out = BytesMut::new();
            raw_login_frame(app, client_id, token)
                .encode(&mut out, RAW_CODEC.max_frame_size())
                .map_err(|e| e.to_string())?;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            // LoginAck, then JoinGroup (nothing else may follow a Login before its ack).
            let mut joined = false;
            loop {
                match raw_next(&mut stream, &mut buf).await? {
                    Frame::LoginAck { .. } if group.is_none() => return Ok((stream, buf)),
                    Frame::LoginAck { .. } => {
                        out.clear();
                        Frame::JoinGroup {
                            id: 2,
                            group: Text::from(group.unwrap_or_default()),
                            since: None,
                        }
                        .encode(&mut out, RAW_CODEC.max_frame_size())
                        .map_err(|e| e.to_string())?;
                        stream.write_all(&out).await.map_err(|e| e.to_string())?;
                    }
                    Frame::JoinAck { .. } => joined = true,
                    Frame::Ping { id, payload } => {
                        raw_pong(&mut stream, id, payload).await?;
                    }
                    Frame::Error { code, .. }
                    | Frame::Kick { code, .. }
                    | Frame::Close { code, .. } => {
                        return Err(format!("raw subscribe refused: {code:?}"));
                    }
                    _ => {}
                }
                if joined {
                    return Ok((stream, buf));
                }
            }
        }
    }
}

/// Connects from `from` with a receive buffer of `size` bytes and a small MSS (536),
/// both set before the connect: the window it advertises stays small, and the
/// gateway's kernel sizes its send buffer from the MSS (on loopback, with the default
/// 64 KiB MSS, it holds megabytes, and a non-reading member would take minutes to
/// fill it).
async fn dial_small(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    size: u32,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(size as usize)?;
    socket.set_tcp_mss(SLOW_MSS)?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(addr).await
}

/// The MSS a slow member asks for.
const SLOW_MSS: u32 = 536;

/// The codec the raw subscriber reads with (the gateway's default frame limit).
pub(crate) const RAW_CODEC: FrameCodec = FrameCodec::new(64 * 1024);

/// The next frame from a raw subscriber's stream.
/// The `Login` frame a raw client sends first (request id 1, no metadata).
pub(crate) fn raw_login_frame(app: &str, device: &str, token: Bytes) -> Frame {
    Frame::Login {
        id: 1,
        app: Text::from(app),
        device: Text::from(device),
        token,
        meta: Metadata::default(),
    }
}

/// The next frame from the gateway, reading as needed.
pub(crate) async fn raw_next(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, String> {
    let mut codec = RAW_CODEC;
    loop {
        if let Some(frame) = codec.decode(buf).map_err(|e| e.to_string())? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("gateway closed before answering".into());
        }
    }
}

/// How often a raw subscriber pings: the SDK's heartbeat interval (the gateway's idle
/// timeout, 75 s by default, allows two missed).
const RAW_PING_EVERY: Duration = Duration::from_secs(30);

pub(crate) async fn raw_pong(
    stream: &mut TcpStream,
    id: u32,
    payload: Bytes,
) -> Result<(), String> {
    raw_send(stream, Frame::Pong { id, payload }).await
}

pub(crate) async fn raw_send(stream: &mut TcpStream, frame: Frame) -> Result<(), String> {
    let mut out = BytesMut::new();
    frame
        .encode(&mut out, RAW_CODEC.max_frame_size())
        .map_err(|e| e.to_string())?;
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads messages until the stream ends, counting each with its latency.
///
/// Per read, not per message: the clock (everything one read brought arrived at the
/// same instant) and the counters. Raw frames are looked at with
/// [`FrameCodec::peek`]: a `Push` is counted from its payload's bytes in the read
/// buffer, without decoding its fields; other frames are decoded.
pub(crate) async fn receive(
    peer: Peer,
    mut stream: TcpStream,
    mut buf: BytesMut,
    ctx: Arc<LoadCtx>,
    (index, target): (usize, usize),
) {
    let mut read = ReadTally {
        rec: &ctx.recorder,
        index,
        arrived_us: unix_us(),
        received: 0,
    };
    // Raw subscribers ping now and then, as the gateway closes a silent connection
    // after its idle timeout (75 s by default). One timer for the connection's life,
    // reset only when it fires: a timeout around every read registered and removed a
    // timer entry per message (~5 % of the receiver's CPU in the cluster unicast runs).
    let ping_timer = tokio::time::sleep(RAW_PING_EVERY);
    tokio::pin!(ping_timer);
    let mut ping_due = false;
    loop {
        if peer == Peer::Raw && ping_due {
            ping_due = false;
            ping_timer.as_mut().reset(Instant::now() + RAW_PING_EVERY);
            if raw_send(
                &mut stream,
                Frame::Ping {
                    id: 9,
                    payload: Bytes::new(),
                },
            )
            .await
            .is_err()
            {
                return;
            }
        }
        // Take every complete message in the buffer.
        loop {
            match peer {
                Peer::Nats => {
                    let Some(eol) = find(&buf, b"\r\n") else {
                        break;
                    };
                    let line = &buf[..eol];
                    if line.starts_with(b"MSG ") {
                        let len: usize = std::str::from_utf8(line)
                            .ok()
                            .and_then(|l| l.rsplit(' ').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < eol + 2 + len + 2 {
                            break;
                        }
                        read.record(&buf[eol + 2..eol + 2 + len]);
                        buf.advance(eol + 2 + len + 2);
                    } else {
                        if line.starts_with(b"PING") && stream.write_all(b"PONG\r\n").await.is_err()
                        {
                            return;
                        }
                        buf.advance(eol + 2);
                    }
                }
                Peer::Raw => {
                    let pushed = match RAW_CODEC.peek(&buf) {
                        Ok(Some(view)) if view.frame_type == FrameType::Push => {
                            read.record(view.payload);
                            Some(view.len())
                        }
                        Ok(Some(_)) => None,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    if let Some(len) = pushed {
                        buf.advance(len);
                        continue;
                    }
                    let mut codec = RAW_CODEC;
                    match codec.decode(&mut buf) {
                        Ok(Some(Frame::Ping { id, payload })) => {
                            if raw_pong(&mut stream, id, payload).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                Peer::Mqtt => {
                    let Some((kind, header, len)) = mqtt_frame(&buf) else {
                        break;
                    };
                    if kind & 0xf0 == 0x30 {
                        let topic_len =
                            usize::from(u16::from_be_bytes([buf[header], buf[header + 1]]));
                        let qos = (kind >> 1) & 0x03;
                        let skip = 2 + topic_len + if qos > 0 { 2 } else { 0 };
                        read.record(&buf[header + skip..header + len]);
                    }
                    buf.advance(header + len);
                }
            }
        }
        if read.received > 0 {
            ctx.recorder.received_n_on(target, read.received);
            ctx.last_receive_us()
                .fetch_max(read.arrived_us, Ordering::Relaxed);
            read.received = 0;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let got = if peer == Peer::Raw {
            tokio::select! {
                read = stream.read_buf(&mut buf) => read,
                () = &mut ping_timer => {
                    ping_due = true;
                    continue;
                }
            }
        } else {
            stream.read_buf(&mut buf).await
        };
        match got {
            Ok(0) | Err(_) => return,
            Ok(_) => read.arrived_us = unix_us(),
        }
    }
}

/// What one read brought: when it arrived and how many messages were counted from it.
struct ReadTally<'a> {
    rec: &'a Recorder,
    index: usize,
    arrived_us: u64,
    received: u64,
}

impl ReadTally<'_> {
    /// Counts one message with the latency from the send time in its payload's first 8
    /// bytes (microseconds since the Unix epoch) to the read's arrival.
    fn record(&mut self, payload: &[u8]) {
        if let Some(sent) = payload.get(..8) {
            let sent = u64::from_be_bytes(sent.try_into().expect("8 bytes"));
            self.rec
                .latency
                .record(self.index, self.arrived_us.saturating_sub(sent));
        }
        self.received += 1;
    }
}

impl LoadCtx {
    /// Connects this process's share of `members` peer subscribers (member i to group
    /// i mod `groups`, and to address i mod `addrs.len()`, as [`crate::spread`] says)
    /// at the default connect rate. Returns their reader tasks, each with the position
    /// of its address. The `slow` members of [`crate::slow::is_slow`] (raw only) hold
    /// their socket unread until `release` turns `true`; their tasks come apart.
    pub async fn subscribe_peers(
        self: &Arc<Self>,
        peer: Peer,
        addrs: &[SocketAddr],
        members: u32,
        groups: Option<u32>,
        (slow, release): (u32, &watch::Receiver<bool>),
    ) -> Subscribed {
        let share: Vec<u32> = self.slot.share(members).collect();
        let per_s = self
            .common
            .connect_rate
            .map_or(4000.0, |r| r / f64::from(self.slot.count));
        let mut schedule = ConnectSchedule::new(per_s);
        let mut tasks = JoinSet::new();
        for index in share {
            schedule.next().await;
            let ctx = self.clone();
            let target = index as usize % addrs.len();
            let addr = addrs[target];
            let slow =
                (peer == Peer::Raw && is_slow(index, slow, members)).then(|| release.clone());
            tasks.spawn(async move {
                let rec = &ctx.recorder;
                rec.bump(&rec.attempted, "loadgen_connects_attempted_total");
                let started = Instant::now();
                let group = groups.map(|g| format!("{}g{}", ctx.common.device_prefix, index % g));
                let id = ctx.device(index);
                let from = ctx.common.source_ips.map(|ips| ips.pick(u64::from(index)));
                let token = (peer == Peer::Raw).then(|| ctx.token(&id));
                let login = token.map(|t| (ctx.common.app.as_str(), t));
                let recv_buffer = slow.as_ref().map(|_| SLOW_RECV_BUFFER);
                match subscribe(peer, addr, from, &id, group.as_deref(), login, recv_buffer).await {
                    Ok((stream, buf)) => {
                        rec.connect_latency
                            .record(index as usize, started.elapsed().as_micros() as u64);
                        if let Some(release) = slow {
                            return Some(Err(tokio::spawn(hold_then_read(stream, buf, release))));
                        }
                        rec.established_on(target);
                        Some(Ok((
                            target,
                            tokio::spawn(receive(
                                peer,
                                stream,
                                buf,
                                ctx.clone(),
                                (index as usize, target),
                            )),
                        )))
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "peer subscribe failed");
                        rec.bump(&rec.failed, "loadgen_connects_failed_total");
                        None
                    }
                }
            });
        }
        let mut out = Subscribed::default();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Some(Ok(reader))) => out.readers.push(reader),
                Ok(Some(Err(slow))) => out.slow.push(slow),
                _ => {}
            }
        }
        out
    }
}

/// The subscribers of one process.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// The reading ones: reader task with the position of its address.
    pub readers: Vec<(usize, tokio::task::JoinHandle<()>)>,
    /// The slow ones (`--slow-members`).
    pub slow: Vec<tokio::task::JoinHandle<SlowOutcome>>,
}

/// A multicast phase's publishing, for a peer.
#[derive(Debug, Clone)]
pub struct PeerPublish<'a> {
    /// Which broker.
    pub peer: Peer,
    /// Where.
    pub addr: SocketAddr,
    /// Group names are `{prefix}g{n}`.
    pub prefix: &'a str,
    /// Members over all groups.
    pub members: u32,
    /// Groups.
    pub groups: u32,
    /// Publishes per group.
    pub messages: u32,
    /// Publishes per second.
    pub rate: f64,
    /// Bytes per payload.
    pub payload_size: usize,
}

/// Publishes `messages` per group at `rate` publishes per second. The expected
/// deliveries are the group's members per publish (every member subscribed before Go).
///
/// # Errors
/// The broker could not be reached or closed the connection.
pub async fn publish(p: PeerPublish<'_>) -> Result<Published, String> {
    let PeerPublish {
        peer,
        addr,
        prefix,
        members,
        groups,
        messages,
        rate,
        payload_size,
    } = p;
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    match peer {
        Peer::Nats => stream
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .await
            .map_err(|e| e.to_string())?,
        Peer::Raw => return Err("raw subscribers are published to through the HTTP API".into()),
        Peer::Mqtt => {
            stream
                .write_all(&mqtt_connect(&format!("{prefix}publisher")))
                .await
                .map_err(|e| e.to_string())?;
            let mut ack = [0u8; 4];
            stream
                .read_exact(&mut ack)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // Members per group, as loadgen assigns them (i mod groups).
    let per_group = |g: u32| (members - g).div_ceil(groups);
    let mut out = Published::default();
    let start = Instant::now();
    let total = u64::from(groups) * u64::from(messages);
    let mut buf = BytesMut::new();
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        let group_n = (n % u64::from(groups)) as u32;
        let group = format!("{prefix}g{group_n}");
        let payload = stamped(payload_size, n);
        buf.clear();
        match peer {
            Peer::Nats => {
                buf.put_slice(format!("PUB {group} {}\r\n", payload.len()).as_bytes());
                buf.put_slice(&payload);
                buf.put_slice(b"\r\n");
            }
            Peer::Raw => unreachable!("refused above"),
            Peer::Mqtt => {
                let mut body = BytesMut::new();
                mqtt_string(&mut body, &group);
                body.put_slice(&payload);
                buf.extend_from_slice(&mqtt_packet(0x30, &body));
            }
        }
        stream.write_all(&buf).await.map_err(|e| e.to_string())?;
        out.sent += 1;
        out.expected += u64::from(per_group(group_n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_lengths_and_frames_round_trip() {
        for len in [0, 127, 128, 16_383, 16_384, 300_000] {
            let body = vec![7u8; len];
            let packet = mqtt_packet(0x30, &body);
            assert_eq!(mqtt_frame(&packet), Some((0x30, packet.len() - len, len)));
            assert_eq!(mqtt_frame(&packet[..packet.len() - 1]), None);
        }
        assert_eq!(
            Peer::from_target("nats://127.0.0.1:4222").unwrap(),
            Some((Peer::Nats, "127.0.0.1:4222".parse().unwrap()))
        );
        assert_eq!(Peer::from_target("tcp://127.0.0.1:1").unwrap(), None);
        assert_eq!(
            Peer::from_target("raw://127.0.0.1:7100").unwrap(),
            Some((Peer::Raw, "127.0.0.1:7100".parse().unwrap()))
        );
        assert!(Peer::from_target("mqtt://localhost").is_err());
    }
}
