//! `ls` and `stats PREFIX`: listings and sizes under a prefix, computed from
//! the store's paged listing.

use std::collections::BTreeMap;

use nexus_core::{DynStore, ListOptions, MAX_PAGE_SIZE};
use serde::Serialize;

use crate::output::{Format, Out};
use crate::{Failure, LsArgs, StatsArgs};

/// `ls /dir` and `stats /dir` mean the directory; any other prefix is taken
/// as it is.
async fn resolve_prefix(store: &DynStore, prefix: Option<&str>) -> Result<String, Failure> {
    let mut prefix = prefix.unwrap_or("/").to_string();
    if !prefix.ends_with('/')
        && nexus_core::validate_path(&prefix).is_ok()
        && store.is_directory(&prefix).await?
    {
        prefix.push('/');
    }
    Ok(prefix)
}

pub async fn ls(store: &DynStore, a: &LsArgs, out: &Out) -> Result<(), Failure> {
    let format = Format {
        human: a.human_readable,
        names_only: a.one_per_line,
    };
    let prefix = resolve_prefix(store, a.prefix.as_deref()).await?;
    let opts = ListOptions::prefix(prefix)
        .recursive(a.recursive)
        .limit(a.limit.unwrap_or(MAX_PAGE_SIZE))
        .cursor(a.cursor.clone());
    // Subdirectories come first, on the first page of a non-recursive listing.
    let dirs = if a.recursive || a.cursor.is_some() {
        Vec::new()
    } else {
        store.list_directories(&opts.prefix).await?
    };
    if a.limit.is_some() || a.cursor.is_some() || out.json {
        let page = store.list_page(&opts).await?;
        out.page(&page, &dirs, format)?;
    } else {
        out.dirs(&dirs, format)?;
        // Without a limit, print everything, a page at a time; a closed
        // stdout stops the listing at the page it happens in.
        let mut opts = opts;
        loop {
            let page = store.list_page(&opts).await?;
            out.page_items(&page.items, format)?;
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(())
}

/// Files and bytes below a prefix.
#[derive(Debug, Default, Serialize)]
pub struct Usage {
    /// The prefix as listed (`/dir/` for a directory).
    pub prefix: String,
    /// Live files below it, at any depth.
    pub files: u64,
    /// Their sizes summed.
    pub bytes: u64,
    /// Each immediate subdirectory with everything below it, sorted by path.
    pub directories: Vec<DirUsage>,
}

/// Files and bytes below one subdirectory.
#[derive(Debug, Serialize)]
pub struct DirUsage {
    /// The directory, without a trailing `/` (as `ls --json` names them).
    pub path: String,
    pub files: u64,
    pub bytes: u64,
}

/// Sums a recursive listing of the prefix, page by page (memory: one page
/// and one entry per subdirectory). Pages are separate reads, so a listing
/// that runs while others write sees each file once but not one snapshot.
pub async fn usage(store: &DynStore, prefix: &str) -> Result<Usage, Failure> {
    let prefix = resolve_prefix(store, Some(prefix)).await?;
    let mut opts = ListOptions::prefix(prefix.clone()).limit(MAX_PAGE_SIZE);
    let mut total = Usage {
        prefix: prefix.clone(),
        ..Usage::default()
    };
    let mut dirs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    loop {
        let page = store.list_page(&opts).await?;
        for r in &page.items {
            total.files += 1;
            total.bytes = total.bytes.saturating_add(r.size);
            let rest = &r.path[prefix.len()..];
            if let Some(i) = rest.find('/') {
                let dir = &r.path[..prefix.len() + i];
                let entry = match dirs.get_mut(dir) {
                    Some(e) => e,
                    None => dirs.entry(dir.to_string()).or_default(),
                };
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(r.size);
            }
        }
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    total.directories = dirs
        .into_iter()
        .map(|(path, (files, bytes))| DirUsage { path, files, bytes })
        .collect();
    Ok(total)
}

/// `stats PREFIX` as text: one line per subdirectory, then the prefix's
/// total, as `du -d1` prints them (bytes, files, path).
pub fn usage_text(u: &Usage, format: Format) -> String {
    let mut lines = vec![format!("{:>12}  {:>9}  path", "bytes", "files")];
    for d in &u.directories {
        lines.push(format!(
            "{:>12}  {:>9}  {}/",
            format.size(d.bytes),
            d.files,
            d.path
        ));
    }
    lines.push(format!(
        "{:>12}  {:>9}  {}",
        format.size(u.bytes),
        u.files,
        u.prefix
    ));
    lines.join("\n")
}

pub async fn stats(store: &DynStore, a: &StatsArgs, out: &Out) -> Result<(), Failure> {
    let format = Format {
        human: a.human_readable,
        names_only: false,
    };
    match &a.prefix {
        None => {
            let stats = store.stats().await?;
            out.value(&serde_json::to_value(&stats).expect("serializable"), || {
                crate::output::stats_text(&stats, format)
            })
        }
        Some(prefix) => {
            let u = usage(store, prefix).await?;
            out.value(&serde_json::to_value(&u).expect("serializable"), || {
                usage_text(&u, format)
            })
        }
    }
}
