//! Scenario files: phases run in order, each with its own parameters and user
//! behaviour. Every subcommand is a one-phase scenario.
//!
//! ```toml
//! name = "evening-peak"
//!
//! [[phases]]
//! kind = "connect"         # connections, rate (per s), hold (s)
//! connections = 2000
//! rate = 1000
//! hold = 5
//!
//! [[phases]]
//! kind = "multicast"       # members, groups, messages (per group), rate (publishes/s)
//! members = 2000
//! groups = 20
//! messages = 10
//! rate = 20
//! churn = { leave_join_per_s = 50, reconnect_per_s = 5 }
//!
//! [[phases]]
//! kind = "unicast"         # devices, messages (per device), rate (pushes/s)
//! devices = 2000
//! messages = 5
//! rate = 5000
//!
//! [[phases]]
//! kind = "request"         # connections, requests (per connection), business; rate (optional: requests/s, open loop, raw:// only)
//! connections = 200
//! requests = 50
//! business = 1
//! ```

use std::path::Path;

use serde::Deserialize;

/// A named list of phases.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, reported in the summary.
    pub name: String,
    /// Phases, run one after another.
    pub phases: Vec<Phase>,
}

/// One phase.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Phase {
    /// Ramp up, hold idle, close.
    Connect {
        /// Connections.
        connections: u32,
        /// Connects per second.
        rate: f64,
        /// Seconds held.
        hold: f64,
    },
    /// Batched unicast through the HTTP API.
    Unicast {
        /// Devices.
        devices: u32,
        /// Pushes per device.
        messages: u32,
        /// Pushes per second.
        rate: f64,
    },
    /// Group publishes through the HTTP API.
    Multicast {
        /// Members.
        members: u32,
        /// Groups.
        groups: u32,
        /// Publishes per group.
        messages: u32,
        /// Publishes per second.
        rate: f64,
        /// Behaviour while publishing.
        #[serde(default)]
        churn: Churn,
    },
    /// Upstream requests.
    Request {
        /// Connections.
        connections: u32,
        /// Requests per connection.
        requests: u32,
        /// Business id.
        business: u32,
        /// Requests per second over all connections, sent without waiting for answers
        /// (open loop; `raw://` targets only). 0 (the default): each connection sends
        /// its next request when the previous one is answered (closed loop).
        #[serde(default)]
        rate: f64,
    },
}

/// What members do while a multicast phase publishes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Members per second that leave their group and join it again.
    #[serde(default)]
    pub leave_join_per_s: f64,
    /// Members per second that drop their connection and connect again (rejoining).
    #[serde(default)]
    pub reconnect_per_s: f64,
    /// Members that stop reading once joined (raw:// subscribers only; see
    /// [`crate::slow`]): left out of reach and latency, reported apart.
    #[serde(default)]
    pub slow_members: u32,
}

impl Phase {
    /// The phase's kind, as in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Phase::Connect { .. } => "connect",
            Phase::Unicast { .. } => "unicast",
            Phase::Multicast { .. } => "multicast",
            Phase::Request { .. } => "request",
        }
    }

    /// Connections the phase opens.
    pub fn connections(&self) -> u32 {
        match *self {
            Phase::Connect { connections, .. } | Phase::Request { connections, .. } => connections,
            Phase::Unicast { devices, .. } => devices,
            Phase::Multicast { members, .. } => members,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{}: `{what}` must be a positive number",
                    self.kind()
                ))
            }
        };
        let at_least_one = |what: &str, v: u32| {
            if v >= 1 {
                Ok(())
            } else {
                Err(format!("{}: `{what}` must be at least 1", self.kind()))
            }
        };
        match *self {
            Phase::Connect {
                connections,
                rate,
                hold,
            } => {
                at_least_one("connections", connections)?;
                positive("rate", rate)?;
                if !(hold.is_finite() && hold >= 0.0) {
                    return Err("connect: `hold` must be 0 or more seconds".into());
                }
            }
            Phase::Unicast {
                devices,
                messages,
                rate,
            } => {
                at_least_one("devices", devices)?;
                at_least_one("messages", messages)?;
                positive("rate", rate)?;
            }
            Phase::Multicast {
                members,
                groups,
                messages,
                rate,
                churn,
            } => {
                at_least_one("members", members)?;
                at_least_one("groups", groups)?;
                at_least_one("messages", messages)?;
                positive("rate", rate)?;
                if groups > members {
                    return Err("multicast: `groups` must not exceed `members`".into());
                }
                for (what, v) in [
                    ("churn.leave_join_per_s", churn.leave_join_per_s),
                    ("churn.reconnect_per_s", churn.reconnect_per_s),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(format!("multicast: `{what}` must be 0 or more"));
                    }
                }
                if churn.slow_members >= members {
                    return Err(
                        "multicast: `churn.slow_members` must be fewer than `members`".into(),
                    );
                }
            }
            Phase::Request {
                connections,
                requests,
                rate,
                ..
            } => {
                at_least_one("connections", connections)?;
                at_least_one("requests", requests)?;
                if !(rate.is_finite() && rate >= 0.0) {
                    return Err(
                        "request: `rate` must be 0 (closed loop) or a positive number".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML of this shape (the message names the
    /// line and the key), or a value is out of range.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks scenario text.
    ///
    /// # Errors
    /// As [`Scenario::load`].
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every phase.
    ///
    /// # Errors
    /// The first phase with a value out of range, or no phases.
    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("a scenario needs at least one [[phases]] entry".into());
        }
        for (i, phase) in self.phases.iter().enumerate() {
            phase
                .validate()
                .map_err(|e| format!("phase {}: {e}", i + 1))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("scenario.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let scenario = Scenario::parse(&doc).unwrap();
        assert_eq!(scenario.name, "evening-peak");
        assert_eq!(scenario.phases.len(), 4);
        assert!(matches!(
            scenario.phases[1],
            Phase::Multicast {
                groups: 20,
                churn: Churn {
                    reconnect_per_s: 5.0,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap();
            seen += 1;
        }
        assert!(seen >= 2, "ship example scenarios in {}", dir.display());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, needle) in [
            ("name = \"x\"\nphases = []", "at least one"),
            ("name = \"x\"\n[[phases]]\nkind = \"teleport\"", "teleport"),
            (
                "name = \"x\"\n[[phases]]\nkind = \"connect\"\nconnections = 5\nrate = 1",
                "hold",
            ),
            (
                "name = \"x\"\n[[phases]]\nkind = \"connect\"\nconnections = 0\nrate = 1\nhold = 1",
                "phase 1: connect: `connections` must be at least 1",
            ),
            (
                "name = \"x\"\n[[phases]]\nkind = \"multicast\"\nmembers = 2\ngroups = 3\nmessages = 1\nrate = 1",
                "must not exceed",
            ),
            (
                "name = \"x\"\n[[phases]]\nkind = \"unicast\"\ndevices = 2\nmessages = 1\nrate = 1\nspeed = 3",
                "speed",
            ),
            (
                "name = \"x\"\n[[phases]]\nkind = \"request\"\nconnections = 1\nrequests = 1\nbusiness = -3",
                "-3",
            ),
            (
                "name = \"x\"\n[[phases]]\nkind = \"request\"\nconnections = 1\nrequests = 1\nbusiness = 1\nrate = -5",
                "`rate` must be 0 (closed loop) or a positive number",
            ),
            ("phases = [", "line"),
        ] {
            let err = Scenario::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
