//! What the gateway test files that run the `gateway` binary share: reading its
//! start-up log. Each file uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;

/// What the gateway logged until its HTTP listener was up.
pub(crate) struct Listening {
    /// Every listener's address, by label (`tcp`, `ws`, `quic`, `http`, ...).
    pub(crate) bound: HashMap<String, SocketAddr>,
    /// The log lines up to and including the HTTP listener's.
    pub(crate) log: Vec<String>,
}

/// Reads the stdout of `child` (spawned with it piped, `RUST_LOG=info`, `NO_COLOR=1`)
/// until the HTTP listener, which is logged last, is up; then keeps draining the log on
/// a thread so the gateway never blocks on a full pipe.
pub(crate) fn read_listening(child: &mut Child) -> Listening {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut bound = HashMap::new();
    let mut log = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        log.push(line.clone());
        if let Some(at) = line.find(" listening") {
            let label = line[..at].rsplit(' ').next().unwrap().to_owned();
            let start = line.find("addr=").expect("addr field") + 5;
            let addr: SocketAddr = line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            bound.insert(label.clone(), addr);
            if label == "http" {
                break;
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Listening { bound, log }
}
