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

/// One fetch of a listing, fed row by row as the backend reads them: the
/// rows that belong (all of them, or only those with no `/` after the
/// prefix) go to the listing's items, and the first row inside a
/// subdirectory of a non-recursive listing ends the fetch (the next one
/// seeks past that subdirectory).
#[derive(Debug)]
pub struct ScanFetch<'a> {
    prefix: &'a str,
    recursive: bool,
    fetched: usize,
    skip_to: Option<ScanFrom>,
}

impl<'a> ScanFetch<'a> {
    /// A fetch of the listing of `prefix`.
    pub fn new(prefix: &'a str, recursive: bool) -> Self {
        ScanFetch {
            prefix,
            recursive,
            fetched: 0,
            skip_to: None,
        }
    }

    /// Takes the next row of the fetch; `false` when the fetch should stop.
    pub fn take(&mut self, record: FileRecord, items: &mut Vec<FileRecord>) -> bool {
        self.fetched += 1;
        if self.recursive {
            items.push(record);
            return true;
        }
        match record.path[self.prefix.len()..].find('/') {
            Some(slash) => {
                // Skip the subtree `prefix + segment + '/'`: '0' follows '/'.
                self.skip_to = Some(ScanFrom::Including(format!(
                    "{}0",
                    &record.path[..self.prefix.len() + slash]
                )));
                false
            }
            _ => {
                items.push(record);
                true
            }
        }
    }

    /// Where the next fetch starts, after a fetch of at most `batch` rows;
    /// `None` when the listing is complete (it has `limit` items, or the
    /// range is exhausted).
    pub fn next(self, batch: usize, limit: usize, items: &[FileRecord]) -> Option<ScanFrom> {
        if items.len() >= limit || (self.skip_to.is_none() && self.fetched < batch) {
            return None;
        }
        // Not skipping: every row fetched was taken, so the last item is the
        // last row (`fetched == batch > 0`).
        self.skip_to
            .or_else(|| items.last().map(|r| ScanFrom::After(r.path.clone())))
    }
}

/// [`ScanFetch`] over the rows one fetch of at most `batch` returned, for a
/// backend that reads a fetch's rows all at once; says where the next fetch
/// starts, `None` when the listing is complete.
pub fn scan_step(
    prefix: &str,
    recursive: bool,
    rows: Vec<FileRecord>,
    batch: usize,
    limit: usize,
    items: &mut Vec<FileRecord>,
) -> Option<ScanFrom> {
    let mut fetch = ScanFetch::new(prefix, recursive);
    for record in rows {
        if !fetch.take(record, items) {
            break;
        }
    }
    fetch.next(batch, limit, items)
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
