//! A private redis-server per test, and a connection that counts round trips.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use longconn_cluster::redis::aio::{ConnectionLike, ConnectionManager};
use longconn_cluster::redis::{self, Cmd, Pipeline, RedisFuture, Value};
use longconn_core::{TokenKey, TokenKeys};

/// The token keys every test server checks logins with.
pub(crate) fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"cluster-test-secret-0123").unwrap())
}

/// A login token for `device` of `app`, valid for an hour.
pub(crate) fn token(app: &str, device: &str) -> Bytes {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(app, device, exp))
}

/// How long a test waits for anything to happen.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// Logs `device` of `app` in on `server` over an in-memory connection; the client and
/// its connection id.
pub(crate) async fn login(
    server: &longconn_server::Server,
    app: &str,
    device: &str,
) -> (longconn_core::connection::memory::MemoryClient, u64) {
    use longconn_core::connection::memory::{MemoryClient, pair};
    let (client, served) = pair(16, 65_536);
    assert!(server.serve_connection(served));
    let mut client = MemoryClient::new(client);
    let conn_id = client
        .login(app, device, token(app, device))
        .await
        .unwrap()
        .unwrap();
    (client, conn_id)
}

/// Waits until `check` holds, polling every 5 ms, for at most [`STEP`].
pub(crate) async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let waited = tokio::time::timeout(STEP, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// A redis-server on a free loopback port, without persistence, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one. If `redis-server` is not installed, prints a skip notice and returns
    /// `None`, unless `CI=true`, where that is a failure.
    pub(crate) fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("redis-server is not installed, and CI=true: install redis-server");
            }
            eprintln!(
                "SKIPPED: redis-server is not installed; install it (apt-get install \
                 redis-server) to run the longconn-cluster tests"
            );
            return None;
        }
        // A port found free can be taken before redis-server binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = spawn_on(port);
            if wait_for_pong(port, &mut child) {
                return Some(RedisServer { child, port });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not answer PING on any of 5 ports");
    }

    /// Kills the server (SIGKILL: its data are gone, as after a crash without
    /// persistence); [`RedisServer::restart`] starts a new one on the same port.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new, empty redis-server on the same port (after [`RedisServer::kill`]).
    pub(crate) fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            let mut child = spawn_on(self.port);
            if wait_for_pong(self.port, &mut child) {
                self.child = child;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A fresh multiplexed, reconnecting connection.
    pub(crate) async fn connect(&self) -> ConnectionManager {
        longconn_cluster::connect(&self.url()).await.unwrap()
    }

    /// A connection that counts its round trips.
    pub(crate) async fn counting(&self) -> Counting {
        Counting {
            inner: self.connect().await,
            round_trips: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs one command on a connection of its own.
    pub(crate) async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connect().await;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_on(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--dir", &std::env::temp_dir().to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

fn wait_for_pong(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited: the port was taken
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A connection that counts requests sent to Redis: one per single command, one per
/// pipeline (what goes out in one write and comes back as one batch of replies).
#[derive(Clone)]
pub(crate) struct Counting {
    inner: ConnectionManager,
    pub(crate) round_trips: Arc<AtomicUsize>,
}

impl Counting {
    pub(crate) fn take(&self) -> usize {
        self.round_trips.swap(0, Ordering::SeqCst)
    }
}

impl ConnectionLike for Counting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
