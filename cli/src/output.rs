//! Printing results: JSON on `--json`, aligned text otherwise.
//!
//! Everything a command prints on stdout goes through [`Out`]: `write!` on a
//! locked, buffered stdout, flushed at the end of each call, and a failed
//! write turned into a [`Failure`] in one place ([`stdout_failure`]). Lines
//! on stderr go through [`warn`], which never fails.

use std::io::{self, BufWriter, Write};

use nexus_core::{FileRecord, Page, Stats, VersionInfo};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Failure, fail};

/// What a failed write to stdout means for the command.
///
/// A closed pipe (`nexus ls -r / | head`: the reader had enough and went
/// away) ends the command quietly with status 0, as ripgrep does. C tools
/// such as coreutils' `ls` die of the SIGPIPE signal instead (the shell shows
/// 141), but Rust ignores SIGPIPE and resetting it takes `unsafe` (forbidden
/// in this workspace); exiting with 141 by hand would only imitate the
/// signal (a parent sees an exit code, not a signal) and would make
/// `set -o pipefail` scripts fail on `nexus ... | head`. Nothing is lost by
/// stopping: a command's writes are committed before it prints, and the
/// reader chose not to read the rest. Every other write error (a full disk
/// under `> file`) is a failure with status 1.
pub(crate) fn stdout_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::stdout_closed()
    } else {
        fail(format!("cannot write to stdout: {e}"))
    }
}

/// Prints `nexus: {message}` on stderr. A stderr that cannot be written
/// (closed pipe) is ignored: there is nowhere left to report it.
pub(crate) fn warn(message: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "nexus: {message}");
}

#[derive(Debug)]
pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// Runs `f` on a locked, buffered stdout and flushes it: the one place
    /// that writes to stdout.
    pub fn write(&self, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), Failure> {
        let mut w = BufWriter::new(io::stdout().lock());
        f(&mut w).and_then(|()| w.flush()).map_err(stdout_failure)
    }

    /// Bytes as they are (a change file).
    pub fn bytes(&self, bytes: &[u8]) -> Result<(), Failure> {
        self.write(|w| w.write_all(bytes))
    }

    /// Prints `value` as JSON, or the text `human` renders.
    pub fn value(&self, value: &Value, human: impl FnOnce() -> String) -> Result<(), Failure> {
        if self.json {
            self.json(value)
        } else {
            let text = human();
            if text.is_empty() {
                return Ok(());
            }
            self.write(|w| writeln!(w, "{text}"))
        }
    }

    fn json<T: Serialize>(&self, v: &T) -> Result<(), Failure> {
        self.write(|w| {
            serde_json::to_writer_pretty(&mut *w, v)?;
            writeln!(w)
        })
    }

    pub fn record(&self, r: &FileRecord) -> Result<(), Failure> {
        if self.json {
            return self.json(r);
        }
        let none = || "-".to_string();
        self.write(|w| {
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
                writeln!(w, "{k:<14}{v}")?;
            }
            Ok(())
        })
    }

    /// A page of a listing; `dirs` are the subdirectories (non-recursive listings).
    pub fn page(&self, page: &Page, dirs: &[String]) -> Result<(), Failure> {
        if self.json {
            return self.json(
                &json!({"items": page.items, "next_cursor": page.next_cursor, "directories": dirs}),
            );
        }
        self.dirs(dirs)?;
        self.page_items(&page.items)?;
        if let Some(c) = &page.next_cursor {
            self.write(|w| writeln!(w, "-- more: --cursor {c}"))?;
        }
        Ok(())
    }

    pub fn dirs(&self, dirs: &[String]) -> Result<(), Failure> {
        self.write(|w| {
            for d in dirs {
                writeln!(w, "{:>12}  {:<5} {:<27}  {d}/", "-", "dir", "")?;
            }
            Ok(())
        })
    }

    pub fn page_items(&self, items: &[FileRecord]) -> Result<(), Failure> {
        self.write(|w| {
            for r in items {
                writeln!(
                    w,
                    "{:>12}  v{:<4} {}  {}",
                    r.size, r.version, r.modified_at, r.path
                )?;
            }
            Ok(())
        })
    }

    pub fn versions(&self, versions: &[VersionInfo]) -> Result<(), Failure> {
        if self.json {
            return self.json(&json!({"versions": versions}));
        }
        self.write(|w| {
            for v in versions {
                writeln!(
                    w,
                    "v{:<4} {}  {:>12}  {:<8} {}  {}",
                    v.version,
                    v.created_at,
                    v.size,
                    format!("{:?}", v.source).to_lowercase(),
                    v.etag.as_deref().unwrap_or("-"),
                    v.change_reason.as_deref().unwrap_or("")
                )?;
            }
            Ok(())
        })
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
