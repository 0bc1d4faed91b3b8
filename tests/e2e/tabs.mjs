// Every tab, one database, in headless Chromium with a persistent profile
// (several pages of one context are several tabs of one origin):
// - three tabs open the same named store at once (the first holds it, the
//   others reach it through it) and write and read concurrently, with
//   overlapping calls from each: each sees the others' writes, the counts
//   add up, nothing is doubled; `onChange` fires in every tab with the
//   other tabs' paths and the change sequence ranges in order, `watch`
//   with those under its prefix, and each stops when unsubscribed;
// - the holder tab is closed while two others write, and in a second round
//   its renderer is crashed (chrome://crash): another tab takes over (no
//   writer waits 4 s for a put), every acknowledged write is there, a
//   call in flight at that moment rejects with kind Unavailable and is
//   never applied twice, the file passes its integrity check after each;
// - all of it on OPFS, then on IndexedDB storage;
// - deleteDatabase refuses while any tab has the store open;
// - a takeover that finds the files held by something else for longer than
//   it waits: calls waiting reject with kind Unavailable, and once the files
//   are free the tab holds the database and its handles work again;
// - a page without Workers (some webviews) keeps a named store in IndexedDB
//   (storage "auto"), across a reload, and not in memory.
//
// Needs scripts/build-npm.sh. Run: node tests/e2e/tabs.mjs
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

import { demoRoutes, launchProfile, serve } from "./serve.mjs";

const profile = mkdtempSync(join(tmpdir(), "nexus-tabs-"));
const { server, origin } = await serve(demoRoutes);
const context = await launchProfile(profile);
const step = (s) => console.log(`tabs: ${s}`);
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** A new tab with the store open as `window.store`, every changed path it is told of in `window.seen`. */
async function openTab(storage) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`tabs: page error: ${e.message}`));
  await page.goto(`${origin}/demo/blank.html`);
  await page.evaluate(async (storage) => {
    const { open } = await import("/pkg/index.js");
    window.store = await open({ name: `tabs-${storage}`, storage, fallback: "error" });
    window.seen = new Set();
    window.watched = new Set();
    window.ranges = [];
    window.stopChange = window.store.onChange((e) => {
      window.ranges.push([e.fromSeq, e.toSeq]);
      e.paths.forEach((p) => window.seen.add(p));
    });
    window.stopWatch = window.store.watch("/t1/", (e) => e.paths.forEach((p) => window.watched.add(p)));
  }, storage);
  return page;
}

/** Waits until `check` (evaluated in `page`) is true; fails after 15 s with `what`. */
async function until(page, check, arg, what) {
  for (let i = 0; i < 150; i++) {
    if (await page.evaluate(check, arg)) return;
    await sleep(100);
  }
  assert.fail(`timed out: ${what}`);
}

/**
 * Starts writer loops in `pages`: each puts its counter file with a new etag
 * after the last put resolved, until `window.stop`. Returns a function that
 * stops them and gives, per page, { acked, doubt, other, gaps }.
 */
async function startWriters(pages, round) {
  for (const [i, page] of pages.entries()) {
    await page.evaluate(
      ({ path }) => {
        window.stop = false;
        window.writer = (async () => {
          const out = { path, acked: 0, doubt: 0, other: [], lastAck: null, maxGap: 0 };
          let last = performance.now();
          for (let n = 0; !window.stop; n++) {
            try {
              await window.store.put({ path, backend: "b", physicalPath: path, size: n, etag: `v${n}` });
              out.acked++;
              out.lastAck = `v${n}`;
              const now = performance.now();
              out.maxGap = Math.max(out.maxGap, now - last);
              last = now;
            } catch (e) {
              if (e.kind === "Unavailable") out.doubt++;
              else out.other.push(`${e.kind}: ${e.message}`);
            }
          }
          return out;
        })();
      },
      { path: `/count/${round}/${i}` },
    );
  }
  return async () => {
    const results = [];
    for (const page of pages) {
      results.push(
        await page.evaluate(async () => {
          window.stop = true;
          return await window.writer;
        }),
      );
    }
    return results;
  };
}

/**
 * Every acknowledged put is there, none applied twice (acked <= version <=
 * acked + doubt); no writer waited longer than the takeover may take; the
 * file passes its integrity check.
 */
async function checkWriters(page, results, what) {
  // Each writer always has a call in flight: the takeover leaves one in doubt.
  assert.ok(results.some((r) => r.doubt > 0), `${what}: no call was in flight at the takeover`);
  for (const r of results) {
    assert.deepEqual(r.other, [], `${what}: only Unavailable may fail`);
    assert.ok(r.acked > 0, `${what}: ${r.path} wrote`);
    const record = await page.evaluate((p) => window.store.get(p), r.path);
    assert.ok(
      record.version >= r.acked && record.version <= r.acked + r.doubt,
      `${what}: ${r.path} has version ${record.version} after ${r.acked} acknowledged puts and ${r.doubt} in doubt`,
    );
    if (r.doubt === 0) assert.equal(record.etag, r.lastAck, `${what}: ${r.path} holds its last put`);
    // Another tab takes over within about a second (a few hundred ms
    // here); the bound leaves room for a busy machine, and fails when a
    // takeover waits out the 5 s wait for busy files instead.
    assert.ok(r.maxGap < TAKEOVER_MS, `${what}: ${r.path} waited ${Math.round(r.maxGap)} ms for a put`);
    step(
      `${what}: ${r.path}: ${r.acked} acknowledged, ${r.doubt} in doubt, version ${record.version}, ` +
        `longest wait ${Math.round(r.maxGap)} ms`,
    );
  }
  assert.deepEqual(await page.evaluate(() => window.store.integrityCheck()), [], `${what}: integrity`);
}

/** The longest a writer may wait for its next put across a takeover. */
const TAKEOVER_MS = 4000;

let failed = false;
try {
  for (const storage of ["opfs", "indexeddb"]) {
    const step = (s) => console.log(`tabs: ${storage}: ${s}`);
    step("three tabs open one database");
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openTab(storage));
    const kinds = await Promise.all(tabs.map((t) => t.evaluate(() => [window.store.persistence, window.store.location])));
    assert.deepEqual(kinds, Array(3).fill([storage, `${storage}:tabs-${storage}`]));

    step("each writes and reads, overlapping calls from every tab");
    const perTab = 150;
    await Promise.all(
      tabs.map((t, i) =>
        t.evaluate(
          async ({ i, perTab }) => {
            const { store } = window;
            const calls = [];
            for (let k = 0; k < perTab; k++) {
              const path = `/t${i}/f${k}`;
              calls.push(store.put({ path, backend: "b", physicalPath: path, size: k, etag: `e${k}` }));
              calls.push(store.get(`/t${(i + 1) % 3}/f${k}`));
              if (k % 10 === 0) calls.push(store.setMetadata("/t0/f0", `from${i}-${k}`, k).catch((e) => e.kind));
            }
            // The metadata writes may come before /t0/f0 exists: NotFound, then.
            const results = await Promise.all(calls);
            return results.filter((r) => typeof r === "string" && r !== "NotFound");
          },
          { i, perTab },
        ),
      ),
    ).then((errors) => assert.deepEqual(errors, [[], [], []], "no call failed"));
    for (const [i, t] of tabs.entries()) {
      const listed = await t.evaluate(async () => (await window.store.list("/")).map((r) => [r.path, r.version]));
      assert.equal(listed.length, 3 * perTab, `tab ${i} sees every tab's files`);
      assert.equal(new Set(listed.map(([p]) => p)).size, listed.length, "no duplicates");
      assert.ok(listed.every(([, v]) => v === 1), "each put applied once");
    }

    step("onChange fires in every tab with every tab's paths; watch with its prefix");
    const all = [0, 1, 2].flatMap((i) => Array.from({ length: perTab }, (_, k) => `/t${i}/f${k}`));
    for (const t of tabs) {
      await until(t, (n) => window.seen.size >= n, all.length, "every path reported");
      const { seen, watched } = await t.evaluate(() => ({ seen: [...window.seen], watched: [...window.watched] }));
      assert.deepEqual(seen.sort(), [...all].sort());
      assert.deepEqual(watched.sort(), all.filter((p) => p.startsWith("/t1/")).sort());
      // Each event names the change sequence range (fromSeq, toSeq] it
      // covers, in commit order.
      const ranges = await t.evaluate(() => window.ranges);
      ranges.forEach(([from, to], k) => {
        assert.ok(from < to, `range ${k}: (${from}, ${to}]`);
        if (k > 0) assert.ok(from >= ranges[k - 1][1], `range ${k} (${from}, ${to}] after (${ranges[k - 1]}]`);
      });
    }

    step("unsubscribing stops it");
    await tabs[1].evaluate(() => window.stopChange());
    await tabs[0].evaluate(() => window.store.put({ path: "/after", backend: "b", physicalPath: "/after", size: 1 }));
    await until(tabs[2], () => window.seen.has("/after"), undefined, "tab 3 told of /after");
    await sleep(300);
    assert.equal(await tabs[1].evaluate(() => window.seen.has("/after")), false, "tab 2 unsubscribed");
    await tabs[2].evaluate(() => window.stopWatch());
    await tabs[0].evaluate(() => window.store.put({ path: "/t1/after", backend: "b", physicalPath: "/x", size: 1 }));
    await until(tabs[1], () => window.watched.has("/t1/after"), undefined, "tab 2's watch told of /t1/after");
    await until(tabs[2], () => window.seen.has("/t1/after"), undefined, "tab 3 told of /t1/after");
    await sleep(300);
    assert.equal(await tabs[2].evaluate(() => window.watched.has("/t1/after")), false, "tab 3 stopped watching");

    step("the holder tab closes while two tabs write: another takes over");
    const stop1 = await startWriters([tabs[1], tabs[2]], 1);
    await sleep(400 + Math.random() * 400);
    await tabs[0].close();
    await sleep(1500);
    await checkWriters(tabs[2], await stop1(), "holder closed");

    step("the new holder's renderer crashes while two tabs write: another takes over");
    // Locks are granted in request order: tab 2 holds now, tab 3 is next.
    tabs.push(await openTab(storage));
    const stop2 = await startWriters([tabs[2], tabs[3]], 2);
    await sleep(400 + Math.random() * 400);
    // chrome://crash crashes the tab's own renderer process (its Worker with it).
    const crashed = new Promise((ok) => tabs[1].once("crash", ok));
    await tabs[1].goto("chrome://crash").catch(() => {});
    await Promise.race([crashed, sleep(15_000).then(() => assert.fail("the tab's renderer did not crash"))]);
    await sleep(1500);
    await checkWriters(tabs[3], await stop2(), "holder crashed");

    step("the file is sound, every earlier write is there");
    const after = await tabs[3].evaluate(async () => ({
      problems: await window.store.integrityCheck(),
      files: (await window.store.stats()).files,
      first: (await window.store.get("/t2/f149"))?.etag,
    }));
    assert.deepEqual(after.problems, []);
    assert.equal(after.first, "e149");
    assert.equal(after.files, 3 * perTab + 2 + 4);

    step("deleteDatabase refuses while a tab has it open");
    const refused = await tabs[3].evaluate(async (name) => {
      const { deleteDatabase } = await import("/pkg/index.js");
      return deleteDatabase(name).then(() => "deleted", (e) => e.kind);
    }, `tabs-${storage}`);
    assert.equal(refused, "Busy");
    for (const t of tabs) if (!t.isClosed()) await t.close();
  }

  step("a takeover finds the files busy: Unavailable, then it holds them once they are free");
  {
    const [holder, follower] = [await openTab("indexeddb"), await openTab("indexeddb")];
    // Something else (here a third tab's bare Web Lock) gets the files as the holder goes.
    const other = await context.newPage();
    await other.goto(`${origin}/demo/blank.html`);
    await other.evaluate(() => {
      window.granted = false;
      navigator.locks.request("nexus-metastore-idb:tabs-indexeddb", () => {
        window.granted = true;
        return new Promise((release) => (window.release = release));
      });
    });
    await holder.close();
    await until(other, () => window.granted, undefined, "the bare lock granted");
    await sleep(200);
    const waited = await follower.evaluate(() =>
      window.store.put({ path: "/busy", backend: "b", physicalPath: "/busy", size: 1 }).then(() => "applied", (e) => e.kind),
    );
    assert.equal(waited, "Unavailable", "a call made while the files are busy");
    await other.evaluate(() => window.release());
    await until(
      follower,
      () => window.store.put({ path: "/busy", backend: "b", physicalPath: "/busy", size: 2 }).then(() => true, () => false),
      undefined,
      "the follower holds the database once the files are free",
    );
    const after = await follower.evaluate(async () => ({
      size: (await window.store.get("/busy"))?.size,
      files: (await window.store.stats()).files,
    }));
    assert.deepEqual(after, { size: 2, files: 3 * 150 + 2 + 4 + 1 });
    for (const page of [follower, other]) await page.close();
  }

  step("a page without Workers: a named store persists in IndexedDB");
  const bare = await context.newPage();
  bare.on("pageerror", (e) => console.error(`tabs: page error: ${e.message}`));
  await bare.addInitScript(() => {
    delete globalThis.Worker;
  });
  const inPage = async (round) => {
    await bare.goto(`${origin}/demo/blank.html`);
    return bare.evaluate(async (round) => {
      const { open, deleteDatabase } = await import("/pkg/index.js");
      const store = await open({ name: "no-worker", fallback: "error" });
      if (round === 0) await store.put({ path: "/kept", backend: "b", physicalPath: "/kept", size: 7 });
      return {
        worker: typeof Worker,
        persistence: store.persistence,
        kept: (await store.get("/kept"))?.size,
        delete: await deleteDatabase("no-worker").then(() => "deleted", (e) => e.kind),
      };
    }, round);
  };
  const expected = { worker: "undefined", persistence: "indexeddb", kept: 7, delete: "Busy" };
  assert.deepEqual(await inPage(0), expected);
  assert.deepEqual(await inPage(1), expected, "after a reload");
  await bare.close();
  console.log("tabs: passed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await context.close().catch(() => {});
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
