//! Free-form key/value metadata per file. Values are JSON, stored as
//! canonical text (object keys sorted), so equal values compare equal.

use std::collections::BTreeMap;

/// `file_metadata` read by its key, `(path_id, key)`. turso 0.8.3 plans
/// `path_id = ? AND key = ?` on the `(key, value)` index, a scan of every
/// row with that key (every file's, when files share their keys: 0.2 ms a
/// lookup at 2,000 files, quadratic in a pull of many); `INDEXED BY` holds
/// it to the primary key.
macro_rules! metadata_by_key {
    () => {
        "file_metadata INDEXED BY sqlite_autoindex_file_metadata_1"
    };
}
pub(crate) use metadata_by_key;

use serde_json::Value;

use crate::engine::{Engine, Seq, int, text};
use crate::error::{Error, Result};
use crate::files::require_live;
use crate::store::Store;
use crate::validate::{validate_name, validate_path};

/// The largest metadata value accepted, in bytes of canonical JSON.
pub const MAX_METADATA_VALUE_BYTES: usize = 1 << 20;

/// Serializes `value` with object keys sorted at every level.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Canonical JSON text of a metadata value, or an error if it is too large.
pub fn encode_value(key: &str, value: &Value) -> Result<String> {
    let encoded = canonical_json(value);
    if encoded.len() > MAX_METADATA_VALUE_BYTES {
        return Err(Error::invalid(
            "metadata value",
            &format!("{key}={}", crate::error::shorten(&encoded)),
            format!("must be at most {MAX_METADATA_VALUE_BYTES} bytes of JSON"),
        ));
    }
    Ok(encoded)
}

fn decode_value(stored: &str) -> Result<Value> {
    serde_json::from_str(stored).map_err(|e| Error::Corrupt {
        table: "file_metadata",
        detail: format!("value is not JSON ({e}): {}", crate::error::shorten(stored)),
    })
}

/// Records the removal of a row (`table`, `key1`, `key2`) whose last
/// change was at `after` (microseconds): at the clock's time, or just after
/// `after` when that is later (see [`stamp_after`]).
pub(crate) fn write_tombstone(
    e: &mut Engine,
    seq: Seq,
    table: &str,
    key1: &str,
    key2: &str,
    after: i64,
) -> Result<()> {
    let at = stamp_after(e, after);
    e.execute(
        "INSERT INTO tombstones (table_name, key1, key2, deleted_at, change_seq) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (table_name, key1, key2) DO UPDATE SET deleted_at = excluded.deleted_at, change_seq = excluded.change_seq",
        &[text(table), text(key1), text(key2), int(at), int(seq)],
    )?;
    Ok(())
}

/// The time (microseconds) to stamp a change to a row whose state it
/// changes was stamped `after`: the clock's, or just after `after` when
/// that is later (the state came from a store whose clock runs ahead, or
/// from a file's modification time). A change is thus always later than
/// what it changed, which is what the rule for change files
/// ([`crate::FileSide::later_than`], [`crate::key_arrives`]) compares.
pub(crate) fn stamp_after(e: &Engine, after: i64) -> i64 {
    e.now().as_micros().max(after.saturating_add(1))
}

/// Sets `key` of the file `path_id` to `encoded` (canonical JSON) as this
/// store's change stamped `seq`, at a time after the key's value or
/// removal here, and clears the removal.
pub(crate) fn upsert_metadata(
    e: &mut Engine,
    seq: Seq,
    path_id: &str,
    key: &str,
    encoded: &str,
) -> Result<()> {
    let now = e.now().as_micros();
    upsert_metadata_at(e, seq, path_id, key, encoded, now)
}

/// [`upsert_metadata`], stamped `now` (or just after the key's value or
/// removal here, when that is later) instead of the clock's time.
pub(crate) fn upsert_metadata_at(
    e: &mut Engine,
    seq: Seq,
    path_id: &str,
    key: &str,
    encoded: &str,
    now: i64,
) -> Result<()> {
    // Later than the key's value or removal here (see `stamp_after`).
    let before = key_here(e, path_id, key)?.map_or(i64::MIN, |(_, at)| at);
    let at = now.max(before.saturating_add(1));
    e.execute(
        "INSERT INTO file_metadata (path_id, key, value, created_at, updated_at, change_seq) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5) ON CONFLICT (path_id, key) DO UPDATE SET \
         value = excluded.value, updated_at = excluded.updated_at, change_seq = excluded.change_seq",
        &[text(path_id), text(key), text(encoded), int(at), int(seq)],
    )?;
    untombstone(e, "file_metadata", path_id, key)
}

/// The state of the metadata key `key` of `path_id` here: its value
/// (`Some`, canonical JSON) and when it was set, or `None` and when it was
/// removed; `None` when neither (a key has a value or a removal, never
/// both: a value clears the removal, a removal deletes the value).
pub(crate) fn key_here(
    e: &mut Engine,
    path_id: &str,
    key: &str,
) -> Result<Option<(Option<String>, i64)>> {
    e.query_one(
        concat!(
            "SELECT value, updated_at FROM ",
            metadata_by_key!(),
            " WHERE path_id = ?1 AND key = ?2 UNION ALL \
             SELECT NULL, deleted_at FROM tombstones WHERE table_name = 'file_metadata' AND key1 = ?1 AND key2 = ?2"
        ),
        &[text(path_id), text(key)],
        |r| Ok((r.opt_text(0)?, r.int(1)?)),
    )
}

pub(crate) fn untombstone(e: &mut Engine, table: &str, key1: &str, key2: &str) -> Result<()> {
    e.execute(
        "DELETE FROM tombstones WHERE table_name = ?1 AND key1 = ?2 AND key2 = ?3",
        &[text(table), text(key1), text(key2)],
    )?;
    Ok(())
}

impl Store {
    /// Sets `key` of the file at `path` to `value` (any JSON). The file must exist.
    pub async fn set_metadata(&self, path: &str, key: &str, value: &Value) -> Result<()> {
        validate_path(path)?;
        validate_name("metadata key", key)?;
        let encoded = encode_value(key, value)?;
        let (tenant, path, key) = (self.tenant.clone(), path.to_string(), key.to_string());
        self.write(move |e, seq| {
            let file = require_live(e, &tenant, &path)?;
            upsert_metadata(e, seq, &file.path_id, &key, &encoded)
        })
        .await
    }

    /// Sets many `(path, key, value)` entries in one transaction: all or
    /// none. Every entry is validated first; a missing file fails the batch
    /// with [`Error::NotFound`].
    pub async fn set_metadata_batch(&self, entries: &[(String, String, Value)]) -> Result<()> {
        let mut encoded = Vec::with_capacity(entries.len());
        for (path, key, value) in entries {
            validate_path(path)?;
            validate_name("metadata key", key)?;
            encoded.push(encode_value(key, value)?);
        }
        if entries.is_empty() {
            return Ok(());
        }
        let tenant = self.tenant.clone();
        let entries: Vec<(String, String)> = entries
            .iter()
            .map(|(path, key, _)| (path.clone(), key.clone()))
            .collect();
        self.write(move |e, seq| {
            for ((path, key), value) in entries.iter().zip(&encoded) {
                let file = require_live(e, &tenant, path)?;
                upsert_metadata(e, seq, &file.path_id, key, value)?;
            }
            Ok(())
        })
        .await
    }

    /// The value of `key` of the file at `path`, or `None` if the key is not
    /// set. [`Error::NotFound`] if there is no file at `path`.
    pub async fn get_metadata(&self, path: &str, key: &str) -> Result<Option<Value>> {
        validate_path(path)?;
        validate_name("metadata key", key)?;
        let mut e = self.reader().await;
        e.read(|e| {
            let file = require_live(e, &self.tenant, path)?;
            e.query_one(
                concat!(
                    "SELECT value FROM ",
                    metadata_by_key!(),
                    " WHERE path_id = ?1 AND key = ?2"
                ),
                &[text(&file.path_id), text(key)],
                |r| r.text(0),
            )?
            .map(|v| decode_value(&v))
            .transpose()
        })
    }

    /// Every key of the file at `path`, sorted.
    pub async fn list_metadata(&self, path: &str) -> Result<BTreeMap<String, Value>> {
        validate_path(path)?;
        let mut e = self.reader().await;
        e.read(|e| {
            let file = require_live(e, &self.tenant, path)?;
            e.query(
                "SELECT key, value FROM file_metadata WHERE path_id = ?1 ORDER BY key",
                &[text(&file.path_id)],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?
            .into_iter()
            .map(|(k, v)| Ok((k, decode_value(&v)?)))
            .collect()
        })
    }

    /// Removes `key` from the file at `path`; returns whether it was set.
    pub async fn delete_metadata(&self, path: &str, key: &str) -> Result<bool> {
        validate_path(path)?;
        validate_name("metadata key", key)?;
        let (tenant, path, key) = (self.tenant.clone(), path.to_string(), key.to_string());
        self.write(move |e, seq| {
            let file = require_live(e, &tenant, &path)?;
            let Some((Some(_), set_at)) = key_here(e, &file.path_id, &key)? else {
                return Ok(false);
            };
            e.execute(
                concat!(
                    "DELETE FROM ",
                    metadata_by_key!(),
                    " WHERE path_id = ?1 AND key = ?2"
                ),
                &[text(&file.path_id), text(&key)],
            )?;
            write_tombstone(e, seq, "file_metadata", &file.path_id, &key, set_at)?;
            Ok(true)
        })
        .await
    }

    /// Live files that have `key` set (to `value`, when given, compared as
    /// canonical JSON): `(path, value)` sorted by path.
    pub async fn find_by_metadata(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Vec<(String, Value)>> {
        validate_name("metadata key", key)?;
        let mut e = self.reader().await;
        let rows = match value {
            None => e.query(
                "SELECT p.virtual_path, m.value FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
                 WHERE m.key = ?1 AND p.tenant_id = ?2 AND p.deleted_at IS NULL ORDER BY p.virtual_path",
                &[text(key), text(&self.tenant)],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?,
            Some(v) => e.query(
                "SELECT p.virtual_path, m.value FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
                 WHERE m.key = ?1 AND m.value = ?3 AND p.tenant_id = ?2 AND p.deleted_at IS NULL \
                 ORDER BY p.virtual_path",
                &[text(key), text(&self.tenant), text(&encode_value(key, v)?)],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?,
        };
        rows.into_iter()
            .map(|(p, v)| Ok((p, decode_value(&v)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":"x"}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
        let s = Value::String("quote\" and \\ and \u{1}".into());
        assert_eq!(
            serde_json::from_str::<Value>(&canonical_json(&s)).unwrap(),
            s
        );
    }
}
