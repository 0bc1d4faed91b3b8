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

/// How `ls` and `stats` print sizes and entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Format {
    /// Sizes as `ls -h` prints them ([`human_size`]).
    pub human: bool,
    /// Paths only, one per line (`ls -1`).
    pub names_only: bool,
}

impl Format {
    pub fn size(&self, bytes: u64) -> String {
        if self.human {
            human_size(bytes)
        } else {
            bytes.to_string()
        }
    }
}

/// `n` and `noun`, the noun plural unless `n` is one: `1 file`, `0 files`
/// (nouns that take an `s`).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The rows of a pull or an import, in all and table by table:
/// `3 rows (1 file, 1 version, 1 metadata, 0 chunks, 0 removals)`.
pub fn rows_by_table(
    files: u64,
    versions: u64,
    metadata: u64,
    chunks: u64,
    removals: u64,
) -> String {
    format!(
        "{} ({}, {}, {metadata} metadata, {}, {})",
        count(files + versions + metadata + chunks + removals, "row"),
        count(files, "file"),
        count(versions, "version"),
        count(chunks, "chunk"),
        count(removals, "removal")
    )
}

/// A size in powers of 1024 with one decimal, rounded up as `ls -h` rounds
/// (a size is never shown smaller than it is): `512 B`, `1.0 KiB`,
/// `1.1 KiB` (1025 bytes), `3.5 MiB`, `2.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1u64 << (10 * (unit + 2)) {
        unit += 1;
    }
    let scale = 1u128 << (10 * (unit + 1));
    let mut tenths = (u128::from(bytes) * 10).div_ceil(scale);
    // 1023.95 KiB rounds up to 1024.0 KiB: say 1.0 MiB.
    if tenths >= 10_240 && unit + 1 < UNITS.len() {
        unit += 1;
        tenths = tenths.div_ceil(1024);
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
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
    pub fn page(&self, page: &Page, dirs: &[String], format: Format) -> Result<(), Failure> {
        if self.json {
            return self.json(
                &json!({"items": page.items, "next_cursor": page.next_cursor, "directories": dirs}),
            );
        }
        self.dirs(dirs, format)?;
        self.page_items(&page.items, format)?;
        if let Some(c) = &page.next_cursor {
            if format.names_only {
                // stdout stays a list of paths.
                warn(format_args!("more: --cursor {c}"));
            } else {
                self.write(|w| writeln!(w, "-- more: --cursor {c}"))?;
            }
        }
        Ok(())
    }

    pub fn dirs(&self, dirs: &[String], format: Format) -> Result<(), Failure> {
        self.write(|w| {
            for d in dirs {
                if format.names_only {
                    writeln!(w, "{d}/")?;
                } else {
                    writeln!(w, "{:>12}  {:<5} {:<27}  {d}/", "-", "dir", "")?;
                }
            }
            Ok(())
        })
    }

    pub fn page_items(&self, items: &[FileRecord], format: Format) -> Result<(), Failure> {
        self.write(|w| {
            for r in items {
                if format.names_only {
                    writeln!(w, "{}", r.path)?;
                } else {
                    writeln!(
                        w,
                        "{:>12}  v{:<4} {}  {}",
                        format.size(r.size),
                        r.version,
                        r.modified_at,
                        r.path
                    )?;
                }
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

pub fn stats_text(s: &Stats, format: Format) -> String {
    format!(
        "tenant           {}\nfiles            {}\ntotal bytes      {}\ndeleted records  {}\nmetadata entries {}\nversions         {}\nchunks           {}\nchange sequence  {}\nschema version   {}",
        s.tenant,
        s.files,
        format.size(s.total_bytes),
        s.deleted_files,
        s.metadata_entries,
        s.versions,
        s.chunks,
        s.change_seq,
        s.schema_version
    )
}

#[cfg(test)]
mod tests {
    use super::{count, human_size, rows_by_table};

    #[test]
    fn counts_say_one_thing_and_many_things() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(2, "row"), "2 rows");
        assert_eq!(
            rows_by_table(1, 1, 1, 0, 0),
            "3 rows (1 file, 1 version, 1 metadata, 0 chunks, 0 removals)"
        );
        assert_eq!(
            rows_by_table(0, 0, 0, 0, 1),
            "1 row (0 files, 0 versions, 0 metadata, 0 chunks, 1 removal)"
        );
    }

    #[test]
    fn human_sizes_round_up_with_one_decimal() {
        for (bytes, shown) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1025, "1.1 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024, "10.0 KiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (1024 * 1024, "1.0 MiB"),
            (3 * 1024 * 1024 + 512 * 1024, "3.5 MiB"),
            (1 << 30, "1.0 GiB"),
            (5 << 40, "5.0 TiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(human_size(bytes), shown, "{bytes}");
        }
    }
}
