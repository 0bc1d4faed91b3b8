//! What the benchmark binaries share.

pub mod baseline;

/// The number after `name` on the command line (`--files 1000`), or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// Writes `files` files into `store` the way the sync benchmarks do: each
/// with one version (a 64-hex etag, a MIME type) and one metadata entry,
/// spread over 1,000 directories, in batches of 5,000.
/// File `i` of the benchmarks' data under `root`: one of 1,000
/// directories, an object-store location, a size and a content hash.
pub fn bench_file(root: &str, i: usize) -> nexus_core::NewFile {
    nexus_core::NewFile::new(
        format!("{root}/d{:04}/file-{i:07}.bin", i % 1000),
        "s3",
        format!("bucket/objects/{i:07}"),
        i as u64 * 37,
    )
    .etag(format!("{:064x}", i as u128 * 2654435761))
    .mime_type("application/octet-stream")
}

pub async fn generate(store: &nexus_core::Store, files: usize) {
    use nexus_core::NewFile;
    use serde_json::{Value, json};
    for start in (0..files).step_by(5000) {
        let end = (start + 5000).min(files);
        let batch: Vec<NewFile> = (start..end).map(|i| bench_file("/data", i)).collect();
        store.put_batch(&batch).await.unwrap();
        let meta: Vec<(String, String, Value)> = batch
            .iter()
            .enumerate()
            .map(|(j, f)| {
                (
                    f.path.clone(),
                    "tags".to_string(),
                    json!({"owner": format!("u{}", (start + j) % 97), "labels": ["bench", (start + j) % 10]}),
                )
            })
            .collect();
        store.set_metadata_batch(&meta).await.unwrap();
    }
}

/// Runs this benchmark binary again as a child process with `args` (its
/// child mode), so that the child's peak memory is its own; returns the
/// JSON it prints.
pub fn run_self(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.first().copied().unwrap_or("child"),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The peak resident memory of this process so far, in KiB (Linux).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// The resident memory of this process now, in KiB (Linux).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A field of `/proc/self/status` given in kB (0 where there is none).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
