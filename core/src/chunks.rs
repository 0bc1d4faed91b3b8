//! Content chunks: reference-counted, content-addressed storage records,
//! and the list of unreferenced ones that garbage collection may remove.

use std::time::Duration;

use crate::engine::{Engine, RowRef, int, opt_int, text};
use crate::error::{Error, Result};
use crate::meta::{untombstone, write_tombstone};
use crate::model::{Chunk, Timestamp};
use crate::store::Store;
use crate::validate::{MAX_PATH_BYTES, validate_name, validate_text};

macro_rules! select_chunk {
    ($($rest:literal),*) => {
        concat!(
            "SELECT content_hash, size_bytes, storage_path, ref_count, created_at, last_accessed_at, \
             protected_until FROM content_chunks ",
            $($rest),*
        )
    };
}

fn chunk_row(r: &RowRef<'_>) -> Result<Chunk> {
    Ok(Chunk {
        content_hash: r.text(0)?,
        size: u64::try_from(r.int(1)?).unwrap_or(0),
        storage_path: r.text(2)?,
        ref_count: u64::try_from(r.int(3)?).unwrap_or(0),
        created_at: Timestamp::from_micros(r.int(4)?),
        last_accessed_at: r.opt_int(5)?.map(Timestamp::from_micros),
        protected_until: r.opt_int(6)?.map(Timestamp::from_micros),
    })
}

fn load_chunk(e: &mut Engine, tenant: &str, hash: &str) -> Result<Option<Chunk>> {
    e.query_one(
        select_chunk!("WHERE tenant_id = ?1 AND content_hash = ?2"),
        &[text(tenant), text(hash)],
        |r| chunk_row(&r),
    )
}

fn require_chunk(e: &mut Engine, tenant: &str, hash: &str) -> Result<Chunk> {
    load_chunk(e, tenant, hash)?.ok_or_else(|| Error::ChunkNotFound {
        content_hash: hash.to_string(),
    })
}

impl Store {
    /// Adds a reference to the chunk `content_hash`, creating it (with one
    /// reference, stored at `storage_path`, `size` bytes) if it is new.
    /// Returns the chunk after the change.
    pub async fn add_chunk_ref(
        &self,
        content_hash: &str,
        size: u64,
        storage_path: &str,
    ) -> Result<Chunk> {
        validate_name("content_hash", content_hash)?;
        validate_text("storage_path", storage_path, MAX_PATH_BYTES)?;
        let size = i64::try_from(size)
            .map_err(|_| Error::invalid("size", &size.to_string(), "must be at most 2^63 - 1"))?;
        let tenant = self.tenant.clone();
        let (content_hash, storage_path) = (content_hash.to_string(), storage_path.to_string());
        self.write(move |e, seq| {
            let (tenant, content_hash, storage_path) = (&*tenant, &*content_hash, &*storage_path);
            let now = e.now().as_micros();
            e.execute(
                "INSERT INTO content_chunks (tenant_id, content_hash, size_bytes, storage_path, ref_count, \
                 created_at, last_accessed_at, protected_until, change_seq) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, NULL, ?6) \
                 ON CONFLICT (tenant_id, content_hash) DO UPDATE SET ref_count = ref_count + 1, \
                 last_accessed_at = excluded.last_accessed_at, protected_until = NULL, change_seq = excluded.change_seq",
                &[text(tenant), text(content_hash), int(size), text(storage_path), int(now), int(seq)],
            )?;
            untombstone(e, "content_chunks", tenant, content_hash)?;
            require_chunk(e, tenant, content_hash)
        })
        .await
    }

    /// Releases one reference. When the count reaches zero the chunk becomes
    /// a garbage-collection candidate once `grace` has passed. Releasing a
    /// chunk that has no references left is refused.
    pub async fn release_chunk_ref(&self, content_hash: &str, grace: Duration) -> Result<Chunk> {
        validate_name("content_hash", content_hash)?;
        let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let (tenant, content_hash) = (self.tenant.clone(), content_hash.to_string());
        self.write(move |e, seq| {
            let (tenant, content_hash) = (&*tenant, &*content_hash);
            let chunk = require_chunk(e, tenant, content_hash)?;
            if chunk.ref_count == 0 {
                return Err(Error::invalid(
                    "content_hash",
                    content_hash,
                    "the chunk has no references left to release",
                ));
            }
            let now = e.now().as_micros();
            let protected = (chunk.ref_count == 1).then(|| now.saturating_add(grace));
            e.execute(
                "UPDATE content_chunks SET ref_count = ref_count - 1, last_accessed_at = ?1, \
                 protected_until = COALESCE(?2, protected_until), change_seq = ?3 \
                 WHERE tenant_id = ?4 AND content_hash = ?5",
                &[
                    int(now),
                    opt_int(protected),
                    int(seq),
                    text(tenant),
                    text(content_hash),
                ],
            )?;
            require_chunk(e, tenant, content_hash)
        })
        .await
    }

    /// The chunk `content_hash`, if known.
    pub async fn get_chunk(&self, content_hash: &str) -> Result<Option<Chunk>> {
        validate_name("content_hash", content_hash)?;
        let mut e = self.reader().await;
        load_chunk(&mut e, &self.tenant, content_hash)
    }

    /// Chunks with no references whose protection has expired, by hash, at most `limit`.
    pub async fn gc_candidates(&self, limit: usize) -> Result<Vec<Chunk>> {
        let mut e = self.reader().await;
        let now = e.now().as_micros();
        e.query(
            select_chunk!(
                "WHERE tenant_id = ?1 AND ref_count = 0 AND (protected_until IS NULL OR protected_until <= ?2) ",
                "ORDER BY content_hash LIMIT ?3"
            ),
            &[text(&self.tenant), int(now), int(i64::try_from(limit).unwrap_or(i64::MAX))],
            |r| chunk_row(&r),
        )
    }

    /// Removes the record of a collected chunk, only if it is still a
    /// candidate (no references, protection expired). Returns whether it was removed.
    pub async fn remove_chunk(&self, content_hash: &str) -> Result<bool> {
        validate_name("content_hash", content_hash)?;
        let (tenant, content_hash) = (self.tenant.clone(), content_hash.to_string());
        self.write(move |e, seq| {
            let now = e.now().as_micros();
            let removed = e.execute(
                "DELETE FROM content_chunks WHERE tenant_id = ?1 AND content_hash = ?2 AND ref_count = 0 \
                 AND (protected_until IS NULL OR protected_until <= ?3)",
                &[text(&tenant), text(&content_hash), int(now)],
            )? > 0;
            if removed {
                write_tombstone(e, seq, "content_chunks", &tenant, &content_hash, i64::MIN)?;
            }
            Ok(removed)
        })
        .await
    }
}
