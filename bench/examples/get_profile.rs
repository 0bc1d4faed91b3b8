//! Profiling aid: only gets, so `perf record` sees one workload.
use nexus_core::{NewFile, Store};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    pollster::block_on(async {
        let store = Store::open(dir.path().join("p.db")).await.unwrap();
        let files: Vec<NewFile> = (0..20_000)
            .map(|i| {
                NewFile::new(format!("/data/d{:03}/f{i:07}", i % 997), "local", "/p", 1).etag("e")
            })
            .collect();
        for c in files.chunks(1000) {
            store.put_batch(c).await.unwrap();
        }
        let start = std::time::Instant::now();
        for _ in 0..5 {
            for f in &files {
                store.get(&f.path).await.unwrap().unwrap();
            }
        }
        eprintln!("{:?} per get", start.elapsed() / 100_000);
    });
}
