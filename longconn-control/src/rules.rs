//! Small-traffic (canary) rules: which devices get which endpoint set, transports and
//! client flags.
//!
//! Rules are tried in file order and the first that matches decides; the required
//! `[default]` decides for everyone else. A rule matches when every condition it states
//! holds (app, platform, network, app-version range, SDK-version range), the device is not
//! on its denylist, and the device is on its allowlist or falls inside its percentage.
//! The percentage is decided by a salted hash of the device id ([`percent_point`]): the
//! same device always gets the same answer while the rules do not change, and two rules
//! with different salts pick independent sets of devices.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::nodes::Transport;

/// Network type the client reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Wi-Fi (or wired).
    Wifi,
    /// A mobile network.
    Cellular,
    /// Not known.
    #[default]
    Unknown,
}

/// A dotted version of up to four numeric parts (`2.3`, `2.3.1`); missing parts are 0,
/// so `2.3` equals `2.3.0`. A pre-release or build suffix after `-` or `+` is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version([u32; 4]);

impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Version, String> {
        let core = text.split(['-', '+']).next().unwrap_or_default();
        let mut parts = [0u32; 4];
        for (i, part) in core.split('.').enumerate() {
            let slot = parts
                .get_mut(i)
                .ok_or_else(|| format!("`{text}` has more than four version parts"))?;
            *slot = part
                .parse()
                .map_err(|_| format!("`{text}` is not a version like 2.3.1"))?;
        }
        Ok(Version(parts))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        if d == 0 {
            write!(f, "{a}.{b}.{c}")
        } else {
            write!(f, "{a}.{b}.{c}.{d}")
        }
    }
}

/// A half-open version range `[min, max)`; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VersionRange {
    /// Lowest matching version (inclusive).
    pub min: Option<Version>,
    /// First version past the range (exclusive).
    pub max: Option<Version>,
}

impl VersionRange {
    /// Whether `version` is inside.
    pub fn contains(&self, version: Version) -> bool {
        self.min.is_none_or(|min| version >= min) && self.max.is_none_or(|max| version < max)
    }
}

/// What a device tells the control layer about itself.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// App id.
    pub app: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Platform (lowercase: `ios`, `android`, `web`, ...).
    pub platform: &'a str,
    /// App version.
    pub app_version: Version,
    /// SDK version.
    pub sdk_version: Version,
    /// Network type.
    pub network: Network,
}

/// What a rule (or the default) decides for a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The bucket name carried in the token (`lc2`): the rule's name, or `default`.
    pub bucket: String,
    /// Transports offered, in order of preference.
    pub transports: Vec<Transport>,
    /// Node ids the device may get; `None`: every node.
    pub nodes: Option<Vec<u16>>,
    /// Key-value flags handed to the client as they are.
    pub flags: BTreeMap<String, String>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Conditions.
    pub(crate) when: Conditions,
    /// The decision when it matches.
    pub(crate) outcome: Outcome,
}

/// A rule's conditions; `None` (or empty) means "any".
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    pub(crate) apps: Option<HashSet<String>>,
    pub(crate) platforms: Option<HashSet<String>>,
    pub(crate) networks: Option<Vec<Network>>,
    pub(crate) app_version: Option<VersionRange>,
    pub(crate) sdk_version: Option<VersionRange>,
    pub(crate) allow: HashSet<String>,
    pub(crate) deny: HashSet<String>,
    /// Share of devices in millionths (`percent * 10_000`).
    pub(crate) share_ppm: u32,
    pub(crate) salt: String,
}

impl Rule {
    /// Whether the rule takes this device.
    pub fn matches(&self, facts: &DeviceFacts<'_>) -> bool {
        let c = &self.when;
        let any = |set: &Option<HashSet<String>>, value: &str| {
            set.as_ref().is_none_or(|set| set.contains(value))
        };
        any(&c.apps, facts.app)
            && any(&c.platforms, facts.platform)
            && c.networks
                .as_ref()
                .is_none_or(|n| n.contains(&facts.network))
            && c.app_version.is_none_or(|r| r.contains(facts.app_version))
            && c.sdk_version.is_none_or(|r| r.contains(facts.sdk_version))
            && !c.deny.contains(facts.device)
            && (c.allow.contains(facts.device)
                || percent_point(&c.salt, facts.device) < c.share_ppm)
    }

    /// The decision.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// The rules in force: ordered rules and the default.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) default: Outcome,
}

impl RuleSet {
    /// The first matching rule's outcome, else the default's.
    pub fn decide(&self, facts: &DeviceFacts<'_>) -> &Outcome {
        self.rules
            .iter()
            .find(|r| r.matches(facts))
            .map_or(&self.default, Rule::outcome)
    }
}

/// Where `device` falls in `[0, 1_000_000)` for a rule salted with `salt`: the first 8
/// bytes of SHA-256(salt, 0x00, device), scaled. Stable across processes, versions and
/// machines (a hash the standard library may change is not used); uniform; and
/// independent between salts.
pub fn percent_point(salt: &str, device: &str) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(&[0]);
    ctx.update(device.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    ((u128::from(u64::from_be_bytes(first)) * 1_000_000) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn facts(device: &str) -> DeviceFacts<'_> {
        DeviceFacts {
            app: "demo",
            device,
            platform: "ios",
            app_version: v("2.4.0"),
            sdk_version: v("0.1.0"),
            network: Network::Wifi,
        }
    }

    fn outcome(bucket: &str) -> Outcome {
        Outcome {
            bucket: bucket.into(),
            transports: vec![Transport::Tcp],
            nodes: None,
            flags: BTreeMap::new(),
        }
    }

    fn percent_rule(name: &str, salt: &str, percent: f64) -> Rule {
        Rule {
            when: Conditions {
                share_ppm: (percent * 10_000.0) as u32,
                salt: salt.into(),
                ..Conditions::default()
            },
            outcome: outcome(name),
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(v("2.10") > v("2.9.9"));
        assert_eq!(v("2.3"), v("2.3.0"));
        assert_eq!(v("2.3.0-beta.1"), v("2.3.0"));
        assert!("2.x".parse::<Version>().is_err());
        assert!("1.2.3.4.5".parse::<Version>().is_err());
        let range = VersionRange {
            min: Some(v("2.3")),
            max: Some(v("3.0")),
        };
        assert!(range.contains(v("2.3.0")) && range.contains(v("2.99")));
        assert!(!range.contains(v("3.0.0")) && !range.contains(v("2.2.9")));
    }

    /// 10,000 devices through a 10 % rule: the count is within the binomial 99.9 %
    /// bound (n p ± 3.29 sqrt(n p (1-p)) = 1000 ± 98.7), and asking again gives exactly
    /// the same devices.
    #[test]
    fn ten_percent_rule_is_within_the_binomial_bound_and_stable() {
        let rule = percent_rule("canary", "salt-a", 10.0);
        let devices: Vec<String> = (0..10_000).map(|i| format!("device-{i}")).collect();
        let picked: Vec<&String> = devices.iter().filter(|d| rule.matches(&facts(d))).collect();
        let (n, p) = (10_000.0_f64, 0.1_f64);
        let bound = 3.29 * (n * p * (1.0 - p)).sqrt();
        let count = picked.len() as f64;
        assert!(
            (count - n * p).abs() <= bound,
            "{count} devices picked, expected {} ± {bound:.1}",
            n * p
        );
        let again: Vec<&String> = devices.iter().filter(|d| rule.matches(&facts(d))).collect();
        assert_eq!(picked, again);
    }

    /// Two 10 % rules with different salts pick nearly independent sets: the overlap is
    /// about 1 % of devices (10 % of 10 %), far from the 10 % one salt would give.
    #[test]
    fn different_salts_pick_different_devices() {
        let a = percent_rule("a", "salt-a", 10.0);
        let b = percent_rule("b", "salt-b", 10.0);
        let mut both = 0;
        let mut only_a = 0;
        for i in 0..10_000 {
            let d = format!("device-{i}");
            match (a.matches(&facts(&d)), b.matches(&facts(&d))) {
                (true, true) => both += 1,
                (true, false) => only_a += 1,
                _ => {}
            }
        }
        // Expected overlap 100 (sd ≈ 9.95); 99.9 % bound ± 33.
        assert!((67..=133).contains(&both), "overlap {both}");
        assert!(only_a > 800, "a picked {only_a} devices b did not");
    }

    #[test]
    fn conditions_allowlist_denylist_and_first_match() {
        let mut ios_beta = percent_rule("ios-beta", "s", 0.0);
        ios_beta.when.platforms = Some(HashSet::from(["ios".to_owned()]));
        ios_beta.when.app_version = Some(VersionRange {
            min: Some(v("2.4")),
            max: None,
        });
        ios_beta.when.allow = HashSet::from(["vip".to_owned(), "banned".to_owned()]);
        ios_beta.when.deny = HashSet::from(["banned".to_owned()]);
        let everyone = percent_rule("everyone", "s", 100.0);
        let rules = RuleSet {
            rules: vec![ios_beta, everyone],
            default: outcome("default"),
        };
        assert_eq!(rules.decide(&facts("vip")).bucket, "ios-beta");
        assert_eq!(rules.decide(&facts("banned")).bucket, "everyone");
        assert_eq!(rules.decide(&facts("other")).bucket, "everyone");
        let old = DeviceFacts {
            app_version: v("2.3.9"),
            ..facts("vip")
        };
        assert_eq!(rules.decide(&old).bucket, "everyone");
        let android = DeviceFacts {
            platform: "android",
            ..facts("vip")
        };
        assert_eq!(rules.decide(&android).bucket, "everyone");
        let none = RuleSet {
            rules: vec![percent_rule("nobody", "s", 0.0)],
            default: outcome("default"),
        };
        assert_eq!(none.decide(&facts("x")).bucket, "default");
    }
}
