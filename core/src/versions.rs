//! Version history: list, get, rollback, diff.

use crate::engine::{Engine, RowRef, int, text};
use crate::error::{Error, Result};
use crate::files::{insert_version, require_live, update_file, version_id};
use crate::model::{FileRecord, Timestamp, VersionDiff, VersionInfo, VersionSource};
use crate::store::Store;
use crate::validate::validate_path;

/// The record a rollback to `target` leaves over the live record `current`:
/// the target's content as the next version; identity and `created_at` are
/// kept. Both backends write this.
pub fn rolled_back_record(current: FileRecord, target: VersionInfo, now: Timestamp) -> FileRecord {
    FileRecord {
        backend: target.backend,
        physical_path: target.physical_path,
        size: target.size,
        etag: target.etag,
        mime_type: target.mime_type,
        modified_at: now,
        version: current.version + 1,
        ..current
    }
}

/// The change reason a rollback to `version` records in the history.
pub fn rollback_reason(version: u32) -> String {
    format!("Rollback to version {version}")
}

macro_rules! select_version {
    ($($rest:literal),*) => {
        concat!(
            "SELECT v.version_number, v.content_hash, v.size_bytes, v.mime_type, v.backend_id, v.physical_path, \
             v.source_type, v.change_reason, p.version_number, v.created_at FROM version_history v \
             LEFT JOIN version_history p ON p.version_id = v.parent_version_id ",
            $($rest),*
        )
    };
}

fn version_row(r: &RowRef<'_>) -> Result<VersionInfo> {
    let source = r.text(6)?;
    Ok(VersionInfo {
        version: u32::try_from(r.int(0)?).unwrap_or(u32::MAX),
        etag: r.opt_text(1)?,
        size: u64::try_from(r.int(2)?).unwrap_or(0),
        mime_type: r.opt_text(3)?,
        backend: r.text(4)?,
        physical_path: r.text(5)?,
        source: VersionSource::parse(&source).ok_or_else(|| Error::Corrupt {
            table: "version_history",
            detail: format!("unknown source_type {source:?}"),
        })?,
        change_reason: r.opt_text(7)?,
        parent_version: r.opt_int(8)?.and_then(|v| u32::try_from(v).ok()),
        created_at: Timestamp::from_micros(r.int(9)?),
    })
}

fn load_version(e: &mut Engine, path_id: &str, version: u32) -> Result<Option<VersionInfo>> {
    e.query_one(
        select_version!("WHERE v.path_id = ?1 AND v.version_number = ?2"),
        &[text(path_id), int(i64::from(version))],
        |r| version_row(&r),
    )
}

fn require_version(e: &mut Engine, file: &FileRecord, version: u32) -> Result<VersionInfo> {
    load_version(e, &file.path_id, version)?.ok_or_else(|| Error::VersionNotFound {
        path: file.path.clone(),
        version,
    })
}

impl Store {
    /// The versions of the file at `path`, newest first.
    pub async fn list_versions(&self, path: &str) -> Result<Vec<VersionInfo>> {
        validate_path(path)?;
        let mut e = self.reader().await;
        e.read(|e| {
            let file = require_live(e, &self.tenant, path)?;
            e.query(
                select_version!("WHERE v.path_id = ?1 ORDER BY v.version_number DESC"),
                &[text(&file.path_id)],
                |r| version_row(&r),
            )
        })
    }

    /// One version of the file at `path`, or `None` if it has no such version.
    pub async fn get_version(&self, path: &str, version: u32) -> Result<Option<VersionInfo>> {
        validate_path(path)?;
        let mut e = self.reader().await;
        e.read(|e| {
            let file = require_live(e, &self.tenant, path)?;
            load_version(e, &file.path_id, version)
        })
    }

    /// Makes the content of `version` current again, as a new version N+1
    /// (`source` [`VersionSource::Rollback`], reason `Rollback to version V`).
    pub async fn rollback(&self, path: &str, version: u32) -> Result<FileRecord> {
        validate_path(path)?;
        let (tenant, path) = (self.tenant.clone(), path.to_string());
        self.write(move |e, seq| {
            let current = require_live(e, &tenant, &path)?;
            let target = require_version(e, &current, version)?;
            let parent = version_id(e, &current.path_id, current.version)?;
            let now = e.now();
            let record = rolled_back_record(current, target, now);
            update_file(e, seq, &record)?;
            let reason = rollback_reason(version);
            insert_version(
                e,
                seq,
                &record,
                VersionSource::Rollback,
                Some(&reason),
                parent.as_deref(),
            )?;
            Ok(record)
        })
        .await
    }

    /// Compares two versions of the file at `path`.
    pub async fn diff_versions(&self, path: &str, v1: u32, v2: u32) -> Result<VersionDiff> {
        validate_path(path)?;
        let mut e = self.reader().await;
        e.read(|e| {
            let file = require_live(e, &self.tenant, path)?;
            let a = require_version(e, &file, v1)?;
            let b = require_version(e, &file, v2)?;
            Ok(VersionDiff {
                path: file.path,
                content_changed: a.etag != b.etag,
                size_delta: b.size as i64 - a.size as i64,
                v1: a,
                v2: b,
            })
        })
    }
}
