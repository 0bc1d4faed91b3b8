//! `nexus serve` on loopback for tests and benchmarks: a server in this
//! process in front of a database, and HS256 tokens it accepts.

use std::time::{SystemTime, UNIX_EPOCH};

use nexus_server::{Auth, AuthSettings, Config, Server};
use nexus_sync::{PgUrl, Remote};
use serde_json::{Value, json};

/// The HS256 secret of the test servers.
pub const SECRET: &str = "a test secret of more than 16 bytes";

/// A server on 127.0.0.1 (a free port) for `db_url`; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// HS256 tokens signed with [`SECRET`].
pub fn hs256() -> AuthSettings {
    AuthSettings {
        jwt_secret: Some(SECRET.to_string()),
        ..AuthSettings::default()
    }
}

impl TestServer {
    pub async fn start(db_url: &str) -> TestServer {
        TestServer::start_with(db_url, |_| {}, hs256()).await
    }

    /// A server at `addr` (another one's, stopped: a restart at the same
    /// address), tuned by `tune`, with [`hs256`] tokens.
    pub async fn start_at(
        db_url: &str,
        addr: std::net::SocketAddr,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        TestServer::start_with(
            db_url,
            |c| {
                c.listen = addr;
                tune(c);
            },
            hs256(),
        )
        .await
    }

    pub async fn start_with(
        db_url: &str,
        tune: impl FnOnce(&mut Config),
        auth: AuthSettings,
    ) -> TestServer {
        let mut config = Config::new(
            PgUrl::parse(db_url).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        tune(&mut config);
        let server = Server::bind(config, Auth::new(&auth).unwrap())
            .await
            .unwrap();
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            url,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Stops it gracefully (requests in flight finish).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap();
    }

    /// The remote of a store that syncs through it, as `tenant`.
    pub fn remote(&self, tenant: &str) -> Remote {
        Remote::parse(&self.url, Some(token(tenant, 3600))).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HS256 token for `tenant` that expires in `secs` seconds (negative:
/// expired that long ago).
pub fn token(tenant: &str, secs: i64) -> String {
    token_with(json!({"tenant": tenant}), secs, SECRET)
}

/// An HS256 token (signed with `secret`) with `claims` and an expiry
/// `secs` seconds from now.
pub fn token_with(mut claims: Value, secs: i64, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    claims["exp"] = json!(now + secs);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
