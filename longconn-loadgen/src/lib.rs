//! `loadgen`: simulated users against a longconn gateway, through the client SDK.
//!
//! ```text
//! driver (the process you start)                 load (same process, or --procs workers)
//!   for each phase:                                 connect this share of the clients
//!     wait for Ready from every load   ◄──────────  (and join groups), then Ready
//!     Go  ─────────────────────────────────────────► hold / send requests / churn
//!     publish through the HTTP API (push phases)     count pushes and their latency
//!     End ─────────────────────────────────────────► drain, close, Done(report)
//!     merge the reports into a Summary  ◄──────────
//!   print the summaries; the last stdout line is the run's JSON
//! ```
//!
//! # Layout
//! - [`cli`]: flags and subcommands; [`scenario`]: phases and scenario files.
//! - [`fleet`]: the load side (clients); [`publish`]: the driver's HTTP sends.
//! - [`link`]: driver-load messages, over channels or a worker's stdin/stdout.
//! - [`stats`]: live counters, per-process reports, merged summaries.
//! - [`spread`]: several gateways: clients over `--target`s, calls over `--api`s.
//! - [`control`]: `--control`: devices bootstrap through a control layer's `/v1/access`.
//! - [`timeline`]: a connect phase's logins, losses and `try_later` refusals per 100 ms.
//! - [`slow`]: `--slow-members`: raw subscribers that stop reading, counted apart.

pub mod cli;
pub mod control;
pub mod fleet;
pub mod link;
pub mod peer;
pub mod publish;
pub mod rawload;
mod rawlogin;
pub mod scenario;
pub mod slow;
pub mod spread;
pub mod stats;
pub mod timeline;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};

use cli::{Cli, WorkerSlot};
use fleet::LoadCtx;
use link::{DriverLink, LoadLink, Notice, Order};
use scenario::{Phase, Scenario};
use stats::Summary;

/// Runs the command line. Returns the run's summary (`None` in a worker process, which
/// reports to its driver instead).
///
/// # Errors
/// Bad options or scenario, a load that could not start, a worker that died.
pub async fn run(cli: Cli) -> Result<Option<Summary>, String> {
    let scenario = cli.mode.scenario()?;
    let slow = scenario
        .phases
        .iter()
        .any(|p| matches!(p, Phase::Multicast { churn, .. } if churn.slow_members > 0));
    if slow && !cli.common.target.first().starts_with("raw://") {
        return Err("--slow-members needs raw:// subscribers (--target raw://ip:port)".into());
    }
    let open_loop = scenario
        .phases
        .iter()
        .any(|p| matches!(p, Phase::Request { rate, .. } if *rate > 0.0));
    if open_loop && !cli.common.target.first().starts_with("raw://") {
        return Err(
            "request --rate (open loop) needs raw:// connections (--target raw://ip:port)".into(),
        );
    }
    if let Some(slot) = cli.common.worker {
        if let Some(addr) = cli.common.prometheus {
            let port = addr.port().wrapping_add(1 + slot.index);
            install_prometheus(std::net::SocketAddr::new(addr.ip(), port))?;
        }
        let ctx = Arc::new(LoadCtx::new(cli.common, slot)?);
        let mut link = LoadLink::Stdio {
            lines: BufReader::new(tokio::io::stdin()).lines(),
        };
        for phase in &scenario.phases {
            ctx.run_phase(phase, &mut link).await?;
        }
        return Ok(None);
    }
    if let Some(addr) = cli.common.prometheus {
        install_prometheus(addr)?;
    }
    drive(cli, scenario).await.map(Some)
}

/// Histogram buckets of `--metrics`, seconds: 100 µs to 10 s like the gateway's, plus
/// 30 s and 60 s for an overloaded target.
const PROMETHEUS_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// What `--metrics` serves (docs/LOADGEN.md): name, kind, help.
const PROMETHEUS_METRICS: &[(&str, &str, &str)] = &[
    (
        "loadgen_connects_attempted_total",
        "counter",
        "Connections attempted.",
    ),
    (
        "loadgen_connects_established_total",
        "counter",
        "Connections logged in.",
    ),
    (
        "loadgen_connects_failed_total",
        "counter",
        "Connections that never logged in.",
    ),
    ("loadgen_connected", "gauge", "Connections logged in now."),
    (
        "loadgen_reconnects_total",
        "counter",
        "Reconnects after a loss or churn.",
    ),
    (
        "loadgen_sent_total",
        "counter",
        "Pushes, publishes or requests sent.",
    ),
    (
        "loadgen_received_total",
        "counter",
        "Pushes or answers received.",
    ),
    (
        "loadgen_expected_total",
        "counter",
        "Deliveries expected by the phases so far (reach = received / expected).",
    ),
    (
        "loadgen_reach_ratio",
        "gauge",
        "Reach of the last finished phase: received / expected.",
    ),
    (
        "loadgen_errors_total",
        "counter",
        "Requests answered with an error, or pushes the gateway reported dropped.",
    ),
    (
        "loadgen_latency_seconds",
        "histogram",
        "Push-to-receive or request latency.",
    ),
    (
        "loadgen_connect_latency_seconds",
        "histogram",
        "Connect-and-login latency.",
    ),
];

/// Tokio worker threads for this process: `--runtime-threads`, else the machine's cores,
/// divided among the workers of a `--procs` run (at least 1 each).
pub fn runtime_threads(common: &cli::Common) -> usize {
    if let Some(n) = common.runtime_threads {
        return usize::from(n);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    match common.worker {
        Some(slot) => (cores / usize::from(slot.count.max(1))).max(1),
        None => cores,
    }
}

fn install_prometheus(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&PROMETHEUS_BUCKETS)
        .and_then(|b| b.install())
        .map_err(|e| format!("prometheus exporter on {addr}: {e}"))?;
    for &(name, kind, help) in PROMETHEUS_METRICS {
        match kind {
            "counter" => metrics::describe_counter!(name, help),
            "gauge" => metrics::describe_gauge!(name, help),
            _ => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
    Ok(())
}

/// The driver: starts the load (in process or as workers), runs every phase, merges.
async fn drive(cli: Cli, scenario: Scenario) -> Result<Summary, String> {
    let common = cli.common.clone();
    let started = Instant::now();
    let mut links = Vec::new();
    let mut local_load = None;
    if common.procs == 1 {
        let (driver, mut load) = DriverLink::local_pair();
        let ctx = Arc::new(LoadCtx::new(common.clone(), WorkerSlot::ALONE)?);
        let phases = scenario.phases.clone();
        local_load = Some(tokio::spawn(async move {
            for phase in &phases {
                ctx.run_phase(phase, &mut load).await?;
            }
            Ok::<(), String>(())
        }));
        links.push(driver);
    } else {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        for index in 0..common.procs {
            let slot = WorkerSlot {
                index,
                count: common.procs,
            };
            let mut child = tokio::process::Command::new(&exe)
                .args(worker_args(&args, slot))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting worker {slot}: {e}"))?;
            let stdin = child.stdin.take().expect("piped");
            let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            links.push(DriverLink::Child {
                stdin,
                lines,
                child: Box::new(child),
            });
        }
    }
    let publisher = publish::Publisher::new(
        common.api.clone(),
        &common.app,
        common.payload_size as usize,
    )?
    .with_concurrency(usize::from(common.publishers))
    .with_batch(common.batch as usize)
    .with_api_key(common.api_key.as_deref());
    let target = common.target.to_string();
    let mut summaries = Vec::new();
    let mut worker_cpu = vec![0.0; links.len()];
    for (number, phase) in scenario.phases.iter().enumerate() {
        let phase_started = Instant::now();
        if !common.quiet {
            eprintln!(
                "loadgen: phase {}/{} {} ({} connections over {} process(es))",
                number + 1,
                scenario.phases.len(),
                phase.kind(),
                phase.connections(),
                links.len()
            );
        }
        for link in &mut links {
            expect_notice_ready(link).await?;
        }
        let server_cpu_at_go = common.server_pid.and_then(stats::process_cpu_s);
        for link in &mut links {
            link.order(Order::Go).await?;
        }
        let published = publish_phase(&publisher, &common, phase).await;
        for link in &mut links {
            link.order(Order::End).await?;
        }
        let mut reports = Vec::new();
        for (i, link) in links.iter_mut().enumerate() {
            match link.notice().await? {
                Notice::Done(report) => reports.push(report),
                Notice::Ready => return Err("a load sent Ready twice".into()),
            }
            if let DriverLink::Child { child, .. } = link {
                if let Some(cpu) = child.id().and_then(stats::process_cpu_s) {
                    worker_cpu[i] = cpu;
                }
            }
        }
        let mut summary = stats::merge(
            &scenario.name,
            phase.kind(),
            &target,
            &reports,
            phase_started.elapsed().as_secs_f64(),
        )?;
        if let Some(published) = published {
            summary.counts.sent = published.sent;
            match (&summary.slow_members, phase) {
                (
                    Some(_),
                    Phase::Multicast {
                        groups, messages, ..
                    },
                ) => {
                    // The publish answers count the slow members too: the reading ones
                    // expect their groups' publishes, scaled by the share that was sent.
                    let planned = u64::from(*groups) * u64::from(*messages);
                    summary.counts.expected =
                        (summary.counts.expected as u128 * u128::from(published.sent)
                            / u128::from(planned.max(1))) as u64;
                }
                _ => summary.counts.expected = published.expected,
            }
            summary.counts.errors += published.errors;
            summary.counts.unknown += published.unknown;
            summary.publish_rtt_us = published.rtt_us;
            summary.reach_rate = summary.counts.reach();
        }
        if phase.kind() == "connect" {
            // Reach of a connect phase: the connections still up at the end.
            let c = &summary.counts;
            summary.reach_rate = if c.connections == 0 {
                1.0
            } else {
                c.connected_at_end as f64 / c.connections as f64
            };
        }
        if let (Some(before), Some(after)) = (
            server_cpu_at_go,
            common.server_pid.and_then(stats::process_cpu_s),
        ) {
            summary.server_cpu_s = Some(after - before);
        }
        summary.procs = common.procs;
        if !common.quiet {
            eprintln!("loadgen: {}", summary.human());
        }
        summaries.push(summary);
    }
    if let Some(load) = local_load {
        load.await.map_err(|e| e.to_string())??;
    }
    for link in &mut links {
        if let DriverLink::Child { child, .. } = link {
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a worker exited with {status}"));
            }
        }
    }
    let mut total = Summary::total(
        &scenario.name,
        &target,
        summaries,
        started.elapsed().as_secs_f64(),
    );
    total.procs = common.procs;
    total.load_cpu_s =
        stats::process_cpu_s(std::process::id()).unwrap_or(0.0) + worker_cpu.iter().sum::<f64>();
    Ok(total)
}

async fn expect_notice_ready(link: &mut DriverLink) -> Result<(), String> {
    match link.notice().await? {
        Notice::Ready => Ok(()),
        Notice::Done(_) => Err("a load reported before it was ready".into()),
    }
}

/// The HTTP side of a push phase (nothing for other phases).
async fn publish_phase(
    publisher: &publish::Publisher,
    common: &cli::Common,
    phase: &Phase,
) -> Option<publish::Published> {
    let bar = |len: u64| stats::progress_bar(len, "sending", common.quiet);
    let published = match *phase {
        Phase::Unicast {
            devices,
            messages,
            rate,
        } => {
            let ids: Vec<String> = (0..devices)
                .map(|i| format!("{}{i}", common.device_prefix))
                .collect();
            let progress = bar(u64::from(devices) * u64::from(messages));
            let out = publisher.unicast(&ids, messages, rate, &progress).await;
            progress.finish_and_clear();
            out
        }
        Phase::Multicast {
            members,
            groups,
            messages,
            rate,
            ..
        } => {
            let peer = peer::Peer::from_target(common.target.first())
                .ok()
                .flatten();
            if let Some((peer, addr)) = peer.filter(|(p, _)| *p != peer::Peer::Raw) {
                let published = peer::publish(peer::PeerPublish {
                    peer,
                    addr,
                    prefix: &common.device_prefix,
                    members,
                    groups,
                    messages,
                    rate,
                    payload_size: common.payload_size as usize,
                })
                .await;
                return Some(published.unwrap_or_else(|err| {
                    tracing::warn!(error = %err, "peer publish failed");
                    publish::Published::default()
                }));
            }
            let progress = bar(u64::from(groups) * u64::from(messages));
            let out = publisher
                .multicast_on_own_thread(&common.device_prefix, groups, messages, rate, &progress)
                .await;
            progress.finish_and_clear();
            out
        }
        Phase::Connect { .. } | Phase::Request { .. } => return None,
    };
    Some(published)
}

/// A worker's command line: the driver's arguments with `--worker I/K --quiet` added.
/// A `--quiet` the user gave is dropped first: clap refuses a flag given twice at the
/// same level (`loadgen connect --procs 2 --quiet` failed in every worker, issue 16).
pub fn worker_args(driver_args: &[String], slot: WorkerSlot) -> Vec<String> {
    let mut args: Vec<String> = driver_args
        .iter()
        .filter(|a| *a != "--quiet")
        .cloned()
        .collect();
    args.extend([
        "--worker".to_owned(),
        slot.to_string(),
        "--quiet".to_owned(),
    ]);
    args
}

#[cfg(test)]
mod worker_args_tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn workers_share_the_cores_unless_told_otherwise() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = |args: &[&str]| {
            let cli = cli::Cli::try_parse_from(
                ["loadgen"].iter().chain(args).copied().chain(["connect"]),
            )
            .unwrap();
            runtime_threads(&cli.common)
        };
        assert_eq!(threads(&[]), cores);
        assert_eq!(
            threads(&["--procs", "64"]),
            cores,
            "the driver keeps every core"
        );
        assert_eq!(threads(&["--worker", "0/64"]), (cores / 64).max(1));
        assert_eq!(threads(&["--worker", "3/4"]), (cores / 4).max(1));
        assert_eq!(threads(&["--worker", "0/64", "--runtime-threads", "3"]), 3);
    }

    #[test]
    fn a_users_quiet_is_not_given_twice_to_a_worker() {
        let slot = WorkerSlot { index: 1, count: 2 };
        for user in [
            &["connect", "--procs", "2", "--quiet"][..],
            &["--quiet", "--procs", "2", "connect"][..],
            &["connect", "--procs", "2"][..],
        ] {
            let user: Vec<String> = user.iter().map(|s| s.to_string()).collect();
            let args = worker_args(&user, slot);
            let cli = cli::Cli::try_parse_from(std::iter::once("loadgen".to_owned()).chain(args))
                .unwrap_or_else(|e| panic!("{user:?}: {e}"));
            assert!(cli.common.quiet);
            assert_eq!(cli.common.worker, Some(slot));
        }
    }
}
