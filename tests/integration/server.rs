//! `nexus serve`: the sync server on loopback, in front of the throwaway
//! PostgreSQL. Real HTTP, real tokens, real stores.

use std::time::{SystemTime, UNIX_EPOCH};

use nexus_core::{CONFLICT_KEY, ChangeFile, MetadataStore, NewFile, Store};
use nexus_server::{Auth, AuthSettings};
use nexus_sync::{Remote, SyncOptions, pull, push, sync_with};
use nexus_tests::pg;
use nexus_tests::serve::{SECRET, TestServer, hs256, token, token_with};
use serde_json::{Value, json};

fn file(path: &str, etag: &str) -> NewFile {
    NewFile::new(path, "local", format!("/srv{path}"), etag.len() as u64).etag(etag)
}

async fn paths(s: &dyn MetadataStore) -> Vec<String> {
    s.list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect()
}

/// A raw request: (status, protocol header, JSON body).
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::new();
    let mut r = client.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let protocol = resp
        .headers()
        .get("nexus-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, protocol, body)
}

/// Syncs `s` both ways until its pull has read the feed past every
/// transaction that had ended when this was called. The feed stops before
/// the oldest transaction still running in this database (and one of
/// another database that ended while the bound was read), so one sync may
/// end short of it.
pub async fn sync_settled(s: &Store, remote: &Remote, db_url: &str) -> nexus_sync::SyncWithReport {
    let client = pg::connect(db_url).await;
    let now: i64 = client
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await
        .unwrap()
        .get(0);
    let mut first: Option<nexus_sync::SyncWithReport> = None;
    for _ in 0..600 {
        let r = sync_with(s, remote, &opts()).await.unwrap();
        let done = r.pull.to >= now;
        let keep = first.get_or_insert_with(|| r.clone());
        keep.pull.to = r.pull.to;
        if done {
            return first.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the feed did not pass transaction {now} in a minute");
}

fn opts() -> SyncOptions {
    SyncOptions {
        max_attempts: 1,
        ..SyncOptions::default()
    }
}

/// A few attempts, soon after one another: for the answers that ask the
/// client to ask the server again (409 `gap`, `hub_changed`).
fn retrying() -> SyncOptions {
    SyncOptions {
        max_attempts: 3,
        backoff: std::time::Duration::from_millis(10),
        ..SyncOptions::default()
    }
}

/// Two stores sync through the server: what one pushes the other pulls,
/// a path both wrote keeps one and a conflict copy, and the database,
/// the stores and the server agree. Every answer names the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_through_the_server() {
    let db = pg::database("serve_round_trip").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    a.put(file("/shared.txt", "from-a")).await.unwrap();
    a.put(file("/a-only.txt", "a")).await.unwrap();
    a.set_metadata("/a-only.txt", "owner", &json!("a"))
        .await
        .unwrap();
    b.put(file("/shared.txt", "from-b")).await.unwrap();
    b.put(file("/b-only.txt", "b")).await.unwrap();

    let pushed = push(&a, &remote, &opts()).await.unwrap();
    assert!(pushed.rows() >= 3, "{pushed:?}");
    assert!(pushed.conflicts.is_empty());
    // The second source is not stuck: its file is a conflict copy.
    let both = sync_settled(&b, &remote, &db.url).await;
    assert_eq!(both.push.conflicts.len(), 1, "{:?}", both.push);
    let copy = &both.push.conflicts[0];
    assert_eq!(copy.path, "/shared.txt");
    assert!(
        copy.copy.starts_with("/shared.sync-conflict-"),
        "{}",
        copy.copy
    );
    sync_settled(&a, &remote, &db.url).await;

    let (pa, pb) = (paths(&a).await, paths(&b).await);
    assert_eq!(pa, pb);
    assert_eq!(pa.len(), 4, "{pa:?}");
    assert_eq!(
        a.get("/shared.txt").await.unwrap().unwrap().etag.as_deref(),
        Some("from-a")
    );
    let kept = b.get(&copy.copy).await.unwrap().unwrap();
    assert_eq!(kept.etag.as_deref(), Some("from-b"));
    assert!(
        b.get_metadata(&copy.copy, CONFLICT_KEY)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        b.get_metadata("/a-only.txt", "owner").await.unwrap(),
        Some(json!("a"))
    );
    // What PostgreSQL holds is what the stores hold.
    let pgs = nexus_pg::PgStore::connect(&db.url, nexus_pg::PgOptions::default())
        .await
        .unwrap();
    assert_eq!(paths(&pgs).await, pa);

    // Idle: nothing pushed, nothing pulled.
    let idle = sync_with(&a, &remote, &opts()).await.unwrap();
    assert_eq!(idle.push.rows(), 0);
    assert_eq!(idle.pull.rows(), 0);

    // The protocol version is on every answer, errors too.
    let (status, protocol, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/health", server.url),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!((status, protocol.as_deref()), (200, Some("1")));
    assert_eq!(body["status"], "ok");
    let (status, protocol, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/nothing", server.url),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!((status, protocol.as_deref()), (404, Some("1")));
    assert_eq!(body["error"], "not_found");
    server.stop().await;
}

/// The newest transaction that wrote files in the database at `db_url`.
async fn newest_file_transaction(db_url: &str) -> i64 {
    pg::connect(db_url)
        .await
        .query_one("SELECT max(change_seq) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0)
}

/// Sets `synchronous_commit` of the database's new sessions (the test
/// cluster runs with it off).
async fn synchronous_commit(db: &pg::TestDb, setting: &str) {
    pg::connect(&db.url)
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = {setting}",
            db.name()
        ))
        .await
        .unwrap();
}

/// A database whose commits are flushed, a server in front of it, and two
/// stores of tenant `default`.
async fn two_stores_with_flushed_commits(
    name: &str,
) -> (pg::TestDb, TestServer, Remote, Store, Store) {
    let db = pg::database(name).await;
    synchronous_commit(&db, "on").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    (db, server, remote, a, b)
}

/// A raw pull of tenant `default` from position 0, as `source` (none: as
/// nobody), asked again until its page passes transaction `past`.
async fn raw_pull_past(server: &TestServer, source: Option<&str>, past: i64) -> Value {
    let source = source.map(|s| format!("&source={s}")).unwrap_or_default();
    let url = format!("{}/v1/pull?after=0{source}", server.url);
    for _ in 0..600 {
        let (status, _, body) = call(
            reqwest::Method::GET,
            &url,
            Some(&token("default", 60)),
            &[],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["changes"]["through"].as_i64().unwrap() >= past {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no page passed transaction {past} in a minute");
}

/// The virtual paths of a raw pull page's files.
fn page_paths(page: &Value) -> Vec<&str> {
    page["changes"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["virtual_path"].as_str().unwrap())
        .collect()
}

/// A store pulls back every transaction it pushed. The server passes over
/// those that wrote only the store's own rows without reading them (the
/// store would leave their rows out anyway) and says how many it passed
/// over, so that the store still records its position. Another store of
/// the tenant reads them; a push the conflict rule changed is read by its
/// own source too (the rule's rows are the database's); and a server that
/// did not apply a push reads it, and its store leaves its rows out; so
/// does one whose commits are less durable than a page's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_passes_over_the_callers_own_pushes_unread() {
    let (db, server, remote, a, b) = two_stores_with_flushed_commits("serve_own_pushes").await;
    let a_id = a.snapshot().await.unwrap().source_id().to_string();
    let b_id = b.snapshot().await.unwrap().source_id().to_string();
    a.put(file("/a/1", "a1")).await.unwrap();
    a.put(file("/shared", "from-a")).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    let pushed = newest_file_transaction(&db.url).await;

    // Asked by nobody in particular, the page holds the push.
    let anyone = raw_pull_past(&server, None, pushed).await;
    assert_eq!(page_paths(&anyone), ["/a/1", "/shared"], "{anyone}");
    assert!(anyone.get("left_out").is_none(), "{anyone}");
    // The store's own pull: nothing comes back, and the position is
    // recorded (the page was not an idle one): at the push itself, though
    // a later transaction (another tenant's, say) had ended, since a page
    // that only passes over the reader's pushes ends at the last of them
    // and needs no record of its own to be durable.
    let later: i64 = pg::connect(&db.url)
        .await
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await
        .unwrap()
        .get(0);
    assert!(later > pushed);
    let stamped = a.snapshot().await.unwrap().change_seq();
    let r = sync_settled(&a, &remote, &db.url).await;
    assert_eq!((r.pull.own, r.pull.files, r.pull.pages), (0, 0, 1), "{r:?}");
    let hub = pg::store_id(&db.url).await;
    assert_eq!(a.pull_position(&hub).await.unwrap(), pushed);
    // Only the position moved: the store took no change sequence number.
    assert_eq!(a.snapshot().await.unwrap().change_seq(), stamped);

    // Once pulled past, a push is forgotten: asked from 0 again, the page
    // reads the first push and passes over the second unread.
    a.put(file("/a/2", "a2")).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    let pushed = newest_file_transaction(&db.url).await;
    let own = raw_pull_past(&server, Some(&a_id), pushed).await;
    assert_eq!(page_paths(&own), ["/a/1", "/shared"], "{own}");
    assert_eq!(own["left_out"], 1, "{own}");

    // Another store of the tenant reads it all. Its own file at the
    // shared path becomes a conflict copy, a transaction with rows of the
    // database's: its own pull reads that one.
    b.put(file("/shared", "from-b")).await.unwrap();
    let r = sync_settled(&b, &remote, &db.url).await;
    assert_eq!(r.push.conflicts.len(), 1, "{r:?}");
    let copy = r.push.conflicts[0].copy.clone();
    assert_eq!(paths(&b).await, ["/a/1", "/a/2", "/shared", copy.as_str()]);
    let settled = newest_file_transaction(&db.url).await;
    let own = raw_pull_past(&server, Some(&b_id), settled).await;
    assert!(own.get("left_out").is_none(), "{own}");
    assert!(page_paths(&own).contains(&copy.as_str()), "{own}");

    // A second server in front of the same database has not applied the
    // next push: it reads it, and the store leaves its rows out itself.
    let second = TestServer::start(&db.url).await;
    sync_settled(&a, &remote, &db.url).await;
    a.put(file("/a/3", "a3")).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    let r = sync_settled(&a, &second.remote("default"), &db.url).await;
    assert_eq!(r.pull.own, 2, "the file and version of /a/3: {r:?}");
    sync_settled(&b, &remote, &db.url).await;
    assert_eq!(paths(&a).await, paths(&b).await);
    second.stop().await;

    // Commits less durable than a page's own record (`synchronous_commit
    // = local`: not waited for on synchronous standbys; `off`: not even
    // flushed): their ids may be handed out again after a failover or a
    // crash, so they are read.
    synchronous_commit(&db, "local").await;
    let lax = TestServer::start(&db.url).await;
    sync_settled(&a, &lax.remote("default"), &db.url).await;
    a.put(file("/a/4", "a4")).await.unwrap();
    push(&a, &lax.remote("default"), &opts()).await.unwrap();
    let r = sync_settled(&a, &lax.remote("default"), &db.url).await;
    assert_eq!(r.pull.own, 2, "the file and version of /a/4: {r:?}");
    lax.stop().await;
    server.stop().await;
}

/// A tenant's list of transactions is cut by rows: a transaction of the
/// reader's own with more rows than a page fills it, and a later one that
/// wrote only files (another store's rename) is not in the list, though a
/// later own push is. Passed over unread, the first own push still ends
/// the page (its rows counted), so the rename comes in the next one
/// rather than being jumped over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_passing_over_an_own_push_ends_where_its_list_was_cut() {
    let (db, server, remote, a, b) = two_stores_with_flushed_commits("serve_own_cut").await;
    let batch: Vec<NewFile> = (0..4).map(|i| file(&format!("/a/{i}"), "a")).collect();
    a.put_batch(&batch).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    sync_settled(&b, &remote, &db.url).await;
    assert_eq!(b.rename("/a/0", "/b/renamed").await.unwrap(), 1);
    push(&b, &remote, &opts()).await.unwrap();
    // A second push of the reader's own after the rename: listed by its
    // version, so the list holds two own pushes around the missing rename.
    a.put(file("/a/4", "a")).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    let small = SyncOptions {
        window_rows: 2,
        ..opts()
    };
    let client = pg::connect(&db.url).await;
    let now: i64 = client
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await
        .unwrap()
        .get(0);
    for _ in 0..600 {
        if pull(&a, &remote, &small).await.unwrap().to >= now {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        paths(&a).await,
        ["/a/1", "/a/2", "/a/3", "/a/4", "/b/renamed"]
    );
    server.stop().await;
}

/// No token, a bad one, an expired one: 401, and the answer names why
/// without echoing the token. A token for tenant A can neither push rows
/// of tenant B (403 naming the tenant, nothing applied) nor pull them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_tenants() {
    let db = pg::database("serve_auth").await;
    let server = TestServer::start(&db.url).await;
    let state = format!("{}/v1/state?source=s1", server.url);
    let get = reqwest::Method::GET;

    let (status, _, body) = call(get.clone(), &state, None, &[], None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"].as_str().unwrap().contains("no token"),
        "{body}"
    );

    let garbage = "not-a-token-at-all";
    let (status, _, body) = call(get.clone(), &state, Some(garbage), &[], None).await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains(garbage));

    let expired = token("default", -3600);
    let (status, _, body) = call(get.clone(), &state, Some(&expired), &[], None).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert!(!body.to_string().contains(&expired));

    let forged = token_with(
        json!({"tenant": "default"}),
        3600,
        "another secret of 16+ bytes",
    );
    let (status, _, body) = call(get.clone(), &state, Some(&forged), &[], None).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    let no_tenant = token_with(json!({"sub": "someone"}), 3600, SECRET);
    let (status, _, body) = call(get.clone(), &state, Some(&no_tenant), &[], None).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("tenant"),
        "{body}"
    );

    let (status, _, body) = call(get.clone(), &state, Some(&token("default", 60)), &[], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["watermark"], 0);

    // A store whose rows are of tenant "acme" pushes with a token of
    // "default": refused, nothing applied.
    let s = Store::memory().await.unwrap();
    let acme = s.with_tenant("acme").unwrap();
    acme.put(file("/secret.txt", "x")).await.unwrap();
    let e = push(&s, &server.remote("default"), &opts())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"acme\""), "names the tenant: {e}");
    assert!(
        matches!(
            e,
            nexus_sync::Error::Remote {
                status: Some(403),
                ..
            }
        ),
        "{e:?}"
    );
    let n = pg::count(&db.url, "SELECT count(*) FROM file_paths").await;
    assert_eq!(n, 0, "nothing applied");

    // With its own tenant's token it goes through; "default" pulls none of it.
    push(&s, &server.remote("acme"), &opts()).await.unwrap();
    let other = Store::memory().await.unwrap();
    let r = pull(&other, &server.remote("default"), &opts())
        .await
        .unwrap();
    assert_eq!(r.rows(), 0, "{r:?}");
    assert!(paths(&other.with_tenant("acme").unwrap()).await.is_empty());
    let mine = Store::memory().await.unwrap();
    sync_settled(&mine, &server.remote("acme"), &db.url).await;
    assert_eq!(
        paths(&mine.with_tenant("acme").unwrap()).await,
        vec!["/secret.txt"]
    );

    // A push of "default" that names a file of "acme" by its id: refused.
    let refused_as_acme = async |cf: ChangeFile| {
        let (status, _, body) = call(
            reqwest::Method::POST,
            &format!("{}/v1/push", server.url),
            Some(&token("default", 60)),
            &[],
            Some(cf.encode()),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(body["message"].as_str().unwrap().contains("acme"), "{body}");
    };
    let pid = acme.get("/secret.txt").await.unwrap().unwrap().path_id;
    let mut cf = s.export_changes(0).await.unwrap();
    cf.source_id = "intruder".into();
    cf.changes
        .files
        .iter_mut()
        .for_each(|f| f.tenant_id = "default".into());
    assert!(cf.changes.files.iter().any(|f| f.path_id == pid));
    let theirs = cf.changes.versions[0].version_id.clone();
    refused_as_acme(cf).await;

    // A push of "default" whose version of its own file names a version of
    // "acme" by its id, as the parent or as its own: refused (the parent
    // would bring acme's rows into default's pulls; the id would move
    // acme's version into default's file).
    for own_id in [false, true] {
        let d = Store::memory().await.unwrap();
        d.put(file("/mine.txt", "m")).await.unwrap();
        let mut mine = d.export_changes(0).await.unwrap();
        let v = &mut mine.changes.versions[0];
        if own_id {
            v.version_id = theirs.clone();
        } else {
            v.parent_version_id = Some(theirs.clone());
        }
        refused_as_acme(mine).await;
    }
    let n = pg::count(
        &db.url,
        "SELECT count(*) FROM file_paths WHERE virtual_path = '/mine.txt'",
    )
    .await;
    assert_eq!(n, 0, "nothing applied");

    // A source store that pushed with a token of "acme" is acme's: a token
    // of "default" can neither read its watermark, nor move it with an
    // empty push under its id, nor pull as it. The store goes on syncing.
    let source = s.snapshot().await.unwrap().source_id().to_string();
    let stored = || {
        let (url, source) = (db.url.clone(), source.clone());
        async move {
            pg::connect(&url)
                .await
                .query_one(
                    "SELECT watermark, tenant_id FROM nexus_sync_state WHERE source_id = $1",
                    &[&source],
                )
                .await
                .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)))
                .unwrap()
        }
    };
    let (before, owner) = stored().await;
    assert_eq!(owner.as_deref(), Some("acme"));
    let other_tenant = |body: &Value| {
        let m = body["message"].as_str().unwrap();
        m.contains(&source) && m.contains("\"default\"") && !m.contains("acme")
    };
    let default = token("default", 60);
    let (status, _, body) = call(
        get.clone(),
        &format!("{}/v1/state?source={source}", server.url),
        Some(&default),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(other_tenant(&body), "{body}");
    let mut jump = s.export_changes(before).await.unwrap();
    jump.changes = nexus_core::Changes {
        after: before,
        through: before + 1_000_000,
        ..nexus_core::Changes::default()
    };
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push", server.url),
        Some(&default),
        &[],
        Some(jump.encode()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(other_tenant(&body), "{body}");
    let (status, _, body) = call(
        get.clone(),
        &format!("{}/v1/pull?source={source}", server.url),
        Some(&default),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(stored().await.0, before);
    acme.put(file("/later.txt", "y")).await.unwrap();
    let r = push(&s, &server.remote("acme"), &opts()).await.unwrap();
    assert!(r.rows() > 0, "{r:?}");
    server.stop().await;
}

/// `openssl ARGS [-in IN] -out OUT`, as an auth server makes its keys;
/// fails the test when it fails.
fn openssl(args: &[&str], input: Option<&std::path::Path>, out: &std::path::Path) {
    let mut c = std::process::Command::new("openssl");
    c.args(args);
    if let Some(input) = input {
        c.arg("-in").arg(input);
    }
    let status = c.arg("-out").arg(out).status().unwrap();
    assert!(status.success(), "openssl {args:?}: {status}");
}

/// Static tokens from a file of hashes, and RS256/ES256 keys: each names
/// its tenant; a bad tokens file stops the server from starting, naming
/// the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_and_public_keys() {
    let db = pg::database("serve_tokens").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let hash = hex::encode(nexus_server::token_hash("s3cret-token-of-team-a"));
    std::fs::write(&tokens, format!("# tenant hash\nteam-a {hash}\n")).unwrap();
    // An EC key made by openssl, as an auth server would hold it.
    let key = dir.path().join("ec.pem");
    let public = dir.path().join("ec.pub.pem");
    openssl(
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        None,
        &key,
    );
    openssl(&["ec", "-pubout"], Some(&key), &public);
    let pkcs8 = dir.path().join("ec.p8.pem");
    openssl(&["pkcs8", "-topk8", "-nocrypt"], Some(&key), &pkcs8);
    let server = TestServer::start_with(
        &db.url,
        |_| {},
        AuthSettings {
            tokens: Some(tokens.clone()),
            jwt_public_key: Some(public.clone()),
            tenant_claim: Some("org".into()),
            ..AuthSettings::default()
        },
    )
    .await;
    let state = format!("{}/v1/state?source=s1", server.url);
    let (status, _, body) = call(
        reqwest::Method::GET,
        &state,
        Some("s3cret-token-of-team-a"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(
        reqwest::Method::GET,
        &state,
        Some("s3cret-token-of-team-b"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 401);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let es = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"org": "team-b", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&pkcs8).unwrap()).unwrap(),
    )
    .unwrap();
    let s = Store::memory().await.unwrap();
    s.with_tenant("team-b")
        .unwrap()
        .put(file("/b.txt", "b"))
        .await
        .unwrap();
    let remote = Remote::parse(&server.url, Some(es.clone())).unwrap();
    push(&s, &remote, &opts()).await.unwrap();
    // An HS256 token is not accepted by a server that has no secret.
    let hs = token_with(json!({"org": "team-b"}), 600, SECRET);
    let (status, _, body) = call(reqwest::Method::GET, &state, Some(&hs), &[], None).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("HS256"),
        "{body}"
    );
    server.stop().await;

    std::fs::write(&tokens, "team-a not-a-hash\n").unwrap();
    let e = Auth::new(&AuthSettings {
        tokens: Some(tokens.clone()),
        ..AuthSettings::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    let e = Auth::new(&AuthSettings::default()).unwrap_err();
    assert!(e.to_string().contains("--jwt-secret"), "{e}");

    // An RSA key (RS256): its tokens pass, the EC key's do not.
    let rsa = dir.path().join("rsa.pem");
    let rsa_public = dir.path().join("rsa.pub.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        None,
        &rsa,
    );
    openssl(&["pkey", "-pubout"], Some(&rsa), &rsa_public);
    let server = TestServer::start_with(
        &db.url,
        |_| {},
        AuthSettings {
            jwt_public_key: Some(rsa_public),
            tenant_claim: Some("org".into()),
            ..AuthSettings::default()
        },
    )
    .await;
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"org": "team-b", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&rsa).unwrap()).unwrap(),
    )
    .unwrap();
    let state = format!("{}/v1/state?source=s1", server.url);
    let (status, _, body) = call(reqwest::Method::GET, &state, Some(&rs), &[], None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(reqwest::Method::GET, &state, Some(&es), &[], None).await;
    assert_eq!(status, 401, "an ES256 token: {body}");
    server.stop().await;
}

/// Malformed bodies and queries get 400s naming what is wrong; a body over
/// the limit gets 413; an unknown protocol version 400; a failed push
/// applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_limits() {
    let db = pg::database("serve_limits").await;
    let server = TestServer::start_with(
        &db.url,
        |c| {
            c.max_body_bytes = 64 * 1024;
            c.max_push_bytes = 80 * 1024;
        },
        hs256(),
    )
    .await;
    let t = token("default", 600);
    let push_url = format!("{}/v1/push", server.url);
    let post = reqwest::Method::POST;

    let (status, _, body) = call(
        post.clone(),
        &push_url,
        Some(&t),
        &[],
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("change file"),
        "{body}"
    );

    let (status, _, body) = call(
        post.clone(),
        &push_url,
        Some(&t),
        &[],
        Some(br#"{"format":"nexus-changes","version":1,"source_id":"s","after":0,"through":1,"files":[{"path_id":"x"}]}"#.to_vec()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A source's id follows one rule wherever it is named: the longest a
    // change file's `source_id` may be is a `source` of a state or a pull.
    for (source, ok) in [("s".repeat(255), true), ("s".repeat(256), false)] {
        for endpoint in ["state", "pull"] {
            let url = format!("{}/v1/{endpoint}?source={source}", server.url);
            let (status, _, body) = call(reqwest::Method::GET, &url, Some(&t), &[], None).await;
            if ok {
                assert_eq!(status, 200, "{endpoint}: {body}");
            } else {
                assert_eq!(status, 400, "{endpoint}: {body}");
                let m = body["message"].as_str().unwrap();
                assert!(m.contains("`source`") && m.contains("255 bytes"), "{body}");
            }
        }
        let file = nexus_core::ChangeFile {
            source_id: source.clone(),
            changes: nexus_core::Changes {
                through: 1,
                ..nexus_core::Changes::default()
            },
        };
        let (status, _, body) =
            call(post.clone(), &push_url, Some(&t), &[], Some(file.encode())).await;
        assert_eq!(status, if ok { 200 } else { 400 }, "push: {body}");
    }

    let (status, _, body) = call(
        post.clone(),
        &format!("{push_url}?base=minus"),
        Some(&t),
        &[],
        Some(Vec::new()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("base"), "{body}");

    let (status, _, body) = call(
        post.clone(),
        &push_url,
        Some(&t),
        &[],
        Some(vec![b' '; 100 * 1024]),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large");
    // Without a token the body is not read at all: 401, not 413.
    let (status, _, body) = call(
        post.clone(),
        &push_url,
        None,
        &[],
        Some(vec![b' '; 100 * 1024]),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/health", server.url),
        None,
        &[("nexus-protocol", "7")],
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("speaks 1"),
        "{body}"
    );

    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/pull?after=-5", server.url),
        Some(&t),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A push of too many rows for the limits (one window in parts larger
    // than max_push_bytes) fails whole and applies nothing; with smaller
    // windows it goes through.
    let s = Store::memory().await.unwrap();
    for i in 0..300 {
        s.put(file(&format!("/many/{i:04}"), &format!("e{i}")))
            .await
            .unwrap();
    }
    let e = push(&s, &server.remote("default"), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            nexus_sync::Error::Remote {
                status: Some(413),
                ..
            }
        ),
        "{e:?}"
    );
    let client = pg::connect(&db.url).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let small = SyncOptions {
        window_rows: 20,
        ..opts()
    };
    let r = push(&s, &server.remote("default"), &small).await.unwrap();
    assert_eq!(r.tables[0].rows, 300);
    let n: i64 = client
        .query_one("SELECT count(*) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 300);
    server.stop().await;
}

/// CORS: a page of an allowed origin may call the server (preflight
/// answered, headers exposed); another origin gets no CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_configured_origins() {
    let db = pg::database("serve_cors").await;
    let server = TestServer::start_with(
        &db.url,
        |c| c.cors_origins = vec!["http://app.example".into()],
        hs256(),
    )
    .await;
    let client = reqwest::Client::new();
    let pre = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/push", server.url))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,nexus-protocol,nexus-query",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers().get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(allowed.contains("nexus-query"), "{allowed}");
    let other = client
        .get(format!("{}/v1/health", server.url))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

/// A request's query string may come in the `nexus-query` header instead
/// of its URL (a browser's, so that its URL, and so its CORS preflight,
/// stays the same from request to request): the same answers, the same
/// 400s; not both at once; the token still checked first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_in_the_query_header() {
    let db = pg::database("serve_query_header").await;
    let server = TestServer::start(&db.url).await;
    let s = Store::memory().await.unwrap();
    s.put(file("/q.txt", "q")).await.unwrap();
    push(&s, &server.remote("default"), &opts()).await.unwrap();
    let source = s.snapshot().await.unwrap().source_id().to_string();
    let token = token("default", 60);
    let get = |path: &'static str, query: String, in_header: bool| {
        let url = match in_header {
            true => format!("{}{path}", server.url),
            false => format!("{}{path}?{query}", server.url),
        };
        let token = token.clone();
        async move {
            let headers = [("nexus-query", query.as_str())];
            let headers: &[(&str, &str)] = if in_header { &headers } else { &[] };
            call(reqwest::Method::GET, &url, Some(&token), headers, None).await
        }
    };
    let state = format!("source={source}");
    let (status, _, by_url) = get("/v1/state", state.clone(), false).await;
    assert_eq!(status, 200, "{by_url}");
    assert_eq!(by_url["query_header"], true, "the server says it reads it");
    let (status, _, by_header) = get("/v1/state", state, true).await;
    assert_eq!((status, &by_header), (200, &by_url));
    // A pull: the same page either way.
    let pulled = format!("after=0&max_rows=10&source={source}");
    let (status, _, by_url) = get("/v1/pull", pulled.clone(), false).await;
    assert_eq!(status, 200, "{by_url}");
    let (status, _, by_header) = get("/v1/pull", pulled.clone(), true).await;
    assert_eq!(status, 200, "{by_header}");
    assert_eq!(by_header["changes"]["after"], 0);
    assert_eq!(by_header["hub_id"], by_url["hub_id"]);
    assert_eq!(by_header["watermark"], by_url["watermark"]);
    // Bad parameters in the header: the same 400 as in the URL.
    let (status, _, body) = get("/v1/pull", "after=-1".into(), true).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    assert!(
        body["message"].as_str().unwrap().contains("`after`"),
        "{body}"
    );
    let (status, _, body) = get("/v1/pull", "after=x".into(), true).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the query string:"),
        "{body}"
    );
    // Both at once: refused, naming the header.
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/pull?after=0", server.url),
        Some(&token),
        &[("nexus-query", "after=0")],
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("nexus-query"),
        "{body}"
    );
    // The marker a browser puts in the URL (an older server refuses it as
    // an unknown parameter), with the header and without.
    let marked = format!("{}/v1/pull?query=header", server.url);
    let (status, _, body) = call(
        reqwest::Method::GET,
        &marked,
        Some(&token),
        &[("nexus-query", pulled.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hub_id"], by_url["hub_id"]);
    let (status, _, body) = call(reqwest::Method::GET, &marked, Some(&token), &[], None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("missing"),
        "{body}"
    );
    // No token: 401 whatever the parameters.
    let (status, _, _) = call(
        reqwest::Method::GET,
        &format!("{}/v1/pull", server.url),
        None,
        &[("nexus-query", "after=x")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    server.stop().await;
}

/// Several stores push and pull at once through one server: per-tenant
/// applies take turns, nothing is lost or doubled, all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once() {
    let db = pg::database("serve_many").await;
    let server = TestServer::start_with(&db.url, |c| c.max_applies_per_tenant = 1, hs256()).await;
    let mut stores = Vec::new();
    for i in 0..6 {
        let s = Store::memory().await.unwrap();
        for j in 0..5 {
            s.put(file(&format!("/c{i}/{j}"), &format!("e{i}-{j}")))
                .await
                .unwrap();
        }
        s.put(file("/everyone.txt", &format!("from-{i}")))
            .await
            .unwrap();
        stores.push(s);
    }
    let remote = server.remote("default");
    let mut tasks = Vec::new();
    for s in &stores {
        let (s, r) = (s.clone(), remote.clone());
        tasks.push(tokio::spawn(async move {
            sync_with(&s, &r, &SyncOptions::default()).await.unwrap()
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap().push.conflicts.len();
    }
    assert_eq!(conflicts, 5, "one keeps /everyone.txt, five copies");
    for s in &stores {
        sync_settled(s, &remote, &db.url).await;
    }
    let want = paths(&stores[0]).await;
    assert_eq!(want.len(), 6 * 5 + 6, "{want:?}");
    for s in &stores {
        assert_eq!(paths(s).await, want);
    }
    server.stop().await;
}

/// The server stopped mid-stream and started again on the same port:
/// clients that failed retry and converge, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_then_retry() {
    let db = pg::database("serve_restart").await;
    let server = TestServer::start(&db.url).await;
    let url = server.url.clone();
    let remote = server.remote("default");
    let s = Store::memory().await.unwrap();
    for i in 0..50 {
        s.put(file(&format!("/r/{i:03}"), &format!("e{i}")))
            .await
            .unwrap();
    }
    let small = SyncOptions {
        window_rows: 10,
        ..opts()
    };
    let first = push(&s, &remote, &small).await.unwrap();
    server.stop().await;
    for i in 50..80 {
        s.put(file(&format!("/r/{i:03}"), &format!("e{i}")))
            .await
            .unwrap();
    }
    let e = push(&s, &remote, &small).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    // Back on the same address.
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let again = TestServer::start_at(&db.url, addr, |_| {}).await;
    let r = push(&s, &remote, &small).await.unwrap();
    assert_eq!(r.from_seq, first.to_seq, "resumed where the server stopped");
    assert_eq!(r.tables[0].rows, 30, "only the new files");
    let client = pg::connect(&db.url).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 80);
    let b = Store::memory().await.unwrap();
    sync_settled(&b, &again.remote("default"), &db.url).await;
    assert_eq!(paths(&b).await, paths(&s).await);
    again.stop().await;
}

/// A client keeps what it heard of the server (its database's id, its
/// source's watermark as its last push left it) and pushes and pulls
/// without asking `/v1/state` again. When another server, in front of
/// another database, answers at the same address, a push that names the
/// old database is refused (409 `hub_changed`, nothing applied), and so is
/// a pull that names it (a client also refuses a page of another database
/// from a server that does not check): both ask again and carry on against
/// the new database, from its own watermark and feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asks_again_when_the_server_serves_another_database() {
    let (db1, db2) = (
        pg::database("serve_hub_one").await,
        pg::database("serve_hub_two").await,
    );
    let first = TestServer::start(&db1.url).await;
    let addr: std::net::SocketAddr = first.url.trim_start_matches("http://").parse().unwrap();
    let remote = first.remote("default");
    let retrying = retrying();
    let s = Store::memory().await.unwrap();
    for i in 0..5 {
        s.put(file(&format!("/h/{i}"), "a")).await.unwrap();
    }
    let r = sync_with(&s, &remote, &retrying).await.unwrap();
    assert_eq!(r.pull.hub_id, pg::store_id(&db1.url).await);
    first.stop().await;
    let second = TestServer::start_at(&db2.url, addr, |_| {}).await;

    // A push naming another database: refused before its body is read.
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push?base=0&hub=not-this-one", second.url),
        Some(&token("default", 60)),
        &[],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "hub_changed");
    let db2_id = pg::store_id(&db2.url).await;
    assert!(
        body["message"].as_str().unwrap().contains(&db2_id),
        "{body}"
    );

    // So is a pull, or a snapshot page, that names another database.
    for path in [
        "/v1/pull?after=0&max_rows=10&hub=not-this-one",
        "/v1/snapshot?max_rows=10&hub=not-this-one",
    ] {
        let (status, _, body) = call(
            reqwest::Method::GET,
            &format!("{}{path}", second.url),
            Some(&token("default", 60)),
            &[],
            None,
        )
        .await;
        assert_eq!(status, 409, "{path}: {body}");
        assert_eq!(body["error"], "hub_changed", "{path}");
    }

    // The same client: its pull names the database it heard of, and is
    // refused.
    let pulled = pull(&s, &remote, &retrying).await.unwrap();
    assert_eq!(pulled.hub_id, db2_id);
    assert_eq!(
        pulled.attempts, 2,
        "the page of the other database asked again"
    );
    // Its push names the database it heard of last: the new one now.
    for i in 5..8 {
        s.put(file(&format!("/h/{i}"), "a")).await.unwrap();
    }
    let pushed = push(&s, &remote, &retrying).await.unwrap();
    assert_eq!(pushed.from_seq, 0, "from the new database's own watermark");
    assert_eq!(live_files(&db2.url).await, 8);
    assert_eq!(
        live_files(&db1.url).await,
        5,
        "nothing more went to the old one"
    );
    second.stop().await;
}

/// A client's first pull (a snapshot load) is cut, and its server then
/// comes back in front of another database: the load of the old one can
/// never be finished. The next pull discards it and loads the new
/// database, instead of failing with `PullUnfinished` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pull_cut_when_the_server_moved_is_discarded() {
    let (db1, db2) = (
        pg::database("serve_discard_one").await,
        pg::database("serve_discard_two").await,
    );
    let first = TestServer::start(&db1.url).await;
    let addr: std::net::SocketAddr = first.url.trim_start_matches("http://").parse().unwrap();
    let remote = first.remote("default");
    let retrying = retrying();
    let a = Store::memory().await.unwrap();
    for i in 0..60 {
        a.put(file(&format!("/one/{i:02}"), "a")).await.unwrap();
    }
    let one = sync_with(&a, &remote, &retrying).await.unwrap().pull.hub_id;

    // Two pages of the snapshot committed, then cut.
    let c = Store::memory().await.unwrap();
    {
        let Remote::Server(hub) = &remote else {
            panic!("a server remote")
        };
        let mut bulk = c.begin_bulk_pull(&one).await.unwrap().unwrap();
        let mut after = None;
        for _ in 0..2 {
            let page = hub.snapshot(after.as_ref(), 20, None).await.unwrap();
            bulk.load(&page.changes).unwrap();
            after = page.next;
        }
        assert_eq!(bulk.rows(), 40);
    }
    first.stop().await;

    let second = TestServer::start_at(&db2.url, addr, |_| {}).await;
    let b = Store::memory().await.unwrap();
    for i in 0..7 {
        b.put(file(&format!("/two/{i}"), "b")).await.unwrap();
    }
    let two = sync_with(&b, &second.remote("default"), &retrying)
        .await
        .unwrap()
        .pull
        .hub_id;
    assert_ne!(one, two);

    let r = pull(&c, &remote, &retrying).await.unwrap();
    assert_eq!(r.hub_id, two);
    assert!(r.bulk, "{r:?}");
    assert_eq!(r.discarded.as_deref(), Some(one.as_str()), "{r:?}");
    assert_eq!(paths(&c).await, paths(&b).await);
    c.put(file("/three", "c")).await.unwrap();
    push(&c, &remote, &retrying).await.unwrap();
    assert_eq!(live_files(&db2.url).await, 8);
    assert_eq!(
        live_files(&db1.url).await,
        60,
        "nothing went to the old one"
    );
    second.stop().await;
}

/// A client that only pulls while another writes sends no push after each
/// pull that brought rows (it would carry no row, only move the server's
/// watermark): the server's watermark of it stays until it writes, or until
/// `PUSH_PUT_OFF` pulls wait, and its next push with rows of its own covers
/// the range and leaves the pulled rows out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_pulled_puts_off_its_push() {
    let db = pg::database("serve_put_off").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    // One reading connection: the push's check must not wait for the one
    // its reader holds.
    let idle = Store::builder().memory().readers(1).open().await.unwrap();
    let writer = Store::memory().await.unwrap();
    let idle_id = idle.snapshot().await.unwrap().source_id().to_string();
    let watermark = || async {
        pg::connect(&db.url)
            .await
            .query_opt(
                "SELECT watermark FROM nexus_sync_state WHERE source_id = $1",
                &[&idle_id],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i64>(0))
    };
    idle.put(file("/idle/0", "i")).await.unwrap();
    sync_with(&idle, &remote, &opts()).await.unwrap();
    let first = watermark().await.expect("pushed once");
    for round in 0..5 {
        writer.put(file(&format!("/w/{round}"), "w")).await.unwrap();
        sync_with(&writer, &remote, &opts()).await.unwrap();
        let r = sync_with(&idle, &remote, &opts()).await.unwrap();
        assert_eq!(r.pull.files, 1, "round {round}: {r:?}");
        assert_eq!(r.push.rows(), 0, "round {round}");
    }
    assert_eq!(
        watermark().await,
        Some(first),
        "no push that only moves the watermark"
    );
    // A write of its own: pushed from the old watermark, over the pulls.
    idle.put(file("/idle/1", "i")).await.unwrap();
    let r = sync_with(&idle, &remote, &opts()).await.unwrap();
    assert_eq!(r.push.from_seq, first);
    assert_eq!(
        r.push.tables[0].rows, 1,
        "its own file, not the pulled ones: {r:?}"
    );
    sync_with(&writer, &remote, &opts()).await.unwrap();
    assert_eq!(paths(&idle).await, paths(&writer).await);
    let head = idle.stats().await.unwrap().change_seq;
    assert!(
        watermark().await.unwrap() >= head - 1,
        "moved past the pulls"
    );
    // Past PUSH_PUT_OFF waiting pulls, the push that moves the watermark goes.
    let before = watermark().await.unwrap();
    for round in 0..=nexus_core::PUSH_PUT_OFF {
        writer
            .put(file(&format!("/more/{round}"), "w"))
            .await
            .unwrap();
        push(&writer, &remote, &opts()).await.unwrap();
        pull(&idle, &remote, &opts()).await.unwrap();
    }
    push(&idle, &remote, &opts()).await.unwrap();
    assert!(watermark().await.unwrap() > before);
    server.stop().await;
}

/// The server's body limit lowered while a client keeps the one it heard:
/// a request sized by the old limit gets a 413, which the client now takes
/// as a lowered limit (the body fitted the one it heard): it asks again
/// and pushes in parts by the new limit, in the same sync. A row too large
/// for any limit still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_body_limit_is_heard_again() {
    let db = pg::database("serve_limit_lowered").await;
    let first = TestServer::start(&db.url).await;
    let addr: std::net::SocketAddr = first.url.trim_start_matches("http://").parse().unwrap();
    let remote = first.remote("default");
    let s = Store::memory().await.unwrap();
    s.put(file("/first", "a")).await.unwrap();
    push(&s, &remote, &opts()).await.unwrap();
    first.stop().await;
    let second = TestServer::start_at(&db.url, addr, |c| c.max_body_bytes = 16 * 1024).await;
    // One transaction of about 60 KiB: one request by the old limit.
    let batch: Vec<NewFile> = (0..200)
        .map(|i| file(&format!("/batch/{i:03}"), "b"))
        .collect();
    s.put_batch(&batch).await.unwrap();
    let r = push(&s, &remote, &retrying()).await.unwrap();
    assert!(r.attempts >= 2, "{r:?}");
    assert_eq!(live_files(&db.url).await, 201);
    second.stop().await;

    // A 413 that no lowered body limit explains (the parts of one push add
    // up to more than the server takes in one push) stays final: asked
    // again, the body limit still fits the part.
    let third = TestServer::start_at(&db.url, addr, |c| {
        c.max_body_bytes = 16 * 1024;
        c.max_push_bytes = 32 * 1024;
    })
    .await;
    let batch: Vec<NewFile> = (0..300)
        .map(|i| file(&format!("/big/{i:03}"), "b"))
        .collect();
    s.put_batch(&batch).await.unwrap();
    match push(&s, &remote, &retrying()).await.unwrap_err() {
        nexus_sync::Error::Remote { status, kind, .. } => {
            assert_eq!((status, kind.as_str()), (Some(413), "too_large"));
        }
        e => panic!("{e}"),
    }
    assert_eq!(live_files(&db.url).await, 201, "nothing of it applied");
    third.stop().await;
}

/// A database restored from a copy under the same id may have lost a
/// store's latest pushes: the server's watermark of the store is then below
/// the one its client kept, and the client, which pushes from what it kept,
/// would not send them again. A pull's answer says the server's watermark:
/// one below the kept one makes the client forget what it kept, and its
/// next push asks again and sends what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pushes_again_what_a_restored_database_lost() {
    let db = pg::database("serve_restored").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let retrying = retrying();
    let s = Store::memory().await.unwrap();
    s.put(file("/r/0", "a")).await.unwrap();
    sync_with(&s, &remote, &retrying).await.unwrap();
    let watermark = || async {
        pg::connect(&db.url)
            .await
            .query_one("SELECT watermark FROM nexus_sync_state", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let first = watermark().await;
    s.put(file("/r/1", "a")).await.unwrap();
    sync_with(&s, &remote, &retrying).await.unwrap();
    // Once more: the position its pull recorded is a change of the store
    // too, pushed (empty) now; then the store and the server are at rest.
    sync_with(&s, &remote, &retrying).await.unwrap();
    assert_eq!(live_files(&db.url).await, 2);
    // The copy the database is restored from was taken between the pushes.
    pg::connect(&db.url)
        .await
        .execute(
            "WITH lost AS (DELETE FROM file_paths WHERE virtual_path = '/r/1') \
             UPDATE nexus_sync_state SET watermark = $1",
            &[&first],
        )
        .await
        .unwrap();
    assert_eq!(live_files(&db.url).await, 1);
    // The next sync pushes nothing (as far as the client knows, the server
    // has it all); its pull hears the server's watermark.
    let r = sync_with(&s, &remote, &retrying).await.unwrap();
    assert_eq!((r.push.rows(), r.push.attempts), (0, 1), "{r:?}");
    assert_eq!(live_files(&db.url).await, 1);
    // The one after asks again, and sends the lost file.
    let r = sync_with(&s, &remote, &retrying).await.unwrap();
    assert_eq!(r.push.from_seq, first, "from the server's watermark");
    assert!(r.push.rows() >= 2, "the lost file and its version: {r:?}");
    assert_eq!(live_files(&db.url).await, 2);
    server.stop().await;
}

/// A client's idea of its watermark can fall behind the server's (its
/// store pushed by another way since: here directly to the database). Its
/// next push through the server starts before the server's watermark: it
/// is refused (409 `gap`, nothing applied) instead of applying again what
/// the server has, and the client asks again and pushes only what is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_behind_the_servers_watermark_is_refused_then_sent_from_it() {
    let db = pg::database("serve_behind").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let direct = Remote::parse(&db.url, None).unwrap();
    let retrying = retrying();
    let s = Store::memory().await.unwrap();
    for i in 0..3 {
        s.put(file(&format!("/b/{i}"), "a")).await.unwrap();
    }
    let first = push(&s, &remote, &retrying).await.unwrap();
    assert_eq!(first.attempts, 1);
    for i in 3..5 {
        s.put(file(&format!("/b/{i}"), "a")).await.unwrap();
    }
    let around = push(&s, &direct, &retrying).await.unwrap();
    assert!(around.from_seq == first.to_seq && around.to_seq > first.to_seq);
    s.put(file("/b/5", "a")).await.unwrap();
    let r = push(&s, &remote, &retrying).await.unwrap();
    assert_eq!(
        r.attempts, 2,
        "refused once, then pushed from the server's watermark"
    );
    assert_eq!(r.tables[0].rows, 1, "only the new file: {r:?}");
    assert_eq!(live_files(&db.url).await, 6);
    server.stop().await;
}

/// The first pull of an empty store through the server reads the tenant's
/// snapshot page by page (`/v1/snapshot`, each page its own short read):
/// only the caller's tenant, every row once. A first pull cut after two
/// pages keeps them and resumes after the last row; a bad cursor is a 400
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pull_through_the_server_reads_a_paged_snapshot() {
    let db = pg::database("serve_snapshot").await;
    let server = TestServer::start(&db.url).await;
    let (mine, theirs) = (server.remote("default"), server.remote("other"));
    let a = Store::memory().await.unwrap();
    for i in 0..40 {
        let path = format!("/d/{i:02}");
        a.put(file(&path, &format!("e{i}"))).await.unwrap();
        a.set_metadata(&path, "n", &json!(i)).await.unwrap();
    }
    a.delete("/d/39").await.unwrap();
    push(&a, &mine, &opts()).await.unwrap();
    let other = Store::memory().await.unwrap().with_tenant("other").unwrap();
    other.put(file("/d/theirs", "t")).await.unwrap();
    push(&other, &theirs, &opts()).await.unwrap();

    let small = SyncOptions {
        window_rows: 7,
        ..opts()
    };
    let b = Store::memory().await.unwrap();
    let r = pull(&b, &mine, &small).await.unwrap();
    assert!(r.bulk && !r.resumed, "{r:?}");
    // The removed file's rows stay (removed, with its history).
    assert_eq!((r.files, r.metadata, r.versions), (40, 40, 40), "{r:?}");
    assert_eq!(paths(&b).await, paths(&a).await);
    assert!(b.get("/d/theirs").await.unwrap().is_none());
    assert_eq!(b.get_metadata("/d/07", "n").await.unwrap(), Some(json!(7)));

    // Raw pages: at most max_rows rows, and a cursor to go on from.
    let url = format!("{}/v1/snapshot", server.url);
    let t = token("default", 60);
    let (status, _, first) = call(
        reqwest::Method::GET,
        &format!("{url}?max_rows=30"),
        Some(&t),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["changes"]["files"].as_array().unwrap().len(), 30);
    let next = first["next"].clone();
    assert_eq!(next["table"], "file_paths", "{next}");
    let after = serde_json::to_string(&next).unwrap();
    let (status, _, second) = call(
        reqwest::Method::GET,
        &format!("{url}?max_rows=30&after={}", urlencoding(&after)),
        Some(&t),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["changes"]["files"].as_array().unwrap().len(), 10);
    assert_eq!(second["changes"]["versions"].as_array().unwrap().len(), 20);
    assert_eq!(second["next"]["table"], "version_history");
    let bad_cursors = [
        "not json".to_string(),
        r#"{"table":"nope","key":[]}"#.to_string(),
        r#"{"table":"file_paths","key":["x"]}"#.to_string(),
        r#"{"table":"version_history","key":["00000000-0000-0000-0000-000000000000"]}"#.to_string(),
    ];
    // The same cursors as a snapshot's `after` and as a pull's `within`.
    let pull_url = url.replace("/v1/snapshot", "/v1/pull");
    for bad in &bad_cursors {
        for (query, name) in [
            (format!("{url}?after={}", urlencoding(bad)), "after"),
            (
                format!("{pull_url}?after=1&within={}", urlencoding(bad)),
                "within",
            ),
        ] {
            let (status, _, body) = call(reqwest::Method::GET, &query, Some(&t), &[], None).await;
            assert_eq!(status, 400, "{name} {bad}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(name) || message.contains("snapshot cursor"),
                "{message}"
            );
        }
    }
    let (status, _, _) = call(reqwest::Method::GET, &url, None, &[], None).await;
    assert_eq!(status, 401);

    // Cut after two pages, then resumed.
    let Remote::Server(hub) = &mine else {
        panic!("a server remote")
    };
    let c = Store::memory().await.unwrap();
    let hub_id = first["hub_id"].as_str().unwrap().to_string();
    {
        let mut bulk = c.begin_bulk_pull(&hub_id).await.unwrap().unwrap();
        let mut after = None;
        for _ in 0..2 {
            let page = hub.snapshot(after.as_ref(), 25, None).await.unwrap();
            bulk.load(&page.changes).unwrap();
            after = page.next;
        }
        assert_eq!(bulk.rows(), 50);
    }
    assert!(matches!(
        c.put(file("/x", "x")).await.unwrap_err(),
        nexus_core::Error::PullUnfinished { .. }
    ));
    let r = pull(&c, &mine, &small).await.unwrap();
    assert!(r.bulk && r.resumed, "{r:?}");
    assert_eq!(r.rows(), 3 * 40 - 50, "the rest only: {r:?}");
    assert_eq!(paths(&c).await, paths(&a).await);
    assert_eq!(
        c.list_metadata("/d/38").await.unwrap(),
        a.list_metadata("/d/38").await.unwrap()
    );
    c.put(file("/x", "x")).await.unwrap();
}

/// `s` percent-encoded for a query string.
fn urlencoding(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("v=")
        .to_string()
}

/// Pushes through the server in windows of one row, where a file's row was
/// written again after its versions and metadata (a new file renamed
/// later; a new version of a file another store changed too, then a
/// rename): every window commits on its own, so each one must hold the
/// file rows its versions and metadata need. Before, the first push failed
/// on the database's foreign key and the second with "collide with other
/// versions ... no row of that file" (400), on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_windows_through_the_server() {
    let db = pg::database("serve_one_row").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let one = SyncOptions {
        window_rows: 1,
        ..opts()
    };
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/d/new", "n1")).await.unwrap();
    a.set_metadata("/d/new", "k", &json!(1)).await.unwrap();
    a.put(file("/f", "v1")).await.unwrap();
    a.rename("/d", "/e").await.unwrap();
    push(&a, &remote, &one).await.unwrap();
    sync_settled(&b, &remote, &db.url).await;
    assert_eq!(paths(&b).await, vec!["/e/new", "/f"]);

    b.put(file("/f", "b2")).await.unwrap();
    push(&b, &remote, &one).await.unwrap();
    a.put(file("/f", "a2")).await.unwrap();
    for i in 0..3 {
        a.put(file(&format!("/other/{i}"), "o")).await.unwrap();
    }
    a.rename("/f", "/f-renamed").await.unwrap();
    let r = push(&a, &remote, &one).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);

    for s in [&a, &b, &a, &b] {
        sync_settled(s, &remote, &db.url).await;
    }
    assert_eq!(paths(&a).await, paths(&b).await);
    let etag =
        |s: Store, p: &'static str| async move { s.get(p).await.unwrap().and_then(|f| f.etag) };
    assert_eq!(etag(a.clone(), "/f").await.as_deref(), Some("b2"));
    let all = a.list("/").await.unwrap();
    assert!(
        all.iter().any(|f| f.etag.as_deref() == Some("a2")),
        "{all:?}"
    );
    server.stop().await;
}

/// Settings for a server taking HS256 tokens of [`SECRET`].
/// Holds the advisory lock that a push of `source` takes first, in a
/// transaction of its own, until the returned client commits.
async fn hold_source_lock(db_url: &str, source: &str) -> tokio_postgres::Client {
    let locker = pg::connect(db_url).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&source],
        )
        .await
        .unwrap();
    locker
}

/// Returns once a session waits for an advisory lock (a push of a source
/// whose lock [`hold_source_lock`] holds); fails after 6 s.
async fn wait_for_a_push_at_the_lock(db_url: &str) {
    let watcher = pg::connect(db_url).await;
    for i in 0.. {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(i < 300, "no push reached the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn live_files(db_url: &str) -> i64 {
    pg::count(
        db_url,
        "SELECT count(*) FROM file_paths WHERE deleted_at IS NULL",
    )
    .await
}

/// A push that takes longer than the request timeout is answered 408
/// (retryable), applies nothing, and goes through when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_the_request_timeout_gets_408() {
    let db = pg::database("serve_timeout").await;
    let server = TestServer::start_with(
        &db.url,
        |c| c.request_timeout = std::time::Duration::from_millis(300),
        hs256(),
    )
    .await;
    let s = Store::memory().await.unwrap();
    s.put(file("/slow.txt", "s")).await.unwrap();
    let source = s.snapshot().await.unwrap().source_id().to_string();
    // Another session holds the source's lock: the push waits past the
    // timeout.
    let locker = hold_source_lock(&db.url, &source).await;
    let e = push(&s, &server.remote("default"), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            nexus_sync::Error::Remote {
                status: Some(408),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable(), "{e:?}");
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(live_files(&db.url).await, 0, "nothing applied");
    let r = push(&s, &server.remote("default"), &opts()).await.unwrap();
    assert!(r.rows() > 0, "{r:?}");
    assert_eq!(live_files(&db.url).await, 1);
    server.stop().await;
}

/// An in-memory store holding one file at `path` of `tenant`.
async fn store_in(tenant: &str, path: &str) -> Store {
    let s = Store::memory().await.unwrap();
    s.with_tenant(tenant)
        .unwrap()
        .put(file(path, "x"))
        .await
        .unwrap();
    s
}

/// `s` pushing through `server` as `tenant`, on a task of its own.
fn spawn_push(
    server: &TestServer,
    s: Store,
    tenant: &str,
) -> tokio::task::JoinHandle<nexus_sync::Result<nexus_sync::SyncReport>> {
    let remote = server.remote(tenant);
    tokio::spawn(async move { push(&s, &remote, &opts()).await })
}

/// With one apply at a time per tenant, a push of the tenant waits while
/// another of its pushes is applying; another tenant's push does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_are_bounded_per_tenant() {
    let db = pg::database("serve_applies").await;
    let server = TestServer::start_with(&db.url, |c| c.max_applies_per_tenant = 1, hs256()).await;
    let (first, second, other) = (
        store_in("default", "/first").await,
        store_in("default", "/second").await,
        store_in("acme", "/other").await,
    );
    let source = first.snapshot().await.unwrap().source_id().to_string();
    let locker = hold_source_lock(&db.url, &source).await;
    let spawn_push = |s, tenant| spawn_push(&server, s, tenant);
    let first_push = spawn_push(first, "default");
    // The first push holds the tenant's one apply once it waits for the
    // lock.
    wait_for_a_push_at_the_lock(&db.url).await;
    let second_push = spawn_push(second, "default");
    // Another tenant is not held up.
    spawn_push(other, "acme").await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!first_push.is_finished() && !second_push.is_finished());
    assert_eq!(live_files(&db.url).await, 1, "only the other tenant's file");
    locker.batch_execute("COMMIT").await.unwrap();
    first_push.await.unwrap().unwrap();
    second_push.await.unwrap().unwrap();
    assert_eq!(live_files(&db.url).await, 3);
    server.stop().await;
}

/// With one apply at a time over all tenants, another tenant's push waits
/// while a push is applying (each waiting push holds no body), and goes
/// through once that one is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_are_bounded_over_all_tenants() {
    let db = pg::database("serve_all_applies").await;
    let server = TestServer::start_with(&db.url, |c| c.max_applies = 1, hs256()).await;
    let (first, other) = (
        store_in("default", "/first").await,
        store_in("acme", "/other").await,
    );
    let source = first.snapshot().await.unwrap().source_id().to_string();
    let locker = hold_source_lock(&db.url, &source).await;
    let spawn_push = |s, tenant| spawn_push(&server, s, tenant);
    let first_push = spawn_push(first, "default");
    wait_for_a_push_at_the_lock(&db.url).await;
    let other_push = spawn_push(other, "acme");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!first_push.is_finished() && !other_push.is_finished());
    assert_eq!(
        live_files(&db.url).await,
        0,
        "the other tenant's push waits"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    first_push.await.unwrap().unwrap();
    other_push.await.unwrap().unwrap();
    assert_eq!(live_files(&db.url).await, 2);
    server.stop().await;
}

/// A push whose later window fails (here with 408: another session takes
/// the source's lock once the first window is applied, and holds it past
/// the request timeout) and that goes through when retried reports the
/// conflict copy the first window made: the server applied that window, and
/// the retry starts after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_push_reports_the_conflicts_of_windows_already_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let db = pg::database("serve_retried_conflicts").await;
    let server = TestServer::start_with(
        &db.url,
        |c| c.request_timeout = Duration::from_millis(300),
        hs256(),
    )
    .await;
    let remote = server.remote("default");
    let b = Store::memory().await.unwrap();
    b.put(file("/x.txt", "b")).await.unwrap();
    push(&b, &remote, &opts()).await.unwrap();

    let a = Store::memory().await.unwrap();
    a.put(file("/x.txt", "a")).await.unwrap();
    a.put(file("/y.txt", "a")).await.unwrap();
    let source = a.snapshot().await.unwrap().source_id().to_string();
    let (want_tx, mut want_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let url = db.url.clone();
    let locker = tokio::spawn(async move {
        want_rx.recv().await.unwrap();
        let held = hold_source_lock(&url, &source).await;
        locked_tx.send(()).unwrap();
        // Past the request timeout, and before the retry (1 s backoff).
        tokio::time::sleep(Duration::from_millis(700)).await;
        held.batch_execute("COMMIT").await.unwrap();
    });
    let first = AtomicBool::new(true);
    let locked_rx = Mutex::new(locked_rx);
    let progress: nexus_sync::ProgressFn = Arc::new(move |_, _| {
        if first.swap(false, Ordering::SeqCst) {
            want_tx.send(()).unwrap();
            tokio::task::block_in_place(|| locked_rx.lock().unwrap().recv().unwrap());
        }
    });
    let r = push(
        &a,
        &remote,
        &SyncOptions {
            window_rows: 1,
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            progress: Some(progress),
        },
    )
    .await
    .unwrap();
    locker.await.unwrap();
    assert_eq!(r.attempts, 2, "one 408, then through: {r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(r.conflicts[0].path, "/x.txt");
    assert!(
        r.conflicts[0].copy.starts_with("/x.sync-conflict-"),
        "{r:?}"
    );
    let mut snap = a.snapshot().await.unwrap();
    let head = snap.change_seq();
    assert_eq!(
        r.rows(),
        snap.changes(0, head).unwrap().len() as u64,
        "every row, the first window's too: {r:?}"
    );
    server.stop().await;
}

/// One local transaction larger than the server takes in one body (a
/// batch of many files) is pushed in parts and applied whole by the last
/// request: before, every push of that store was refused with 413 for
/// good. Parts that are missing are answered 409 `incomplete`, nothing
/// applied; applied parts are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_body_is_pushed_in_parts() {
    let db = pg::database("serve_parts").await;
    let server = TestServer::start_with(&db.url, |c| c.max_body_bytes = 64 * 1024, hs256()).await;
    let remote = server.remote("default");
    let a = Store::memory().await.unwrap();
    // Two transactions of 4,000 rows each: the files, then a key on each.
    let batch: Vec<NewFile> = (0..4000)
        .map(|i| file(&format!("/batch/{i:05}.txt"), &format!("e{i}")))
        .collect();
    a.put_batch(&batch).await.unwrap();
    let notes: Vec<(String, String, Value)> = (0..4000)
        .map(|i| {
            (
                format!("/batch/{i:05}.txt"),
                "note".to_string(),
                json!(format!("file number {i} of the batch")),
            )
        })
        .collect();
    a.set_metadata_batch(&notes).await.unwrap();
    let whole = a.export_changes(0).await.unwrap().encode().len();
    assert!(whole > 10 * 64 * 1024, "the batch is {whole} bytes");
    let r = push(&a, &remote, &opts()).await.unwrap();
    // Files, their versions, and the metadata.
    assert_eq!(r.rows(), 12_000);
    let b = Store::memory().await.unwrap();
    pull(&b, &remote, &opts()).await.unwrap();
    assert_eq!(paths(&b).await.len(), 4000);
    assert_eq!(
        b.get_metadata("/batch/03999.txt", "note").await.unwrap(),
        Some(json!("file number 3999 of the batch"))
    );
    let client = pg::connect(&db.url).await;
    let staged: i64 = client
        .query_one("SELECT count(*) FROM nexus_push_parts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(staged, 0, "applied parts are removed");
    // Pushed again: nothing more.
    let again = push(&a, &remote, &opts()).await.unwrap();
    assert_eq!(again.rows(), 0);

    // The last part of an upload whose other parts were never staged.
    a.put(file("/late.txt", "l")).await.unwrap();
    let late = a.export_changes(r.to_seq).await.unwrap();
    let t = token("default", 600);
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push?base=0&upload=never-staged&parts=3", server.url),
        Some(&t),
        &[],
        Some(late.encode()),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "incomplete");
    assert!(
        body["message"].as_str().unwrap().contains("part 0"),
        "{body}"
    );
    assert!(!paths(&b).await.contains(&"/late.txt".to_string()));
    // A count of parts past the server's bound is a 400, sized by nothing.
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push?base=0&upload=u&parts=4294967295", server.url),
        Some(&t),
        &[],
        Some(late.encode()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("parts"),
        "{body}"
    );
    let state: i64 = client
        .query_one(
            "SELECT watermark FROM nexus_sync_state WHERE source_id = $1",
            &[&late.source_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, r.to_seq, "nothing applied");

    // A part is kept as it was sent; a malformed one is a 400 naming it.
    let sent = late.encode();
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push/part?upload=kept&part=0", server.url),
        Some(&t),
        &[],
        Some(sent.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored: Vec<u8> = client
        .query_one(
            "SELECT body FROM nexus_push_parts WHERE upload_id = 'kept' AND part = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, sent);
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push/part?upload=kept&part=1", server.url),
        Some(&t),
        &[],
        Some(b"{\"not\": \"a change file\"}".to_vec()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("part 1 of upload kept: "),
        "{body}"
    );
}

/// A server told to stop while a push is being applied finishes that push
/// before it returns: the push is answered and applied, and the stop waits
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_the_push_in_flight() {
    let db = pg::database("serve_graceful").await;
    let server = TestServer::start(&db.url).await;
    let s = Store::memory().await.unwrap();
    s.put(file("/in-flight.txt", "f")).await.unwrap();
    let source = s.snapshot().await.unwrap().source_id().to_string();
    let locker = hold_source_lock(&db.url, &source).await;
    let remote = server.remote("default");
    let pushing = tokio::spawn(async move { push(&s, &remote, &opts()).await });
    wait_for_a_push_at_the_lock(&db.url).await;

    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !stopping.is_finished(),
        "the server stopped with a push in flight"
    );
    assert!(!pushing.is_finished());
    locker.batch_execute("COMMIT").await.unwrap();
    let r = pushing.await.unwrap().unwrap();
    assert!(r.rows() > 0, "{r:?}");
    stopping.await.unwrap();
    assert_eq!(live_files(&db.url).await, 1);
}

/// A push the conflict rule cannot settle (versions of a file that take
/// version numbers of other versions, without the file's row) is answered
/// 409 `conflict`, naming the path; nothing is applied, and the source's
/// next whole push goes through with a conflict copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_rule_cannot_settle_is_a_409_conflict() {
    let db = pg::database("serve_version_clash").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let a = Store::memory().await.unwrap();
    a.put(file("/f", "v1")).await.unwrap();
    push(&a, &remote, &opts()).await.unwrap();
    let first = a.export_changes(0).await.unwrap();
    let b = Store::memory().await.unwrap();
    b.import_changes(&first).await.unwrap();
    b.put(file("/f", "b2")).await.unwrap();
    push(&b, &remote, &opts()).await.unwrap();

    a.put(file("/f", "a2")).await.unwrap();
    let mut cut = a.export_changes(first.changes.through).await.unwrap();
    cut.changes.files.clear();
    let versions = || pg::count(&db.url, "SELECT count(*) FROM version_history");
    let before = versions().await;
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/push?base=0", server.url),
        Some(&token("default", 600)),
        &[],
        Some(cut.encode()),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("conflict on /f") && message.contains("version 2 to be"),
        "{body}"
    );
    assert_eq!(versions().await, before, "nothing applied");

    let whole = push(&a, &remote, &opts()).await.unwrap();
    assert_eq!(whole.conflicts.len(), 1, "{whole:?}");
    assert_eq!(whole.conflicts[0].path, "/f");
}

/// A push with `base` settles against what the store had pulled; one
/// without (a change file posted as it is) goes by version numbers, as
/// `sync --from-changes` does. B imported A's file from A's change file
/// (it never pulled) and deleted it: with `base=0` the deletion meets a
/// change B had not pulled (the file stays: modify wins over delete);
/// without `base` B had every version, and the deletion applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_without_base_settles_as_a_change_file() {
    let mut live = Vec::new();
    for base in ["?base=0", ""] {
        let db = pg::database("serve_without_base").await;
        let server = TestServer::start(&db.url).await;
        let a = Store::memory().await.unwrap();
        a.put(file("/x", "a1")).await.unwrap();
        push(&a, &server.remote("default"), &opts()).await.unwrap();
        let b = Store::memory().await.unwrap();
        b.import_changes(&a.export_changes(0).await.unwrap())
            .await
            .unwrap();
        b.delete("/x").await.unwrap();
        let (status, _, body) = call(
            reqwest::Method::POST,
            &format!("{}/v1/push{base}", server.url),
            Some(&token("default", 600)),
            &[],
            Some(b.export_changes(0).await.unwrap().encode()),
        )
        .await;
        assert_eq!(status, 200, "{base}: {body}");
        live.push(live_files(&db.url).await);
    }
    assert_eq!(
        live,
        [1, 0],
        "with base=0 /x stays; without base it is deleted"
    );
}

/// A push on connections that have prepared nothing yet (a new server):
/// its statements sent together still run in the order written, so the
/// versions' feed trigger finds their new files and notes the
/// transaction under the push's tenant, not under none (which every
/// tenant's pull would read from then on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_push_notes_its_versions_under_its_tenant() {
    let db = pg::database("serve_first_push_order").await;
    let server = TestServer::start(&db.url).await;
    let remote = server.remote("default");
    let s = Store::memory().await.unwrap();
    for i in 0..5 {
        s.put(file(&format!("/f{i}.txt"), &format!("v{i}")))
            .await
            .unwrap();
    }
    let pushed = push(&s, &remote, &opts()).await.unwrap();
    assert!(pushed.rows() >= 10, "{pushed:?}");
    let noted = "SELECT count(*) FROM nexus_feed_tenants";
    let under_none = format!("{noted} WHERE tenant_id IS NULL");
    assert_eq!(
        pg::count(&db.url, &under_none).await,
        0,
        "noted under no tenant"
    );
    let under_default = format!("{noted} WHERE tenant_id = 'default'");
    assert_eq!(pg::count(&db.url, &under_default).await, 1);
    assert_eq!(pg::count(&db.url, noted).await, 1);
    server.stop().await;
}
