//! Source rows checked for PostgreSQL, with the values the conflict rule
//! reads (ids, numbers) parsed. A value that does not convert is a message
//! naming the table, the row and the value; the statements write a row's
//! values from the row itself (`pg_tables::values`).

use std::time::SystemTime;

use nexus_core::{ChunkRow, FileRow, MetadataRow, TombstoneRow, VersionRow};
use uuid::Uuid;

pub(crate) use nexus_postgres::codec::{timestamp as ts, uuid};

fn opt_ts(micros: Option<i64>, what: &str) -> Result<Option<SystemTime>, String> {
    micros.map(|m| ts(m, what)).transpose()
}

fn int4(v: i64, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} = {v} does not fit a PostgreSQL integer"))
}

fn json(s: &str, what: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(s)
        .map(|_| ())
        .map_err(|e| format!("{what} is not valid JSON ({e}): {}", shorten(s)))
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[derive(Clone)]
pub(crate) struct PgFile {
    pub path_id: Uuid,
    pub row: FileRow,
    pub deleted_at: Option<SystemTime>,
    pub current_version: i32,
}

pub(crate) fn file(row: FileRow) -> Result<PgFile, String> {
    let at = |field: &str| {
        format!(
            "file {:?} (tenant {:?}) {field}",
            row.virtual_path, row.tenant_id
        )
    };
    ts(row.created_at, &at("created_at"))?;
    ts(row.updated_at, &at("updated_at"))?;
    Ok(PgFile {
        path_id: uuid(&row.path_id, &at("path_id"))?,
        deleted_at: opt_ts(row.deleted_at, &at("deleted_at"))?,
        current_version: int4(row.current_version, &at("current_version"))?,
        row,
    })
}

#[derive(Clone)]
pub(crate) struct PgVersion {
    pub version_id: Uuid,
    pub path_id: Uuid,
    pub version_number: i32,
    pub row: VersionRow,
}

pub(crate) fn version(row: VersionRow) -> Result<PgVersion, String> {
    let at = |field: &str| {
        format!(
            "version {} of path id {:?} {field}",
            row.version_number, row.path_id
        )
    };
    if let Some(p) = &row.parent_version_id {
        uuid(p, &at("parent_version_id"))?;
    }
    ts(row.created_at, &at("created_at"))?;
    Ok(PgVersion {
        version_id: uuid(&row.version_id, &at("version_id"))?,
        path_id: uuid(&row.path_id, &at("path_id"))?,
        version_number: int4(row.version_number, &at("version_number"))?,
        row,
    })
}

#[derive(Clone)]
pub(crate) struct PgMetadata {
    pub path_id: Uuid,
    pub row: MetadataRow,
}

pub(crate) fn metadata(row: MetadataRow) -> Result<PgMetadata, String> {
    let at = |field: &str| {
        format!(
            "metadata {:?} of path id {:?} {field}",
            row.key, row.path_id
        )
    };
    json(&row.value, &at("value"))?;
    ts(row.created_at, &at("created_at"))?;
    ts(row.updated_at, &at("updated_at"))?;
    Ok(PgMetadata {
        path_id: uuid(&row.path_id, &at("path_id"))?,
        row,
    })
}

#[derive(Clone)]
pub(crate) struct PgChunk {
    pub row: ChunkRow,
}

pub(crate) fn chunk(row: ChunkRow) -> Result<PgChunk, String> {
    let at = |field: &str| {
        format!(
            "chunk {:?} (tenant {:?}) {field}",
            row.content_hash, row.tenant_id
        )
    };
    ts(row.created_at, &at("created_at"))?;
    opt_ts(row.last_accessed_at, &at("last_accessed_at"))?;
    opt_ts(row.protected_until, &at("protected_until"))?;
    Ok(PgChunk { row })
}

#[derive(Clone)]
pub(crate) struct PgTombstone {
    /// For `file_metadata` tombstones, key1 as a path id.
    pub path_id: Option<Uuid>,
    pub row: TombstoneRow,
}

pub(crate) fn tombstone(row: TombstoneRow) -> Result<PgTombstone, String> {
    let at = |field: &str| {
        format!(
            "tombstone {}/{:?}/{:?} {field}",
            row.table_name, row.key1, row.key2
        )
    };
    let path_id = match row.table_name.as_str() {
        "file_metadata" => Some(uuid(&row.key1, &at("key1"))?),
        "content_chunks" => None,
        other => return Err(at(&format!("names an unknown table {other:?}"))),
    };
    ts(row.deleted_at, &at("deleted_at"))?;
    Ok(PgTombstone { path_id, row })
}

/// One window of source changes, converted.
#[derive(Default, Clone)]
pub(crate) struct Batch {
    pub files: Vec<PgFile>,
    pub versions: Vec<PgVersion>,
    pub metadata: Vec<PgMetadata>,
    pub chunks: Vec<PgChunk>,
    pub tombstones: Vec<PgTombstone>,
}

/// Converts a window; every value that does not convert is pushed to
/// `problems` (and its row left out).
pub(crate) fn batch(changes: nexus_core::Changes, problems: &mut Vec<String>) -> Batch {
    fn each<R, P>(
        rows: Vec<R>,
        f: fn(R) -> Result<P, String>,
        out: &mut Vec<P>,
        problems: &mut Vec<String>,
    ) {
        for r in rows {
            match f(r) {
                Ok(p) => out.push(p),
                Err(e) => problems.push(e),
            }
        }
    }
    let mut b = Batch::default();
    each(changes.files, file, &mut b.files, problems);
    each(changes.versions, version, &mut b.versions, problems);
    each(changes.metadata, metadata, &mut b.metadata, problems);
    each(changes.chunks, chunk, &mut b.chunks, problems);
    each(changes.tombstones, tombstone, &mut b.tombstones, problems);
    b
}

// The rows as `nexus_core::resolve` plans them (the one algorithm an
// embedded import runs over its own rows): a file's id is both the UUID
// and the row's text.
macro_rules! of_file {
    ($($row:ty),*) => {$(
        impl nexus_core::OfFile for $row {
            type Id = Uuid;
            fn file(&self) -> &Uuid {
                &self.path_id
            }
            fn move_to(&mut self, file: &Uuid) {
                self.path_id = *file;
                self.row.path_id = file.to_string();
            }
        }
    )*};
}
of_file!(PgFile, PgVersion, PgMetadata);

impl nexus_core::ArrivingFile for PgFile {
    fn side(&self) -> nexus_core::FileSide<'_> {
        nexus_core::FileSide {
            live: self.deleted_at.is_none(),
            version: self.current_version.into(),
            path: &self.row.virtual_path,
            changed_at: self.row.changed_at(),
        }
    }
    fn merge_at(&mut self, path: String, at: i64) {
        self.row.virtual_path = path;
        self.row.updated_at = at;
    }
    fn retire(&mut self, at: i64) {
        self.row.deleted_at = Some(at);
        // A time the row held converts; one microsecond later does too.
        self.deleted_at =
            Some(ts(at, "deleted_at").expect("a microsecond after a time that converted"));
    }
}

impl nexus_core::ArrivingVersion for PgVersion {
    fn id(&self) -> &Uuid {
        &self.version_id
    }
    fn number(&self) -> i64 {
        self.version_number.into()
    }
}

impl nexus_core::KeyChange<Uuid> for PgMetadata {
    fn key_change(&self) -> Option<(&Uuid, &str, nexus_core::KeySide<'_>)> {
        self.row
            .key_change()
            .map(|(_, key, side)| (&self.path_id, key, side))
    }
}

impl nexus_core::KeyChange<Uuid> for PgTombstone {
    fn key_change(&self) -> Option<(&Uuid, &str, nexus_core::KeySide<'_>)> {
        let (_, key, side) = self.row.key_change()?;
        Some((self.path_id.as_ref()?, key, side))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_or_say_why() {
        assert!(
            uuid("not-a-uuid", "path_id")
                .unwrap_err()
                .contains("\"not-a-uuid\" is not a UUID")
        );
        assert!(
            json("{oops", "value")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(int4(1 << 40, "v").is_err());
    }
}
