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

use crate::{ChangeFile, FileRow};

/// The version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The header that carries the protocol version, both ways.
pub const PROTOCOL_HEADER: &str = "nexus-protocol";

/// `GET`: `{"status": "ok", "protocol": 1}` while the database answers,
/// 503 otherwise. No token needed.
pub const HEALTH: &str = "/v1/health";

/// `GET ?source=ID`: [`State`], how far the server has applied a source.
pub const STATE: &str = "/v1/state";

/// `POST ?base=N` with a change file: applies it (exactly once per
/// source, the conflict rule against `base`, the position the source had
/// pulled to), answers [`Pushed`]. 409 `gap` when the file starts after
/// the server's watermark (ask [`STATE`] again).
pub const PUSH: &str = "/v1/push";

/// `GET ?after=N&max_rows=M&source=ID[&within=CURSOR]`: [`Pulled`], the
/// next page of the caller's tenant's changes after position `after` (with
/// `within`, a [`crate::SnapshotCursor`] as JSON from the last answer's
/// [`Pulled::within`]: after that row of transaction `after`). A
/// transaction larger than a page comes in several answers.
pub const PULL: &str = "/v1/pull";

/// `GET ?after=CURSOR&max_rows=M`: [`Snapshotted`], the next rows of a
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
    /// Whether the page reaches the newest position ready.
    pub caught_up: bool,
    /// Set when the page ends inside the transaction `changes.through`: its
    /// last row (see `FeedPage::within`); ask again with `after` =
    /// `changes.through` and `within` = this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<crate::SnapshotCursor>,
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

impl Pulled {
    /// The answer as a page of the feed.
    pub fn into_page(self) -> crate::FeedPage {
        crate::FeedPage {
            changes: self.changes,
            caught_up: self.caught_up,
            referenced_files: self.referenced_files,
            within: self.within,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
