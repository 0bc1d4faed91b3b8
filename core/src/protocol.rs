//! The sync protocol between stores and a sync server (`nexus serve`):
//! what each endpoint takes and answers, shared by the server and its
//! clients. Version 1; README "The sync server" documents it.
//!
//! Every request carries `Authorization: Bearer <token>` (except
//! [`HEALTH`]) and may carry [`PROTOCOL_HEADER`]; every answer carries it.
//! Bodies are JSON. A push's body is a change file
//! ([`crate::ChangeFile::encode`]), exactly as `nexus export-changes`
//! writes it.

use serde::{Deserialize, Serialize};

use crate::{ChangeFile, Changes, FileRow};

/// The version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The header that carries the protocol version, both ways.
pub const PROTOCOL_HEADER: &str = "nexus-protocol";

/// The header that may carry a request's query string instead of its URL
/// (when [`State::query_header`] says the server reads it): a browser's
/// requests then keep one URL per endpoint, so that the CORS preflight of
/// a page on another origin is asked once per endpoint (and kept for the
/// server's `Access-Control-Max-Age`), not before every request whose
/// position changed the URL.
pub const QUERY_HEADER: &str = "nexus-query";

/// The query string of a request whose parameters are in the
/// [`QUERY_HEADER`]: a server that does not read the header (an older one,
/// at an address whose state said it did) refuses the request (an unknown
/// parameter) rather than taking it without its parameters.
pub const QUERY_IN_HEADER: &str = "query=header";

/// `GET`: `{"status": "ok", "protocol": 1}` while the database answers,
/// 503 otherwise. No token needed.
pub const HEALTH: &str = "/v1/health";

/// `GET ?source=ID`: [`State`], how far the server has applied a source.
pub const STATE: &str = "/v1/state";

/// `POST ?base=N` with a change file: applies it (exactly once per
/// source, the conflict rule against `base`, the position the source had
/// pulled to; without `base`, by version numbers, as for a change file),
/// answers [`Pushed`]. 409 `gap` when the file starts after the server's
/// watermark (ask [`STATE`] again); 409 `conflict` for rows the rule
/// cannot settle.
pub const PUSH: &str = "/v1/push";

/// `POST ?upload=ID&part=K` with a change file: part `K` (from 0) of a
/// push too large for one request ([`push_requests`]), staged by the
/// server, not applied. [`PUSH`] with `&upload=ID&parts=N` brings the last
/// part: the `N` parts, joined in order ([`join_parts`]), are then applied as
/// one change file, in one transaction, as any push. Answers [`Staged`].
/// The parts of an upload that never completes are dropped after a day.
pub const PUSH_PART: &str = "/v1/push/part";

/// `GET ?after=N&max_rows=M&source=ID[&within=CURSOR][&hub=ID]`:
/// [`Pulled`], the next page of the caller's tenant's changes after
/// position `after` (with `within`, a [`crate::SnapshotCursor`] as JSON
/// from the last answer's [`Pulled::within`]: after that row of transaction
/// `after`). A transaction larger than a page comes in several answers.
/// `hub`: the database whose feed `after` counts in; a server in front of
/// another one refuses (409 `hub_changed`). [`pull_path`] builds it.
pub const PULL: &str = "/v1/pull";

/// `GET ?after=CURSOR&max_rows=M[&hub=ID]`: [`Snapshotted`], the next rows of a
/// snapshot of the caller's tenant, after `after` (a
/// [`crate::SnapshotCursor`] as JSON; none: from the start), for a first
/// pull into an empty store. Each answer reads a snapshot of its own, so no
/// request runs long; the client loads the answers in order, then reads the
/// feed ([`PULL`]) from the first answer's position.
pub const SNAPSHOT: &str = "/v1/snapshot";

/// How many rounds a client's sync (push, then pull) makes at most, the
/// native client's and the browser's: it pushes and pulls again when a
/// local write landed between its push and its pull (the browser's also
/// when another sync of the same store pushed at the same moment: 409).
pub const SYNC_ROUNDS: u32 = 3;

/// The answer of [`STATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The protocol version.
    pub protocol: u32,
    /// The database's id (a store keeps its pull position under it).
    pub hub_id: String,
    /// The change of the source applied last (0: none).
    pub watermark: i64,
    /// The largest request body the server takes, in bytes: a push larger
    /// than this goes in parts ([`PUSH_PART`]). `None` (a server that does
    /// not say): one request per push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
    /// Whether the server refuses a push, pull or snapshot request that
    /// names another database than its own (`&hub=ID`: 409 `hub_changed`)
    /// and a push that starts before its watermark (409 `gap`): then a
    /// client may push from the watermark its last push left, without
    /// asking again, and names the database in each request. `false` (a
    /// server that does not say): ask before every push and pull, name no
    /// database.
    #[serde(default)]
    pub checks_hub: bool,
    /// Whether the server reads a request's query string from the
    /// [`QUERY_HEADER`] too. `false` (a server that does not say): in the
    /// URL only.
    #[serde(default)]
    pub query_header: bool,
}

/// `path_and_query` with its query string moved to the [`QUERY_HEADER`]:
/// the path and query to request ([`QUERY_IN_HEADER`] when it had one),
/// and the header's value.
pub fn query_in_header(path_and_query: &str) -> (String, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((path, query)) => (format!("{path}?{QUERY_IN_HEADER}"), Some(query)),
        None => (path_and_query.to_string(), None),
    }
}

/// The answer of [`PUSH_PART`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The protocol version.
    pub protocol: u32,
    /// The upload the part belongs to.
    pub upload: String,
    /// The part staged.
    pub part: u32,
}

/// The answer of [`PUSH`]: `R` is the sync's report (`nexus_sync::SyncReport`:
/// rows per table, every conflict copy made); a client may read only the
/// part it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pushed<R> {
    /// The protocol version.
    pub protocol: u32,
    /// What the push applied, with every conflict copy it made.
    pub report: R,
}

/// The answer of [`PULL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    /// The protocol version.
    pub protocol: u32,
    /// The database's id.
    pub hub_id: String,
    /// The server's watermark of the `source` asked about (0 without one):
    /// rows of that source up to it are the caller's own.
    pub watermark: i64,
    /// The page's rows (`changes.through`: where to ask from next).
    pub changes: crate::Changes,
    /// The current rows of files the page's rows refer to (see
    /// `nexus_pg::FeedPage::referenced_files`); applied first.
    pub referenced_files: Vec<FileRow>,
    /// The same for versions (`FeedPage::referenced_versions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_versions: Vec<crate::VersionRow>,
    /// Whether the page reaches the newest position ready.
    pub caught_up: bool,
    /// Set when the page ends inside the transaction `changes.through`: its
    /// last row (see `FeedPage::within`); ask again with `after` =
    /// `changes.through` and `within` = this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<crate::SnapshotCursor>,
    /// How many of the caller's own transactions (of the `source` asked
    /// about) the page passed over unread (`FeedPage::left_out`).
    #[serde(default, skip_serializing_if = "crate::pull::is_zero")]
    pub left_out: u64,
}

/// The answer of [`SNAPSHOT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshotted {
    /// The protocol version.
    pub protocol: u32,
    /// The database's id.
    pub hub_id: String,
    /// The rows, tables in dependency order, each in its snapshot order
    /// (`changes.through`: the feed position this answer's snapshot covers).
    pub changes: crate::Changes,
    /// Where to ask from next; `None`: the snapshot is complete.
    pub next: Option<crate::SnapshotCursor>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The protocol version.
    pub protocol: u32,
    /// The kind: `bad_request`, `unauthorized`, `forbidden`, `gap`,
    /// `too_large`, `timeout`, `unavailable`, `internal`, ...
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// For `gap`: the server's watermark of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<i64>,
}

/// Whether an error answer of this kind asks the client to push again:
/// `gap` (another push of the same store ran at once: read [`STATE`]
/// again), `hub_changed` (the server is in front of another database than
/// the push named: read [`STATE`] again) or `incomplete` (the staged parts
/// of a push are gone); also [`LIMIT_LOWERED`], the client's own name for a
/// 413 that [`limit_lowered`] explains. Every other 409, `conflict` above
/// all, is final.
pub fn asks_to_push_again(kind: &str) -> bool {
    matches!(kind, "gap" | "hub_changed" | "incomplete" | LIMIT_LOWERED)
}

/// The kind a client gives a 413 that [`limit_lowered`] explains.
pub const LIMIT_LOWERED: &str = "limit_lowered";

/// Whether a 413 answer to a push request of `sent` bytes, which the
/// client sized by the body limit it had heard (`heard`), comes from a
/// limit lowered since: the state asked again after the 413 (`now`) gives
/// a limit below `sent`. The client then pushes again, in parts by the new
/// limit. Any other 413 stays final: a row too large for the limit heard,
/// the parts of one push adding up to more than the server takes in one
/// push (`--max-push-bytes`), a proxy's smaller limit.
pub fn limit_lowered(sent: usize, heard: &State, now: &State) -> bool {
    let below = |state: &State| state.max_body.is_some_and(|max| (sent as u64) > max);
    !below(heard) && heard.max_body.is_some() && below(now)
}

/// What is wrong with a successful answer's body ([`decode_answer`]).
#[derive(Debug)]
pub enum AnswerError {
    /// It is not JSON.
    NotJson(serde_json::Error),
    /// It names another protocol version, or none (`None`).
    Protocol(Option<u64>),
    /// It is JSON of another shape than the endpoint's answer.
    Unexpected(serde_json::Error),
}

/// Reads a successful answer of the server as `T`, once its `protocol`
/// is this build's. The check skips the rest of the body without building
/// it (a page's rows are parsed once, into their types).
pub fn decode_answer<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AnswerError> {
    #[derive(Deserialize)]
    struct Version {
        protocol: Option<serde_json::Value>,
    }
    let version: Version = serde_json::from_slice(bytes).map_err(AnswerError::NotJson)?;
    let protocol = version.protocol.as_ref().and_then(|p| p.as_u64());
    if protocol != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(AnswerError::Protocol(protocol));
    }
    serde_json::from_slice(bytes).map_err(AnswerError::Unexpected)
}

/// The change file of a push, as bytes (one home for the format: the
/// change file's own encoding).
pub fn push_body(file: &ChangeFile) -> Vec<u8> {
    file.encode()
}

/// One request of a push: `POST` `path` (with its query) and `body`.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// [`PUSH`] or [`PUSH_PART`], with the query.
    pub path: String,
    /// The body: a change file.
    pub body: Vec<u8>,
}

impl PushRequest {
    /// Whether this is the request that applies the push (the last one),
    /// answered by [`Pushed`]; the others are answered by [`Staged`].
    pub fn applies(&self) -> bool {
        self.path.starts_with(PUSH) && !self.path.starts_with(PUSH_PART)
    }
}

/// The requests that push `file` (`base`: how far its source had pulled
/// from the server's database) to the server that answered `server`, to
/// send in order: one [`PUSH`] when its body fits in the server's
/// [`State::max_body`] (or it set no limit); else the file's rows split
/// into parts that each fit (as far as a single row allows), all but the
/// last staged with [`PUSH_PART`] and the last sent with [`PUSH`], which
/// applies them all at once. One local transaction larger than a request
/// (a batch of very many files) is thus pushed and applied whole. The
/// parts are named by a new upload id on every call, so that the parts of
/// an attempt cut mid-way are never mixed with a later attempt's. The
/// [`PUSH`] names the server's database (`&hub=`) when it checks it
/// ([`State::checks_hub`]).
pub fn push_requests(file: &ChangeFile, base: i64, server: &State) -> Vec<PushRequest> {
    let whole = push_body(file);
    let max = server
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let hub = match server.checks_hub {
        true => format!(
            "&hub={}",
            form_urlencoded::byte_serialize(server.hub_id.as_bytes()).collect::<String>()
        ),
        false => String::new(),
    };
    if whole.len() <= max {
        return vec![PushRequest {
            path: format!("{PUSH}?base={base}{hub}"),
            body: whole,
        }];
    }
    let upload = uuid::Uuid::new_v4();
    let mut bodies = Vec::new();
    fit(file.clone(), max, &mut bodies);
    let n = bodies.len();
    bodies
        .into_iter()
        .enumerate()
        .map(|(k, body)| PushRequest {
            path: if k + 1 == n {
                format!("{PUSH}?base={base}&upload={upload}&parts={n}{hub}")
            } else {
                format!("{PUSH_PART}?upload={upload}&part={k}")
            },
            body,
        })
        .collect()
}

/// The path and query of a [`STATE`] request about `source`'s store.
pub fn state_path(source: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("source", source);
    format!("{STATE}?{}", q.finish())
}

/// The path and query of a [`PULL`] request of `source`'s store, from
/// `after` (and `within`), at most about `max_rows` rows; `hub` names the
/// database `after` counts in (to a server that checks it:
/// [`State::checks_hub`]).
pub fn pull_path(
    source: &str,
    after: i64,
    within: Option<&crate::SnapshotCursor>,
    max_rows: usize,
    hub: Option<&str>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("after", &after.to_string())
        .append_pair("max_rows", &max_rows.to_string())
        .append_pair("source", source);
    if let Some(w) = within {
        q.append_pair("within", &w.to_json());
    }
    if let Some(hub) = hub {
        q.append_pair("hub", hub);
    }
    format!("{PULL}?{}", q.finish())
}

/// The path and query of a [`SNAPSHOT`] request: the rows after `after`
/// (from the start without one), at most `max_rows`; `hub` as for
/// [`pull_path`].
pub fn snapshot_path(
    after: Option<&crate::SnapshotCursor>,
    max_rows: usize,
    hub: Option<&str>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("max_rows", &max_rows.to_string());
    if let Some(a) = after {
        q.append_pair("after", &a.to_json());
    }
    if let Some(hub) = hub {
        q.append_pair("hub", hub);
    }
    format!("{SNAPSHOT}?{}", q.finish())
}

/// What a client knows of its server without asking: the server's last
/// answer of [`STATE`] (its database, body limit and whether it checks a
/// push's database) and each source's watermark as the last answer about
/// it (of [`STATE`] or of a push) left it, the highest heard (one too high
/// is answered 409 `gap`; one too low, a push that starts before the
/// server's watermark, too). The native client and the browser's keep one
/// per server; a failed request forgets it all ([`Known::forget`]): the
/// next push or pull asks [`STATE`] again.
#[derive(Debug, Default)]
pub struct Known {
    server: Option<State>,
    watermarks: std::collections::HashMap<String, i64>,
}

impl Known {
    /// Keeps the server's answer of [`STATE`] about `source`.
    pub fn stated(&mut self, source: &str, state: &State) {
        self.heard(source, state.watermark);
        self.server = Some(state.clone());
    }

    /// Keeps `watermark` of `source`, as an answer gave it (a push's
    /// `to_seq`), unless a higher one was heard.
    pub fn heard(&mut self, source: &str, watermark: i64) {
        let w = self
            .watermarks
            .entry(source.to_string())
            .or_insert(watermark);
        *w = (*w).max(watermark);
    }

    /// Takes `watermark` of `source` as a pull's answer gave it: one below
    /// what was heard (the database restored from a copy under the same
    /// id, which lost pushes; or read before a push of another sync of the
    /// same store committed) forgets it all, so that the next push asks
    /// [`STATE`] and starts from the server's watermark.
    pub fn pulled(&mut self, source: &str, watermark: i64) {
        if self.watermarks.get(source).is_some_and(|&w| w > watermark) {
            self.forget();
        }
    }

    /// Whether the server, as last heard, reads a request's query string
    /// from the [`QUERY_HEADER`] ([`State::query_header`]).
    pub fn query_header(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.query_header)
    }

    /// The server's state of `source` as the last answers left it, when it
    /// knows it and the server checks what a push names
    /// ([`State::checks_hub`]: a push from a watermark gone stale is
    /// refused, not applied twice); `None`: ask [`STATE`].
    pub fn state(&self, source: &str) -> Option<State> {
        let server = self.server.as_ref().filter(|s| s.checks_hub)?;
        let watermark = *self.watermarks.get(source)?;
        Some(State {
            watermark,
            ..server.clone()
        })
    }

    /// Forgets all of it.
    pub fn forget(&mut self) {
        *self = Known::default();
    }
}

/// Refuses an answer of another database than `hub_id`, the one whose
/// feed the client's positions count in (the server was put in front of
/// another since the client heard its id): the message of a 409
/// `hub_changed`, which asks again ([`asks_to_push_again`]).
pub fn check_hub(hub_id: &str, answered: &str) -> Result<(), String> {
    match hub_id == answered {
        true => Ok(()),
        false => Err(format!(
            "the server's database is now {answered}, not {hub_id}: asking again"
        )),
    }
}

/// The bodies of `file`'s rows in order, each at most `max` bytes unless
/// it holds one row only: halves until each fits.
fn fit(file: ChangeFile, max: usize, out: &mut Vec<Vec<u8>>) {
    let body = push_body(&file);
    let rows = file.changes.len();
    if body.len() <= max || rows <= 1 {
        out.push(body);
        return;
    }
    drop(body);
    let (first, rest) = file.changes.split_at(rows / 2);
    fit(
        ChangeFile {
            source_id: file.source_id.clone(),
            changes: first,
        },
        max,
        out,
    );
    fit(
        ChangeFile {
            source_id: file.source_id,
            changes: rest,
        },
        max,
        out,
    );
}

/// The change file whose parts (as [`push_requests`] made them, in order)
/// are `parts`; the error says why they are not parts of one push.
pub fn join_parts(parts: Vec<ChangeFile>) -> Result<ChangeFile, String> {
    let Some(source_id) = parts.first().map(|p| p.source_id.clone()) else {
        return Err("a push has at least one part".into());
    };
    if let Some(other) = parts.iter().find(|p| p.source_id != source_id) {
        return Err(format!(
            "the parts are of different sources ({source_id:?} and {:?})",
            other.source_id
        ));
    }
    let changes = Changes::join(parts.into_iter().map(|p| p.changes))
        .ok_or("the parts cover different change ranges (after, through)")?;
    Ok(ChangeFile { source_id, changes })
}

impl Pulled {
    /// The answer as a page of the feed.
    pub fn into_page(self) -> crate::FeedPage {
        crate::FeedPage {
            changes: self.changes,
            caught_up: self.caught_up,
            referenced_files: self.referenced_files,
            referenced_versions: self.referenced_versions,
            within: self.within,
            left_out: self.left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(files: usize) -> ChangeFile {
        let row = |i: usize| crate::FileRow {
            path_id: format!("p{i:05}"),
            tenant_id: "default".into(),
            virtual_path: format!("/batch/{i:05}.txt"),
            backend_id: "local".into(),
            physical_path: format!("/data/{i:05}"),
            size_bytes: i as i64,
            content_hash: None,
            file_type: None,
            created_at: 1,
            updated_at: 1,
            deleted_at: None,
            current_version: 1,
            change_seq: 8,
            origin: None,
        };
        let meta = |i: usize| crate::MetadataRow {
            path_id: format!("p{i:05}"),
            key: "k".into(),
            value: "1".into(),
            created_at: 1,
            updated_at: 1,
            change_seq: 8,
            origin: None,
        };
        ChangeFile {
            source_id: "s1".into(),
            changes: Changes {
                after: 7,
                through: 8,
                files: (0..files).map(row).collect(),
                metadata: (0..files).map(meta).collect(),
                ..Changes::default()
            },
        }
    }

    /// A server's answer of [`STATE`]: its body limit, and whether it
    /// checks a push's database (`hub`, then its id).
    fn server(max_body: Option<u64>, hub: Option<&str>) -> State {
        State {
            protocol: PROTOCOL_VERSION,
            hub_id: hub.unwrap_or("h").into(),
            watermark: 3,
            max_body,
            checks_hub: hub.is_some(),
            query_header: false,
        }
    }

    #[test]
    fn a_413_to_a_body_within_the_limit_heard_is_a_lowered_limit_only_when_the_state_says_so() {
        let (heard, lowered) = (server(Some(1000), None), server(Some(500), None));
        assert!(limit_lowered(1000, &heard, &lowered));
        assert!(limit_lowered(501, &heard, &lowered));
        // Fits the new limit too: the 413 was another (the parts of one
        // push above --max-push-bytes, a proxy): final.
        assert!(!limit_lowered(500, &heard, &lowered));
        assert!(!limit_lowered(900, &heard, &heard));
        // One row larger than the limit heard: final.
        assert!(!limit_lowered(1001, &heard, &lowered));
        // No limit heard: the 413 says nothing new.
        assert!(!limit_lowered(900, &server(None, None), &lowered));
        assert!(asks_to_push_again(LIMIT_LOWERED));
        assert!(!asks_to_push_again("too_large"));
    }

    #[test]
    fn a_query_in_its_header_leaves_the_marker_in_the_url() {
        let (path, query) = query_in_header("/v1/pull?after=7&source=s");
        assert_eq!(
            (path.as_str(), query),
            ("/v1/pull?query=header", Some("after=7&source=s"))
        );
        let (path, query) = query_in_header("/v1/health");
        assert_eq!((path.as_str(), query), ("/v1/health", None));
    }

    #[test]
    fn a_push_that_fits_is_one_request() {
        let f = file(3);
        let r = push_requests(&f, 5, &server(Some(1 << 20), None));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, "/v1/push?base=5");
        assert!(r[0].applies());
        assert_eq!(ChangeFile::decode(&r[0].body).unwrap(), f);
        // A server that sets no limit: one request whatever the size.
        assert_eq!(push_requests(&file(500), 0, &server(None, None)).len(), 1);
        // One that checks the database a push names: named, encoded.
        let r = push_requests(&f, 5, &server(None, Some("a b&c")));
        assert_eq!(r[0].path, "/v1/push?base=5&hub=a+b%26c");
    }

    #[test]
    fn pulls_and_snapshots_name_what_they_read_from() {
        let within = crate::SnapshotCursor {
            table: "file_paths".into(),
            key: vec!["a&b".into()],
        };
        assert_eq!(
            pull_path("s 1", 7, None, 100, None),
            "/v1/pull?after=7&max_rows=100&source=s+1"
        );
        let p = pull_path("s1", 7, Some(&within), 100, Some("h=1"));
        assert!(p.ends_with("&source=s1&within=%7B%22table%22%3A%22file_paths%22%2C%22key%22%3A%5B%22a%26b%22%5D%7D&hub=h%3D1"), "{p}");
        assert_eq!(snapshot_path(None, 5, None), "/v1/snapshot?max_rows=5");
        assert_eq!(state_path("s&1"), "/v1/state?source=s%261");
        assert!(snapshot_path(Some(&within), 5, Some("h")).ends_with("%5D%7D&hub=h"));
    }

    #[test]
    fn a_client_knows_a_state_once_heard_and_forgets_it_all() {
        let mut known = Known::default();
        assert_eq!(known.state("s1"), None);
        known.stated("s1", &server(Some(9), Some("h1")));
        assert_eq!(known.state("s1"), Some(server(Some(9), Some("h1"))));
        // Another source of the same server: its watermark was not heard.
        assert_eq!(known.state("s2"), None);
        // A push's answer moves it on; a lower one does not move it back.
        known.heard("s1", 12);
        known.heard("s1", 4);
        assert_eq!(known.state("s1").unwrap().watermark, 12);
        // A pull that says as much, or more, changes nothing; one that says
        // less (the server lost pushes) forgets it all.
        known.pulled("s1", 12);
        known.pulled("s2", 0);
        assert_eq!(known.state("s1").unwrap().watermark, 12);
        known.pulled("s1", 11);
        assert_eq!(known.state("s1"), None);
        known.stated("s1", &server(Some(9), Some("h1")));
        known.heard("s1", 12);
        known.forget();
        assert_eq!(known.state("s1"), None);
        // A server that does not check a push's database: asked each time.
        known.stated("s1", &server(Some(9), None));
        assert_eq!(known.state("s1"), None);
        assert!(check_hub("h1", "h1").is_ok());
        assert!(
            check_hub("h1", "h2")
                .unwrap_err()
                .contains("now h2, not h1")
        );
    }

    #[test]
    fn a_push_larger_than_a_body_goes_in_parts_that_join_to_the_whole() {
        let f = file(400);
        let whole = push_body(&f).len();
        let max = whole / 7;
        let r = push_requests(&f, 2, &server(Some(max as u64), Some("h2")));
        let upload = r[0]
            .path
            .split("upload=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert_eq!(upload.len(), 36, "a UUID: {upload}");
        assert!(r.len() >= 7, "{} parts", r.len());
        let n = r.len();
        for (k, q) in r.iter().enumerate() {
            assert!(q.body.len() <= max, "part {k}: {} > {max}", q.body.len());
            if k + 1 < n {
                assert_eq!(q.path, format!("/v1/push/part?upload={upload}&part={k}"));
                assert!(!q.applies());
            } else {
                assert_eq!(
                    q.path,
                    format!("/v1/push?base=2&upload={upload}&parts={n}&hub=h2")
                );
                assert!(q.applies());
            }
        }
        let parts: Vec<ChangeFile> = r
            .iter()
            .map(|q| ChangeFile::decode(&q.body).unwrap())
            .collect();
        // Every part is a change file over the whole range.
        assert!(
            parts
                .iter()
                .all(|p| (p.changes.after, p.changes.through) == (7, 8))
        );
        assert_eq!(join_parts(parts.clone()).unwrap(), f);
        // Parts of another range, or of another source, are refused.
        let mut odd = parts.clone();
        odd[1].changes.through = 9;
        assert!(join_parts(odd).unwrap_err().contains("ranges"));
        let mut other = parts;
        other[2].source_id = "s2".into();
        assert!(join_parts(other).unwrap_err().contains("sources"));
        assert!(join_parts(Vec::new()).is_err());
    }

    #[test]
    fn a_row_larger_than_a_body_is_sent_alone() {
        let r = push_requests(&file(3), 0, &server(Some(10), None));
        assert_eq!(r.len(), 6, "one row per part");
    }

    #[test]
    fn an_answer_is_read_once_its_protocol_is_ours() {
        let state = |body: &str| decode_answer::<State>(body.as_bytes());
        let ok = state(r#"{"protocol":1,"hub_id":"h","watermark":7}"#).unwrap();
        assert_eq!((ok.hub_id.as_str(), ok.watermark), ("h", 7));
        for (body, seen) in [
            (r#"{"hub_id":"h","watermark":7}"#, None),
            (r#"{"protocol":2,"hub_id":"h","watermark":7}"#, Some(2)),
            (r#"{"protocol":"1","hub_id":"h","watermark":7}"#, None),
        ] {
            match state(body) {
                Err(AnswerError::Protocol(p)) => assert_eq!(p, seen, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(state("<html>"), Err(AnswerError::NotJson(_))));
        assert!(matches!(
            state(r#"{"protocol":1,"hub_id":3}"#),
            Err(AnswerError::Unexpected(_))
        ));
    }
}
