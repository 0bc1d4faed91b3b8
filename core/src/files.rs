//! Files: put, get, delete, list, rename, batches, implicit directories.

use std::collections::HashMap;

use crate::cursor;
use crate::engine::{Engine, RowRef, Seq, int, opt_text, text};
use crate::error::{Error, Result};
use crate::listing::{
    DIRECTORY_BATCH, ScanFetch, ScanFrom as From, directories_step, scan_batch, scan_bounds,
    scan_start,
};
use crate::model::{
    FileRecord, ListOptions, NewFile, Page, Precondition, Timestamp, VersionSource,
};
use crate::store::Store;
use crate::validate::{
    MAX_NAME_BYTES, MAX_PATH_BYTES, prefix_upper_bound, validate_name, validate_path,
    validate_prefix, validate_text,
};

/// The most records one page of a listing holds.
pub const MAX_PAGE_SIZE: usize = 10_000;

macro_rules! select_file {
    ($($rest:literal),*) => {
        concat!(
            "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, \
             file_type, created_at, updated_at, current_version FROM file_paths ",
            $($rest),*
        )
    };
}

fn file_row(r: &RowRef<'_>, tenant: &str) -> Result<FileRecord> {
    Ok(FileRecord {
        path_id: r.text(0)?,
        path: r.text(1)?,
        backend: r.text(2)?,
        physical_path: r.text(3)?,
        size: u64::try_from(r.int(4)?).unwrap_or(0),
        etag: r.opt_text(5)?,
        mime_type: r.opt_text(6)?,
        created_at: Timestamp::from_micros(r.int(7)?),
        modified_at: Timestamp::from_micros(r.int(8)?),
        version: u32::try_from(r.int(9)?).unwrap_or(u32::MAX),
        tenant: tenant.to_string(),
    })
}

/// The live record at `path`, if any.
pub(crate) fn load_live(e: &mut Engine, tenant: &str, path: &str) -> Result<Option<FileRecord>> {
    e.query_one(
        select_file!("WHERE tenant_id = ?1 AND virtual_path = ?2 AND deleted_at IS NULL"),
        &[text(tenant), text(path)],
        |r| file_row(&r, tenant),
    )
}

/// The live record at `path`, or [`Error::NotFound`].
pub(crate) fn require_live(e: &mut Engine, tenant: &str, path: &str) -> Result<FileRecord> {
    load_live(e, tenant, path)?.ok_or_else(|| Error::NotFound {
        path: path.to_string(),
    })
}

/// Checks everything of a [`NewFile`] before any write.
pub fn validate_new_file(f: &NewFile) -> Result<()> {
    validate_path(&f.path)?;
    validate_name("backend", &f.backend)?;
    validate_text("physical_path", &f.physical_path, MAX_PATH_BYTES)?;
    if i64::try_from(f.size).is_err() {
        return Err(Error::invalid(
            "size",
            &f.size.to_string(),
            "must be at most 2^63 - 1",
        ));
    }
    if let Some(etag) = &f.etag {
        validate_name("etag", etag)?;
    }
    if let Some(mime) = &f.mime_type {
        validate_name("mime_type", mime)?;
    }
    Ok(())
}

/// The record a put of `file` creates when its path has no live record:
/// version 1, created and modified now unless the caller gave times.
pub fn new_record(file: &NewFile, tenant: &str, path_id: String, now: Timestamp) -> FileRecord {
    let modified = file.modified_at.unwrap_or(now);
    FileRecord {
        path: file.path.clone(),
        backend: file.backend.clone(),
        physical_path: file.physical_path.clone(),
        size: file.size,
        etag: file.etag.clone(),
        mime_type: file.mime_type.clone(),
        created_at: file.created_at.unwrap_or(modified),
        modified_at: modified,
        version: 1,
        tenant: tenant.to_string(),
        path_id,
    }
}

/// The record a put of `file` leaves over the live record `old`, and whether
/// it is new content: an etag different from the stored one (to or from none
/// included) makes the next version; identity and `created_at` are kept.
pub fn updated_record(old: FileRecord, file: &NewFile, now: Timestamp) -> (FileRecord, bool) {
    let new_content = old.etag != file.etag;
    let record = FileRecord {
        backend: file.backend.clone(),
        physical_path: file.physical_path.clone(),
        size: file.size,
        etag: file.etag.clone(),
        mime_type: file.mime_type.clone(),
        modified_at: file.modified_at.unwrap_or(now),
        version: if new_content {
            old.version + 1
        } else {
            old.version
        },
        ..old
    };
    (record, new_content)
}

/// Whether `existing` satisfies `pre`; otherwise [`Error::Conflict`] naming both.
pub fn check_precondition(
    path: &str,
    pre: &Precondition,
    existing: Option<&FileRecord>,
) -> Result<()> {
    let actual = match existing {
        None => "absent".to_string(),
        Some(r) => match pre {
            Precondition::Etag(_) => match &r.etag {
                Some(e) => format!("etag {e:?}"),
                None => "no etag".to_string(),
            },
            _ => format!("version {}", r.version),
        },
    };
    let holds = match (pre, existing) {
        (Precondition::Absent, None) => true,
        (Precondition::Version(v), Some(r)) => r.version == *v,
        (Precondition::Etag(e), Some(r)) => &r.etag == e,
        _ => false,
    };
    if holds {
        Ok(())
    } else {
        Err(Error::Conflict {
            path: path.to_string(),
            expected: pre.to_string(),
            actual,
        })
    }
}

pub(crate) fn insert_version(
    e: &mut Engine,
    seq: Seq,
    record: &FileRecord,
    source: VersionSource,
    reason: Option<&str>,
    parent: Option<&str>,
) -> Result<()> {
    let id = e.new_id();
    e.execute(
        "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, \
         content_hash, size_bytes, mime_type, parent_version_id, source_type, change_reason, created_by, \
         created_at, change_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13)",
        &[
            text(&id),
            text(&record.path_id),
            int(i64::from(record.version)),
            text(&record.backend),
            text(&record.physical_path),
            opt_text(record.etag.as_deref()),
            int(record.size as i64),
            opt_text(record.mime_type.as_deref()),
            opt_text(parent),
            text(source.as_str()),
            opt_text(reason),
            int(record.modified_at.as_micros()),
            int(seq),
        ],
    )?;
    Ok(())
}

pub(crate) fn version_id(e: &mut Engine, path_id: &str, version: u32) -> Result<Option<String>> {
    e.query_one(
        "SELECT version_id FROM version_history WHERE path_id = ?1 AND version_number = ?2",
        &[text(path_id), int(i64::from(version))],
        |r| r.text(0),
    )
}

/// Writes the current state of `record` (already carrying its new version).
pub(crate) fn update_file(e: &mut Engine, seq: Seq, record: &FileRecord) -> Result<()> {
    e.execute(
        "UPDATE file_paths SET backend_id = ?1, physical_path = ?2, size_bytes = ?3, content_hash = ?4, \
         file_type = ?5, updated_at = ?6, current_version = ?7, change_seq = ?8 WHERE path_id = ?9",
        &[
            text(&record.backend),
            text(&record.physical_path),
            int(record.size as i64),
            opt_text(record.etag.as_deref()),
            opt_text(record.mime_type.as_deref()),
            int(record.modified_at.as_micros()),
            int(i64::from(record.version)),
            int(seq),
            text(&record.path_id),
        ],
    )?;
    Ok(())
}

fn put_in_txn(
    e: &mut Engine,
    tenant: &str,
    seq: Seq,
    file: &NewFile,
    pre: Option<&Precondition>,
) -> Result<FileRecord> {
    let existing = load_live(e, tenant, &file.path)?;
    if let Some(pre) = pre {
        check_precondition(&file.path, pre, existing.as_ref())?;
    }
    let now = e.now();
    match existing {
        None => {
            let path_id = e.new_id();
            let record = new_record(file, tenant, path_id, now);
            e.execute(
                "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, \
                 content_hash, file_type, created_at, updated_at, deleted_at, current_version, change_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 1, ?11)",
                &[
                    text(&record.path_id),
                    text(tenant),
                    text(&record.path),
                    text(&record.backend),
                    text(&record.physical_path),
                    int(record.size as i64),
                    opt_text(record.etag.as_deref()),
                    opt_text(record.mime_type.as_deref()),
                    int(record.created_at.as_micros()),
                    int(record.modified_at.as_micros()),
                    int(seq),
                ],
            )?;
            insert_version(e, seq, &record, VersionSource::Original, None, None)?;
            Ok(record)
        }
        Some(old) => {
            let old_version = old.version;
            let (record, new_content) = updated_record(old, file, now);
            update_file(e, seq, &record)?;
            if new_content {
                let parent = version_id(e, &record.path_id, old_version)?;
                insert_version(
                    e,
                    seq,
                    &record,
                    VersionSource::Update,
                    None,
                    parent.as_deref(),
                )?;
            } else {
                // Same content, maybe a new location: keep the version's
                // record pointing at where the content now lives.
                e.execute(
                    "UPDATE version_history SET backend_id = ?1, physical_path = ?2, size_bytes = ?3, \
                     mime_type = ?4, change_seq = ?5 WHERE path_id = ?6 AND version_number = ?7",
                    &[
                        text(&record.backend),
                        text(&record.physical_path),
                        int(record.size as i64),
                        opt_text(record.mime_type.as_deref()),
                        int(seq),
                        text(&record.path_id),
                        int(i64::from(record.version)),
                    ],
                )?;
            }
            Ok(record)
        }
    }
}

fn delete_in_txn(e: &mut Engine, tenant: &str, seq: Seq, path: &str) -> Result<Option<FileRecord>> {
    let Some(record) = load_live(e, tenant, path)? else {
        return Ok(None);
    };
    // Later than the live row it deletes (see `stamp_after`).
    let at = crate::meta::stamp_after(e, record.modified_at.as_micros());
    e.execute(
        "UPDATE file_paths SET deleted_at = ?1, change_seq = ?2 WHERE path_id = ?3",
        &[int(at), int(seq), text(&record.path_id)],
    )?;
    Ok(Some(record))
}

/// Live records in the range of `prefix` from `from`, in path order, at most
/// `limit` (see [`crate::listing`] for which rows belong).
fn scan(
    e: &mut Engine,
    tenant: &str,
    prefix: &str,
    recursive: bool,
    from: From,
    limit: usize,
) -> Result<Vec<FileRecord>> {
    let (_, upper) = scan_bounds(prefix);
    let mut from = scan_start(prefix, from);
    let mut items = Vec::new();
    loop {
        let batch = scan_batch(limit, items.len());
        let params = |bound: &str| [text(tenant), text(bound), text(&upper), int(batch as i64)];
        // Rows go straight into the listing as the engine reads them, and
        // a fetch stops at the first subdirectory a non-recursive listing
        // skips.
        let mut fetch = ScanFetch::new(prefix, recursive);
        let take = |r: RowRef<'_>| Ok(fetch.take(file_row(&r, tenant)?, &mut items));
        match &from {
            From::Including(s) => e.query_each(
                select_file!(
                    "WHERE tenant_id = ?1 AND virtual_path >= ?2 AND virtual_path < ?3 ",
                    "AND deleted_at IS NULL ORDER BY virtual_path LIMIT ?4"
                ),
                &params(s),
                take,
            )?,
            From::After(s) => e.query_each(
                select_file!(
                    "WHERE tenant_id = ?1 AND virtual_path > ?2 AND virtual_path < ?3 ",
                    "AND deleted_at IS NULL ORDER BY virtual_path LIMIT ?4"
                ),
                &params(s),
                take,
            )?,
        }
        match fetch.next(batch, limit, &items) {
            Some(next) => from = next,
            None => return Ok(items),
        }
    }
}

/// The implicit directories directly below `prefix` (full paths, no
/// trailing `/`), in path order: one seek per directory found.
fn scan_directories(e: &mut Engine, tenant: &str, prefix: &str) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    let mut from = From::Including(prefix.to_string());
    loop {
        let rows = scan(e, tenant, prefix, true, from, DIRECTORY_BATCH)?;
        match directories_step(prefix, &rows, &mut dirs) {
            Some(next) => from = next,
            None => return Ok(dirs),
        }
    }
}

fn is_directory_in(e: &mut Engine, tenant: &str, path: &str) -> Result<bool> {
    let dir = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    let upper = prefix_upper_bound(&dir).expect("non-empty");
    Ok(e
        .query_one(
            "SELECT 1 FROM file_paths WHERE tenant_id = ?1 AND virtual_path >= ?2 AND virtual_path < ?3 \
             AND deleted_at IS NULL LIMIT 1",
            &[text(tenant), text(&dir), text(&upper)],
            |_| Ok(()),
        )?
        .is_some())
}

impl Store {
    /// Creates or updates the file at `file.path` (an upsert by path).
    ///
    /// An update keeps `created_at` and the identity; if the etag differs
    /// from the stored one, the version goes up by one and the new version is
    /// recorded in the history. A path that was deleted gets a new identity,
    /// without the old metadata.
    pub async fn put(&self, file: NewFile) -> Result<FileRecord> {
        validate_new_file(&file)?;
        let tenant = self.tenant.clone();
        self.write(move |e, seq| put_in_txn(e, &tenant, seq, &file, None))
            .await
    }

    /// Like [`Store::put`], but only if the stored state matches `expected`;
    /// otherwise [`Error::Conflict`] and nothing is written.
    pub async fn put_if(&self, file: NewFile, expected: Precondition) -> Result<FileRecord> {
        validate_new_file(&file)?;
        let tenant = self.tenant.clone();
        self.write(move |e, seq| put_in_txn(e, &tenant, seq, &file, Some(&expected)))
            .await
    }

    /// Puts every file in one transaction: all or none. Every file is
    /// validated before anything is written. Later entries for the same
    /// path update earlier ones.
    pub async fn put_batch(&self, files: &[NewFile]) -> Result<Vec<FileRecord>> {
        for f in files {
            validate_new_file(f)?;
        }
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, files) = (self.tenant.clone(), files.to_vec());
        self.write(move |e, seq| {
            files
                .iter()
                .map(|f| put_in_txn(e, &tenant, seq, f, None))
                .collect()
        })
        .await
    }

    /// The live file at `path`, or `None`.
    pub async fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        validate_path(path)?;
        let mut e = self.reader().await;
        load_live(&mut e, &self.tenant, path)
    }

    /// Whether a live file exists at `path`.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.get(path).await?.is_some())
    }

    /// The live files at `paths`, read in one snapshot; missing ones map to `None`.
    pub async fn get_batch<S: AsRef<str>>(
        &self,
        paths: &[S],
    ) -> Result<HashMap<String, Option<FileRecord>>> {
        for p in paths {
            validate_path(p.as_ref())?;
        }
        if paths.is_empty() {
            return Ok(HashMap::new());
        }
        let mut e = self.reader().await;
        e.read(|e| {
            paths
                .iter()
                .map(|p| {
                    Ok((
                        p.as_ref().to_string(),
                        load_live(e, &self.tenant, p.as_ref())?,
                    ))
                })
                .collect()
        })
    }

    /// Soft-deletes the file at `path`: it disappears from reads and lists, its
    /// record stays for history and sync. Returns the record deleted, or
    /// `None` when there was nothing at `path` (a no-op).
    pub async fn delete(&self, path: &str) -> Result<Option<FileRecord>> {
        validate_path(path)?;
        let (tenant, path) = (self.tenant.clone(), path.to_string());
        self.write(move |e, seq| delete_in_txn(e, &tenant, seq, &path))
            .await
    }

    /// Deletes every path in one transaction; returns how many existed.
    pub async fn delete_batch<S: AsRef<str>>(&self, paths: &[S]) -> Result<usize> {
        for p in paths {
            validate_path(p.as_ref())?;
        }
        if paths.is_empty() {
            return Ok(0);
        }
        let tenant = self.tenant.clone();
        let paths: Vec<String> = paths.iter().map(|p| p.as_ref().to_string()).collect();
        self.write(move |e, seq| {
            let mut n = 0;
            for p in &paths {
                n += usize::from(delete_in_txn(e, &tenant, seq, p)?.is_some());
            }
            Ok(n)
        })
        .await
    }

    /// Every live file whose path starts with `prefix` (raw string,
    /// case-sensitive), sorted by path in byte order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<FileRecord>> {
        validate_prefix(prefix)?;
        let mut e = self.reader().await;
        e.read(|e| {
            scan(
                e,
                &self.tenant,
                prefix,
                true,
                From::Including(prefix.to_string()),
                usize::MAX,
            )
        })
    }

    /// One page of a listing; pass `next_cursor` back to get the next one.
    pub async fn list_page(&self, opts: &ListOptions) -> Result<Page> {
        validate_prefix(&opts.prefix)?;
        let limit = opts.limit.clamp(1, MAX_PAGE_SIZE);
        let filters = cursor::filter_hash(&self.tenant, &opts.prefix, opts.recursive);
        let from = match &opts.cursor {
            Some(c) => From::After(cursor::decode(c, &filters, &opts.prefix)?),
            None => From::Including(opts.prefix.clone()),
        };
        let mut e = self.reader().await;
        // A page may take several statements (a non-recursive listing seeks
        // past each subdirectory): one snapshot for all of them.
        let mut items = e.read(|e| {
            scan(
                e,
                &self.tenant,
                &opts.prefix,
                opts.recursive,
                from,
                limit + 1,
            )
        })?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|last| cursor::encode(&filters, &last.path))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// The implicit directories directly below `prefix` (`/dir/` gives
    /// `/dir/a` for `/dir/a/x`), sorted, as full paths without a trailing `/`.
    pub async fn list_directories(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let mut e = self.reader().await;
        e.read(|e| scan_directories(e, &self.tenant, prefix))
    }

    /// Whether `path` is an implicit directory: some live file lies below it.
    /// `/` is a directory as soon as the tenant has a file.
    pub async fn is_directory(&self, path: &str) -> Result<bool> {
        if path != "/" {
            validate_path(path)?;
        }
        let mut e = self.reader().await;
        is_directory_in(&mut e, &self.tenant, path)
    }

    /// Renames a file, or a directory with everything below it. Identity,
    /// metadata and versions follow. Fails with [`Error::NotFound`] when
    /// `old` is neither, [`Error::AlreadyExists`] when `new` is a file or a
    /// non-empty directory. Returns how many files moved.
    pub async fn rename(&self, old: &str, new: &str) -> Result<usize> {
        validate_path(old)?;
        validate_path(new)?;
        if new.len() > old.len() && new.starts_with(old) && new.as_bytes()[old.len()] == b'/' {
            return Err(Error::InvalidPath {
                path: new.to_string(),
                reason: "cannot move a path below itself",
            });
        }
        let tenant = self.tenant.clone();
        let (old, new) = (old.to_string(), new.to_string());
        let watchers = self.shared.pool.watchers.clone();
        self.write(move |e, seq| {
            let (tenant, old, new) = (&*tenant, old.as_str(), new.as_str());
            let file = load_live(e, tenant, old)?;
            let old_dir = format!("{old}/");
            let children = scan(e, tenant, &old_dir, true, From::Including(old_dir.clone()), usize::MAX)?;
            if file.is_none() && children.is_empty() {
                return Err(Error::NotFound { path: old.to_string() });
            }
            if old == new {
                return Ok(0);
            }
            if load_live(e, tenant, new)?.is_some() || is_directory_in(e, tenant, new)? {
                return Err(Error::AlreadyExists { path: new.to_string() });
            }
            let mut moved = 0;
            for (record, target) in file
                .into_iter()
                .map(|f| (f, new.to_string()))
                .chain(children.into_iter().map(|c| {
                    let target = format!("{new}/{}", &c.path[old_dir.len()..]);
                    (c, target)
                }))
            {
                if target.len() > MAX_PATH_BYTES {
                    return Err(Error::InvalidPath {
                        path: crate::error::shorten(&target),
                        reason: "the renamed path would be longer than 4096 bytes",
                    });
                }
                // Later than the row it moves (see `stamp_after`).
                let at = crate::meta::stamp_after(e, record.modified_at.as_micros());
                e.execute(
                    "UPDATE file_paths SET virtual_path = ?1, updated_at = ?2, change_seq = ?3 WHERE path_id = ?4",
                    &[text(&target), int(at), int(seq), text(&record.path_id)],
                )?;
                watchers.moved_from(tenant, &record.path);
                moved += 1;
            }
            Ok(moved)
        })
        .await
    }
}

const _: () = assert!(MAX_NAME_BYTES < MAX_PATH_BYTES);
