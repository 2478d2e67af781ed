//! [`ControlConfig`], the TOML file, and [`Policy`], its validated and compiled form.
//!
//! Every limit has a documented default and range (the embedded default file,
//! `control.default.toml`, is the reference, and docs/CONTROL.md lists every key). A
//! file that does not parse, or that parses but breaks a limit, is refused with a
//! [`ConfigError`] naming the line and the field.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use longconn_core::{TokenKey, TokenKeys};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::ConfigError;
use crate::nodes::{Node, NodeAddr, StaticNodes, Transport};
use crate::rules::{Conditions, Network, Outcome, Rule, RuleSet, Version, VersionRange};

/// The embedded default configuration: one static node on the reference gateway's
/// default ports (127.0.0.1:7100 tcp, 7101 ws, 7102 quic), the development token key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../control.default.toml");

/// The control layer's configuration file, as written. Unknown keys are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Address the HTTP server listens on. Default `127.0.0.1:7190`. Read at start only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Apps served; any other app is refused (`unknown_app`). At least one.
    pub apps: Vec<String>,
    /// Request and answer limits.
    #[serde(default)]
    pub limits: Limits,
    /// Per-IP rate limit of `/v1/access`. Read at start only.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Token keys and lifetime.
    pub tokens: TokensConfig,
    /// Heartbeat and reconnect policy handed to clients.
    #[serde(default)]
    pub client: ClientPolicy,
    /// How reported connection quality reorders transports.
    #[serde(default)]
    pub quality: QualityPolicy,
    /// A static node list, used when no `[registry]` is configured.
    #[serde(default)]
    pub nodes: Vec<Spanned<NodeConfig>>,
    /// Take nodes from longconn-cluster's Redis node registry instead. Read at start only.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// The decision for devices no rule matches. Required.
    pub default: Spanned<DefaultRule>,
    /// Small-traffic rules, tried in order; the first match decides.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7190))
}

/// Request and answer limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body; larger ones get 413 `body_too_large`. Default 16,384;
    /// 256..=1,048,576. Read at start only.
    pub max_body_bytes: usize,
    /// Nodes per answer. Default 3; 1..=64.
    pub max_nodes: usize,
    /// Endpoints per answer (nodes × transports). Default 8; 1..=256.
    pub max_endpoints: usize,
    /// Connections added to every node's count before weighting by load, so that near
    /// empty nodes are not treated as infinitely better. Default 1,000; at least 1.
    pub load_smoothing: u64,
    /// How often the config file's modification time is polled, in ms; 0 turns polling
    /// off (SIGHUP still reloads). Default 1,000; 0 or 50..=3,600,000.
    pub reload_poll_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 16 * 1024,
            max_nodes: 3,
            max_endpoints: 8,
            load_smoothing: 1_000,
            reload_poll_ms: 1_000,
        }
    }
}

/// Per-IP token bucket of `/v1/access`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second refilled per client IP; 0 turns the limit off. Default 50.
    pub per_second: f64,
    /// Bucket size: requests one IP may make at once. Default 100; at least 1.
    pub burst: u32,
    /// IPs tracked at most; when full, buckets that have refilled are forgotten, and if
    /// none has, new IPs are limited as one shared bucket. Default 100,000; at least 16.
    pub max_tracked_ips: usize,
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            per_second: 50.0,
            burst: 100,
            max_tracked_ips: 100_000,
        }
    }
}

/// Token keys and lifetime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of issued tokens in seconds. Default 3,600; 60..=2,592,000 (30 days).
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
    /// Id of the key that signs; every key in `keys` verifies (rotation).
    pub signing_key: String,
    /// Keys: id (1..=32 of `[A-Za-z0-9_-]`) and secret (at least 16 bytes).
    pub keys: Vec<KeyConfig>,
}

fn default_ttl() -> u64 {
    3_600
}

/// One token key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id (travels in tokens).
    pub id: String,
    /// HMAC secret (never leaves the server).
    pub secret: String,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Heartbeat and reconnect policy handed to clients in every access answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientPolicy {
    /// Longest heartbeat interval the client may use, ms (it pings at the smaller of
    /// this and the gateway's). Default 30,000; 1,000..=600,000.
    pub heartbeat_ms: u64,
    /// First reconnect delay window, ms. Default 1,000; 10..=600,000.
    pub reconnect_base_ms: u64,
    /// Largest reconnect delay window, ms. Default 30,000; at least `reconnect_base_ms`,
    /// at most 3,600,000.
    pub reconnect_cap_ms: u64,
    /// Failed connects in a row after which the client asks the control layer again.
    /// Default 3; 1..=100.
    pub reaccess_after_failures: u32,
}

impl Default for ClientPolicy {
    fn default() -> ClientPolicy {
        ClientPolicy {
            heartbeat_ms: 30_000,
            reconnect_base_ms: 1_000,
            reconnect_cap_ms: 10_000,
            reaccess_after_failures: 3,
        }
    }
}

/// How reported quality reorders transports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityPolicy {
    /// A transport whose reported connect success rate is below this moves to the end
    /// of the device's transport list. Default 0.5; 0..=1 (0 turns it off).
    pub min_connect_success_rate: f64,
}

impl Default for QualityPolicy {
    fn default() -> QualityPolicy {
        QualityPolicy {
            min_connect_success_rate: 0.5,
        }
    }
}

/// One static node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id.
    pub id: u16,
    /// Transport name → address (`host:port`, or a URL of that scheme).
    pub addrs: BTreeMap<String, String>,
    /// Its load, for weighting. Default 0.
    #[serde(default)]
    pub connections: u64,
    /// A draining node gets no new clients. Default false.
    #[serde(default)]
    pub draining: bool,
}

/// Where to find the Redis node registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Redis URL (`redis://host:port/db`).
    pub url: String,
    /// Key prefix. Default longconn-cluster's default.
    #[serde(default)]
    pub prefix: Option<String>,
    /// How often the cached node list is refreshed, ms. Default 2,000; 100..=60,000.
    #[serde(default = "default_refresh")]
    pub refresh_ms: u64,
}

fn default_refresh() -> u64 {
    2_000
}

/// The default decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRule {
    /// Transports, in order of preference. At least one.
    pub transports: Vec<Transport>,
    /// Node ids offered; absent: every node.
    #[serde(default)]
    pub nodes: Option<Vec<u16>>,
    /// Flags handed to the client.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
}

/// A version range as written: `{ min = "2.3", max = "3.0" }` (min inclusive, max
/// exclusive).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRangeConfig {
    /// Lowest matching version.
    #[serde(default)]
    pub min: Option<String>,
    /// First version past the range.
    #[serde(default)]
    pub max: Option<String>,
}

/// A small-traffic rule as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, also the bucket carried in tokens: 1..=64 of `[A-Za-z0-9_.-]`, unique, not
    /// `default`.
    pub name: String,
    /// Apps matched; absent: any.
    #[serde(default)]
    pub app: Option<Vec<String>>,
    /// Platforms matched (lowercase); absent: any.
    #[serde(default)]
    pub platform: Option<Vec<String>>,
    /// Networks matched; absent: any.
    #[serde(default)]
    pub network: Option<Vec<Network>>,
    /// App versions matched.
    #[serde(default)]
    pub app_version: Option<VersionRangeConfig>,
    /// SDK versions matched.
    #[serde(default)]
    pub sdk_version: Option<VersionRangeConfig>,
    /// Devices always taken (if the other conditions hold).
    #[serde(default)]
    pub devices_allow: Vec<String>,
    /// Devices never taken.
    #[serde(default)]
    pub devices_deny: Vec<String>,
    /// Share of the other devices taken, 0..=100 (4 decimals). Default 100, or 0 when
    /// `devices_allow` is given.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Salt of the device hash. Default: the rule's name.
    #[serde(default)]
    pub salt: Option<String>,
    /// Transports offered; absent: the default's.
    #[serde(default)]
    pub transports: Option<Vec<Transport>>,
    /// Node ids offered; absent: the default's.
    #[serde(default)]
    pub nodes: Option<Vec<u16>>,
    /// Flags, laid over the default's.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
}

impl Default for ControlConfig {
    /// The embedded defaults ([`DEFAULT_CONFIG_TOML`]).
    fn default() -> ControlConfig {
        ControlConfig::parse(DEFAULT_CONFIG_TOML).expect("the embedded default config is valid")
    }
}

impl ControlConfig {
    /// Parses TOML text (syntax and types; [`ControlConfig::compile`] checks limits).
    pub fn parse(text: &str) -> Result<ControlConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &e))
    }

    /// Parses and validates TOML text into the policy requests are answered with.
    /// `version` numbers successive loads; `source` names where the text came from.
    pub fn load(text: &str, version: u64, source: &str) -> Result<Policy, ConfigError> {
        ControlConfig::parse(text)?.compile(text, version, source)
    }

    /// Validates every limit and compiles rules, keys and nodes. `text` is the file the
    /// config was parsed from (for line numbers; empty if none).
    pub fn compile(self, text: &str, version: u64, source: &str) -> Result<Policy, ConfigError> {
        let line = |span: std::ops::Range<usize>| line_of(text, span.start);
        let l = &self.limits;
        check(
            (256..=1_048_576).contains(&l.max_body_bytes),
            None,
            "limits.max_body_bytes",
            "must be 256..=1048576",
        )?;
        check(
            (1..=64).contains(&l.max_nodes),
            None,
            "limits.max_nodes",
            "must be 1..=64",
        )?;
        check(
            (1..=256).contains(&l.max_endpoints),
            None,
            "limits.max_endpoints",
            "must be 1..=256",
        )?;
        check(
            l.load_smoothing >= 1,
            None,
            "limits.load_smoothing",
            "must be at least 1",
        )?;
        check(
            l.reload_poll_ms == 0 || (50..=3_600_000).contains(&l.reload_poll_ms),
            None,
            "limits.reload_poll_ms",
            "must be 0 or 50..=3600000",
        )?;
        let r = &self.rate_limit;
        check(
            r.per_second.is_finite() && r.per_second >= 0.0,
            None,
            "rate_limit.per_second",
            "must be a number >= 0",
        )?;
        check(r.burst >= 1, None, "rate_limit.burst", "must be at least 1")?;
        check(
            r.max_tracked_ips >= 16,
            None,
            "rate_limit.max_tracked_ips",
            "must be at least 16",
        )?;
        let c = &self.client;
        check(
            (1_000..=600_000).contains(&c.heartbeat_ms),
            None,
            "client.heartbeat_ms",
            "must be 1000..=600000",
        )?;
        check(
            (10..=600_000).contains(&c.reconnect_base_ms),
            None,
            "client.reconnect_base_ms",
            "must be 10..=600000",
        )?;
        check(
            (c.reconnect_base_ms..=3_600_000).contains(&c.reconnect_cap_ms),
            None,
            "client.reconnect_cap_ms",
            "must be at least reconnect_base_ms and at most 3600000",
        )?;
        check(
            (1..=100).contains(&c.reaccess_after_failures),
            None,
            "client.reaccess_after_failures",
            "must be 1..=100",
        )?;
        let q = self.quality.min_connect_success_rate;
        check(
            (0.0..=1.0).contains(&q),
            None,
            "quality.min_connect_success_rate",
            "must be 0..=1",
        )?;
        check(
            !self.apps.is_empty() && self.apps.iter().all(|a| !a.is_empty()),
            None,
            "apps",
            "must list at least one non-empty app id",
        )?;
        let keys = self.token_keys()?;
        if let Some(reg) = &self.registry {
            check(
                (100..=60_000).contains(&reg.refresh_ms),
                None,
                "registry.refresh_ms",
                "must be 100..=60000",
            )?;
        }

        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut ids = HashSet::new();
        for node in &self.nodes {
            let at = Some(line(node.span()));
            let n = node.get_ref();
            check(
                ids.insert(n.id),
                at,
                "nodes.id",
                &format!("node id {} appears twice", n.id),
            )?;
            let mut addrs = BTreeMap::new();
            for (name, advertised) in &n.addrs {
                let transport = Transport::parse(name).ok_or_else(|| {
                    ConfigError::invalid(
                        at,
                        "nodes.addrs",
                        format!("unknown transport `{name}` (tcp, tls, ws, wss, quic)"),
                    )
                })?;
                let addr = NodeAddr::new(transport, advertised).ok_or_else(|| {
                    ConfigError::invalid(
                        at,
                        "nodes.addrs",
                        format!("`{advertised}` is not host:port or a {transport}:// URL"),
                    )
                })?;
                addrs.insert(transport, addr);
            }
            check(
                !addrs.is_empty(),
                at,
                "nodes.addrs",
                "a node needs at least one address",
            )?;
            nodes.push(Node {
                id: n.id,
                addrs,
                connections: n.connections,
                draining: n.draining,
            });
        }
        check(
            !nodes.is_empty() || self.registry.is_some(),
            None,
            "nodes",
            "give at least one [[nodes]] entry or a [registry]",
        )?;

        let default_at = Some(line(self.default.span()));
        let d = self.default.get_ref();
        check(
            !d.transports.is_empty(),
            default_at,
            "default.transports",
            "must list at least one transport",
        )?;
        let default = Outcome {
            bucket: "default".to_owned(),
            transports: dedup(&d.transports),
            nodes: d.nodes.clone(),
            flags: d.flags.clone(),
        };
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for spanned in &self.rules {
            let at = Some(line(spanned.span()));
            rules.push(compile_rule(spanned.get_ref(), &default, &mut names, at)?);
        }

        Ok(Policy {
            version,
            loaded_at_ms: now_ms(),
            source: source.to_owned(),
            digest: digest(text),
            apps: self.apps.iter().cloned().collect(),
            keys,
            token_ttl: Duration::from_secs(self.tokens.ttl_s),
            rules: RuleSet { rules, default },
            static_nodes: StaticNodes::new(nodes),
            config: Arc::new(self),
        })
    }

    fn token_keys(&self) -> Result<TokenKeys, ConfigError> {
        let t = &self.tokens;
        check(
            (60..=2_592_000).contains(&t.ttl_s),
            None,
            "tokens.ttl_s",
            "must be 60..=2592000",
        )?;
        let mut seen = HashSet::new();
        let mut signing = None;
        let mut others = Vec::new();
        for k in &t.keys {
            check(
                seen.insert(k.id.as_str()),
                None,
                "tokens.keys.id",
                &format!("key id `{}` appears twice", k.id),
            )?;
            let key = TokenKey::new(&k.id, k.secret.as_bytes()).map_err(|e| {
                ConfigError::invalid(None, "tokens.keys", format!("key `{}`: {e}", k.id))
            })?;
            if k.id == t.signing_key {
                signing = Some(key);
            } else {
                others.push(key);
            }
        }
        let signing = signing.ok_or_else(|| {
            ConfigError::invalid(
                None,
                "tokens.signing_key",
                format!("no key with id `{}` in tokens.keys", t.signing_key),
            )
        })?;
        Ok(others
            .into_iter()
            .fold(TokenKeys::new(signing), TokenKeys::with_verify_key))
    }
}

fn compile_rule(
    r: &RuleConfig,
    default: &Outcome,
    names: &mut HashSet<String>,
    at: Option<usize>,
) -> Result<Rule, ConfigError> {
    let name_ok = (1..=64).contains(&r.name.len())
        && r.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && r.name != "default";
    check(
        name_ok,
        at,
        "rules.name",
        &format!(
            "`{}` must be 1..=64 characters of [A-Za-z0-9_.-] and not `default`",
            r.name
        ),
    )?;
    check(
        names.insert(r.name.clone()),
        at,
        "rules.name",
        &format!("rule `{}` appears twice", r.name),
    )?;
    let percent = r.percent.unwrap_or(if r.devices_allow.is_empty() {
        100.0
    } else {
        0.0
    });
    check(
        (0.0..=100.0).contains(&percent),
        at,
        "rules.percent",
        &format!("{percent} is outside 0..=100"),
    )?;
    let range = |field: &'static str, cfg: &Option<VersionRangeConfig>| {
        cfg.as_ref()
            .map(|c| {
                let parse = |v: &Option<String>| {
                    v.as_deref()
                        .map(str::parse::<Version>)
                        .transpose()
                        .map_err(|e| ConfigError::invalid(at, field, e))
                };
                Ok(VersionRange {
                    min: parse(&c.min)?,
                    max: parse(&c.max)?,
                })
            })
            .transpose()
    };
    let transports = match &r.transports {
        Some(t) => {
            check(
                !t.is_empty(),
                at,
                "rules.transports",
                "must list at least one transport (leave it out for the default's)",
            )?;
            dedup(t)
        }
        None => default.transports.clone(),
    };
    let mut flags = default.flags.clone();
    flags.extend(r.flags.clone());
    let set = |v: &Option<Vec<String>>, lower: bool| {
        v.as_ref().map(|v| {
            v.iter()
                .map(|s| if lower { s.to_lowercase() } else { s.clone() })
                .collect()
        })
    };
    Ok(Rule {
        when: Conditions {
            apps: set(&r.app, false),
            platforms: set(&r.platform, true),
            networks: r.network.clone(),
            app_version: range("rules.app_version", &r.app_version)?,
            sdk_version: range("rules.sdk_version", &r.sdk_version)?,
            allow: r.devices_allow.iter().cloned().collect(),
            deny: r.devices_deny.iter().cloned().collect(),
            share_ppm: (percent * 10_000.0).round() as u32,
            salt: r.salt.clone().unwrap_or_else(|| r.name.clone()),
        },
        outcome: Outcome {
            bucket: r.name.clone(),
            transports,
            nodes: r.nodes.clone().or_else(|| default.nodes.clone()),
            flags,
        },
    })
}

fn dedup(transports: &[Transport]) -> Vec<Transport> {
    let mut out = Vec::with_capacity(transports.len());
    for t in transports {
        if !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

fn check(ok: bool, line: Option<usize>, field: &str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(line, field, message.to_owned()))
    }
}

/// 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(crate) fn digest(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A loaded configuration, ready to answer requests with: what a reload swaps.
#[derive(Debug, Clone)]
pub struct Policy {
    /// 1 for the first load, +1 for every accepted reload.
    pub version: u64,
    /// When it was loaded, Unix ms.
    pub loaded_at_ms: u64,
    /// The file it came from (or `embedded defaults`).
    pub source: String,
    /// The first 8 bytes of the file text's SHA-256, hex.
    pub digest: String,
    pub(crate) apps: HashSet<String>,
    pub(crate) keys: TokenKeys,
    pub(crate) token_ttl: Duration,
    pub(crate) rules: RuleSet,
    pub(crate) static_nodes: StaticNodes,
    /// The config as written.
    pub config: Arc<ControlConfig>,
}

impl Policy {
    /// The embedded defaults, compiled.
    pub fn embedded() -> Policy {
        ControlConfig::load(DEFAULT_CONFIG_TOML, 1, "embedded defaults")
            .expect("the embedded default config is valid")
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_compile() {
        let policy = Policy::embedded();
        assert_eq!(policy.version, 1);
        assert_eq!(policy.config.listen.port(), 7190);
        assert_eq!(policy.keys.signing_key_id(), "dev");
        let nodes = crate::nodes::NodeSource::nodes(&policy.static_nodes);
        assert_eq!(
            nodes[0].addrs[&Transport::Quic].url,
            "quic://127.0.0.1:7102"
        );
    }

    fn with_rules(rules: &str) -> String {
        format!("{DEFAULT_CONFIG_TOML}\n{rules}")
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text = with_rules("[[rules]]\nname = \"beta\"\npercent = \"ten\"\n");
        let err = ControlConfig::load(&text, 2, "t").unwrap_err().to_string();
        let line = text.lines().count();
        assert!(err.contains(&format!("line {line}")), "{err}");
        assert!(err.contains("percent"), "{err}");

        let text = with_rules("[[rules]]\nname = \"beta\"\npercent = 150.0\n");
        let err = ControlConfig::load(&text, 2, "t").unwrap_err();
        let rule_line = text.lines().position(|l| l == "[[rules]]").unwrap() + 1;
        assert_eq!(err.line(), Some(rule_line), "{err}");
        assert!(err.to_string().contains("rules.percent"), "{err}");

        let text = with_rules("[[rules]]\nname = \"beta\"\npercnt = 10.0\n");
        let err = ControlConfig::load(&text, 2, "t").unwrap_err().to_string();
        assert!(err.contains("percnt"), "{err}");

        let text = DEFAULT_CONFIG_TOML.replace("signing_key = \"dev\"", "signing_key = \"k9\"");
        let err = ControlConfig::load(&text, 2, "t").unwrap_err().to_string();
        assert!(err.contains("tokens.signing_key"), "{err}");

        let no_default = &DEFAULT_CONFIG_TOML[..DEFAULT_CONFIG_TOML.find("[default]").unwrap()];
        let err = ControlConfig::load(no_default, 2, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("default"), "{err}");
    }

    #[test]
    fn rules_inherit_the_default_and_lay_flags_over_it() {
        let text = with_rules(
            "[[rules]]\nname = \"quic-beta\"\npercent = 10\nflags = { quic = \"on\" }\n\
             [[rules]]\nname = \"vip\"\ndevices_allow = [\"d1\"]\ntransports = [\"quic\"]\n",
        );
        let policy = ControlConfig::load(&text, 1, "t").unwrap();
        let rules = &policy.rules.rules;
        assert_eq!(rules[0].outcome.transports, policy.rules.default.transports);
        assert_eq!(rules[0].outcome.flags["quic"], "on");
        assert_eq!(rules[0].when.share_ppm, 100_000);
        assert_eq!(rules[0].when.salt, "quic-beta");
        assert_eq!(
            rules[1].when.share_ppm, 0,
            "an allowlist alone takes nobody else"
        );
        assert_eq!(rules[1].outcome.transports, vec![Transport::Quic]);
    }
}
