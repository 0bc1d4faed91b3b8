//! The client of a sync server (`nexus serve`): [`HttpHub`] speaks the
//! protocol of [`crate::protocol`] over HTTP(S).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_core::ChangeFile;
use serde::de::DeserializeOwned;

use crate::SyncReport;
use crate::error::{Error, Result};
use crate::protocol::{
    self, ErrorBody, HEALTH, Known, PROTOCOL_HEADER, PROTOCOL_VERSION, Pulled, Pushed, Snapshotted,
    State,
};

/// A sync server, by its base URL (`http://host:port`), with the bearer
/// token its requests carry. Neither `Debug` nor any error shows the token.
#[derive(Clone)]
pub struct HttpHub {
    url: String,
    token: Option<String>,
    client: reqwest::Client,
    /// What it knows of the server without asking ([`Known`]), shared by
    /// its clones.
    known: Arc<Mutex<Known>>,
}

impl std::fmt::Debug for HttpHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHub")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Whether `url` names a sync server (`http://` or `https://`) rather than
/// a database.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl HttpHub {
    /// The server at `url` (`http(s)://host[:port][/prefix]`), with
    /// `token` for its requests. Refuses a URL that holds credentials (the
    /// token goes in a header, never in a URL).
    pub fn new(url: &str, token: Option<String>) -> Result<HttpHub> {
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid_url(url, &e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid_url(url, "the scheme must be http or https"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid_url(
                "(hidden: it holds credentials)",
                "credentials do not go in the URL: pass the token with --token or NEXUS_TOKEN",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid_url(
                url,
                "the server's URL takes no query or fragment",
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| remote(url, None, "internal", e.to_string()))?;
        Ok(HttpHub {
            url: parsed.as_str().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            client,
            known: Arc::default(),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server and its database answer.
    pub async fn health(&self) -> Result<()> {
        let _: serde_json::Value = self.send(self.client.get(self.at(HEALTH))).await?;
        Ok(())
    }

    /// How far the server has applied `source` (asked).
    pub async fn state(&self, source: &str) -> Result<State> {
        let state: State = self
            .send(self.client.get(self.at(&protocol::state_path(source))))
            .await?;
        self.known().stated(source, &state);
        Ok(state)
    }

    /// The server's state of `source` as this client's last requests left
    /// it, without a request when it knows it and the server checks what a
    /// push names ([`State::checks_hub`]; [`HttpHub::push`] keeps the
    /// watermark of its source); else asked ([`HttpHub::state`]).
    pub async fn known_state(&self, source: &str) -> Result<State> {
        let known = self.known().state(source);
        match known {
            Some(state) => Ok(state),
            None => self.state(source).await,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().expect("not poisoned")
    }

    /// Forgets what it knew of the server: the next push or pull asks.
    fn forget(&self) {
        self.known().forget();
    }

    /// Pushes one change file; `base` is how far the source had pulled from
    /// the database of `server` (this server's answer of [`protocol::STATE`], as
    /// [`HttpHub::known_state`] gives it): the push names that database to
    /// a server that checks it ([`State::checks_hub`]: it refuses the push,
    /// 409 `hub_changed`, when it is in front of another one now), and a
    /// file larger than its body limit ([`State::max_body`]) goes in parts
    /// ([`protocol::push_requests`]), applied whole by the last request.
    /// The source's watermark that the answer gives is kept.
    pub async fn push(&self, file: &ChangeFile, base: i64, server: &State) -> Result<SyncReport> {
        let mut requests = protocol::push_requests(file, base, server);
        let last = requests.pop().expect("a push is at least one request");
        for part in requests {
            let _: protocol::Staged = self.post(part, &file.source_id, server).await?;
        }
        let answer: Pushed<SyncReport> = self.post(last, &file.source_id, server).await?;
        self.known().heard(&file.source_id, answer.report.to_seq);
        Ok(answer.report)
    }

    /// Sends one request of a push (of `source`) sized by `server`'s body
    /// limit. A 413 to a body within that limit asks the state again: when
    /// the limit is now below the body ([`protocol::limit_lowered`]), the
    /// error asks for the push again (retried, by the new limit); any other
    /// 413 stays final.
    async fn post<T: DeserializeOwned>(
        &self,
        request: protocol::PushRequest,
        source: &str,
        server: &State,
    ) -> Result<T> {
        let sent = request.body.len();
        let post = self
            .client
            .post(self.at(&request.path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body);
        let answer = self.send(post).await;
        let Err(Error::Remote {
            status: Some(413), ..
        }) = &answer
        else {
            return answer;
        };
        let lowered = match self.state(source).await {
            Ok(now) => protocol::limit_lowered(sent, server, &now),
            Err(_) => false,
        };
        match answer {
            Err(Error::Remote { url, message, .. }) if lowered => Err(remote(
                &url,
                Some(413),
                protocol::LIMIT_LOWERED,
                format!("{message} (its limit was lowered since this client heard it)"),
            )),
            other => other,
        }
    }

    /// The page of the caller's tenant's changes after `after`, with the
    /// server's watermark of `source`; `hub` names the database `after`
    /// counts in (to a server that checks it; [`protocol::pull_path`]).
    pub async fn pull(
        &self,
        source: &str,
        after: i64,
        within: Option<&nexus_core::SnapshotCursor>,
        max_rows: usize,
        hub: Option<&str>,
    ) -> Result<Pulled> {
        let path = protocol::pull_path(source, after, within, max_rows, hub);
        self.send(self.client.get(self.at(&path))).await
    }

    /// The next rows of a snapshot of the caller's tenant, after `after`
    /// (from the start without one), at most `max_rows`; `hub` as for
    /// [`HttpHub::pull`].
    pub async fn snapshot(
        &self,
        after: Option<&nexus_core::SnapshotCursor>,
        max_rows: usize,
        hub: Option<&str>,
    ) -> Result<Snapshotted> {
        let path = protocol::snapshot_path(after, max_rows, hub);
        self.send(self.client.get(self.at(&path))).await
    }

    /// Takes the server's watermark of `source` that a pull's answer gave
    /// ([`Known::pulled`]).
    pub(crate) fn pulled(&self, source: &str, watermark: i64) {
        self.known().pulled(source, watermark);
    }

    /// Refuses an answer of another database than `hub_id`
    /// ([`protocol::check_hub`]): 409 `hub_changed`, which asks again.
    pub(crate) fn check_hub(&self, hub_id: &str, answered: &str) -> Result<()> {
        protocol::check_hub(hub_id, answered).map_err(|message| {
            self.forget();
            remote(&self.url, Some(409), "hub_changed", message)
        })
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let mut request = request.header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let answer = self.answer(request).await;
        if answer.is_err() {
            // Whatever failed, the next push or pull asks again.
            self.forget();
        }
        answer
    }

    async fn answer<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            let (kind, message, applied) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error, b.message, b.applied),
                Err(_) => (
                    status_kind(status.as_u16()).to_string(),
                    format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                    None,
                ),
            };
            let message = match applied {
                Some(a) => format!("{message} (the server has applied the source through {a})"),
                None => message,
            };
            return Err(remote(&self.url, Some(status.as_u16()), &kind, message));
        }
        protocol::decode_answer(&bytes).map_err(|e| {
            let message = match e {
                protocol::AnswerError::NotJson(e) => format!("the answer is not JSON: {e}"),
                protocol::AnswerError::Protocol(p) => format!(
                    "the server speaks protocol {}, this client {PROTOCOL_VERSION}",
                    p.map_or("(none)".to_string(), |p| p.to_string())
                ),
                protocol::AnswerError::Unexpected(e) => format!("unexpected answer: {e}"),
            };
            remote(&self.url, Some(status.as_u16()), "protocol", message)
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        // The error's own text names the URL (ours, no token) and the cause.
        let mut message = failure(e);
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        let kind = if e.is_timeout() {
            "timeout"
        } else {
            "unreachable"
        };
        remote(&self.url, None, kind, message)
    }
}

/// What a failed request ran into, without its URL (the error adds ours).
fn failure(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off".to_string()
    } else {
        "the request failed".to_string()
    }
}

fn status_kind(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "timeout",
        409 => "conflict",
        413 => "too_large",
        429 => "too_many_requests",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

fn remote(url: &str, status: Option<u16>, kind: &str, message: String) -> Error {
    Error::Remote {
        url: url.to_string(),
        status,
        kind: kind.to_string(),
        message,
    }
}

fn invalid_url(url: &str, reason: &str) -> Error {
    Error::Store(nexus_core::Error::InvalidArgument {
        name: "sync server URL",
        value: url.to_string(),
        reason: reason.to_string(),
    })
}
