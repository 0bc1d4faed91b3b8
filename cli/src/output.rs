//! Printing results: JSON on `--json`, aligned text otherwise.

use nexus_core::{FileRecord, Page, Stats, VersionInfo};
use serde::Serialize;
use serde_json::{Value, json};

pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// Prints `value` as JSON, or the text `human` renders.
    pub fn value(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serializable")
            );
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    fn json<T: Serialize>(&self, v: &T) {
        println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
    }

    pub fn record(&self, r: &FileRecord) {
        if self.json {
            return self.json(r);
        }
        let none = || "-".to_string();
        for (k, v) in [
            ("path", r.path.clone()),
            ("backend", r.backend.clone()),
            ("physical_path", r.physical_path.clone()),
            ("size", r.size.to_string()),
            ("etag", r.etag.clone().unwrap_or_else(none)),
            ("mime_type", r.mime_type.clone().unwrap_or_else(none)),
            ("created_at", r.created_at.to_string()),
            ("modified_at", r.modified_at.to_string()),
            ("version", r.version.to_string()),
            ("tenant", r.tenant.clone()),
        ] {
            println!("{k:<14}{v}");
        }
    }

    /// A page of a listing; `dirs` are the subdirectories (non-recursive listings).
    pub fn page(&self, page: &Page, dirs: &[String]) {
        if self.json {
            return self.json(
                &json!({"items": page.items, "next_cursor": page.next_cursor, "directories": dirs}),
            );
        }
        self.dirs(dirs);
        self.page_items(&page.items);
        if let Some(c) = &page.next_cursor {
            println!("-- more: --cursor {c}");
        }
    }

    pub fn dirs(&self, dirs: &[String]) {
        for d in dirs {
            println!("{:>12}  {:<5} {:<27}  {d}/", "-", "dir", "");
        }
    }

    pub fn page_items(&self, items: &[FileRecord]) {
        for r in items {
            println!(
                "{:>12}  v{:<4} {}  {}",
                r.size, r.version, r.modified_at, r.path
            );
        }
    }

    pub fn versions(&self, versions: &[VersionInfo]) {
        if self.json {
            return self.json(&json!({"versions": versions}));
        }
        for v in versions {
            println!(
                "v{:<4} {}  {:>12}  {:<8} {}  {}",
                v.version,
                v.created_at,
                v.size,
                format!("{:?}", v.source).to_lowercase(),
                v.etag.as_deref().unwrap_or("-"),
                v.change_reason.as_deref().unwrap_or("")
            );
        }
    }
}

pub fn stats_text(s: &Stats) -> String {
    format!(
        "tenant           {}\nfiles            {}\ntotal bytes      {}\ndeleted records  {}\nmetadata entries {}\nversions         {}\nchunks           {}\nchange sequence  {}\nschema version   {}",
        s.tenant,
        s.files,
        s.total_bytes,
        s.deleted_files,
        s.metadata_entries,
        s.versions,
        s.chunks,
        s.change_seq,
        s.schema_version
    )
}
