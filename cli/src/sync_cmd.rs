//! `nexus sync` and `nexus verify`: the store into PostgreSQL; change
//! files: `export-changes`, `import-changes`, `sync --from-changes`.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use nexus_core::{ChangeFile, Store};
use nexus_sync::{PgUrl, Remote, Replicator, SyncMode, SyncOptions};
use serde_json::json;

use crate::output::{Out, count, human_size, rows_by_table};
use crate::{Failure, fail};

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))
}

fn sync_failure(e: nexus_sync::Error) -> Failure {
    let mut message = crate::one_line(&e);
    if e.is_retryable() {
        message.push_str(" (retryable: run the same command again)");
    }
    fail(message)
}

/// The database or sync server `url` names (`token`: a sync server's).
pub fn remote(url: &str, token: &Option<String>) -> Result<Remote, Failure> {
    let remote = Remote::parse(url, token.clone()).map_err(sync_failure)?;
    if matches!(remote, Remote::Server(_)) && token.as_deref().is_none_or(str::is_empty) {
        return Err(fail(format!(
            "{remote} is a sync server: give its token with --token or NEXUS_TOKEN"
        )));
    }
    Ok(remote)
}

pub fn sync(
    store: &Store,
    to: &Remote,
    dry_run: bool,
    window: usize,
    out: &Out,
) -> Result<(), Failure> {
    let target = to;
    let rt = runtime()?;
    if dry_run {
        let Remote::Postgres(target) = to else {
            return Err(fail(
                "--dry-run checks values against PostgreSQL directly: give a postgresql:// URL",
            ));
        };
        let report = rt
            .block_on(Replicator::new(store.clone(), (**target).clone()).dry_run())
            .map_err(sync_failure)?;
        // The dry run's verdict outlives a closed stdout (`| head`).
        let printed = out.value(
            &serde_json::to_value(&report).expect("serializable"),
            || {
                let mut lines = vec![format!(
                    "dry run into {target}: {:?}, changes {} -> {}{}",
                    report.mode,
                    report.from_seq,
                    report.to_seq,
                    if report.target_has_schema {
                        ""
                    } else {
                        " (the target has no Nexus schema yet)"
                    }
                )];
                for (table, rows) in &report.tables {
                    lines.push(format!("  {table:<16} {rows:>12} rows"));
                }
                for p in &report.problems {
                    lines.push(format!("  would not convert: {p}"));
                }
                lines.join("\n")
            },
        );
        if report.problem_count > 0 {
            return Err(fail(format!(
                "{} value(s) would not convert to PostgreSQL; a sync would stop at the first",
                report.problem_count
            )));
        }
        return printed;
    }
    let bar = if out.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let progress_bar = bar.clone();
    let options = SyncOptions {
        window_rows: window.max(1),
        progress: Some(Arc::new(move |done, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(done);
        })),
        ..SyncOptions::default()
    };
    let report = rt
        .block_on(nexus_sync::push(store, to, &options))
        .map_err(sync_failure)?;
    bar.finish_and_clear();
    out.value(
        &serde_json::to_value(&report).expect("serializable"),
        || {
            let mode = match report.mode {
                SyncMode::UpToDate => "already up to date",
                SyncMode::Full => "full load",
                SyncMode::Incremental => "incremental",
            };
            let mut lines = vec![
                format!(
                    "synced into {target}: {mode}, changes {} -> {}, {:.2}s{}",
                    report.from_seq,
                    report.to_seq,
                    report.seconds,
                    if report.attempts > 1 {
                        format!(" ({} attempts)", report.attempts)
                    } else {
                        String::new()
                    }
                ),
                format!(
                    "  {:<16} {:>10} {:>12} {:>9} {:>10}",
                    "table", "rows", "bytes", "seconds", "rows/s"
                ),
            ];
            for t in &report.tables {
                lines.push(format!(
                    "  {:<16} {:>10} {:>12} {:>9.2} {:>10.0}",
                    t.table,
                    t.rows,
                    human_size(t.bytes),
                    t.seconds,
                    if t.seconds > 0.0 {
                        t.rows as f64 / t.seconds
                    } else {
                        0.0
                    }
                ));
            }
            lines.push(format!(
                "  {:<16} {:>10} {:>12} {:>9.2} {:>10.0}",
                "total",
                report.rows(),
                human_size(report.tables.iter().map(|t| t.bytes).sum()),
                report.seconds,
                if report.seconds > 0.0 {
                    report.rows() as f64 / report.seconds
                } else {
                    0.0
                }
            ));
            lines.extend(conflict_lines(&report.conflicts));
            lines.join("\n")
        },
    )?;
    Ok(())
}

/// The summary of a pull.
fn pull_text(from: &Remote, r: &nexus_sync::PullReport) -> String {
    if r.pages == 0 {
        return format!(
            "pulled from {from}: already up to date (position {})",
            r.from
        );
    }
    format!(
        "pulled from {from}: position {} -> {}, {}{}{}{}, {:.2}s",
        r.from,
        r.to,
        rows_by_table(r.files, r.versions, r.metadata, r.chunks, r.tombstones),
        if r.own > 0 {
            format!(
                "; {} of this store's own rows recognised and skipped",
                r.own
            )
        } else {
            String::new()
        },
        if r.resumed {
            "; resumed the first pull that was cut"
        } else {
            ""
        },
        match &r.discarded {
            Some(hub) => format!("; discarded the unfinished first pull from database {hub}"),
            None => String::new(),
        },
        r.seconds
    )
}

fn options(window: usize) -> SyncOptions {
    SyncOptions {
        window_rows: window.max(1),
        ..SyncOptions::default()
    }
}

/// `nexus pull --from URL`.
pub fn pull(store: &Store, source: &Remote, window: usize, out: &Out) -> Result<(), Failure> {
    let rt = runtime()?;
    let report = rt
        .block_on(nexus_sync::pull(store, source, &options(window)))
        .map_err(sync_failure)?;
    out.value(
        &serde_json::to_value(&report).expect("serializable"),
        || pull_text(source, &report),
    )?;
    Ok(())
}

/// `nexus sync --with URL`: push, then pull.
pub fn sync_with(store: &Store, db: &Remote, window: usize, out: &Out) -> Result<(), Failure> {
    let rt = runtime()?;
    let both = rt
        .block_on(nexus_sync::sync_with(store, db, &options(window)))
        .map_err(sync_failure)?;
    print_both(db, &both, out)
}

fn print_both(db: &Remote, both: &nexus_sync::SyncWithReport, out: &Out) -> Result<(), Failure> {
    let (pushed, pulled) = (&both.push, &both.pull);
    out.value(
        &json!({"push": pushed, "pull": pulled, "conflicts": pushed.conflicts}),
        || {
            let mut lines = vec![format!(
                "pushed into {db}: changes {} -> {}, {}, {:.2}s",
                pushed.from_seq,
                pushed.to_seq,
                count(pushed.rows(), "row"),
                pushed.seconds
            )];
            lines.extend(conflict_lines(&pushed.conflicts));
            lines.push(pull_text(db, pulled));
            lines.join("\n")
        },
    )?;
    Ok(())
}

/// `nexus sync --with URL --watch`: syncs both ways, then again after each
/// local change (looked for twice a second) or every `interval` seconds,
/// until interrupted. Failures that a retry may cure (the server or the
/// database unreachable) are reported and retried with backoff.
pub fn watch(
    store: &Store,
    db: &Remote,
    window: usize,
    interval: f64,
    out: &Out,
) -> Result<(), Failure> {
    if !(interval.is_finite() && interval > 0.0) {
        return Err(fail(format!(
            "--interval must be a positive number of seconds, got {interval}"
        )));
    }
    let interval = std::time::Duration::from_secs_f64(interval);
    let rt = runtime()?;
    rt.block_on(async {
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        // Polled once now, so that the handler is in place during the
        // first sync too (an interrupt then ends the watch after that sync
        // instead of killing the process in it).
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            _ = std::future::ready(()) => {}
        }
        let change_seq =
            async || -> Result<i64, Failure> { Ok(store.snapshot().await?.change_seq()) };
        let mut backoff = std::time::Duration::from_secs(1);
        loop {
            let wait = match nexus_sync::sync_with(store, db, &options(window)).await {
                Ok(both) => {
                    print_both(db, &both, out)?;
                    backoff = std::time::Duration::from_secs(1);
                    interval
                }
                Err(e) if e.is_retryable() => {
                    crate::output::warn(format!(
                        "{} (retrying in {}s)",
                        crate::one_line(&e),
                        backoff.as_secs()
                    ));
                    let b = backoff;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                    b
                }
                Err(e) => return Err(sync_failure(e)),
            };
            let seen = change_seq().await?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Local changes are looked for twice a second; the interval
                // may end sooner.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(left.min(std::time::Duration::from_millis(500))) => {}
                }
                if tokio::time::Instant::now() >= deadline || change_seq().await? != seen {
                    break;
                }
            }
        }
    })
}

/// One line per conflict copy a sync made, after a header; nothing when none.
fn conflict_lines(copies: &[nexus_core::ConflictCopy]) -> Vec<String> {
    if copies.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{} resolved (kept beside the path as conflict copies; `nexus find {}` lists them):",
        count(copies.len() as u64, "conflict"),
        nexus_core::CONFLICT_KEY
    )];
    for c in copies {
        lines.push(format!("  {} -> {}", c.path, c.copy));
    }
    lines
}

pub fn verify(store: &Store, to: &str, out: &Out) -> Result<(), Failure> {
    let target = PgUrl::parse(to).map_err(|e| sync_failure(e.into()))?;
    let rt = runtime()?;
    let report = rt
        .block_on(Replicator::new(store.clone(), target.clone()).verify())
        .map_err(sync_failure)?;
    // The verdict (exit 1 when the copies differ) outlives a closed stdout.
    let printed = out.value(
        &json!({"equal": report.equal(), "source_seq": report.source_seq, "tables": report.tables, "differences": report.differences()}),
        || {
            let mut lines = vec![format!("  {:<16} {:>10} {:>10}  {:<34} {}", "table", "store", "postgres", "checksum (store)", "")];
            for t in &report.tables {
                lines.push(format!(
                    "  {:<16} {:>10} {:>10}  {:<34} {}",
                    t.table,
                    t.source_rows,
                    t.target_rows,
                    t.source_checksum,
                    if t.equal() { "equal" } else { "DIFFERENT" }
                ));
            }
            lines.join("\n")
        },
    );
    if report.equal() {
        printed
    } else {
        Err(fail(format!(
            "the copy in {target} differs: {}",
            report.differences().join("; ")
        )))
    }
}

/// The file's name in messages.
fn shown(file: &str) -> String {
    if file == "-" {
        "<stdin>".to_string()
    } else {
        file.to_string()
    }
}

/// Reads and decodes a change file (`-`: stdin).
fn read_change_file(file: &str) -> Result<ChangeFile, Failure> {
    let bytes = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| fail(format!("cannot read the change file from stdin: {e}")))?;
        buf
    } else {
        std::fs::read(file).map_err(|e| fail(format!("cannot read the change file {file}: {e}")))?
    };
    ChangeFile::decode(&bytes)
        .map_err(|e| fail(format!("{}: {}", shown(file), crate::one_line(&e))))
}

fn file_summary(f: &ChangeFile) -> serde_json::Value {
    let c = &f.changes;
    json!({
        "source_id": f.source_id, "after": c.after, "through": c.through, "rows": c.len(),
        "files": c.files.len(), "versions": c.versions.len(), "metadata": c.metadata.len(),
        "chunks": c.chunks.len(), "tombstones": c.tombstones.len(),
    })
}

pub async fn export_changes(
    store: &Store,
    since: i64,
    output: Option<&Path>,
    out: &Out,
) -> Result<(), Failure> {
    let file = store.export_changes(since).await?;
    let bytes = file.encode();
    match output {
        None => out.bytes(&bytes)?,
        Some(path) => {
            std::fs::write(path, &bytes).map_err(|e| {
                fail(format!(
                    "cannot write the change file {}: {e}",
                    path.display()
                ))
            })?;
            let mut summary = file_summary(&file);
            summary["file"] = json!(path.display().to_string());
            summary["bytes"] = json!(bytes.len());
            out.value(&summary, || {
                format!(
                    "exported {} of source {} (changes {} -> {}) to {}",
                    count(file.changes.len() as u64, "row"),
                    file.source_id,
                    file.changes.after,
                    file.changes.through,
                    path.display()
                )
            })?;
        }
    }
    Ok(())
}

pub async fn import_changes(store: &Store, file: &str, out: &Out) -> Result<(), Failure> {
    let changes = read_change_file(file)?;
    let report = store
        .import_changes(&changes)
        .await
        .map_err(|e| fail(format!("{}: {}", shown(file), crate::one_line(&e))))?;
    out.value(
        &serde_json::to_value(&report).expect("serializable"),
        || {
            if report.skipped {
                format!(
                    "{}: already applied (source {} is at change {} here; the file ends at {}); nothing to do",
                    shown(file),
                    report.source_id,
                    report.previous,
                    report.through
                )
            } else {
                std::iter::once(format!(
                    "imported {}: source {}, changes {} -> {}, {}",
                    shown(file),
                    report.source_id,
                    report.previous,
                    report.through,
                    rows_by_table(
                        report.files,
                        report.versions,
                        report.metadata,
                        report.chunks,
                        report.tombstones
                    )
                ))
                .chain(conflict_lines(&report.conflicts))
                .collect::<Vec<_>>()
                .join("\n")
            }
        },
    )?;
    Ok(())
}

pub fn sync_from_changes(file: &str, to: &str, out: &Out) -> Result<(), Failure> {
    let changes = read_change_file(file)?;
    let target = PgUrl::parse(to).map_err(|e| sync_failure(e.into()))?;
    let rt = runtime()?;
    let report = rt
        .block_on(nexus_sync::apply_change_file(
            &target,
            changes,
            &SyncOptions::default(),
        ))
        .map_err(|e| {
            let f = sync_failure(e);
            fail(format!("{}: {}", shown(file), f.message))
        })?;
    out.value(
        &serde_json::to_value(&report).expect("serializable"),
        || match report.mode {
            SyncMode::UpToDate => format!(
                "{}: already applied (the target has source {} up to change {}); nothing to do",
                shown(file),
                report.source_id,
                report.from_seq
            ),
            _ => std::iter::once(format!(
                "applied {} into {target}: source {}, changes {} -> {}, {}, {:.2}s",
                shown(file),
                report.source_id,
                report.from_seq,
                report.to_seq,
                count(report.rows(), "row"),
                report.seconds
            ))
            .chain(conflict_lines(&report.conflicts))
            .collect::<Vec<_>>()
            .join("\n"),
        },
    )?;
    Ok(())
}
