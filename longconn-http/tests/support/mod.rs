//! A gateway-like setup for the HTTP tests: a server on TCP, a group registry, the push
//! API on a random port, and SDK clients.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, StaticToken};
use longconn_core::{TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::{ApiLimits, PushApi, push_api};
use longconn_server::{Listener, Router, Server, ServerBuilder, ServerConfig};

pub const APP: &str = "http-test";
pub const STEP: Duration = Duration::from_secs(10);

pub fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"http-test-secret-01234").unwrap())
}

pub struct Setup {
    pub server: Server,
    pub groups: Arc<GroupRegistry>,
    pub tcp: SocketAddr,
    pub api: String,
    pub http: reqwest::Client,
}

impl Setup {
    pub async fn start(router: Router, limits: ApiLimits) -> Setup {
        let builder = Server::builder(ServerConfig::default(), Arc::new(keys()));
        Setup::start_with(builder.router(Arc::new(router)), limits).await
    }

    /// As [`Setup::start`], with the server's other parts (route store, relay) chosen
    /// by the caller.
    pub async fn start_with(builder: ServerBuilder, limits: ApiLimits) -> Setup {
        let groups = Arc::new(GroupRegistry::new(GroupConfig::default()));
        Setup::start_with_groups(builder, limits, groups).await
    }

    /// As [`Setup::start_with`], with the group registry chosen by the caller too (one
    /// with a relay, for a cluster).
    pub async fn start_with_groups(
        builder: ServerBuilder,
        limits: ApiLimits,
        groups: Arc<GroupRegistry>,
    ) -> Setup {
        let server = builder.groups(groups.clone()).build();
        let acceptor = longconn_transport::tcp::TcpAcceptor::bind(
            "127.0.0.1:0".parse().unwrap(),
            65_536,
            false,
        )
        .unwrap();
        let tcp = acceptor.local_addr().unwrap();
        server.serve(acceptor);
        let api = push_api(PushApi::new(server.clone(), groups.clone(), limits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, api).await });
        Setup {
            server,
            groups,
            tcp,
            api: format!("http://{api_addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn client(&self, device: &str) -> Client {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let token = Bytes::from(keys().mint(APP, device, exp));
        let url = format!("tcp://{}", self.tcp);
        let mut config =
            ClientConfig::new(&url, APP, device, Arc::new(StaticToken(token))).unwrap();
        config.request_timeout = STEP;
        let client = Client::connect(config);
        client.wait_connected(STEP).await.unwrap();
        client
    }

    /// POSTs `body` (raw) as JSON; returns (status, JSON reply).
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (u16, serde_json::Value) {
        let reply = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("reply to {path} is not JSON ({e}): {text:?}"));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let reply = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }
}

/// The next push a client receives, within [`STEP`].
pub async fn next_push(
    pushes: &mut tokio::sync::mpsc::Receiver<longconn_client::Push>,
) -> longconn_client::Push {
    tokio::time::timeout(STEP, pushes.recv())
        .await
        .expect("a push in time")
        .expect("push stream open")
}
