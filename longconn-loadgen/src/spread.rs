//! Several gateways at once: how clients are spread over `--target`s and HTTP calls
//! over `--api` bases.
//!
//! - **Connections: by device index.** Device `i` (global index, whatever worker
//!   process holds it) connects to target `i mod n`. The mapping is fixed, so a
//!   benchmark knows which node holds which device, and a reconnect (churn) goes back
//!   to the same target.
//! - **HTTP calls: round robin per request.** Each push batch or group publish goes to
//!   the next base in the list, shared by every concurrent sender. With one base every
//!   call goes through that node: against a cluster, this measures cross-node reach
//!   (the node relays to the nodes holding the devices).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::peer::Peer;

/// The `--target` list: one or more endpoints, all of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    urls: Vec<String>,
}

impl Targets {
    /// The target of device `index`: `(position in the list, URL)`.
    pub fn for_client(&self, index: u32) -> (usize, &str) {
        let at = index as usize % self.urls.len();
        (at, &self.urls[at])
    }

    /// Every target, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// How many targets (at least one).
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never: a list holds at least one target.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first target (the only one for nats:// and mqtt:// peers).
    pub fn first(&self) -> &str {
        &self.urls[0]
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.urls.join(","))
    }
}

/// Splits a comma-separated list, refusing empty entries.
fn split_list(s: &str, what: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s.split(',').map(|p| p.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(format!("`{s}`: an empty {what} in the list"));
    }
    Ok(items)
}

impl std::str::FromStr for Targets {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let urls = split_list(s, "target")?;
        let mut kinds = Vec::with_capacity(urls.len());
        for url in &urls {
            kinds.push(Peer::from_target(url)?.map(|(peer, _)| peer));
        }
        if kinds.iter().any(|k| *k != kinds[0]) {
            return Err(format!(
                "`{s}`: every target must be of one kind (longconn endpoints, or one peer kind)"
            ));
        }
        if urls.len() > 1 && matches!(kinds[0], Some(Peer::Nats | Peer::Mqtt)) {
            return Err(format!(
                "`{s}`: nats:// and mqtt:// take one broker (several targets are for gateways)"
            ));
        }
        Ok(Targets { urls })
    }
}

/// The `--api` list: HTTP bases that pushes go through, round robin per request.
#[derive(Debug)]
pub struct ApiBases {
    bases: Vec<String>,
    next: AtomicUsize,
}

impl ApiBases {
    /// The bases in `list` (comma-separated `http://host:port`), trailing `/` removed.
    ///
    /// # Errors
    /// An empty entry, or an entry that is not `http://` or `https://`.
    pub fn parse(list: &str) -> Result<ApiBases, String> {
        let mut bases = split_list(list, "API base")?;
        for base in &mut bases {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!("`{base}`: an API base is http://host:port"));
            }
            *base = base.trim_end_matches('/').to_owned();
        }
        Ok(ApiBases {
            bases,
            next: AtomicUsize::new(0),
        })
    }

    /// The base for the next request (round robin over every caller).
    pub fn next(&self) -> &str {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        &self.bases[at]
    }

    /// Every base, in the order given.
    pub fn all(&self) -> &[String] {
        &self.bases
    }
}

impl std::str::FromStr for ApiBases {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiBases::parse(s)
    }
}

impl Clone for ApiBases {
    /// A copy with the same bases, starting its round robin from the first.
    fn clone(&self) -> Self {
        ApiBases {
            bases: self.bases.clone(),
            next: AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_spread_by_device_index() {
        let t: Targets = "tcp://127.0.0.1:7100, tcp://127.0.0.1:7200,tcp://127.0.0.1:7300"
            .parse()
            .unwrap();
        assert_eq!(t.len(), 3);
        let picks: Vec<usize> = (0..7).map(|i| t.for_client(i).0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(t.for_client(4).1, "tcp://127.0.0.1:7200");
        assert_eq!(
            t.to_string(),
            "tcp://127.0.0.1:7100,tcp://127.0.0.1:7200,tcp://127.0.0.1:7300"
        );
        // Every worker's share lands on each target in proportion.
        let mut per_target = [0u32; 3];
        for index in 0..3000 {
            per_target[t.for_client(index).0] += 1;
        }
        assert_eq!(per_target, [1000, 1000, 1000]);

        let one: Targets = "ws://127.0.0.1:7101/ws".parse().unwrap();
        assert_eq!(one.for_client(12345), (0, "ws://127.0.0.1:7101/ws"));
        let raw: Targets = "raw://127.0.0.1:1,raw://127.0.0.1:2".parse().unwrap();
        assert_eq!(raw.len(), 2);
    }

    #[test]
    fn bad_target_lists_say_why() {
        for (list, needle) in [
            ("tcp://127.0.0.1:1,", "empty target"),
            ("tcp://127.0.0.1:1,,tcp://127.0.0.1:2", "empty target"),
            ("tcp://127.0.0.1:1,raw://127.0.0.1:2", "one kind"),
            ("nats://127.0.0.1:1,mqtt://127.0.0.1:2", "one kind"),
            ("nats://127.0.0.1:1,nats://127.0.0.1:2", "one broker"),
            ("raw://localhost:1", "ip:port"),
        ] {
            let err = list.parse::<Targets>().unwrap_err();
            assert!(err.contains(needle), "{list}: {err}");
        }
    }

    #[test]
    fn api_bases_take_turns_per_request() {
        let apis = ApiBases::parse("http://127.0.0.1:7180/,http://127.0.0.1:7280").unwrap();
        let seen: Vec<&str> = (0..5).map(|_| apis.next()).collect();
        assert_eq!(
            seen,
            [
                "http://127.0.0.1:7180",
                "http://127.0.0.1:7280",
                "http://127.0.0.1:7180",
                "http://127.0.0.1:7280",
                "http://127.0.0.1:7180"
            ]
        );
        assert_eq!(apis.clone().next(), "http://127.0.0.1:7180");
        let single = ApiBases::parse("http://127.0.0.1:7180").unwrap();
        assert!((0..3).all(|_| single.next() == "http://127.0.0.1:7180"));
        for (list, needle) in [
            ("http://a:1,", "empty API base"),
            ("127.0.0.1:7180", "http://host:port"),
        ] {
            let err = ApiBases::parse(list).unwrap_err();
            assert!(err.contains(needle), "{list}: {err}");
        }
    }
}
