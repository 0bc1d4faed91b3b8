//! The listing algorithm, shared by every backend: a backend only fetches
//! rows of a prefix range in path order; these functions decide which rows
//! belong and where the next fetch starts (skipping whole subtrees with one
//! seek for non-recursive listings).

use crate::model::FileRecord;
use crate::validate::prefix_upper_bound;

/// Where a range fetch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanFrom {
    /// At this path, inclusive.
    Including(String),
    /// After this path.
    After(String),
}

/// Rows fetched per step of a directory walk.
pub const DIRECTORY_BATCH: usize = 64;

/// The range of a prefix: the first start and the exclusive upper bound.
/// Every path starts with `/`, so the empty prefix is `["/", "0")`.
pub fn scan_bounds(prefix: &str) -> (String, String) {
    if prefix.is_empty() {
        ("/".to_string(), "0".to_string())
    } else {
        (
            prefix.to_string(),
            prefix_upper_bound(prefix).expect("a validated prefix starts with '/'"),
        )
    }
}

/// Moves a start below the range up to the range's first start.
pub fn scan_start(prefix: &str, from: ScanFrom) -> ScanFrom {
    let (lower, _) = scan_bounds(prefix);
    match from {
        ScanFrom::Including(s) if s.as_str() < lower.as_str() => ScanFrom::Including(lower),
        other => other,
    }
}

/// How many rows the next fetch should ask for.
pub fn scan_batch(limit: usize, have: usize) -> usize {
    (limit - have).min(crate::files::MAX_PAGE_SIZE + 1)
}

/// Takes the rows one fetch of at most `batch` returned, appends those that
/// belong to the listing (all of them, or only those with no `/` after
/// `prefix`), and says where the next fetch starts; `None` when the listing
/// is complete (it has `limit` items, or the range is exhausted).
pub fn scan_step(
    prefix: &str,
    recursive: bool,
    rows: Vec<FileRecord>,
    batch: usize,
    limit: usize,
    items: &mut Vec<FileRecord>,
) -> Option<ScanFrom> {
    let fetched = rows.len();
    let mut next = None;
    for record in rows {
        match record.path[prefix.len()..].find('/') {
            Some(slash) if !recursive => {
                // Skip the subtree `prefix + segment + '/'`: '0' follows '/'.
                next = Some(ScanFrom::Including(format!(
                    "{}0",
                    &record.path[..prefix.len() + slash]
                )));
                break;
            }
            _ => {
                next = Some(ScanFrom::After(record.path.clone()));
                items.push(record);
            }
        }
    }
    let skipped = matches!(next, Some(ScanFrom::Including(_)));
    if items.len() >= limit || (!skipped && fetched < batch) {
        return None;
    }
    next
}

/// One step of a walk for the directories directly below `prefix`, over the
/// rows of one fetch of [`DIRECTORY_BATCH`]: records the first directory seen
/// and returns where to continue; `None` when the walk is complete.
pub fn directories_step(
    prefix: &str,
    rows: &[FileRecord],
    dirs: &mut Vec<String>,
) -> Option<ScanFrom> {
    let mut from = ScanFrom::After(rows.last()?.path.clone());
    for record in rows {
        if let Some(slash) = record.path[prefix.len()..].find('/') {
            let dir = record.path[..prefix.len() + slash].to_string();
            from = ScanFrom::Including(format!("{dir}0"));
            dirs.push(dir);
            break;
        }
    }
    if rows.len() < DIRECTORY_BATCH && matches!(from, ScanFrom::After(_)) {
        return None;
    }
    Some(from)
}
