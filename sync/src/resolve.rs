//! The conflict rule on PostgreSQL's side of a push (see
//! [`nexus_core::ConflictInfo`]): before a window of a source's rows is
//! upserted, each file row is compared with the target's row of the same
//! file.
//!
//! The target's row is *unseen* by the source ([`nexus_core::changed_unseen`],
//! the rule an embedded store's import uses too) when another writer
//! changed it after the last state of the target the source pulled
//! (`change_seq > base`, and its origin is not the source), or, for a
//! change file (which says nothing of what its writer had pulled), when it
//! has versions the pushed row lacks (of two rows of the same version the
//! later change wins whole, and the later change of each metadata key:
//! [`nexus_core::FileSide::later_than`], [`nexus_core::key_arrives`]). Then:
//! - both sides made new versions of the file (a version number is taken
//!   by a different version at the target, one the push does not carry
//!   elsewhere: a version it moves to a conflict copy of its own frees its
//!   number first): the target keeps the file; the
//!   source's file goes to a new file, a conflict copy beside it, with the
//!   source's new versions and its metadata rows (those also apply to the
//!   file, per key: the later arrival wins). For a change file, the side
//!   whose version at the fork was made first keeps the file: when that is
//!   the source, the target's file becomes the copy instead ([`copy_here`]),
//!   and the copy's id is derived from the fork, so that every side makes
//!   the same ([`nexus_core::Fork`]);
//! - the source deleted a file the other side gave a version it never
//!   saw: the file stays (modify wins over delete);
//! - otherwise the row with more versions wins (a deletion after every
//!   version of a file the other side only renamed stands); on a tie a
//!   live row wins over a deletion, else the target's row (the change that
//!   arrived first) stays. The side that lost made no
//!   version the other lacks (that would diverge, above): its change was to
//!   the file's row alone, and where both rows are live at different paths
//!   it was a rename, which follows the file's identity: the winning row
//!   takes the loser's path (a rename and a new version of one file both
//!   apply).
//!
//! A row the target did not change since the source saw it is replaced
//! (a fast-forward; for a change file: one with more versions, or the
//! later of two rows of one version). Rows the rule changes are marked as the target's own
//! (no origin), so that the source receives them on its next pull.

use std::collections::{HashMap, HashSet};

use crate::replicate::Tx;
use nexus_core::tables::{FILE_METADATA, FILE_PATHS};
use nexus_core::{
    Clash, ConflictCopy, ConflictInfo, ConflictReason, FirstReads, HereFile, Seen, Timestamp,
    to_copies,
};
use nexus_postgres::codec::micros;
use uuid::Uuid;

use crate::convert::{Batch, PgFile, PgMetadata, PgTombstone, PgVersion};
use crate::error::{Error, Result};
use crate::replicate::mark_conflict;

/// A conflict copy decided before the upsert, finished after it.
pub(crate) struct PendingCopy {
    tenant: String,
    path_id: Uuid,
    copy: String,
    info: ConflictInfo,
}

/// What [`resolve`] decided for a window, carried out by [`finish`] after
/// the upsert.
#[derive(Default)]
pub(crate) struct Resolved {
    copies: Vec<PendingCopy>,
    /// Files the target keeps whose pushed row, the loser, renamed them:
    /// each moves to the pushed path, stamped with the merged row's time
    /// (microseconds, [`nexus_core::FileSide::merged_at`]).
    moves: Vec<(Uuid, String, i64)>,
    /// Files whose pushed row won and took the target's path (the target's
    /// change was the rename): marked as the target's own, so that the
    /// pusher pulls the path.
    renamed: Vec<Uuid>,
    /// Redundant copies the pusher made, landing deleted
    /// ([`nexus_core::Decided::retired`]): marked as the target's own, so
    /// that the pusher pulls the deletion.
    retired: Vec<Uuid>,
    /// Files that pushed rows went to, whose line of versions they continue
    /// ([`nexus_core::Decided::followed`]): marked as the target's own, with
    /// their versions and metadata, so that the pusher pulls them.
    followed: Vec<Uuid>,
}

impl Resolved {
    /// Whether [`finish`] moves no file the target keeps to a pushed path:
    /// then the run's files may land live at once
    /// ([`crate::pg_tables::Landing::Live`]), as no later step of the run
    /// frees or takes a path.
    pub(crate) fn moves_nothing(&self) -> bool {
        self.moves.is_empty()
    }
}

/// Versions of a push whose file diverged but whose file row is in a later
/// window of the run (a file's row is stamped at or after its versions):
/// held back until that row arrives and the copy is made.
pub(crate) type Held = HashMap<Uuid, Vec<PgVersion>>;

/// What [`nexus_core::resolve`] reads in PostgreSQL, and the versions it
/// holds back across the windows of a run.
struct Target<'t, 'c> {
    tx: &'t Tx<'t, 'c>,
    held: &'t mut Held,
}

impl nexus_core::ApplySide for Target<'_, '_> {
    type Id = Uuid;
    type File = PgFile;
    type Version = PgVersion;
    type Metadata = PgMetadata;
    type Removal = PgTombstone;
    type Error = Error;

    async fn files_here(&mut self, ids: &[Uuid]) -> Result<HashMap<Uuid, HereFile>> {
        files_here(self.tx, ids).await
    }

    async fn clashes(&mut self, versions: &[PgVersion]) -> Result<Vec<Clash<Uuid>>> {
        version_clashes(self.tx, versions).await
    }

    async fn known(&mut self, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        versions_here(self.tx, ids).await
    }

    async fn held_elsewhere(&mut self, versions: &[PgVersion]) -> Result<Vec<(Uuid, (Uuid, i64))>> {
        held_elsewhere(self.tx, versions).await
    }

    /// The files' rows (and their locks) first; then the two reads of
    /// versions sent together (pipelined: one round trip, not two), after
    /// the locks, each checked in the order sent (a failure makes the
    /// statements behind it fail as "transaction aborted").
    async fn first_reads(
        &mut self,
        ids: &[Uuid],
        versions: &[PgVersion],
    ) -> Result<FirstReads<Uuid>> {
        let tx = self.tx;
        let here = match ids.is_empty() {
            true => HashMap::new(),
            false => files_here(tx, ids).await?,
        };
        let (clashes, held_elsewhere) = match versions.is_empty() {
            true => (Vec::new(), Vec::new()),
            false => {
                let (c, h) =
                    tokio::join!(version_clashes(tx, versions), held_elsewhere(tx, versions));
                (c?, h?)
            }
        };
        Ok(FirstReads {
            here,
            clashes,
            held_elsewhere,
        })
    }

    async fn parents_elsewhere(
        &mut self,
        versions: &[PgVersion],
    ) -> Result<Vec<(Uuid, Uuid, Uuid)>> {
        let mut v = Vec::new();
        let mut p = Vec::new();
        let mut parent = Vec::new();
        for x in versions {
            if let Some(pa) = x
                .row
                .parent_version_id
                .as_deref()
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                v.push(x.version_id);
                p.push(x.path_id);
                parent.push(pa);
            }
        }
        if v.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .tx
            .query(
                "SELECT u.v, u.pa, h.path_id FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS u(v, p, pa) \
                 JOIN version_history h ON h.version_id = u.pa AND h.path_id <> u.p \
                 WHERE EXISTS (SELECT 1 FROM version_history o WHERE o.path_id = u.p \
                 AND o.version_number = (SELECT min(version_number) FROM version_history \
                 WHERE path_id = h.path_id))",
                &[&v, &p, &parent],
            )
            .await
            .map_err(Error::pg("finding pushed versions whose parent is in another file"))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn new_id(&mut self) -> Uuid {
        Uuid::new_v4()
    }

    fn fork_copy_id(&self, file: &Uuid, fork: &nexus_core::Fork<Uuid>) -> Uuid {
        fork.copy_id(file)
    }

    async fn keys_here(
        &mut self,
        keys: &[(Uuid, &str)],
    ) -> Result<Vec<Option<(Option<String>, i64)>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT u.i, m.value::text, {} \
                     FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(p, k, i) \
                     LEFT JOIN file_metadata m ON m.path_id = u.p AND m.key = u.k \
                     LEFT JOIN tombstones t ON m.path_id IS NULL AND t.table_name = 'file_metadata' \
                       AND t.key1 = u.p::text AND t.key2 = u.k \
                     WHERE m.path_id IS NOT NULL OR t.key1 IS NOT NULL",
                    micros("coalesce(m.updated_at, t.deleted_at)")
                ),
                &[&ids, &names],
            )
            .await
            .map_err(Error::pg("reading the target's metadata keys"))?;
        let mut out = vec![None; keys.len()];
        for r in rows {
            let (i, value, at): (i64, Option<String>, i64) = (r.get(0), r.get(1), r.get(2));
            // The same canonical text as the store's, for the tie-break.
            let value = value
                .map(|v| serde_json::from_str(&v).map(|v| nexus_core::canonical_json(&v)))
                .transpose()
                .map_err(|e| Error::Conversion {
                    table: "file_metadata",
                    problem: format!("a value in PostgreSQL does not read as JSON: {e}"),
                })?;
            out[i as usize - 1] = Some((value, at));
        }
        Ok(out)
    }

    fn carried_elsewhere(&self) -> Vec<Uuid> {
        self.held.values().flatten().map(|v| v.version_id).collect()
    }

    fn diverged_elsewhere(&self) -> Vec<Uuid> {
        self.held.keys().copied().collect()
    }

    /// Held until the file's row comes, in a later window of the run (a
    /// file's row is stamped at or after its versions).
    fn set_aside(&mut self, v: PgVersion) -> Option<PgVersion> {
        self.held.entry(v.path_id).or_default().push(v);
        None
    }
}

/// Applies the conflict rule to `b` (a window of `source`'s rows, `seen`
/// what the source had pulled of the target), and returns the conflict
/// copies it decided on. The target's rows of the window's files are locked
/// until the run commits, so that concurrent pushes decide on what the
/// others committed.
pub(crate) async fn resolve(
    tx: &Tx<'_, '_>,
    source: &str,
    seen: Seen,
    b: &mut Batch,
    held: &mut Held,
) -> Result<Resolved> {
    let mut target = Target { tx, held };
    let resolved = nexus_core::resolve(
        &mut target,
        &mut b.files,
        &mut b.versions,
        &mut b.metadata,
        &mut b.tombstones,
        source,
        seen,
    )
    .await?;
    let held = target.held;
    let (decided, known, here) = (resolved.decided, resolved.known, resolved.here);
    let mut out = Resolved {
        moves: decided.moves,
        renamed: decided.renamed,
        retired: decided.retired,
        copies: Vec::with_capacity(decided.copies.len()),
        followed: Vec::new(),
    };
    let mut chosen = HashSet::new();
    let dropped = decided.dropped;
    // A file left out that the target does not have (a copy that the
    // target made its own way): its metadata has no file here, and stays
    // out too, as in an embedded import (its removals are recorded).
    let nowhere: HashSet<Uuid> = dropped
        .iter()
        .filter(|id| !here.contains(id))
        .copied()
        .collect();
    if !nowhere.is_empty() {
        b.metadata.retain(|m| !nowhere.contains(&m.path_id));
    }
    // Each copy gets its name; the losing side's new versions held back
    // from earlier windows go with it too.
    let moved: HashMap<Uuid, Uuid> = decided.copies.iter().copied().collect();
    for (from, copy_id) in decided.copies {
        let Some(f) = b.files.iter_mut().find(|f| f.path_id == copy_id) else {
            continue;
        };
        let info = ConflictInfo {
            path: f.row.virtual_path.clone(),
            source: source.to_string(),
            at: Timestamp::from_micros(f.row.updated_at),
            reason: ConflictReason::Content,
        };
        let copy =
            crate::replicate::free_copy_path(tx, &f.row.tenant_id, &info, &mut chosen).await?;
        f.row.virtual_path = copy.clone();
        out.copies.push(PendingCopy {
            tenant: f.row.tenant_id.clone(),
            path_id: copy_id,
            copy,
            info,
        });
        if let Some(mut waiting) = held.remove(&from) {
            to_copies(&moved, &mut waiting, &known, &mut Vec::<PgMetadata>::new());
            b.versions.extend(waiting);
        }
    }
    // Files the target's own file becomes the copy of: named after the
    // others, in the order an embedded import names them.
    for displaced in decided.displaced {
        out.copies
            .extend(copy_here(tx, source, displaced, &mut chosen).await?);
    }
    // The file the target keeps (whose pushed row lost, or was dropped, or
    // went to the file whose line it continues): sent again to the pusher
    // on its next pull, as is that file (`finish`).
    out.followed = decided.followed.iter().map(|(_, to)| *to).collect();
    let kept: Vec<Uuid> = moved
        .keys()
        .chain(dropped.iter())
        .chain(decided.followed.iter().map(|(from, _)| from))
        .copied()
        .collect();
    if !kept.is_empty() {
        tx.execute(
            "UPDATE file_paths SET change_seq = DEFAULT WHERE path_id = ANY($1)",
            &[&kept],
        )
        .await
        .map_err(Error::pg("keeping a file that lost a conflict"))?;
    }
    Ok(out)
}

/// At the end of a run: every held-back version found its file (a file's
/// row is stamped at or after its versions, so it is in the same run).
/// One that did not is the error an embedded store's import gives for the
/// same rows ([`nexus_core::Error::version_clash`]); nothing is applied.
pub(crate) async fn none_held(tx: &Tx<'_, '_>, source: &str, held: &Held) -> Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    // The lowest clashing version of the first such file (held versions
    // also include ones that do not clash: every version of a diverged
    // file waits), as the embedded import, which meets them in order.
    let held: Vec<&PgVersion> = held.values().flatten().collect();
    let p: Vec<Uuid> = held.iter().map(|v| v.path_id).collect();
    let n: Vec<i32> = held.iter().map(|v| v.version_number).collect();
    let id: Vec<Uuid> = held.iter().map(|v| v.version_id).collect();
    let (v, other) = match clashes(tx, &p, &n, &id).await?.into_iter().next() {
        Some((i, other, _)) => (held[i], other.to_string()),
        None => (held[0], "another version".to_string()),
    };
    let file = tx
        .query_opt(
            "SELECT virtual_path, tenant_id FROM file_paths WHERE path_id = $1",
            &[&v.path_id],
        )
        .await
        .map_err(Error::pg(
            "reading the version a pushed version collides with",
        ))?;
    let (path, tenant) = match file {
        Some(r) => (r.get::<_, String>(0), r.get::<_, String>(1)),
        None => (format!("path id {}", v.row.path_id), String::new()),
    };
    Err(Error::Store(nexus_core::Error::version_clash(
        path,
        v.version_number.into(),
        &v.row.version_id,
        source,
        &format!("the target's version {other} (tenant {tenant})"),
    )))
}

/// The target's rows of the files `ids`, locked until the run commits, so
/// that concurrent pushes decide on what the others committed.
async fn files_here(tx: &Tx<'_, '_>, ids: &[Uuid]) -> Result<HashMap<Uuid, HereFile>> {
    let rows = tx
        .query(
            &format!(
                "SELECT path_id, change_seq, origin_id, deleted_at IS NULL, current_version, \
                 virtual_path, {} FROM file_paths WHERE path_id = ANY($1) ORDER BY path_id FOR UPDATE",
                micros(
                    "CASE WHEN deleted_at IS NULL OR deleted_at = '-infinity' THEN updated_at ELSE deleted_at END"
                )
            ),
            &[&ids],
        )
        .await
        .map_err(Error::pg("reading the target's rows of pushed files"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let version: i32 = r.get(4);
            let here = HereFile {
                change_seq: r.get(1),
                origin: r.get(2),
                live: r.get(3),
                version: version.into(),
                path: r.get(5),
                changed_at: r.get(6),
            };
            (r.get(0), here)
        })
        .collect())
}

/// [`nexus_core::ApplySide::clashes`]: [`clashes`] of pushed versions.
async fn version_clashes(tx: &Tx<'_, '_>, versions: &[PgVersion]) -> Result<Vec<Clash<Uuid>>> {
    let p: Vec<Uuid> = versions.iter().map(|v| v.path_id).collect();
    let n: Vec<i32> = versions.iter().map(|v| v.version_number).collect();
    let id: Vec<Uuid> = versions.iter().map(|v| v.version_id).collect();
    let found = clashes(tx, &p, &n, &id).await?;
    Ok(found
        .into_iter()
        .map(|(i, here, made)| Clash {
            version: id[i],
            file: p[i],
            number: n[i].into(),
            here,
            made: (versions[i].row.created_at, made),
        })
        .collect())
}

/// The pushed versions the target holds in another file: each with the
/// (file, number) that holds it.
async fn held_elsewhere(
    tx: &Tx<'_, '_>,
    versions: &[PgVersion],
) -> Result<Vec<(Uuid, (Uuid, i64))>> {
    let p: Vec<Uuid> = versions.iter().map(|v| v.path_id).collect();
    let id: Vec<Uuid> = versions.iter().map(|v| v.version_id).collect();
    Ok(tx
        .query(
            "SELECT h.version_id, h.path_id, h.version_number FROM unnest($1::uuid[], $2::uuid[]) AS u(p, v) \
             JOIN version_history h ON h.version_id = u.v AND h.path_id <> u.p",
            &[&p, &id],
        )
        .await
        .map_err(Error::pg("finding pushed versions held in another file"))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), i64::from(r.get::<_, i32>(2)))))
        .collect())
}

/// Which of the versions `ids` the target holds (in any file).
async fn versions_here(tx: &Tx<'_, '_>, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    Ok(tx
        .query(
            "SELECT version_id FROM version_history WHERE version_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(Error::pg("comparing pushed versions"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The pushed versions (file `p[i]`, number `n[i]`, id `v[i]`) whose number
/// a different version of the file holds at the target: each as its index,
/// the target's version id and when that was made (microseconds), by file
/// and number.
async fn clashes(
    tx: &Tx<'_, '_>,
    p: &[Uuid],
    n: &[i32],
    v: &[Uuid],
) -> Result<Vec<(usize, Uuid, i64)>> {
    Ok(tx
        .query(
            &format!(
                "SELECT u.i, h.version_id, {} FROM unnest($1::uuid[], $2::int4[], $3::uuid[]) \
                 WITH ORDINALITY AS u(p, n, v, i) \
                 JOIN version_history h ON h.path_id = u.p AND h.version_number = u.n AND h.version_id <> u.v \
                 ORDER BY u.p, u.n",
                micros("h.created_at")
            ),
            &[&p, &n, &v],
        )
        .await
        .map_err(Error::pg("comparing pushed versions"))?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as usize - 1, r.get(1), r.get(2)))
        .collect())
}

/// The file `file` at the target becomes the conflict copy `copy`
/// ([`nexus_core::FilePlan::CopyHere`]), as the target's own change: its
/// row copied to the copy (named, when live, as the other copies of the
/// apply are: `chosen`), its versions from number `from` on moved there
/// (freeing their numbers for the pushed ones), its metadata copied. The
/// copy of a live file is returned, for [`finish`] to mark as an embedded
/// import marks it.
async fn copy_here(
    tx: &Tx<'_, '_>,
    source: &str,
    (file, copy, from): (Uuid, Uuid, i64),
    chosen: &mut HashSet<(String, String)>,
) -> Result<Option<PendingCopy>> {
    let row = tx
        .query_one(
            &format!(
                "SELECT tenant_id, virtual_path, {}, deleted_at IS NULL FROM file_paths WHERE path_id = $1",
                micros("updated_at")
            ),
            &[&file],
        )
        .await
        .map_err(Error::pg("reading a file that becomes a conflict copy"))?;
    let (tenant, path, at, live): (String, String, i64, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let info = ConflictInfo {
        path: path.clone(),
        source: source.to_string(),
        at: Timestamp::from_micros(at),
        reason: ConflictReason::Content,
    };
    let at_path = match live {
        true => crate::replicate::free_copy_path(tx, &tenant, &info, chosen).await?,
        false => path,
    };
    let from = i32::try_from(from).map_err(|_| Error::Conversion {
        table: "version_history",
        problem: format!("version number {from} is out of range"),
    })?;
    // (Replacing a row the copy has already, as an embedded import does.)
    let copy_file = FILE_PATHS.copy_rows_of_file(
        "file_paths",
        "$1",
        &[("path_id", "$2"), ("virtual_path", "$3")],
        true,
    );
    tx.execute(&copy_file, &[&file, &copy, &at_path])
        .await
        .map_err(Error::pg("copying a file's row to its conflict copy"))?;
    tx.execute(
        "UPDATE version_history SET path_id = $2, origin_id = NULL, origin_seq = NULL, \
         change_seq = DEFAULT WHERE path_id = $1 AND version_number >= $3",
        &[&file, &copy, &from],
    )
    .await
    .map_err(Error::pg("moving a file's versions to its conflict copy"))?;
    let copy_keys =
        FILE_METADATA.copy_rows_of_file("file_metadata", "$1", &[("path_id", "$2")], false);
    tx.execute(&copy_keys, &[&file, &copy])
        .await
        .map_err(Error::pg("copying a file's metadata to its conflict copy"))?;
    Ok(live.then_some(PendingCopy {
        tenant,
        path_id: copy,
        copy: at_path,
        info,
    }))
}

/// A file's versions (files `$1`) made the target's own change.
const OWN_VERSIONS: &str =
    "UPDATE version_history SET origin_id = NULL, origin_seq = NULL WHERE path_id = ANY($1)";
/// A file's metadata (files `$1`) made the target's own change.
const OWN_KEYS: &str =
    "UPDATE file_metadata SET origin_id = NULL, origin_seq = NULL WHERE path_id = ANY($1)";

/// After the upsert: marks each copy (and its versions and metadata) as the
/// target's own change and sets its conflict key; moves each file the
/// target kept to the path the pushed rename gave it, hidden and added to
/// `live_ids` ([`crate::replicate::make_live`] makes it live there, or a
/// conflict copy beside it when another file holds the path); marks pushed
/// rows that took the target's path as the target's own.
pub(crate) async fn finish(
    tx: &Tx<'_, '_>,
    resolved: Resolved,
    live_ids: &mut Vec<Uuid>,
) -> Result<Vec<ConflictCopy>> {
    for (path_id, path, at) in &resolved.moves {
        let at = crate::convert::ts(*at, "a moved file's updated_at").map_err(|problem| {
            Error::Conversion {
                table: "file_paths",
                problem,
            }
        })?;
        tx.execute(
            "UPDATE file_paths SET virtual_path = $2, updated_at = $3, deleted_at = '-infinity', \
             origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT WHERE path_id = $1",
            &[path_id, path, &at],
        )
        .await
        .map_err(Error::pg("moving a kept file to its pushed path"))?;
        live_ids.push(*path_id);
    }
    // Pushed rows that took the target's path, and redundant copies landed
    // deleted: the target's own changes, which the pusher pulls.
    let own: Vec<Uuid> = resolved
        .renamed
        .iter()
        .chain(&resolved.retired)
        .copied()
        .collect();
    if !own.is_empty() {
        tx.execute(
            "UPDATE file_paths SET origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT \
             WHERE path_id = ANY($1)",
            &[&own],
        )
        .await
        .map_err(Error::pg(
            "marking renamed files and retired copies as the target's own",
        ))?;
    }
    if !resolved.renamed.is_empty() {
        // They held these paths here before the push: they keep them
        // against the push's other files that want one (a new file the
        // pusher made at the path that the rename took here). Unless their
        // batch landed live (`Landing::Live`): then they took their paths
        // in it, and nothing is left to make live.
        let first: HashSet<Uuid> = resolved.renamed.iter().copied().collect();
        let hidden = live_ids.len();
        live_ids.retain(|id| !first.contains(id));
        if live_ids.len() < hidden {
            live_ids.splice(0..0, resolved.renamed);
        }
    }
    if !resolved.followed.is_empty() {
        for sql in [
            "UPDATE file_paths SET origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT \
             WHERE path_id = ANY($1)",
            OWN_VERSIONS,
            OWN_KEYS,
        ] {
            tx.execute(sql, &[&resolved.followed])
                .await
                .map_err(Error::pg(
                    "marking a file that pushed versions followed into",
                ))?;
        }
    }
    let copies = resolved.copies;
    let mut out = Vec::with_capacity(copies.len());
    for c in copies {
        for sql in [
            // Stamped one microsecond after the row it copies, as an
            // embedded import stamps the copies it makes.
            "UPDATE file_paths SET origin_id = NULL, origin_seq = NULL, \
             updated_at = updated_at + interval '1 microsecond' WHERE path_id = ANY($1)",
            OWN_VERSIONS,
            OWN_KEYS,
        ] {
            tx.execute(sql, &[&&[c.path_id][..]])
                .await
                .map_err(Error::pg("marking a conflict copy"))?;
        }
        mark_conflict(tx, c.path_id, &c.info).await?;
        out.push(c.info.into_copy(c.tenant, c.copy, c.path_id.to_string()));
    }
    Ok(out)
}
