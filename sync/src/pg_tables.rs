//! PostgreSQL's side of the five tables that [`nexus_core::tables`]
//! describes: each kind of column's type, the binary `COPY` of a bulk load,
//! the `unnest` upsert of later runs, and a row's values for both. Nothing
//! here names a column of a table: a column added to a description reaches
//! every statement, as it reaches the embedded dialect's, the change feed's
//! and `verify`'s.

use std::sync::LazyLock;
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use nexus_core::tables::{Cell, Column, FILE_PATHS, Kind, TABLES, Table, TableRow};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use crate::convert;
use crate::error::{Error, Result};

/// The PostgreSQL type of a kind of column.
pub fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Uuid => Type::UUID,
        Kind::Text => Type::TEXT,
        Kind::Int => Type::INT8,
        Kind::Int4 => Type::INT4,
        Kind::Time => Type::TIMESTAMPTZ,
        Kind::Json => Type::JSONB,
    }
}

/// A binary `COPY ... FROM STDIN` into one table: the statement and the
/// PostgreSQL type of each of its columns, in order (the description's
/// columns, then `origin_seq` and `origin_id`). The bulk load uses these,
/// and so does the raw-COPY baseline of the sync benchmark.
#[derive(Debug)]
pub struct CopyInto {
    /// The `COPY` statement.
    pub sql: String,
    /// The column types, in the statement's column order.
    pub types: Vec<Type>,
}

fn names(t: &Table) -> impl Iterator<Item = &'static str> {
    t.columns.iter().map(|c| c.name)
}

static COPIES: LazyLock<Vec<CopyInto>> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|t| CopyInto {
            sql: format!(
                "COPY {} ({}, origin_seq, origin_id) FROM STDIN (FORMAT binary)",
                t.name,
                names(t).collect::<Vec<_>>().join(", ")
            ),
            types: t
                .columns
                .iter()
                .map(|c| pg_type(c.kind))
                .chain([Type::INT8, Type::TEXT])
                .collect(),
        })
        .collect()
});

/// The bulk load of one of the five tables.
pub fn copy_into(t: &Table) -> &'static CopyInto {
    &COPIES[t.index()]
}

/// How the live files of an upsert land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    /// Hidden (`deleted_at = -infinity`): the run makes its live files
    /// visible at the end, once every deletion and move is in place, so
    /// that paths can change hands within a run without tripping the
    /// unique index on live paths.
    Hidden,
    /// Live at once: for a run with nothing to move, whose files either
    /// all take their paths or trip the unique index (then it lands them
    /// hidden instead).
    Live,
}

/// What a column's value becomes as a row lands.
fn landing(t: &Table, c: &Column, landing: Landing) -> String {
    if landing == Landing::Hidden && t.name == FILE_PATHS.name && c.name == "deleted_at" {
        "COALESCE(deleted_at, '-infinity'::timestamptz)".to_string()
    } else {
        c.name.to_string()
    }
}

static UPSERTS: LazyLock<Vec<String>> = LazyLock::new(|| upserts(Landing::Hidden));
static LIVE_UPSERTS: LazyLock<Vec<String>> = LazyLock::new(|| upserts(Landing::Live));

fn upserts(how: Landing) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            let n = t.columns.len();
            let arrays: Vec<String> = t
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}[]", i + 1, pg_type(c.kind).name()))
                .chain([format!("${}::int8[]", n + 1)])
                .collect();
            let select: Vec<String> = t
                .columns
                .iter()
                .map(|c| landing(t, c, how))
                .chain(["origin_seq".to_string(), format!("${}::text", n + 2)])
                .collect();
            let set: Vec<String> = names(t)
                .filter(|c| !t.key.contains(c))
                .chain(["origin_seq", "origin_id"])
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .chain(["change_seq = DEFAULT".to_string()])
                .collect();
            let columns = names(t).collect::<Vec<_>>().join(", ");
            format!(
                "INSERT INTO {} ({columns}, origin_seq, origin_id) SELECT {} FROM unnest({}) AS u({columns}, origin_seq) \
                 ON CONFLICT ({}) DO UPDATE SET {}",
                t.name,
                select.join(", "),
                arrays.join(", "),
                t.key.join(", "),
                set.join(", ")
            )
        })
        .collect()
}

/// The upsert of rows of one of the five tables, one array per column
/// (the values of [`values`], column by column), then the source's id: a
/// row that is there is replaced, every column of it, and gets a new
/// `change_seq`.
pub(crate) fn upsert(t: &Table) -> &'static str {
    upsert_landing(t, Landing::Hidden)
}

/// [`upsert`], its live files landing `how`.
pub(crate) fn upsert_landing(t: &Table, how: Landing) -> &'static str {
    match how {
        Landing::Hidden => &UPSERTS[t.index()],
        Landing::Live => &LIVE_UPSERTS[t.index()],
    }
}

/// One value of a row, as PostgreSQL takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Uuid(Uuid),
    Text(&'a str),
    Int8(i64),
    Int4(i32),
    Time(SystemTime),
    /// JSON text (checked when its row was converted, and again by
    /// PostgreSQL).
    Json(&'a str),
}

impl Value<'_> {
    /// The bytes it takes (the runs' byte counts).
    fn size(&self) -> u64 {
        match self {
            Value::Null => 0,
            Value::Uuid(_) => 16,
            Value::Text(s) | Value::Json(s) => s.len() as u64,
            Value::Int8(_) | Value::Time(_) => 8,
            Value::Int4(_) => 4,
        }
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Uuid(u) => u.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Int8(i) => i.to_sql(ty, out),
            Value::Int4(i) => i.to_sql(ty, out),
            Value::Time(t) => t.to_sql(ty, out),
            Value::Json(s) => {
                // jsonb's binary form is a version byte (1), then the text.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    /// Each value is made for its column's type ([`pg_type`]), which the
    /// statement gives.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A row's values in its table's column order, then its `change_seq`
/// (PostgreSQL's `origin_seq`). A value PostgreSQL cannot hold is an error
/// naming the table, the column and the value.
pub(crate) fn values<R: TableRow>(row: &R) -> Result<Vec<Value<'_>>> {
    let t = R::TABLE;
    let mut out = Vec::with_capacity(t.columns.len() + 1);
    for (c, cell) in t.columns.iter().zip(row.cells()) {
        out.push(value(c, cell).map_err(|problem| Error::Conversion {
            table: t.name,
            problem,
        })?);
    }
    out.push(Value::Int8(row.change_seq()));
    Ok(out)
}

/// The bytes a row's values take.
pub(crate) fn size(values: &[Value<'_>]) -> u64 {
    values.iter().map(Value::size).sum()
}

fn value<'a>(c: &Column, cell: Cell<'a>) -> std::result::Result<Value<'a>, String> {
    Ok(match (c.kind, cell) {
        (_, Cell::Null) if c.nullable => Value::Null,
        (Kind::Uuid, Cell::Text(s)) => Value::Uuid(convert::uuid(s, c.name)?),
        (Kind::Text, Cell::Text(s)) => Value::Text(s),
        (Kind::Json, Cell::Text(s)) => Value::Json(s),
        (Kind::Int, Cell::Int(i)) => Value::Int8(i),
        (Kind::Int4, Cell::Int(i)) => Value::Int4(
            i32::try_from(i)
                .map_err(|_| format!("{} = {i} does not fit a PostgreSQL integer", c.name))?,
        ),
        (Kind::Time, Cell::Int(i)) => Value::Time(convert::ts(i, c.name)?),
        (kind, cell) => return Err(format!("{} is {cell:?}, not a {kind:?} value", c.name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::tables::{FILE_METADATA, TOMBSTONES, VERSION_HISTORY};

    #[test]
    fn statements_come_from_the_descriptions() {
        assert_eq!(
            copy_into(&TOMBSTONES).sql,
            "COPY tombstones (table_name, key1, key2, deleted_at, origin_seq, origin_id) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            copy_into(&TOMBSTONES).types,
            [
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::INT8,
                Type::TEXT
            ]
        );
        assert_eq!(
            upsert(&FILE_METADATA),
            "INSERT INTO file_metadata (path_id, key, value, created_at, updated_at, origin_seq, origin_id) \
             SELECT path_id, key, value, created_at, updated_at, origin_seq, $7::text \
             FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[], $6::int8[]) \
             AS u(path_id, key, value, created_at, updated_at, origin_seq) \
             ON CONFLICT (path_id, key) DO UPDATE SET value = EXCLUDED.value, created_at = EXCLUDED.created_at, \
             updated_at = EXCLUDED.updated_at, origin_seq = EXCLUDED.origin_seq, origin_id = EXCLUDED.origin_id, \
             change_seq = DEFAULT"
        );
        assert!(
            upsert(&FILE_PATHS).contains("COALESCE(deleted_at, '-infinity'::timestamptz)"),
            "a live file lands hidden"
        );
        let live = upsert_landing(&FILE_PATHS, Landing::Live);
        assert!(!live.contains("infinity"), "{live}");
        assert_eq!(
            live,
            upsert(&FILE_PATHS).replace(
                "COALESCE(deleted_at, '-infinity'::timestamptz)",
                "deleted_at"
            ),
            "the same statement but for deleted_at"
        );
        assert_eq!(
            upsert_landing(&VERSION_HISTORY, Landing::Live),
            upsert(&VERSION_HISTORY),
            "only files land hidden"
        );
    }

    #[test]
    fn a_value_postgres_cannot_hold_names_its_column() {
        let mut row = nexus_core::MetadataRow {
            path_id: "not a uuid".into(),
            key: "k".into(),
            value: "1".into(),
            created_at: 0,
            updated_at: 0,
            change_seq: 3,
            origin: None,
        };
        let err = values(&row).unwrap_err().to_string();
        assert!(
            err.contains("file_metadata") && err.contains("path_id") && err.contains("not a uuid"),
            "{err}"
        );
        row.path_id = Uuid::nil().to_string();
        let v = values(&row).unwrap();
        assert!(matches!(v[0], Value::Uuid(u) if u.is_nil()));
        assert!(matches!(v[5], Value::Int8(3)), "change_seq last");
        assert_eq!(size(&v), 16 + 1 + 1 + 8 + 8 + 8);
    }
}
