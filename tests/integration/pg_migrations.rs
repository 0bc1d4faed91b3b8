//! The PostgreSQL dialect of the migrations, on a real server.

use nexus_migrations::{Dialect, Migrator};
use nexus_postgres::PgDriver;
use nexus_tests::pg::{self, connect};

async fn schema(client: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || \
         coalesce(collation_name, '') || ' ' || coalesce(column_default, '') FROM information_schema.columns \
         WHERE table_schema = current_schema() ORDER BY 1",
        "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
        "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE connamespace = current_schema()::regnamespace ORDER BY 1",
        "SELECT 'function ' || pg_get_functiondef(oid) FROM pg_proc \
         WHERE pronamespace = current_schema()::regnamespace ORDER BY 1",
        "SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t \
         JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace ORDER BY 1",
    ] {
        for r in client.query(sql, &[]).await.unwrap() {
            out.push(r.get(0));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_down_to_base_up_again_gives_identical_schema() {
    let db = pg::database("pg_mig_roundtrip").await;
    let mut client = connect(&db.url).await;
    let m = Migrator::new(Dialect::Postgres);
    let applied = m.up(&mut PgDriver::new(&mut client), None).await.unwrap();
    assert_eq!(applied, (1..=m.head()).collect::<Vec<_>>());
    let at_head = schema(&client).await;
    for needle in [
        "file_paths.path_id uuid NO",
        "file_paths.virtual_path text NO C",
        "file_metadata.value jsonb NO",
        "file_paths.created_at timestamp with time zone NO",
        "file_paths.size_bytes bigint NO",
        "nexus_sync_state.via text NO",
        "idx_file_metadata_value_gin CREATE INDEX idx_file_metadata_value_gin ON public.file_metadata USING gin (value)",
        "uq_file_paths_live_path CREATE UNIQUE INDEX uq_file_paths_live_path ON public.file_paths USING btree (tenant_id, virtual_path) WHERE (deleted_at IS NULL)",
    ] {
        assert!(
            at_head.iter().any(|l| l.starts_with(needle)),
            "missing {needle:?} in {at_head:#?}"
        );
    }
    // Each down migration gives back the schema its up migration found
    // (tables, indexes, constraints and functions).
    let mut stepwise = Vec::new();
    m.down(&mut PgDriver::new(&mut client), 0).await.unwrap();
    for v in 0..=m.head() {
        m.up(&mut PgDriver::new(&mut client), Some(v))
            .await
            .unwrap();
        stepwise.push(schema(&client).await);
    }
    assert_eq!(stepwise.last(), Some(&at_head));
    for v in (0..m.head()).rev() {
        assert_eq!(
            m.down(&mut PgDriver::new(&mut client), v).await.unwrap(),
            [v + 1]
        );
        assert_eq!(
            schema(&client).await,
            stepwise[v as usize],
            "down from version {} to {v}",
            v + 1
        );
    }
    m.up(&mut PgDriver::new(&mut client), None).await.unwrap();
    let reverted = m.down(&mut PgDriver::new(&mut client), 0).await.unwrap();
    assert_eq!(reverted, (1..=m.head()).rev().collect::<Vec<_>>());
    let at_base = schema(&client).await;
    assert!(
        at_base.iter().all(|l| l.starts_with("_nexus_migrations")),
        "only bookkeeping left: {at_base:#?}"
    );
    m.up(&mut PgDriver::new(&mut client), None).await.unwrap();
    assert_eq!(schema(&client).await, at_head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_apply_each_version_once() {
    let db = pg::database("pg_mig_concurrent").await;
    let runs = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let mut client = connect(&url).await;
            Migrator::new(Dialect::Postgres)
                .up(&mut PgDriver::new(&mut client), None)
                .await
                .unwrap()
        })
    });
    let mut applied: Vec<u32> = Vec::new();
    for r in runs {
        applied.extend(r.await.unwrap());
    }
    applied.sort();
    let head = Migrator::new(Dialect::Postgres).head();
    assert_eq!(
        applied,
        (1..=head).collect::<Vec<_>>(),
        "the advisory lock let each version apply once"
    );
    let client = connect(&db.url).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM _nexus_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as u32, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_checksum_is_refused_on_postgres() {
    let db = pg::database("pg_mig_tamper").await;
    let mut client = connect(&db.url).await;
    let m = Migrator::new(Dialect::Postgres);
    m.up(&mut PgDriver::new(&mut client), None).await.unwrap();
    client
        .execute(
            "UPDATE _nexus_migrations SET checksum = 'x' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let err = m
        .up(&mut PgDriver::new(&mut client), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("was edited after it was applied"),
        "{err}"
    );
}

/// A database written before the tenant feed (version 9) keeps every row
/// in its tenants' feeds after the upgrade: version 10 counts the rows
/// already there, by the same rule as its triggers do later writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_feed_covers_rows_written_before_it() {
    let db = pg::database("pg_mig_tenant_feed").await;
    let mut client = connect(&db.url).await;
    let m = Migrator::new(Dialect::Postgres);
    m.up(&mut PgDriver::new(&mut client), Some(9))
        .await
        .unwrap();
    for (tenant, path) in [("a", "/a.txt"), ("b", "/b.txt"), ("a", "/a2.txt")] {
        client
            .execute(
                "SELECT nexus_put($1, $2, gen_random_uuid(), gen_random_uuid(), 'l', 'p', 1, \
                 NULL, NULL, now(), now(), NULL, NULL, NULL)",
                &[&tenant, &path],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "SELECT nexus_set_metadata('a', ARRAY['/a.txt'], ARRAY['k'], ARRAY['1'::jsonb], now())",
            &[],
        )
        .await
        .unwrap();
    m.up(&mut PgDriver::new(&mut client), None).await.unwrap();
    let store = nexus_pg::PgStore::connect(&db.url, nexus_pg::PgOptions::default())
        .await
        .unwrap();
    for (tenant, want) in [("a", vec!["/a.txt", "/a2.txt"]), ("b", vec!["/b.txt"])] {
        let page = store
            .tenant_changes_after(Some(tenant), 0, None, 100)
            .await
            .unwrap();
        let mut paths: Vec<&str> = page
            .changes
            .files
            .iter()
            .map(|f| f.virtual_path.as_str())
            .collect();
        paths.sort();
        assert_eq!(paths, want, "tenant {tenant}");
        assert_eq!(page.changes.versions.len(), want.len(), "tenant {tenant}");
        assert_eq!(
            page.changes.metadata.len(),
            usize::from(tenant == "a"),
            "tenant {tenant}"
        );
        assert!(page.caught_up);
    }
}
