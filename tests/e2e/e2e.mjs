// End to end, in headless Chromium with a persistent profile: the demo page
// records a picked folder's files into an OPFS store, lists them, survives a
// reload, takes many overlapping calls, shares the database with a second tab, and
// exports its changes; the native `nexus import-changes` then applies the
// export to a native store, and `nexus sync --from-changes` to PostgreSQL
// (then a later, incremental export too), which must hold the same records.
// Then the page syncs through `nexus serve` (CORS, a token, startSync) with a
// native store, and a second browser profile joins with the demo's Sync
// button: both profiles, the native store and PostgreSQL end up equal.
//
// Needs: scripts/build-npm.sh (the package), the `nexus` and `test-pg`
// binaries (NEXUS_BIN, NEXUS_TEST_PG_BIN; default target/debug/), wasm/tools'
// node_modules, and PostgreSQL as the Rust tests need it.
// Run: node tests/e2e/e2e.mjs
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

import {
  demoRoutes,
  launchProfile,
  nexusBin as nexus,
  serve,
  startNexusServe,
  startPostgres,
  testPgBin,
  writeTokenFile,
} from "./serve.mjs";

const postgres = startPostgres(testPgBin);
const work = mkdtempSync(join(tmpdir(), "nexus-e2e-"));
let failed = false;
let syncServer;

function step(name) {
  console.log(`e2e: ${name}`);
}

// The folder a user picks: nested, unicode, an empty file, a few sizes.
const folder = join(work, "picked");
const want = new Map();
for (const [rel, size] of [
  ["notes/todo.txt", 12],
  ["notes/ideas 100%_done.md", 300],
  ["photos/2026/été.jpg", 4096],
  ["photos/2026/empty.bin", 0],
  ["data.json", 77],
]) {
  const path = join(folder, rel);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, Buffer.alloc(size, 97));
  want.set("/picked/" + rel, size);
}

const { server, origin } = await serve(demoRoutes);
const context = await launchProfile(join(work, "profile"));

async function status(page, pattern) {
  await page.waitForFunction(
    (re) => new RegExp(re).test(document.getElementById("status").textContent),
    pattern.source,
    { timeout: 30_000 },
  );
  return page.locator("#status").textContent();
}

async function listed(page) {
  return page.$$eval("#files li", (lis) => lis.map((li) => [li.dataset.path, Number(li.dataset.size)]));
}

try {
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && console.log(`page: ${m.text()}`));
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));

  step("the page opens its store in a Worker on OPFS");
  await page.goto(`${origin}/demo/`);
  assert.match(await status(page, /^(ready|error)/), /^ready: 0 files/);
  assert.match(await page.locator("#persistence").textContent(), /stored in opfs \(opfs:demo\)/);

  step("the user picks a folder; its files are recorded and listed");
  await page.setInputFiles("#folder", folder);
  assert.match(await status(page, /^(recorded|error)/), /^recorded 5 files; 5 in all/);
  assert.deepEqual(await listed(page), [...want].sort(([a], [b]) => (a < b ? -1 : 1)));

  step("a reload finds them again");
  await page.reload();
  assert.match(await status(page, /^(ready|error)/), /^ready: 5 files/);
  assert.deepEqual(new Map(await listed(page)), want);

  step("many overlapping calls resolve correctly");
  const results = await page.evaluate(async () => {
    const { store } = window.nexusDemo;
    const calls = [];
    for (let i = 0; i < 100; i++) {
      calls.push(store.put({ path: `/burst/${i}`, backend: "browser", physicalPath: `b${i}`, size: i }));
      calls.push(store.get(`/burst/${i}`));
      calls.push(store.put({ path: "/burst/shared", backend: "browser", physicalPath: "s", size: i, etag: `e${i}` }));
    }
    calls.push(store.get("/no/such/file"));
    calls.push(store.put({ path: "relative", backend: "b", physicalPath: "p", size: 1 }).catch((e) => e.kind));
    const out = await Promise.all(calls);
    const shared = await store.get("/burst/shared");
    const listedBurst = await store.list("/burst/");
    return {
      puts: out.filter((r, i) => i < 300 && i % 3 === 0).map((r) => r.size),
      gets: out.filter((r, i) => i < 300 && i % 3 === 1).map((r) => r && r.path),
      missing: out[300],
      invalid: out[301],
      sharedVersion: shared.version,
      count: listedBurst.length,
    };
  });
  assert.deepEqual(results.puts, [...Array(100).keys()]);
  assert.deepEqual(results.gets, [...Array(100).keys()].map((i) => `/burst/${i}`));
  assert.equal(results.missing, null);
  assert.equal(results.invalid, "InvalidPath");
  assert.equal(results.sharedVersion, 100, "one version per new etag, none lost");
  assert.equal(results.count, 101);

  step("tenants through the Worker proxy are isolated");
  const tenants = await page.evaluate(async () => {
    const { store } = window.nexusDemo;
    const acme = await store.withTenant("acme");
    await acme.put({ path: "/picked/data.json", backend: "acme", physicalPath: "a", size: 1 });
    const out = {
      acme: (await acme.get("/picked/data.json")).backend,
      mine: (await store.get("/picked/data.json")).backend,
      tenant: acme.tenant,
    };
    await acme.delete("/picked/data.json");
    await acme.close();
    out.closed = await acme.get("/x").catch((e) => e.kind);
    out.stillOpen = await store.exists("/picked/data.json");
    return out;
  });
  assert.deepEqual(tenants, { acme: "acme", mine: "browser", tenant: "acme", closed: "InvalidArgument", stillOpen: true });

  step("a second tab opens the same database (through the first) and sees its files; both keep working");
  const second = await context.newPage();
  await second.goto(`${origin}/demo/`);
  const files = (await page.evaluate(() => window.nexusDemo.store.stats())).files;
  assert.equal(await status(second, /^(ready|error)/), `ready: ${files} files`);
  await second.evaluate(() =>
    window.nexusDemo.store.put({ path: "/from/second-tab", backend: "b", physicalPath: "p", size: 1 }),
  );
  assert.equal(await page.evaluate(() => window.nexusDemo.store.exists("/from/second-tab")), true);
  await page.evaluate(() => window.nexusDemo.store.delete("/from/second-tab"));
  assert.equal(await second.evaluate(() => window.nexusDemo.store.exists("/from/second-tab")), false);
  await second.close();

  step("the export applies to a native store with the same records");
  const exported = await page.evaluate(async () => {
    const { bytes, through, rows, sourceId } = await window.nexusDemo.store.exportChanges(0);
    const records = await window.nexusDemo.store.list("/");
    const metadata = await window.nexusDemo.store.listMetadata("/picked/photos/2026/été.jpg");
    return { bytes: Array.from(bytes), through, rows, sourceId, records, metadata };
  });
  assert.ok(exported.through > 0 && exported.rows > 0);
  const changes = join(work, "changes.nexus.json");
  writeFileSync(changes, Buffer.from(exported.bytes));
  const db = join(work, "native.db");
  execFileSync(nexus, ["--db", db, "import-changes", changes], { stdio: "inherit" });
  const native = JSON.parse(execFileSync(nexus, ["--db", db, "--json", "ls", "-r", "/"]).toString());
  const nativeRecords = native.items;
  const strip = (r) => ({
    path: r.path,
    size: r.size,
    backend: r.backend,
    physical: r.physicalPath ?? r.physical_path,
    mime: r.mimeType ?? r.mime_type ?? null,
    etag: r.etag ?? null,
    version: r.version,
    id: r.pathId ?? r.path_id,
    modified: r.modifiedAt ?? r.modified_at,
  });
  assert.deepEqual(nativeRecords.map(strip), exported.records.map(strip));
  const meta = JSON.parse(
    execFileSync(nexus, ["--db", db, "--json", "meta", "ls", "/picked/photos/2026/été.jpg"]).toString(),
  );
  assert.deepEqual(meta.metadata, exported.metadata);

  step("importing the same export again changes nothing");
  execFileSync(nexus, ["--db", db, "import-changes", changes], { stdio: "inherit" });
  const again = JSON.parse(execFileSync(nexus, ["--db", db, "--json", "ls", "-r", "/"]).toString());
  assert.deepEqual(again.items.map(strip), exported.records.map(strip));

  step("the export reaches PostgreSQL (nexus sync --from-changes), and so does a later one");
  const pgUrl = await postgres.url;
  const sync = JSON.parse(
    execFileSync(nexus, ["--json", "sync", "--from-changes", changes, "--to", pgUrl]).toString(),
  );
  console.log(`e2e: applied ${JSON.stringify(sync).slice(0, 160)}`);
  const strip2 = (r) => ({ ...strip(r), created: r.createdAt ?? r.created_at, tenant: r.tenant });
  const inPg = () => JSON.parse(execFileSync(nexus, ["--db", pgUrl, "--json", "ls", "-r", "/"]).toString()).items;
  assert.deepEqual(inPg().map(strip2), exported.records.map(strip2));
  const later = await page.evaluate(async (since) => {
    const { store } = window.nexusDemo;
    await store.delete("/picked/data.json");
    await store.rename("/picked/notes", "/picked/archive/notes");
    await store.put({ path: "/picked/new.txt", backend: "browser", physicalPath: "new.txt", size: 9 });
    const { bytes, after, through } = await store.exportChanges(since);
    return { bytes: Array.from(bytes), after, through, records: await store.list("/") };
  }, exported.through);
  assert.equal(later.after, exported.through);
  const changes2 = join(work, "changes-2.nexus.json");
  writeFileSync(changes2, Buffer.from(later.bytes));
  execFileSync(nexus, ["sync", "--from-changes", changes2, "--to", pgUrl], { stdio: "inherit" });
  assert.deepEqual(inPg().map(strip2), later.records.map(strip2));
  assert.deepEqual(
    JSON.parse(execFileSync(nexus, ["--db", pgUrl, "--json", "meta", "ls", "/picked/photos/2026/été.jpg"]).toString())
      .metadata,
    exported.metadata,
  );

  step("the page syncs through nexus serve (CORS, a token) with PostgreSQL and a native store");
  const token = "e2e-token-of-the-default-tenant";
  const tokens = join(work, "tokens");
  writeTokenFile(tokens, token);
  let syncUrl;
  ({ url: syncUrl, child: syncServer } = await startNexusServe(nexus, pgUrl, [
    "--listen", "127.0.0.1:0", "--tokens", tokens, "--cors-origin", origin,
    // Small bodies: the batch below, one transaction, goes in parts.
    "--max-body-bytes", "32768",
    // A line per request: the preflights are counted below.
  ], { NEXUS_LOG: "info" }));
  // The change files already brought this store's changes: nothing new to
  // push; a wrong token is refused with a typed error. Then a push in
  // windows of one row, each its own request: files put, then renamed
  // (their rows written again after their versions) travel with their
  // versions; a batch of 300 files, one transaction larger than the
  // server's body limit, goes in parts applied whole.
  const pushes = [];
  const countPushes = (r) => r.url().includes("/v1/push") && pushes.push(r.url());
  page.on("request", countPushes);
  const logBefore = syncServer.log.length;
  const first = await page.evaluate(async ([url, token]) => {
    const { store } = window.nexusDemo;
    let kind;
    try {
      await store.sync({ url, token: "wrong" });
    } catch (e) {
      kind = e.kind;
    }
    await store.put({ path: "/picked/from-browser.txt", backend: "browser", physicalPath: "b.txt", size: 3 });
    for (const name of ["a", "b", "c"]) {
      await store.put({ path: `/windows/${name}.txt`, backend: "browser", physicalPath: name, size: 1 });
    }
    await store.rename("/windows", "/windowed");
    await store.putBatch(
      Array.from({ length: 300 }, (_, i) => ({
        path: `/batch/${String(i).padStart(3, "0")}.txt`, backend: "browser", physicalPath: `batch-${i}`, size: i,
      })),
    );
    return { kind, result: await store.sync({ url, token, maxRows: 1 }) };
  }, [syncUrl, token]);
  page.off("request", countPushes);
  // The page is of another origin than the server: each request URL the
  // browser has not asked before is preflighted. Its parameters go in the
  // nexus-query header, so its URLs stay one per endpoint: a few
  // preflights for hundreds of pushes and pulls (one-row pages).
  const served = syncServer.log.slice(logBefore);
  const preflights = served.filter((l) => l.includes("method=OPTIONS")).length;
  const pulls = served.filter((l) => l.includes("method=GET") && l.includes("path=/v1/pull")).length;
  assert.ok(pulls > 100 && preflights <= 6, `${preflights} preflights for ${pulls} pulls`);
  assert.equal(first.kind, "Unauthorized");
  assert.ok(first.result.pushed >= 608, JSON.stringify(first.result));
  assert.ok(pushes.length >= 2, `the push went in windows: ${pushes.length} requests`);
  assert.ok(pushes.some((u) => u.includes("/v1/push/part")), `the batch went in parts: ${pushes.join(" ")}`);
  const synced = inPg().map((r) => r.path);
  for (const p of ["/picked/from-browser.txt", "/windowed/a.txt", "/windowed/b.txt", "/windowed/c.txt", "/batch/000.txt", "/batch/299.txt"]) {
    assert.ok(synced.includes(p), `${p} in PostgreSQL: ${synced.join()}`);
  }
  // A native store syncs through the same server; the page's background
  // sync (startSync) brings its file in.
  const nativeDb = join(work, "native-2.db");
  execFileSync(nexus, ["--db", nativeDb, "put", "/from-native.txt", "--backend", "s3", "--physical", "n", "--size", "1"]);
  execFileSync(nexus, ["--db", nativeDb, "sync", "--with", syncUrl, "--token", token], { stdio: "inherit" });
  const nativeSees = JSON.parse(execFileSync(nexus, ["--db", nativeDb, "--json", "ls", "-r", "/"]).toString()).items;
  assert.ok(nativeSees.some((r) => r.path === "/picked/from-browser.txt"), "the native store pulled the browser's file");
  // What the page's earlier sync heard spares it asking the server's
  // state again: its background syncs ask no /v1/state.
  const calls = [];
  const countCalls = (r) => r.url().includes("/v1/") && calls.push(new URL(r.url()).pathname);
  page.on("request", countCalls);
  const live = await page.evaluate(async ([url, token]) => {
    const { store } = window.nexusDemo;
    const seen = [];
    const handle = store.startSync({ url, token, intervalMs: 200, onSync: (r) => seen.push(r) });
    for (let i = 0; i < 100 && !(await store.exists("/from-native.txt")); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    // Two more rounds after the pull that brought it.
    const arrived = seen.length;
    for (let i = 0; i < 100 && seen.length < arrived + 2; i++) await new Promise((r) => setTimeout(r, 50));
    await handle.stop();
    return { there: await store.exists("/from-native.txt"), syncs: seen.length, paths: (await store.list("/")).map((r) => r.path) };
  }, [syncUrl, token]);
  page.off("request", countCalls);
  assert.ok(live.there, JSON.stringify(live));
  // Nothing of its own to send after the first round (whose push moves the
  // watermark past the 600 one-row pages of its own rows that the sync
  // above pulled back: more than PUSH_PUT_OFF): no push after the pull that
  // brought rows, which would only move the server's watermark.
  const afterFirst = calls.slice(calls.indexOf("/v1/pull"));
  assert.ok(!afterFirst.includes("/v1/push") && live.syncs >= 3, `no push of nothing: ${calls.join(" ")}`);
  assert.ok(calls.filter((c) => c === "/v1/pull").length >= live.syncs, calls.join(" "));
  assert.ok(!calls.includes("/v1/state"), `no state asked again: ${calls.join(" ")}`);
  assert.deepEqual(live.paths, inPg().map((r) => r.path));
  // syncNow while a sync runs (here from onSync, which comes before the
  // sync ends) is kept: another sync follows at once, not an interval later.
  const syncsAfterNow = await page.evaluate(async ([url, token]) => {
    const { store } = window.nexusDemo;
    let syncs = 0;
    let handle;
    const second = new Promise((resolve) => {
      handle = store.startSync({
        url,
        token,
        intervalMs: 600_000,
        onSync: () => {
          syncs += 1;
          if (syncs === 1) handle.syncNow();
          else resolve();
        },
      });
    });
    await Promise.race([second, new Promise((r) => setTimeout(r, 15_000))]);
    await handle.stop();
    return syncs;
  }, [syncUrl, token]);
  assert.equal(syncsAfterNow, 2, "a syncNow during a sync brings one more sync at once");
  // A failing sync (a token the server does not know) is retried later
  // and later: 100 ms intervals, then at least 200, 400, 800 ms between
  // errors.
  const errorGaps = await page.evaluate(async (url) => {
    const { store } = window.nexusDemo;
    const at = [];
    const handle = store.startSync({ url, token: "not-a-known-token", intervalMs: 100, onError: () => at.push(performance.now()) });
    for (let i = 0; i < 400 && at.length < 4; i++) await new Promise((r) => setTimeout(r, 50));
    await handle.stop();
    return at.slice(1).map((t, i) => t - at[i]);
  }, syncUrl);
  // Timers never fire early: each gap is at least its backoff.
  assert.ok(
    errorGaps.length === 3 && errorGaps.every((gap, i) => gap >= 100 * 2 ** (i + 1) - 5),
    `retries back off: ${errorGaps.map(Math.round).join(", ")} ms`,
  );
  // Offline, nothing is tried (no request); coming online syncs at once.
  let requestsOffline = 0;
  const countOffline = (r) => r.url().startsWith(syncUrl) && requestsOffline++;
  await context.setOffline(true);
  page.on("request", countOffline);
  await page.evaluate(async ([url, token]) => {
    const { store } = window.nexusDemo;
    await store.put({ path: "/while-offline.txt", backend: "s3", physicalPath: "o", size: 1 });
    window.offlineSync = store.startSync({ url, token, intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 800));
  }, [syncUrl, token]);
  page.off("request", countOffline);
  assert.equal(requestsOffline, 0, "no sync tried while offline");
  await context.setOffline(false);
  for (let i = 0; i < 100 && !inPg().some((r) => r.path === "/while-offline.txt"); i++) await sleep(100);
  await page.evaluate(() => window.offlineSync.stop());
  assert.ok(inPg().some((r) => r.path === "/while-offline.txt"), "synced once online");

  step("a second browser profile syncs with the demo's button; the two profiles, the native store and PostgreSQL converge");
  const other = await launchProfile(join(work, "profile-2"));
  try {
    const page2 = await other.newPage();
    page2.on("pageerror", (e) => console.log(`page 2 error: ${e.message}`));
    await page2.goto(`${origin}/demo/?sync=${encodeURIComponent(syncUrl)}`);
    assert.match(await status(page2, /^(ready|error)/), /^ready: 0 files/);
    assert.equal(await page2.inputValue("#sync-url"), syncUrl, "the server's address from the page's URL");
    // Clicks Sync until `path` is listed (a pull stops before transactions
    // still running in the cluster, so one click may come back early); the
    // first click's status line, or the error.
    const syncUntil = async (p, path, tokenTyped = token) => {
      if (!(await p.inputValue("#sync-url"))) await p.fill("#sync-url", syncUrl);
      await p.fill("#sync-token", tokenTyped);
      let first;
      for (let i = 0; i < 20; i++) {
        await p.evaluate(() => (document.getElementById("status").textContent = "…"));
        await p.click("#sync");
        const text = await status(p, /^(synced|error)/);
        first ??= text;
        if (!text.startsWith("synced")) return text;
        if (!path || (await listed(p)).some(([q]) => q === path)) return first;
        await p.waitForTimeout(200);
      }
      throw new Error(`${path} never arrived`);
    };
    assert.match(await syncUntil(page2, "/from-native.txt", "wrong"), /^error: Unauthorized/);
    assert.match(await syncUntil(page2, "/from-native.txt"), /^synced: pushed 0, pulled [1-9]\d*, 0 conflicts/);
    assert.deepEqual((await listed(page2)).map(([p]) => p), inPg().map((r) => r.path));
    // Each profile writes; both sync with the button, the native store with
    // the command; everyone ends with every file.
    // Both also record /both.txt, each a file of its own.
    await page2.evaluate(async () => {
      await window.nexusDemo.store.put({ path: "/from-profile-2.txt", backend: "browser", physicalPath: "p2", size: 2 });
      await window.nexusDemo.store.put({ path: "/both.txt", backend: "browser", physicalPath: "both-2", size: 2 });
    });
    await page.evaluate(async () => {
      await window.nexusDemo.store.put({ path: "/from-profile-1.txt", backend: "browser", physicalPath: "p1", size: 1 });
      await window.nexusDemo.store.put({ path: "/both.txt", backend: "browser", physicalPath: "both-1", size: 1 });
    });
    assert.match(await syncUntil(page2, null), /^synced: pushed [1-9]/);
    // Profile 2's push came first and keeps /both.txt; profile 1's file is
    // kept beside it as a conflict copy, which its sync reports.
    const clash = await page.evaluate(
      async ([url, token]) => {
        const { store } = window.nexusDemo;
        const result = await store.sync({ url, token });
        const copy = result.conflicts[0] && (await store.get(result.conflicts[0].copy));
        return { result, copyPhysical: copy?.physicalPath };
      },
      [syncUrl, token],
    );
    assert.equal(clash.result.conflicts.length, 1, JSON.stringify(clash));
    const [copy] = clash.result.conflicts;
    assert.equal(copy.path, "/both.txt");
    assert.match(copy.copy, /^\/both\.sync-conflict-\d{8}-\d{6}-[0-9a-z-]+\.txt$/i);
    assert.equal(copy.reason, "path");
    assert.ok(copy.pathId && !("path_id" in copy), `camelCase like every record: ${JSON.stringify(copy)}`);
    assert.equal(clash.copyPhysical, "both-1", "profile 1's file is the copy");
    assert.match(await syncUntil(page, "/from-profile-2.txt"), /^synced/);
    assert.match(await syncUntil(page2, "/from-profile-1.txt"), /^synced/);
    execFileSync(nexus, ["--db", nativeDb, "sync", "--with", syncUrl, "--token", token], { stdio: "inherit" });
    const everywhere = inPg().map((r) => r.path);
    assert.ok(everywhere.includes("/from-profile-1.txt") && everywhere.includes("/from-profile-2.txt"), everywhere.join());
    assert.deepEqual((await listed(page)).map(([p]) => p), everywhere);
    assert.deepEqual((await listed(page2)).map(([p]) => p), everywhere);
    const native = JSON.parse(execFileSync(nexus, ["--db", nativeDb, "--json", "ls", "-r", "/"]).toString()).items;
    assert.deepEqual(native.map((r) => r.path), everywhere);
  } finally {
    await other.close();
  }

  step("the server's body limit lowered: a push sized by the limit the store heard is refused (413), and the store asks again and pushes in parts, in the same sync");
  await page.evaluate(async ([url, token]) => {
    const { open } = await import("/pkg/index.js");
    const store = (window.lowered = await open({ name: "lowered" }));
    await store.put({ path: "/lowered/first.txt", backend: "browser", physicalPath: "l", size: 1 });
    await store.sync({ url, token });
  }, [syncUrl, token]);
  const restart = async (args) => {
    syncServer.kill("SIGTERM");
    await new Promise((ok) => (syncServer.exitCode !== null ? ok() : syncServer.on("exit", ok)));
    ({ child: syncServer } = await startNexusServe(nexus, pgUrl, [
      "--listen", new URL(syncUrl).host, "--tokens", tokens, "--cors-origin", origin, ...args,
    ]));
  };
  await restart(["--max-body-bytes", "4096"]);
  const answered = [];
  const keepAnswer = (r) => r.request().method() !== "OPTIONS" && r.url().includes("/v1/") && answered.push(`${new URL(r.url()).pathname} ${r.status()}`);
  page.on("response", keepAnswer);
  const lowered = await page.evaluate(async ([url, token]) => {
    const store = window.lowered;
    // One transaction of more than 4 KiB: sized by the limit heard.
    await store.putBatch(
      Array.from({ length: 100 }, (_, i) => ({ path: `/lowered/${i}.txt`, backend: "browser", physicalPath: `l${i}`, size: i })),
    );
    const result = await store.sync({ url, token });
    await store.close();
    return result;
  }, [syncUrl, token]);
  page.off("response", keepAnswer);
  assert.ok(lowered.pushed >= 200, JSON.stringify(lowered));
  assert.match(answered[0] ?? "", /^\/v1\/push(\/part)? 413$/, answered.join(", "));
  assert.equal(answered[1], "/v1/state 200", answered.join(", "));
  const parts = answered.filter((a) => a === "/v1/push/part 200").length;
  assert.ok(parts > 5 && answered.includes("/v1/push 200"), `then in parts by the new limit: ${answered.join(", ")}`);
  assert.ok(inPg().some((r) => r.path === "/lowered/99.txt"));
  await restart(["--max-body-bytes", "32768"]);

  step("another database behind the same address: a store's next push names the old one and is refused (409 hub_changed), an idle store's next pull too; each asks again and pushes its own changes there");
  // Two stores of their own (in Workers, as the demo's), of one tenant:
  // each syncs twice with the server as it is (the second settles the rows
  // the first pulled), and so knows it.
  const before = await page.evaluate(async ([url, token]) => {
    const { open } = await import("/pkg/index.js");
    const out = [];
    for (const name of ["moving", "idle"]) {
      const store = (window[name] = await open({ name }));
      await store.put({ path: `/${name}-before.txt`, backend: "browser", physicalPath: name, size: 1 });
      out.push(await store.sync({ url, token }), await store.sync({ url, token }));
    }
    return out;
  }, [syncUrl, token]);
  assert.ok(before[0].pushed >= 2 && before[2].pushed >= 2, JSON.stringify(before));
  syncServer.kill("SIGTERM");
  await new Promise((ok) => (syncServer.exitCode !== null ? ok() : syncServer.on("exit", ok)));
  const postgres2 = startPostgres(testPgBin);
  try {
    const pgUrl2 = await postgres2.url;
    ({ child: syncServer } = await startNexusServe(nexus, pgUrl2, [
      "--listen", new URL(syncUrl).host, "--tokens", tokens, "--cors-origin", origin,
    ]));
    // What each store asks, and the kinds of the 409s it is answered.
    const asked = [];
    const refusals = [];
    const countAsked = (r) => r.method() !== "OPTIONS" && r.url().includes("/v1/") && asked.push(new URL(r.url()).pathname);
    const keepRefusal = (r) => r.status() === 409 && refusals.push(r.json().then((b) => b.error, (e) => String(e)));
    page.on("request", countAsked);
    page.on("response", keepRefusal);
    const syncOnce = (name, write) =>
      page.evaluate(async ([url, token, name, write]) => {
        const store = window[name];
        if (write) await store.put({ path: `/${name}-after.txt`, backend: "browser", physicalPath: name, size: 1 });
        const result = await store.sync({ url, token });
        const paths = (await store.list("/")).map((r) => r.path);
        await store.close();
        return { result, paths };
      }, [syncUrl, token, name, write]);
    const moved = await syncOnce("moving", true);
    const movedAsked = asked.splice(0);
    const movedRefusals = await Promise.all(refusals.splice(0));
    const idle = await syncOnce("idle", false);
    page.off("request", countAsked);
    page.off("response", keepRefusal);
    assert.deepEqual(movedAsked.slice(0, 2), ["/v1/push", "/v1/state"], `refused, then asked: ${movedAsked.join(" ")}`);
    assert.deepEqual(movedRefusals, ["hub_changed"]);
    // The idle store had nothing to push: its pull named the old database
    // and was refused before anything was read.
    assert.deepEqual(asked.slice(0, 3), ["/v1/pull", "/v1/state", "/v1/push"], `refused, then asked: ${asked.join(" ")}`);
    assert.deepEqual(await Promise.all(refusals), ["hub_changed"]);
    // Each store's own changes, from the start, are there now (the rows
    // it had pulled from the old database are not its to push), and each
    // store pulled the other's.
    const there = JSON.parse(execFileSync(nexus, ["--db", pgUrl2, "--json", "ls", "-r", "/"]).toString()).items.map((r) => r.path);
    assert.deepEqual(there, ["/idle-before.txt", "/moving-after.txt", "/moving-before.txt"], JSON.stringify([moved.result, idle.result]));
    assert.ok(there.every((p) => idle.paths.includes(p)), idle.paths.join());
  } finally {
    syncServer.kill("SIGTERM");
    await new Promise((ok) => (syncServer.exitCode !== null ? ok() : syncServer.on("exit", ok)));
    await postgres2.stop();
  }

  step("deleting the database: refused while open, done once closed");
  const busy = await page.evaluate(async () => {
    const { deleteDatabase } = await import("/pkg/index.js");
    let kind;
    try {
      await deleteDatabase("demo");
    } catch (e) {
      kind = e.kind;
    }
    await window.nexusDemo.store.close();
    await deleteDatabase("demo");
    return kind;
  });
  assert.equal(busy, "Busy");
  await page.reload();
  assert.match(await status(page, /^(ready|error)/), /^ready: 0 files/);
  console.log("e2e: passed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await context.close();
  server.close();
  syncServer?.kill("SIGTERM");
  await postgres.stop();
  if (!failed) rmSync(work, { recursive: true, force: true });
  else console.error(`e2e: kept ${work} for inspection`);
}
process.exit(failed ? 1 : 0);
