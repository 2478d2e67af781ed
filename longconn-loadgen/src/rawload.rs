//! Connect and request phases over the lean raw-protocol client (`--target raw://...`):
//! plain TCP, `Login` with a minted token, then frames written and read with the core
//! codec, one task and one read buffer per connection (no SDK session, no callbacks,
//! no heartbeat task). The same login code as the raw subscribers of [`super::peer`].
//!
//! - connect: log in at the phase's rate, hold (answering the gateway's pings, pinging
//!   now and then as the raw subscribers do), close. Logins per second of the ramp.
//! - request: log in, then each connection sends its requests either one at a time
//!   (closed loop, `rate = 0`) or on a schedule of `rate / connections` per second
//!   without waiting for answers (open loop). The latency of each answer is taken from
//!   the send time stamped in its payload (the echo backend returns the payload).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use longconn_core::{Frame, Metadata};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fleet::{ConnectSchedule, LoadCtx, expect_order, stamped};
use super::link::{LoadLink, Notice, Order};
use super::peer::{Peer, RAW_CODEC, raw_pong, receive};
use super::rawlogin::{self, LoginFrames};
use super::scenario::Phase;
use super::stats::unix_us;

/// Connects per second per process for request phases without `--connect-rate`.
const DEFAULT_RAW_CONNECT_RATE: f64 = 4000.0;

/// One logged-in raw connection.
struct RawConn {
    index: u32,
    target: usize,
    stream: TcpStream,
    buf: BytesMut,
}

/// Runs this process's part of a connect or request `phase` against raw targets.
///
/// # Errors
/// The link to the driver broke, or the phase is neither connect nor request.
pub(crate) async fn run_raw_phase(
    ctx: &Arc<LoadCtx>,
    addrs: &[SocketAddr],
    phase: &Phase,
    link: &mut LoadLink,
) -> Result<(), String> {
    let procs = f64::from(ctx.slot.count);
    match *phase {
        Phase::Connect {
            connections,
            rate,
            hold,
        } => {
            let ramp = Instant::now();
            let conns = login_all(ctx, addrs, connections, rate / procs, false).await;
            let ramp_s = ramp.elapsed().as_secs_f64();
            let mut holders = JoinSet::new();
            for c in conns {
                holders.spawn(receive(
                    Peer::Raw,
                    c.stream,
                    c.buf,
                    ctx.clone(),
                    (c.index as usize, c.target),
                ));
            }
            link.notify(Notice::Ready).await?;
            expect_order(link, Order::Go).await?;
            let go_us = unix_us();
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            expect_order(link, Order::End).await?;
            // A holder only ends when its connection does.
            while holders.try_join_next().is_some() {}
            let connected_at_end = holders.len() as u64;
            holders.abort_all();
            let report = ctx.take_report(go_us, connected_at_end, Some(ramp_s));
            link.notify(Notice::Done(report)).await
        }
        Phase::Request {
            connections,
            requests,
            business,
            rate,
            ..
        } => {
            let per_s = ctx
                .common
                .connect_rate
                .map_or(DEFAULT_RAW_CONNECT_RATE, |r| r / procs);
            let conns = login_all(ctx, addrs, connections, per_s, true).await;
            link.notify(Notice::Ready).await?;
            expect_order(link, Order::Go).await?;
            let go_us = unix_us();
            let go = Instant::now();
            // Open loop: each connection's share of `rate`, first sends spread over one
            // period so the connections do not all send in the same instant.
            let period =
                (rate > 0.0).then(|| Duration::from_secs_f64(f64::from(connections) / rate));
            let mut tasks = JoinSet::new();
            for c in conns {
                let ctx = ctx.clone();
                let offset = period
                    .map(|p| p.mul_f64(f64::from(c.index % connections) / f64::from(connections)));
                let schedule = period.zip(offset).map(|(p, o)| (go + o, p));
                tasks.spawn(
                    async move { request_loop(&ctx, c, requests, business, schedule).await },
                );
            }
            let mut connected_at_end = 0u64;
            while let Some(done) = tasks.join_next().await {
                if matches!(done, Ok(true)) {
                    connected_at_end += 1;
                }
            }
            let active_s = go.elapsed().as_secs_f64();
            expect_order(link, Order::End).await?;
            let sent = ctx.recorder.sent.load(std::sync::atomic::Ordering::Relaxed);
            let mut report = ctx.take_report(go_us, connected_at_end, Some(active_s));
            report.counts.expected = sent;
            link.notify(Notice::Done(report)).await
        }
        _ => Err(format!(
            "{} phases over raw:// are handled by the raw subscribers",
            phase.kind()
        )),
    }
}

/// Logs in this process's share of `total` raw connections at `per_s` per second,
/// with `TCP_NODELAY` when `nodelay`. The `Login` frames (tokens included) are made
/// before the first connect ([`LoginFrames`]); each login's latency runs from just
/// before its socket is made to its `LoginAck`.
async fn login_all(
    ctx: &Arc<LoadCtx>,
    addrs: &[SocketAddr],
    total: u32,
    per_s: f64,
    nodelay: bool,
) -> Vec<RawConn> {
    let frames = LoginFrames::new(ctx, ctx.slot.share(total)).frames;
    let mut schedule = ConnectSchedule::new(per_s);
    let mut tasks = JoinSet::new();
    for (index, frame) in frames {
        schedule.next().await;
        let ctx = ctx.clone();
        let target = index as usize % addrs.len();
        let addr = addrs[target];
        tasks.spawn(async move {
            let rec = &ctx.recorder;
            rec.bump(&rec.attempted, "loadgen_connects_attempted_total");
            let started = Instant::now();
            let from = ctx.common.source_ips.map(|ips| ips.pick(u64::from(index)));
            let done = match frame {
                Ok(frame) => rawlogin::login(addr, from, &frame, nodelay).await,
                Err(err) => Err(err),
            };
            match done {
                Ok((stream, buf)) => {
                    rec.connect_latency
                        .record(index as usize, started.elapsed().as_micros() as u64);
                    rec.established_on(target);
                    Some(RawConn {
                        index,
                        target,
                        stream,
                        buf,
                    })
                }
                Err(err) => {
                    tracing::debug!(error = %err, "raw login failed");
                    rec.bump(&rec.failed, "loadgen_connects_failed_total");
                    None
                }
            }
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(conn)) = done {
            out.push(conn);
        }
    }
    out
}

/// Sends `requests` requests over `c` and reads their answers: one at a time without a
/// `schedule`, else one per period from the first instant on (late sends catch up, as
/// an open-loop generator must). Gives up when no answer came for the phase's
/// `--drain` seconds. Returns whether the connection was still usable at the end.
async fn request_loop(
    ctx: &LoadCtx,
    mut c: RawConn,
    requests: u32,
    business: u32,
    schedule: Option<(Instant, Duration)>,
) -> bool {
    let rec = &ctx.recorder;
    let size = ctx.common.payload_size as usize;
    let quiet = Duration::from_secs_f64(ctx.common.drain.max(0.1));
    let mut ticks = schedule.map(|(first, period)| tokio::time::interval_at(first, period));
    let mut out = BytesMut::with_capacity(size + 64);
    let (mut sent, mut settled) = (0u32, 0u32);
    let mut codec = RAW_CODEC;
    while settled < requests {
        // Take every complete frame already read.
        loop {
            match codec.decode(&mut c.buf) {
                Ok(Some(Frame::Response { payload, .. })) => {
                    if let Some(stamp) = payload.get(..8) {
                        let stamp = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
                        rec.latency
                            .record(c.index as usize, unix_us().saturating_sub(stamp));
                    }
                    rec.received_on(c.target);
                    settled += 1;
                }
                Ok(Some(Frame::Error { .. })) => {
                    rec.bump(&rec.errors, "loadgen_errors_total");
                    settled += 1;
                }
                Ok(Some(Frame::Ping { id, payload })) => {
                    if raw_pong(&mut c.stream, id, payload).await.is_err() {
                        return false;
                    }
                }
                Ok(Some(Frame::Kick { .. } | Frame::Close { .. })) | Err(_) => return false,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
        if settled >= requests {
            break;
        }
        let may_send = sent < requests && (ticks.is_some() || sent == settled);
        if c.buf.capacity() - c.buf.len() < 1024 {
            c.buf.reserve(4096);
        }
        tokio::select! {
            biased;
            () = async {
                match ticks.as_mut() {
                    Some(t) if may_send => {
                        t.tick().await;
                    }
                    None if may_send => {}
                    _ => std::future::pending::<()>().await,
                }
            } => {
                sent += 1;
                out.clear();
                let frame = Frame::Request {
                    id: sent,
                    business,
                    meta: Metadata::default(),
                    payload: stamped(size, u64::from(sent)),
                };
                if frame.encode(&mut out, RAW_CODEC.max_frame_size()).is_err() {
                    return false;
                }
                rec.bump(&rec.sent, "loadgen_sent_total");
                if c.stream.write_all(&out).await.is_err() {
                    return false;
                }
            }
            read = async {
                if sent < requests {
                    Some(c.stream.read_buf(&mut c.buf).await)
                } else {
                    tokio::time::timeout(quiet, c.stream.read_buf(&mut c.buf))
                        .await
                        .ok()
                }
            } => match read {
                None => return true, // nothing for `--drain` seconds: the rest is lost
                Some(Ok(0) | Err(_)) => return false,
                Some(Ok(_)) => {}
            },
        }
    }
    // Close politely; the gateway counts an abrupt end the same way.
    let _ = c.stream.shutdown().await;
    true
}
