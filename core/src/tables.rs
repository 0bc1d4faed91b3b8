//! The five tables that sync moves, described once: their columns (in the
//! field order of the row types of [`crate::changes`]), kinds and keys.
//! The statements that read and write rows of them on both dialects (the
//! snapshot's reads, the upserts of change files and pulls, the bulk
//! inserts of a first pull, PostgreSQL's change feed, `verify` on both
//! sides) are derived from these descriptions, and every row type reads and
//! writes its cells in this order ([`TableRow`]).

use crate::changes::{ChunkRow, FileRow, MetadataRow, TombstoneRow, VersionRow};
use crate::error::Result;

/// How a column's value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UUID: text in SQLite, `uuid` in PostgreSQL.
    Uuid,
    /// Text.
    Text,
    /// A 64-bit integer.
    Int,
    /// An integer that PostgreSQL keeps in 32 bits.
    Int4,
    /// Microseconds since the Unix epoch: an integer in SQLite, `timestamptz`
    /// in PostgreSQL.
    Time,
    /// JSON: canonical text in SQLite, `jsonb` in PostgreSQL.
    Json,
}

/// One column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name (the same in both dialects).
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Whether it may be NULL.
    pub nullable: bool,
}

/// One table: its columns in row-type order, without `change_seq` (every
/// table has it, after these) and the origin columns (PostgreSQL only).
#[derive(Debug, PartialEq, Eq)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// The columns.
    pub columns: &'static [Column],
    /// The primary key's columns.
    pub key: &'static [&'static str],
    /// The order in which a snapshot reads the table (a first pull loads
    /// it so, and resumes after a row's values of these columns): unique,
    /// parents before children.
    pub snapshot_order: &'static [&'static str],
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

/// `file_paths`.
pub const FILE_PATHS: Table = Table {
    name: "file_paths",
    columns: &[
        col("path_id", Kind::Uuid),
        col("tenant_id", Kind::Text),
        col("virtual_path", Kind::Text),
        col("backend_id", Kind::Text),
        col("physical_path", Kind::Text),
        col("size_bytes", Kind::Int),
        opt("content_hash", Kind::Text),
        opt("file_type", Kind::Text),
        col("created_at", Kind::Time),
        col("updated_at", Kind::Time),
        opt("deleted_at", Kind::Time),
        col("current_version", Kind::Int4),
    ],
    key: &["path_id"],
    snapshot_order: &["path_id"],
};

/// `version_history`.
pub const VERSION_HISTORY: Table = Table {
    name: "version_history",
    columns: &[
        col("version_id", Kind::Uuid),
        col("path_id", Kind::Uuid),
        col("version_number", Kind::Int4),
        col("backend_id", Kind::Text),
        col("physical_path", Kind::Text),
        opt("content_hash", Kind::Text),
        col("size_bytes", Kind::Int),
        opt("mime_type", Kind::Text),
        opt("parent_version_id", Kind::Uuid),
        col("source_type", Kind::Text),
        opt("change_reason", Kind::Text),
        opt("created_by", Kind::Text),
        col("created_at", Kind::Time),
    ],
    key: &["version_id"],
    // A file's versions by number, parents first: ids are time-ordered by
    // the clock of whoever wrote them, and clocks differ.
    snapshot_order: &["path_id", "version_number"],
};

/// `file_metadata`.
pub const FILE_METADATA: Table = Table {
    name: "file_metadata",
    columns: &[
        col("path_id", Kind::Uuid),
        col("key", Kind::Text),
        col("value", Kind::Json),
        col("created_at", Kind::Time),
        col("updated_at", Kind::Time),
    ],
    key: &["path_id", "key"],
    snapshot_order: &["path_id", "key"],
};

/// `content_chunks`.
pub const CONTENT_CHUNKS: Table = Table {
    name: "content_chunks",
    columns: &[
        col("tenant_id", Kind::Text),
        col("content_hash", Kind::Text),
        col("size_bytes", Kind::Int),
        col("storage_path", Kind::Text),
        col("ref_count", Kind::Int),
        col("created_at", Kind::Time),
        opt("last_accessed_at", Kind::Time),
        opt("protected_until", Kind::Time),
    ],
    key: &["tenant_id", "content_hash"],
    snapshot_order: &["tenant_id", "content_hash"],
};

/// `tombstones`.
pub const TOMBSTONES: Table = Table {
    name: "tombstones",
    columns: &[
        col("table_name", Kind::Text),
        col("key1", Kind::Text),
        col("key2", Kind::Text),
        col("deleted_at", Kind::Time),
    ],
    key: &["table_name", "key1", "key2"],
    snapshot_order: &["table_name", "key1", "key2"],
};

/// The five, in dependency order ([`crate::CHANGE_TABLES`] names them).
pub const TABLES: [&Table; 5] = [
    &FILE_PATHS,
    &VERSION_HISTORY,
    &FILE_METADATA,
    &CONTENT_CHUNKS,
    &TOMBSTONES,
];

impl Table {
    /// The table's place in [`TABLES`] (and in [`crate::CHANGE_TABLES`]),
    /// for anything kept per table in that order.
    pub fn index(&self) -> usize {
        TABLES
            .iter()
            .position(|x| x.name == self.name)
            .expect("one of TABLES")
    }

    /// The column names, comma-separated, then `change_seq`.
    pub fn column_list(&self) -> String {
        let mut names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        names.push("change_seq");
        names.join(", ")
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `INSERT INTO` the table `SELECT` of its own rows of one file (`WHERE
    /// path_id = <file>`, read from `from`: the table, or the table with an
    /// index named), each column copied but those of `set`, which take
    /// their expression (`path_id` the copy's id; a column of `set` that is
    /// not among [`Table::columns`], such as `change_seq`, is added): a
    /// file's rows copied to its conflict copy, in either dialect's
    /// placeholders (PostgreSQL leaves `change_seq` and the origin columns
    /// to their defaults). A row the copy has already (the same conflict
    /// met again: the copy's id is derived from it) is replaced when
    /// `replace`, else stays.
    pub fn copy_rows_of_file(
        &self,
        from: &str,
        file: &str,
        set: &[(&str, &str)],
        replace: bool,
    ) -> String {
        let extra = set.iter().filter(|(name, _)| self.column(name).is_none());
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|c| c.name)
            .chain(extra.clone().map(|(name, _)| *name))
            .collect();
        let values: Vec<&str> = names
            .iter()
            .map(|name| {
                set.iter()
                    .find(|(n, _)| n == name)
                    .map_or(*name, |(_, expr)| *expr)
            })
            .collect();
        let on_conflict = match replace {
            true => format!(
                "({}) DO UPDATE SET {}",
                self.key.join(", "),
                names
                    .iter()
                    .filter(|n| !self.key.contains(n))
                    .map(|n| format!("{n} = excluded.{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            false => "DO NOTHING".to_string(),
        };
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {from} WHERE path_id = {file} ON CONFLICT {on_conflict}",
            self.name,
            names.join(", "),
            values.join(", ")
        )
    }

    /// The columns as `f(column)` each, comma-separated (a dialect's
    /// select list).
    pub fn select_list(&self, f: impl Fn(&Column) -> String) -> String {
        self.columns.iter().map(f).collect::<Vec<_>>().join(", ")
    }
}

/// The values of a row's [`Table::snapshot_order`] columns, as text
/// (integers in decimal): where a snapshot read resumes after it.
pub fn snapshot_key<T: TableRow>(row: &T) -> Vec<String> {
    let cells = row.cells();
    T::TABLE
        .snapshot_order
        .iter()
        .map(|name| {
            let i = T::TABLE
                .columns
                .iter()
                .position(|c| c.name == *name)
                .expect("snapshot_order names columns of the table");
            match cells[i] {
                Cell::Null => String::new(),
                Cell::Int(v) => v.to_string(),
                Cell::Text(t) => t.to_string(),
            }
        })
        .collect()
}

/// A value of one cell, borrowed from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    /// NULL.
    Null,
    /// An integer (also times, in microseconds).
    Int(i64),
    /// Text (also UUIDs, and JSON as canonical text).
    Text(&'a str),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(s: &'a str) -> Self {
        Cell::Text(s)
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(s: &'a String) -> Self {
        Cell::Text(s)
    }
}

impl<'a> From<&'a Option<String>> for Cell<'a> {
    fn from(s: &'a Option<String>) -> Self {
        s.as_deref().map_or(Cell::Null, Cell::Text)
    }
}

impl From<i64> for Cell<'_> {
    fn from(i: i64) -> Self {
        Cell::Int(i)
    }
}

impl From<Option<i64>> for Cell<'_> {
    fn from(i: Option<i64>) -> Self {
        i.map_or(Cell::Null, Cell::Int)
    }
}

/// Where a row is read from, one cell after the other in column order:
/// a SQLite row, a PostgreSQL row (each dialect decodes its own types).
pub trait Cells {
    /// The next cell as text.
    fn text(&mut self) -> Result<String>;
    /// The next cell as text or NULL.
    fn opt_text(&mut self) -> Result<Option<String>>;
    /// The next cell as an integer.
    fn int(&mut self) -> Result<i64>;
    /// The next cell as an integer or NULL.
    fn opt_int(&mut self) -> Result<Option<i64>>;
    /// The next cell as JSON, in canonical text.
    fn json(&mut self) -> Result<String>;
}

/// A row of one of the [`TABLES`], written and read in its column order.
pub trait TableRow: Sized {
    /// Its table.
    const TABLE: &'static Table;
    /// The cells, in column order, without `change_seq`.
    fn cells(&self) -> Vec<Cell<'_>>;
    /// Reads the cells (in column order) and then `change_seq`.
    fn read(r: &mut impl Cells) -> Result<Self>;
    /// Its `change_seq`.
    fn change_seq(&self) -> i64;
    /// Sets where it came from (rows read from PostgreSQL).
    fn set_origin(&mut self, origin: Option<crate::Origin>);
}

impl TableRow for FileRow {
    const TABLE: &'static Table = &FILE_PATHS;
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            (&self.path_id).into(),
            (&self.tenant_id).into(),
            (&self.virtual_path).into(),
            (&self.backend_id).into(),
            (&self.physical_path).into(),
            self.size_bytes.into(),
            (&self.content_hash).into(),
            (&self.file_type).into(),
            self.created_at.into(),
            self.updated_at.into(),
            self.deleted_at.into(),
            self.current_version.into(),
        ]
    }
    fn read(r: &mut impl Cells) -> Result<Self> {
        Ok(FileRow {
            path_id: r.text()?,
            tenant_id: r.text()?,
            virtual_path: r.text()?,
            backend_id: r.text()?,
            physical_path: r.text()?,
            size_bytes: r.int()?,
            content_hash: r.opt_text()?,
            file_type: r.opt_text()?,
            created_at: r.int()?,
            updated_at: r.int()?,
            deleted_at: r.opt_int()?,
            current_version: r.int()?,
            change_seq: r.int()?,
            origin: None,
        })
    }
    fn change_seq(&self) -> i64 {
        self.change_seq
    }
    fn set_origin(&mut self, origin: Option<crate::Origin>) {
        self.origin = origin;
    }
}

impl TableRow for VersionRow {
    const TABLE: &'static Table = &VERSION_HISTORY;
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            (&self.version_id).into(),
            (&self.path_id).into(),
            self.version_number.into(),
            (&self.backend_id).into(),
            (&self.physical_path).into(),
            (&self.content_hash).into(),
            self.size_bytes.into(),
            (&self.mime_type).into(),
            (&self.parent_version_id).into(),
            (&self.source_type).into(),
            (&self.change_reason).into(),
            (&self.created_by).into(),
            self.created_at.into(),
        ]
    }
    fn read(r: &mut impl Cells) -> Result<Self> {
        Ok(VersionRow {
            version_id: r.text()?,
            path_id: r.text()?,
            version_number: r.int()?,
            backend_id: r.text()?,
            physical_path: r.text()?,
            content_hash: r.opt_text()?,
            size_bytes: r.int()?,
            mime_type: r.opt_text()?,
            parent_version_id: r.opt_text()?,
            source_type: r.text()?,
            change_reason: r.opt_text()?,
            created_by: r.opt_text()?,
            created_at: r.int()?,
            change_seq: r.int()?,
            origin: None,
        })
    }
    fn change_seq(&self) -> i64 {
        self.change_seq
    }
    fn set_origin(&mut self, origin: Option<crate::Origin>) {
        self.origin = origin;
    }
}

impl TableRow for MetadataRow {
    const TABLE: &'static Table = &FILE_METADATA;
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            (&self.path_id).into(),
            (&self.key).into(),
            (&self.value).into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
    fn read(r: &mut impl Cells) -> Result<Self> {
        Ok(MetadataRow {
            path_id: r.text()?,
            key: r.text()?,
            value: r.json()?,
            created_at: r.int()?,
            updated_at: r.int()?,
            change_seq: r.int()?,
            origin: None,
        })
    }
    fn change_seq(&self) -> i64 {
        self.change_seq
    }
    fn set_origin(&mut self, origin: Option<crate::Origin>) {
        self.origin = origin;
    }
}

impl TableRow for ChunkRow {
    const TABLE: &'static Table = &CONTENT_CHUNKS;
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            (&self.tenant_id).into(),
            (&self.content_hash).into(),
            self.size_bytes.into(),
            (&self.storage_path).into(),
            self.ref_count.into(),
            self.created_at.into(),
            self.last_accessed_at.into(),
            self.protected_until.into(),
        ]
    }
    fn read(r: &mut impl Cells) -> Result<Self> {
        Ok(ChunkRow {
            tenant_id: r.text()?,
            content_hash: r.text()?,
            size_bytes: r.int()?,
            storage_path: r.text()?,
            ref_count: r.int()?,
            created_at: r.int()?,
            last_accessed_at: r.opt_int()?,
            protected_until: r.opt_int()?,
            change_seq: r.int()?,
            origin: None,
        })
    }
    fn change_seq(&self) -> i64 {
        self.change_seq
    }
    fn set_origin(&mut self, origin: Option<crate::Origin>) {
        self.origin = origin;
    }
}

impl TableRow for TombstoneRow {
    const TABLE: &'static Table = &TOMBSTONES;
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            (&self.table_name).into(),
            (&self.key1).into(),
            (&self.key2).into(),
            self.deleted_at.into(),
        ]
    }
    fn read(r: &mut impl Cells) -> Result<Self> {
        Ok(TombstoneRow {
            table_name: r.text()?,
            key1: r.text()?,
            key2: r.text()?,
            deleted_at: r.int()?,
            change_seq: r.int()?,
            origin: None,
        })
    }
    fn change_seq(&self) -> i64 {
        self.change_seq
    }
    fn set_origin(&mut self, origin: Option<crate::Origin>) {
        self.origin = origin;
    }
}

/// The embedded dialect's statements for a table, derived once and kept
/// (the engine caches prepared statements by their `'static` text).
pub(crate) mod sqlite {
    use std::sync::OnceLock;

    use super::Table;

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn cached(
        cells: &'static [OnceLock<&'static str>; 5],
        t: &Table,
        make: impl FnOnce() -> String,
    ) -> &'static str {
        cells[t.index()].get_or_init(|| leak(make()))
    }

    /// `SELECT <columns>, change_seq FROM t WHERE change_seq > ?1 AND
    /// change_seq <= ?2 ORDER BY change_seq`.
    pub(crate) fn select_changes(t: &'static Table) -> &'static str {
        static CELLS: [OnceLock<&'static str>; 5] = [const { OnceLock::new() }; 5];
        cached(&CELLS, t, || {
            format!(
                "SELECT {} FROM {} WHERE change_seq > ?1 AND change_seq <= ?2 ORDER BY change_seq",
                t.column_list(),
                t.name
            )
        })
    }

    /// `SELECT <columns>, change_seq FROM t WHERE <key> = ?1 [AND ...]`:
    /// one row by its primary key.
    pub(crate) fn select_by_key(t: &'static Table) -> &'static str {
        static CELLS: [OnceLock<&'static str>; 5] = [const { OnceLock::new() }; 5];
        cached(&CELLS, t, || {
            let keys: Vec<String> = t
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k} = ?{}", i + 1))
                .collect();
            format!(
                "SELECT {} FROM {} WHERE {}",
                t.column_list(),
                t.name,
                keys.join(" AND ")
            )
        })
    }

    /// An upsert of one row by primary key, every column (and
    /// `change_seq`, the last parameter) replaced.
    pub(crate) fn upsert(t: &'static Table) -> &'static str {
        static CELLS: [OnceLock<&'static str>; 5] = [const { OnceLock::new() }; 5];
        cached(&CELLS, t, || {
            let n = t.columns.len() + 1;
            let params: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            let set: Vec<String> = t
                .columns
                .iter()
                .map(|c| c.name)
                .chain(["change_seq"])
                .filter(|c| !t.key.contains(c))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                t.name,
                t.column_list(),
                params.join(", "),
                t.key.join(", "),
                set.join(", ")
            )
        })
    }

    /// A plain insert of `rows` rows: 1, or the bulk load's batch size
    /// (one statement is kept for each; the first batch size asked for is
    /// the one).
    pub(crate) fn insert(t: &'static Table, rows: usize) -> &'static str {
        static ONE: [OnceLock<&'static str>; 5] = [const { OnceLock::new() }; 5];
        static MANY: [OnceLock<&'static str>; 5] = [const { OnceLock::new() }; 5];
        let cells = if rows == 1 { &ONE } else { &MANY };
        cached(cells, t, || {
            let tuple = format!("({})", vec!["?"; t.columns.len() + 1].join(", "));
            format!(
                "INSERT INTO {} ({}) VALUES {}",
                t.name,
                t.column_list(),
                vec![tuple; rows].join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every description matches its row type: as many cells as columns,
    /// and the tables in the order sync moves them.
    #[test]
    fn descriptions_match_the_rows() {
        let f = FileRow {
            path_id: "p".into(),
            tenant_id: "t".into(),
            virtual_path: "/v".into(),
            backend_id: "b".into(),
            physical_path: "ph".into(),
            size_bytes: 1,
            content_hash: None,
            file_type: None,
            created_at: 2,
            updated_at: 3,
            deleted_at: None,
            current_version: 1,
            change_seq: 9,
            origin: None,
        };
        assert_eq!(f.cells().len(), FILE_PATHS.columns.len());
        assert_eq!(
            crate::CHANGE_TABLES,
            [
                "file_paths",
                "version_history",
                "file_metadata",
                "content_chunks",
                "tombstones"
            ],
            "dependency order: parents before children"
        );
        for (i, t) in TABLES.iter().enumerate() {
            assert_eq!(t.index(), i, "{}", t.name);
        }
        assert_eq!(
            sqlite::upsert(&FILE_METADATA),
            "INSERT INTO file_metadata (path_id, key, value, created_at, updated_at, change_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (path_id, key) DO UPDATE SET \
             value = excluded.value, created_at = excluded.created_at, updated_at = excluded.updated_at, \
             change_seq = excluded.change_seq"
        );
    }
}
