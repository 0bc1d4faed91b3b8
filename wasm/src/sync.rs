//! `store.sync({ url, token })`: the browser's client of the sync server
//! (`nexus serve`), over `fetch`. The protocol's types and paths are
//! `nexus_core::protocol` (the server and the native client use the same);
//! the first pull's snapshot step and the page loop of a pull are the
//! core's (`Store::load_snapshot`, `Store::apply_feed`).

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Object, Promise, Reflect, Uint8Array};
use nexus_core::protocol::{
    self, ErrorBody, Known, PROTOCOL_HEADER, PROTOCOL_VERSION, Pulled, Pushed, QUERY_HEADER,
    SYNC_ROUNDS, Snapshotted, State,
};
use nexus_core::{
    Changes, ConflictCopy, ConflictReason, Feed, FeedPage, PullReport, SnapshotCursor,
    SnapshotSource, Store,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error_value;

/// What `sync` takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SyncOptions {
    url: String,
    token: String,
    #[serde(default)]
    max_rows: Option<usize>,
}

/// What `sync` answers.
#[derive(Serialize)]
pub(crate) struct SyncResult {
    /// Rows pushed.
    pushed: u64,
    /// Rows pulled.
    pulled: u64,
    /// Conflict copies the push made (the other side kept the path).
    conflicts: Vec<JsConflictCopy>,
}

/// A conflict copy as the package shows it: in camelCase, as its records.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsConflictCopy {
    tenant: String,
    path: String,
    copy: String,
    path_id: String,
    source: String,
    reason: ConflictReason,
}

impl From<ConflictCopy> for JsConflictCopy {
    fn from(c: ConflictCopy) -> Self {
        JsConflictCopy {
            tenant: c.tenant,
            path: c.path,
            copy: c.copy,
            path_id: c.path_id,
            source: c.source,
            reason: c.reason,
        }
    }
}

/// What a store's syncs know of each sync server (by URL) without asking
/// ([`Known`]): a sync pushes from the watermark its last push left and
/// asks [`protocol::STATE`] only when it knows nothing (the first sync, or after a
/// failed request), as the native client does.
pub(crate) type Servers = Rc<RefCell<HashMap<String, Known>>>;

/// The part of the server's push report the browser reads.
#[derive(Deserialize)]
struct PushReport {
    /// The source's watermark now.
    to_seq: i64,
    tables: Vec<TableRows>,
    conflicts: Vec<ConflictCopy>,
}

#[derive(Deserialize)]
struct TableRows {
    rows: u64,
}

/// A failed sync: the store's error, or the server's / the network's.
pub(crate) enum SyncError {
    Store(nexus_core::Error),
    Remote {
        kind: &'static str,
        message: String,
        /// A 409 that asks for the push again (`gap`: another push of this
        /// store ran at once; `hub_changed`: the server is in front of
        /// another database now; `incomplete`: the staged parts are gone),
        /// or a 413 to a body within the limit heard (it was lowered).
        again: bool,
        /// The answer's HTTP status (0: none came).
        status: u16,
    },
}

impl From<nexus_core::Error> for SyncError {
    fn from(e: nexus_core::Error) -> SyncError {
        SyncError::Store(e)
    }
}

impl From<SyncError> for JsValue {
    fn from(e: SyncError) -> JsValue {
        match e {
            SyncError::Store(e) => crate::js_error(&e),
            SyncError::Remote { kind, message, .. } => error_value(kind, &message),
        }
    }
}

fn remote(kind: &'static str, message: impl Into<String>) -> SyncError {
    SyncError::Remote {
        kind,
        message: message.into(),
        again: false,
        status: 0,
    }
}

/// The error kind of an HTTP status: `Unauthorized` (401), `Forbidden`
/// (403), `Unavailable` (retry: unreachable, 408, 429, 5xx), `Conflict`
/// (409: another push of this store ran at once, or its staged parts are
/// gone, both pushed again; or rows the conflict rule cannot settle),
/// `InvalidArgument` (the rest of 4xx).
fn kind_of(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        408 | 429 | 500..=599 => "Unavailable",
        409 => "Conflict",
        _ => "InvalidArgument",
    }
}

struct Server<'a> {
    url: String,
    token: String,
    servers: &'a Servers,
}

impl Server<'_> {
    /// What the store's syncs know of this server.
    fn known(&self) -> RefMut<'_, Known> {
        RefMut::map(self.servers.borrow_mut(), |all| {
            all.entry(self.url.clone()).or_default()
        })
    }

    /// The server's state of `source`: as the last requests left it
    /// ([`Known::state`]), else asked.
    async fn state(&self, source: &str) -> Result<State, SyncError> {
        let known = self.known().state(source);
        if let Some(state) = known {
            return Ok(state);
        }
        let state: State = self
            .call("GET", &protocol::state_path(source), None)
            .await?;
        self.known().stated(source, &state);
        Ok(state)
    }

    /// Refuses an answer of another database than `hub_id`
    /// ([`protocol::check_hub`]): a 409 that asks again.
    fn check_hub(&self, hub_id: &str, answered: &str) -> Result<(), SyncError> {
        protocol::check_hub(hub_id, answered).map_err(|message| {
            self.known().forget();
            SyncError::Remote {
                kind: "Conflict",
                message,
                again: true,
                status: 409,
            }
        })
    }

    /// Sends one request of a push (of `source`) sized by `state`'s body
    /// limit. A 413 to a body within that limit asks the state again: when
    /// the limit is now below the body ([`protocol::limit_lowered`]), the
    /// sync pushes again by the new limit; any other 413 stays final.
    async fn push_call<T: DeserializeOwned>(
        &self,
        request: protocol::PushRequest,
        source: &str,
        state: &protocol::State,
    ) -> Result<T, SyncError> {
        let sent = request.body.len();
        match self.call("POST", &request.path, Some(request.body)).await {
            Err(SyncError::Remote {
                kind,
                message,
                status: 413,
                ..
            }) => {
                let lowered = match self.state(source).await {
                    Ok(now) => protocol::limit_lowered(sent, state, &now),
                    Err(_) => false,
                };
                Err(SyncError::Remote {
                    kind,
                    message: match lowered {
                        true => {
                            format!("{message} (its limit was lowered since this store heard it)")
                        }
                        false => message,
                    },
                    again: lowered,
                    status: 413,
                })
            }
            other => other,
        }
    }

    /// One request; whatever fails, the next sync asks [`protocol::STATE`] again.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, SyncError> {
        let answer = self.answer(method, path_and_query, body).await;
        if answer.is_err() {
            self.known().forget();
        }
        answer
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, SyncError> {
        let js = |e: JsValue| remote("Unavailable", nexus_core::web::js_message(&e));
        let global = js_sys::global();
        let fetch: js_sys::Function = Reflect::get(&global, &"fetch".into())
            .map_err(js)?
            .dyn_into()
            .map_err(|_| remote("Unsupported", "fetch is not available here"))?;
        let headers = Object::new();
        let set = |o: &Object, k: &str, v: &JsValue| Reflect::set(o, &k.into(), v).map_err(js);
        set(
            &headers,
            "authorization",
            &format!("Bearer {}", self.token).into(),
        )?;
        set(
            &headers,
            PROTOCOL_HEADER,
            &PROTOCOL_VERSION.to_string().into(),
        )?;
        let init = Object::new();
        set(&init, "method", &method.into())?;
        if let Some(body) = body {
            set(&headers, "content-type", &"application/json".into())?;
            set(&init, "body", &Uint8Array::from(body.as_slice()).into())?;
        }
        // The query in its header when the server reads it there: the URL
        // stays the same, and the CORS preflight is asked once per
        // endpoint, not before every request whose position changed it.
        let (path, query) = match self.known().query_header() {
            true => protocol::query_in_header(path_and_query),
            false => (path_and_query.to_string(), None),
        };
        if let Some(query) = query {
            set(&headers, QUERY_HEADER, &query.into())?;
        }
        let url = format!("{}{path}", self.url);
        set(&init, "headers", &headers.into())?;
        let call = fetch.call2(&global, &url.into(), &init).map_err(js)?;
        let response = JsFuture::from(Promise::from(call)).await.map_err(|e| {
            remote(
                "Unavailable",
                format!(
                    "cannot reach the sync server {}: {}",
                    self.url,
                    nexus_core::web::js_message(&e)
                ),
            )
        })?;
        let status = Reflect::get(&response, &"status".into())
            .map_err(js)?
            .as_f64()
            .unwrap_or(0.0) as u16;
        let read: js_sys::Function = Reflect::get(&response, &"arrayBuffer".into())
            .map_err(js)?
            .dyn_into()
            .map_err(|_| remote("Internal", "the answer has no body"))?;
        let buffer = JsFuture::from(Promise::from(read.call0(&response).map_err(js)?))
            .await
            .map_err(js)?;
        let bytes = Uint8Array::new(&buffer).to_vec();
        if !(200..300).contains(&status) {
            let (message, again) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.message, protocol::asks_to_push_again(&b.error)),
                Err(_) => (format!("the sync server answered {status}"), false),
            };
            // A 400 to parameters sent in their header may come from a
            // server that does not read it (an older one at this address
            // since the state was heard): the sync asks the state again
            // and sends them as that says.
            let again = again || (status == 400 && query.is_some());
            return Err(SyncError::Remote {
                kind: kind_of(status),
                message,
                again,
                status,
            });
        }
        protocol::decode_answer(&bytes).map_err(|e| match e {
            protocol::AnswerError::NotJson(e) => {
                remote("Internal", format!("the answer is not JSON: {e}"))
            }
            protocol::AnswerError::Protocol(_) => remote(
                "Unsupported",
                format!("the sync server does not speak protocol {PROTOCOL_VERSION}"),
            ),
            protocol::AnswerError::Unexpected(e) => {
                remote("Internal", format!("unexpected answer: {e}"))
            }
        })
    }
}

struct ServerFeed<'a> {
    server: &'a Server<'a>,
    /// The database whose feed the store's position counts in.
    hub_id: &'a str,
    /// `hub_id`, when the server checks what a request names.
    named: Option<&'a str>,
    source: String,
}

impl Feed for ServerFeed<'_> {
    type Error = SyncError;

    async fn page(
        &mut self,
        after: i64,
        within: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(FeedPage, i64), SyncError> {
        let path = protocol::pull_path(&self.source, after, within, max_rows, self.named);
        let p: Pulled = self.server.call("GET", &path, None).await?;
        self.server.check_hub(self.hub_id, &p.hub_id)?;
        let watermark = p.watermark;
        self.server.known().pulled(&self.source, watermark);
        Ok((p.into_page(), watermark))
    }
}

/// The server's snapshot of the token's tenant, for a first pull.
struct ServerSnapshot<'a> {
    server: &'a Server<'a>,
    /// The database whose snapshot the store loads.
    hub_id: &'a str,
    /// `hub_id`, when the server checks what a request names.
    named: Option<&'a str>,
}

impl SnapshotSource for ServerSnapshot<'_> {
    type Error = SyncError;

    async fn page(
        &mut self,
        after: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(Changes, Option<SnapshotCursor>), SyncError> {
        let path = protocol::snapshot_path(after, max_rows, self.named);
        let p: Snapshotted = self.server.call("GET", &path, None).await?;
        self.server.check_hub(self.hub_id, &p.hub_id)?;
        Ok((p.changes, p.next))
    }
}

/// Pushes, then pulls; pushes and pulls again (up to three times) when a
/// local write lands in between and the pull refuses to overwrite it, or
/// the server asks for it (409 `gap`, `hub_changed`, `incomplete`)
/// ([`SYNC_ROUNDS`] rounds at most, as the native client). What it knows
/// of the server from earlier syncs (`servers`) spares it asking
/// [`protocol::STATE`].
pub(crate) async fn sync(
    store: &Store,
    servers: &Servers,
    options: SyncOptions,
) -> Result<SyncResult, SyncError> {
    let url = options.url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(remote(
            "InvalidArgument",
            format!("invalid sync url {url:?}: it must start with http:// or https://"),
        ));
    }
    if options.token.is_empty() {
        return Err(remote("InvalidArgument", "invalid sync token: it is empty"));
    }
    let server = Server {
        url,
        token: options.token,
        servers,
    };
    let max_rows = options.max_rows.unwrap_or(2000).max(1);
    let result = rounds(store, &server, max_rows).await;
    if result.is_err() {
        // Whatever failed (a request, or the store: a watermark kept from
        // an earlier sync that the store is not at), the next sync asks.
        server.known().forget();
    }
    result
}

/// [`sync`]'s rounds, with `server`, pages of about `max_rows` rows.
async fn rounds(
    store: &Store,
    server: &Server<'_>,
    max_rows: usize,
) -> Result<SyncResult, SyncError> {
    let mut out = SyncResult {
        pushed: 0,
        pulled: 0,
        conflicts: Vec::new(),
    };
    let mut round = 0;
    'rounds: loop {
        round += 1;
        let source = store.snapshot().await?.source_id().to_string();
        let state = server.state(&source).await?;
        // Push: the local changes after the server's watermark, in windows
        // of about `max_rows` rows per table, each a change file the server
        // applies on its own (so a push cut between windows resumes where
        // the server stopped), as the native client pushes.
        let base = store.pull_position(&state.hub_id).await?;
        let mut pushed_through = state.watermark;
        let mut read = state.watermark;
        // Only pulls since the server's watermark: no row to send, and the
        // push waits for one that has (`only_pulled_after`).
        let put_off = store.snapshot().await?.only_pulled_after(read)?;
        loop {
            if put_off {
                break;
            }
            let (mut file, head) = store.export_window(read, max_rows).await?;
            if file.changes.through <= read {
                break;
            }
            read = file.changes.through;
            let last = read >= head;
            // A window of pulled rows only is not sent on its own: the
            // next one covers its range too.
            if file.changes.is_empty() && !last {
                continue;
            }
            file.changes.after = pushed_through;
            // A window larger than the server takes in one body (one
            // transaction of very many rows) goes in parts, applied whole
            // by the last request.
            let mut requests = protocol::push_requests(&file, base, &state);
            drop(file);
            let applying = requests.pop().expect("a push is at least one request");
            let mut staged = Ok(());
            for part in requests {
                if let Err(e) = server
                    .push_call::<protocol::Staged>(part, &source, &state)
                    .await
                {
                    staged = Err(e);
                    break;
                }
            }
            let answer = match staged {
                Ok(()) => server.push_call(applying, &source, &state).await,
                Err(e) => Err(e),
            };
            let pushed: Pushed<PushReport> = match answer {
                Ok(p) => p,
                // Another sync of this store pushed at the same moment, or
                // the server lost the parts staged for this push (409), or
                // lowered its body limit (413): read the server's state
                // again and push again.
                Err(SyncError::Remote { again: true, .. }) if round < SYNC_ROUNDS => {
                    continue 'rounds;
                }
                Err(e) => return Err(e),
            };
            server.known().heard(&source, pushed.report.to_seq);
            out.pushed += pushed.report.tables.iter().map(|t| t.rows).sum::<u64>();
            out.conflicts.extend(
                pushed
                    .report
                    .conflicts
                    .into_iter()
                    .map(JsConflictCopy::from),
            );
            pushed_through = read;
            if last {
                break;
            }
        }
        // Pull: the feed's pages after the store's position.
        let from = store.pull_position(&state.hub_id).await?;
        let mut report = PullReport {
            hub_id: state.hub_id.clone(),
            from,
            to: from,
            ..PullReport::default()
        };
        // An empty store loads the snapshot first (or the rest of one
        // that was cut), then reads the feed.
        // The database is named in each request to a server that checks
        // it: one in front of another database now refuses (409).
        let named = state.checks_hub.then_some(state.hub_id.as_str());
        let mut feed = ServerFeed {
            server,
            hub_id: &state.hub_id,
            named,
            source,
        };
        let pulled = match store
            .load_snapshot(
                &mut ServerSnapshot {
                    server,
                    hub_id: &state.hub_id,
                    named,
                },
                &mut report,
                max_rows,
                |_| {},
            )
            .await
        {
            Ok(()) => {
                store
                    .apply_feed(&mut feed, &mut report, max_rows, |_| {})
                    .await
            }
            Err(e) => Err(e),
        };
        match pulled {
            Ok(()) => {
                out.pulled += report.rows();
                return Ok(out);
            }
            Err(
                SyncError::Store(nexus_core::Error::Conflict { .. })
                | SyncError::Remote { again: true, .. },
            ) if round < SYNC_ROUNDS => {
                out.pulled += report.rows();
            }
            Err(e) => return Err(e),
        }
    }
}
