//! `nexus scan`: mirror a folder into the store, touching only what changed.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use nexus_core::{DynStore, FileRecord, NewFile, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::output::{count, warn};
use crate::{Failure, fail};

/// Files are written in transactions of this many.
const BATCH: usize = 1000;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub prefix: String,
    pub files: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub skipped: u64,
    pub bytes_hashed: u64,
    pub seconds: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scanned {} into {}: {} added, {} updated, {} unchanged, {} removed, {} skipped; hashed {} in {:.2}s",
            count(self.files, "file"),
            self.prefix,
            self.added,
            self.updated,
            self.unchanged,
            self.removed,
            self.skipped,
            count(self.bytes_hashed, "byte"),
            self.seconds
        )
    }
}

struct Found {
    virtual_path: String,
    real: PathBuf,
    size: u64,
    modified: Timestamp,
    created: Timestamp,
}

fn default_prefix(dir: &Path) -> Result<String, Failure> {
    let abs = dir
        .canonicalize()
        .map_err(|e| fail(format!("cannot scan {}: {e}", dir.display())))?;
    Ok(match abs.file_name().and_then(|n| n.to_str()) {
        Some(name) => format!("/{name}"),
        None => "/".to_string(),
    })
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files of an embedded store at `db` (the database, its WAL and its
/// shared-memory file), as absolute paths without symbolic links, which a
/// scan of a folder holding them leaves out: they are the store, not
/// files of the folder, and change with every write.
pub fn own_files(db: &Path) -> Vec<PathBuf> {
    let Ok(db) = db.canonicalize() else {
        return Vec::new();
    };
    let with = |suffix: &str| {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    vec![with("-wal"), with("-shm"), db]
}

/// Whether `record` is what a scan of the folder `real_dir` (without
/// symbolic links) into `base` wrote: a file of the local backend whose
/// physical path is the folder's file at the record's place below `base`
/// (so a record that a scan of a parent folder made, of a file that is
/// still there, is not this scan's to remove).
fn scanned_from(record: &FileRecord, base: &str, real_dir: &Path) -> bool {
    record.backend == LOCAL
        && record
            .path
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rel| real_dir.join(rel).to_string_lossy() == record.physical_path)
}

/// The backend a scan records its files under.
const LOCAL: &str = "local";

pub async fn scan(
    store: &DynStore,
    dir: &Path,
    prefix: Option<&str>,
    progress: bool,
    own: &[PathBuf],
) -> Result<Summary, Failure> {
    let started = Instant::now();
    if !dir.is_dir() {
        let why = if dir.exists() {
            "not a directory"
        } else {
            "no such folder"
        };
        return Err(fail(format!("cannot scan {}: {why}", dir.display())));
    }
    // `dir` without symbolic links, to tell the store's own files.
    let real_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let prefix = match prefix {
        Some(p) => p.to_string(),
        None => default_prefix(dir)?,
    };
    let base = prefix.trim_end_matches('/').to_string();
    if !base.is_empty() {
        nexus_core::validate_path(&base)?;
    }
    let mut summary = Summary {
        prefix: if base.is_empty() {
            "/".into()
        } else {
            base.clone()
        },
        ..Summary::default()
    };

    // Phase 1: walk the folder (cheap: names and stat only).
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warn(format_args!("skipping {e}"));
                summary.skipped += 1;
                continue;
            }
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).expect("below the root");
        if !own.is_empty() && own.contains(&real_dir.join(rel)) {
            continue;
        }
        if !kind.is_file() {
            // Said and counted, not left out silently.
            let what = if kind.is_symlink() {
                "a symbolic link (scan does not follow links)"
            } else {
                "not a regular file (a pipe, socket or device)"
            };
            warn(format_args!("skipping {}: {what}", entry.path().display()));
            summary.skipped += 1;
            continue;
        }
        let Some(rel) = rel.to_str() else {
            warn(format_args!(
                "skipping {}: the name is not UTF-8",
                entry.path().to_string_lossy()
            ));
            summary.skipped += 1;
            continue;
        };
        let virtual_path = format!("{base}/{}", rel.replace(std::path::MAIN_SEPARATOR, "/"));
        if let Err(e) = nexus_core::validate_path(&virtual_path) {
            warn(format_args!("skipping {}: {e}", entry.path().display()));
            summary.skipped += 1;
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                warn(format_args!("skipping {}: {e}", entry.path().display()));
                summary.skipped += 1;
                continue;
            }
        };
        let modified = meta
            .modified()
            .map(Timestamp::from_system_time)
            .unwrap_or_else(|_| Timestamp::now());
        let created = meta
            .created()
            .map(Timestamp::from_system_time)
            .unwrap_or(modified);
        found.push(Found {
            virtual_path,
            real: entry.path().to_path_buf(),
            size: meta.len(),
            modified,
            created,
        });
    }
    summary.files = found.len() as u64;

    // What the store has under the prefix now.
    let existing: HashMap<String, FileRecord> = store
        .list(&format!("{base}/"))
        .await?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();

    // Phase 2: hash and write what changed, in batches.
    let bar = if progress {
        ProgressBar::new(found.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files ({per_sec}) {msg}",
        )
        .expect("valid template"),
    );
    let mut batch = Vec::with_capacity(BATCH);
    let mut seen = std::collections::HashSet::with_capacity(found.len());
    for f in &found {
        seen.insert(f.virtual_path.as_str());
        let physical = f.real.canonicalize().unwrap_or_else(|_| f.real.clone());
        let physical = physical.to_string_lossy().into_owned();
        if let Some(old) = existing.get(&f.virtual_path)
            && old.size == f.size
            && old.modified_at == f.modified
            && old.physical_path == physical
        {
            summary.unchanged += 1;
            bar.inc(1);
            continue;
        }
        let etag = match hash_file(&f.real) {
            Ok(h) => h,
            Err(e) => {
                bar.suspend(|| warn(format_args!("skipping {}: {e}", f.real.display())));
                summary.skipped += 1;
                bar.inc(1);
                continue;
            }
        };
        summary.bytes_hashed += f.size;
        if existing.contains_key(&f.virtual_path) {
            summary.updated += 1;
        } else {
            summary.added += 1;
        }
        let mut file = NewFile::new(&f.virtual_path, LOCAL, physical, f.size)
            .etag(etag)
            .modified_at(f.modified)
            .created_at(f.created);
        file.mime_type = mime_guess::from_path(&f.real)
            .first_raw()
            .map(str::to_string);
        batch.push(file);
        if batch.len() == BATCH {
            store.put_batch(&batch).await?;
            batch.clear();
        }
        bar.inc(1);
    }
    if !batch.is_empty() {
        store.put_batch(&batch).await?;
    }
    // Records of this folder's files that are gone: what a scan of it
    // wrote ([`scanned_from`]) and did not find now. Other records under
    // the prefix (put by hand, of another backend, or scanned from another
    // folder) are not its files.
    let gone: Vec<String> = existing
        .values()
        .filter(|r| !seen.contains(r.path.as_str()) && scanned_from(r, &base, &real_dir))
        .map(|r| r.path.clone())
        .collect();
    for chunk in gone.chunks(BATCH) {
        summary.removed += store.delete_batch(chunk).await? as u64;
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
