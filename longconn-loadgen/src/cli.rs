//! Command line of `loadgen`: options shared by every mode, and one subcommand per mode.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::scenario::{Phase, Scenario};
use super::spread::{ApiBases, Targets};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};

/// `loadgen`: simulated users against a longconn gateway. The last line of stdout is a
/// JSON summary; progress and a readable summary go to stderr.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "longconn load and scenario tool")]
pub struct Cli {
    /// Options shared by every mode.
    #[command(flatten)]
    pub common: Common,
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// Options shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Gateway endpoint: tcp://, tls://, ws://, wss:// or quic://host:port[/ws]; or a
    /// peer broker for multicast comparisons: nats://ip:port, mqtt://ip:port; or
    /// raw://ip:port, the gateway's TCP port read by a lean raw-protocol subscriber.
    /// Several gateways: a comma-separated list of one kind; device i connects to
    /// target i mod n.
    #[arg(
        long,
        global = true,
        default_value = "tcp://127.0.0.1:7100",
        value_name = "URL[,URL..]"
    )]
    pub target: Targets,
    /// The gateway's HTTP API, where pushes are sent. Several: a comma-separated list,
    /// used round robin per request (one base sends everything through that node).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:7180",
        value_name = "URL[,URL..]"
    )]
    pub api: ApiBases,
    /// Connects per second over all processes in phases without a rate of their own
    /// (unicast, multicast, request) [default: 2,000 per process; raw subscribers
    /// 4,000 per process].
    #[arg(long, global = true, value_name = "PER_S", value_parser = positive_rate)]
    pub connect_rate: Option<f64>,
    /// Devices per `POST /v1/push/devices` in unicast phases.
    #[arg(long, global = true, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Secret to mint login tokens with [default: the gateway's development secret].
    #[arg(long, global = true)]
    pub token_secret: Option<String>,
    /// Key id of --token-secret [default: k1, or dev for the development secret].
    #[arg(long, global = true)]
    pub token_key_id: Option<String>,
    /// App id of every simulated device.
    #[arg(long, global = true, default_value = "load")]
    pub app: String,
    /// Device ids are this prefix plus a number.
    #[arg(long, global = true, default_value = "lg-")]
    pub device_prefix: String,
    /// Source addresses to spread clients over, `127.0.0.2-127.0.0.40` or one address.
    #[arg(long, global = true, value_name = "FIRST-LAST")]
    pub source_ips: Option<IpRange>,
    /// PEM file of the certificate (or CA) to trust for tls, wss and quic targets.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Skip certificate verification. DEVELOPMENT ONLY.
    #[arg(long, global = true, conflicts_with = "ca")]
    pub insecure: bool,
    /// Worker processes; their results are merged. One process holds at most ~19k
    /// connections (the open-file limit is 20,000).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub procs: u16,
    /// Serve live Prometheus metrics on this address (`/metrics`; also `--metrics`).
    #[arg(long, global = true, value_name = "ADDR", visible_alias = "metrics")]
    pub prometheus: Option<SocketAddr>,
    /// Payload size of pushes and requests in bytes (at least 16: the timestamp).
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(16..=60_000))]
    pub payload_size: u32,
    /// After the last send, wait until everything arrived, or nothing arrived for this
    /// many seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub drain: f64,
    /// ... but never longer than this many seconds after the last send: a server that
    /// cannot keep up is cut off (and its reach shows it).
    #[arg(long, global = true, default_value_t = 30.0)]
    pub drain_limit: f64,
    /// Process id of the server under test: its CPU seconds from `Go` to the end of
    /// each phase (after the drain) are reported as `server_cpu_s`.
    #[arg(long, global = true, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// HTTP calls in flight at once (group publishes, or unicast batches), each on its
    /// own keep-alive HTTP connection.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub publishers: u16,
    /// No progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Internal: run as worker `I/K` of a `--procs K` run, controlled over stdin/stdout.
    #[arg(long, global = true, hide = true, value_name = "I/K")]
    pub worker: Option<WorkerSlot>,
    /// The gateway's push API key secret, sent as `Authorization: Bearer SECRET` on
    /// every API call (the gateway's `--api-key ID:SECRET`; an `ID:` prefix is accepted
    /// and dropped) [default: none].
    #[arg(long, global = true, value_name = "SECRET")]
    pub api_key: Option<String>,
    /// Bootstrap every device through this control layer (longconn-control,
    /// `http(s)://host:port`): `POST /v1/access`, then log in to the answer's first
    /// endpoint with its token (`--target` and the token options are not used for
    /// connecting). Reports the access latency and the spread over nodes.
    #[arg(long, global = true, value_name = "URL")]
    pub control: Option<String>,
    /// Every client sends a quality report (PROTOCOL.md 4.1: its connect attempts and
    /// heartbeat round trips) this often, in seconds; the gateway's `GET /v1/quality`
    /// aggregates them. Default off.
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub quality_report: Option<u64>,
    /// The network type the quality reports carry.
    #[arg(long, global = true, value_enum, default_value = "unknown")]
    pub network: NetworkType,
    /// Tokio worker threads of this process [default: the machine's cores; in each
    /// worker of a `--procs K` run, the cores divided by K, at least 1: K processes
    /// with a thread per core each only wake each other's idle threads].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub runtime_threads: Option<u16>,
}

/// A client's network type (`NETWORK` of a quality report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkType {
    /// 0
    Unknown,
    /// 1
    Wifi,
    /// 2
    Cellular,
    /// 3
    Wired,
}

impl NetworkType {
    /// The wire value.
    pub fn wire(self) -> u8 {
        self as u8
    }
}

impl Common {
    /// (key id, secret) for minting tokens.
    pub fn token_key(&self) -> (String, String) {
        match &self.token_secret {
            Some(secret) => (
                self.token_key_id.clone().unwrap_or_else(|| "k1".into()),
                secret.clone(),
            ),
            None => (DEV_TOKEN_KEY_ID.into(), DEV_TOKEN_SECRET.into()),
        }
    }
}

/// One mode per subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Ramp up connections, hold them idle (heartbeats only), then close.
    Connect {
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        /// Connects per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
    /// Connect devices, then push to them through `POST /v1/push/devices`.
    Unicast {
        /// Devices to connect.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Pushes per device.
        #[arg(long, default_value_t = 10)]
        messages: u32,
        /// Pushes per second, over all devices.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
    },
    /// Join members to groups, then publish through `POST /v1/push/groups/{group}`.
    Multicast {
        /// Members (one connection each).
        #[arg(long, default_value_t = 1000)]
        members: u32,
        /// Groups; member i joins group i mod G.
        #[arg(long, default_value_t = 1)]
        groups: u32,
        /// Publishes per group.
        #[arg(long, default_value_t = 10)]
        messages: u32,
        /// Publishes per second, over all groups.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Members that stop reading once joined (raw:// targets only): they keep the
        /// socket open unread, are left out of reach and latency, and are reported
        /// apart (`slow_members`: closed by the gateway or not, and when).
        #[arg(long, default_value_t = 0)]
        slow_members: u32,
    },
    /// Upstream requests through the forwarding router.
    Request {
        /// Connections.
        #[arg(long, default_value_t = 100)]
        connections: u32,
        /// Requests per connection, one at a time.
        #[arg(long, default_value_t = 100)]
        requests: u32,
        /// Business id.
        #[arg(long, default_value_t = 1)]
        business: u32,
        /// Requests per second over all connections, sent on a schedule without
        /// waiting for answers (open loop; raw:// targets only). 0: closed loop, each
        /// connection sends its next request once the previous one is answered.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Phases from a TOML file (see longconn-loadgen/scenarios/).
    Scenario {
        /// The scenario file.
        file: PathBuf,
    },
}

impl Mode {
    /// The scenario this mode runs: one phase, or the file's.
    ///
    /// # Errors
    /// The scenario file cannot be read or is invalid.
    pub fn scenario(&self) -> Result<Scenario, String> {
        let phase = match self.clone() {
            Mode::Connect {
                connections,
                rate,
                hold,
            } => Phase::Connect {
                connections,
                rate,
                hold,
            },
            Mode::Unicast {
                devices,
                messages,
                rate,
            } => Phase::Unicast {
                devices,
                messages,
                rate,
            },
            Mode::Multicast {
                members,
                groups,
                messages,
                rate,
                slow_members,
            } => Phase::Multicast {
                members,
                groups,
                messages,
                rate,
                churn: super::scenario::Churn {
                    slow_members,
                    ..Default::default()
                },
            },
            Mode::Request {
                connections,
                requests,
                business,
                rate,
            } => Phase::Request {
                connections,
                requests,
                business,
                rate,
            },
            Mode::Scenario { file } => return Scenario::load(&file),
        };
        let scenario = Scenario {
            name: phase.kind().to_owned(),
            phases: vec![phase],
        };
        scenario.validate()?;
        Ok(scenario)
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

/// An inclusive range of IPv4 source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: u32,
    last: u32,
}

impl IpRange {
    /// The `n`th address, cycling through the range.
    pub fn pick(&self, n: u64) -> IpAddr {
        let len = u64::from(self.last - self.first) + 1;
        IpAddr::V4(Ipv4Addr::from(self.first + (n % len) as u32))
    }

    /// How many addresses the range holds.
    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    /// Never: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            part.trim()
                .parse::<Ipv4Addr>()
                .map(u32::from)
                .map_err(|e| format!("`{part}` is not an IPv4 address: {e}"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if first > last {
            return Err(format!("`{s}`: the first address is after the last"));
        }
        Ok(IpRange { first, last })
    }
}

/// Which share of the load a worker process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// This worker, from 0.
    pub index: u16,
    /// Workers in all.
    pub count: u16,
}

impl WorkerSlot {
    /// The whole load in one process.
    pub const ALONE: WorkerSlot = WorkerSlot { index: 0, count: 1 };

    /// The global indices `0..total` this worker takes: every `count`th from `index`.
    pub fn share(&self, total: u32) -> impl Iterator<Item = u32> + use<> {
        (u32::from(self.index)..total).step_by(usize::from(self.count))
    }
}

impl std::str::FromStr for WorkerSlot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, k) = s.split_once('/').ok_or("expected I/K")?;
        let index: u16 = i.parse().map_err(|_| "bad worker index")?;
        let count: u16 = k.parse().map_err(|_| "bad worker count")?;
        if count == 0 || index >= count {
            return Err("worker index out of range".into());
        }
        Ok(WorkerSlot { index, count })
    }
}

impl std::fmt::Display for WorkerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn every_mode_parses_with_shared_options_anywhere() {
        let cli = parse(&[
            "multicast",
            "--members",
            "500",
            "--groups",
            "5",
            "--target",
            "ws://127.0.0.1:7101/ws",
            "--source-ips",
            "127.0.0.2-127.0.0.40",
            "--procs",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.common.target.to_string(), "ws://127.0.0.1:7101/ws");
        assert_eq!(cli.common.procs, 3);
        let ips = cli.common.source_ips.unwrap();
        assert_eq!(ips.len(), 39);
        assert_eq!(ips.pick(0), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ips.pick(39), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(matches!(
            cli.mode,
            Mode::Multicast {
                members: 500,
                groups: 5,
                messages: 10,
                ..
            }
        ));
        for args in [
            &["connect", "--connections", "10", "--hold", "0.5"][..],
            &["unicast", "--devices", "10", "--messages", "2"],
            &["request", "--business", "7", "--insecure"],
            &["scenario", "x.toml"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        for (args, needle) in [
            (
                &["connect", "--source-ips", "127.0.0.9-127.0.0.2"][..],
                "after",
            ),
            (&["connect", "--source-ips", "localhost"], "IPv4"),
            (&["connect", "--procs", "0"], "procs"),
            (&["connect", "--payload-size", "8"], "payload-size"),
            (&["unicast", "--devices", "-1"], "-1"),
            (&["request", "--ca", "a.pem", "--insecure"], "insecure"),
            (&["nonsense"], "nonsense"),
            (
                &["connect", "--target", "tcp://127.0.0.1:1,raw://127.0.0.1:2"],
                "one kind",
            ),
            (
                &["unicast", "--api", "http://127.0.0.1:1,,"],
                "empty API base",
            ),
            (&["unicast", "--batch", "0"], "batch"),
            (&["unicast", "--connect-rate", "0"], "positive"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn several_targets_and_apis_parse_as_lists() {
        let cli = parse(&[
            "unicast",
            "--target",
            "tcp://127.0.0.1:7100,tcp://127.0.0.1:7200",
            "--api",
            "http://127.0.0.1:7180,http://127.0.0.1:7280",
            "--batch",
            "1000",
        ])
        .unwrap();
        assert_eq!(cli.common.target.len(), 2);
        assert_eq!(cli.common.target.for_client(3).1, "tcp://127.0.0.1:7200");
        assert_eq!(cli.common.api.all().len(), 2);
        assert_eq!(cli.common.batch, 1000);
        let defaults = parse(&["unicast"]).unwrap();
        assert_eq!(defaults.common.target.urls(), ["tcp://127.0.0.1:7100"]);
        assert_eq!(defaults.common.api.all(), ["http://127.0.0.1:7180"]);
    }

    #[test]
    fn worker_shares_cover_everything_once() {
        let mut all: Vec<u32> = (0..3)
            .flat_map(|index| WorkerSlot { index, count: 3 }.share(10))
            .collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!("3/3".parse::<WorkerSlot>().is_err());
    }
}
