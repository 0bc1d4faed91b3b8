//! Profiling aid: only batched puts, so `perf record` sees one workload.
use nexus_core::{NewFile, Store};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    pollster::block_on(async {
        let store = Store::open(dir.path().join("p.db")).await.unwrap();
        let files: Vec<NewFile> = (0..100_000)
            .map(|i| {
                NewFile::new(
                    format!("/data/d{:03}/f{i:07}", i % 997),
                    "local",
                    format!("/srv/{i}"),
                    1,
                )
                .etag(format!("{i:064x}"))
                .mime_type("application/octet-stream")
            })
            .collect();
        let start = std::time::Instant::now();
        for c in files.chunks(1000) {
            store.put_batch(c).await.unwrap();
        }
        eprintln!("{:?} per put", start.elapsed() / 100_000);
    });
}
