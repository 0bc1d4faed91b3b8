// The browser benchmark: our package vs @sqlite.org/sqlite-wasm (opfs-sahpool)
// in one headless Chromium run, same workload, both on OPFS in a Worker; and
// on IndexedDB, our package vs wa-sqlite's IDBBatchAtomicVFS.
// Needs scripts/build-npm.sh first. Run: node bench/browser/run.mjs
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { brotliCompressSync, constants as zlib, gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { launchProfile, pkgDir as pkg, repo, serve } from "../../tests/e2e/serve.mjs";

const sqliteDist = join(repo, "wasm/tools/node_modules/@sqlite.org/sqlite-wasm/dist");
const { server, origin } = await serve({
  "/pkg/": pkg,
  "/sqlite/": sqliteDist,
  "/wa-sqlite/": join(repo, "wasm/tools/node_modules/wa-sqlite"),
  "/migrations/": join(repo, "migrations"),
  "/bench/": join(repo, "bench/browser"),
  "/demo/": join(repo, "tests/e2e/demo"),
});
/** The middle value (the upper one of an even count). */
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const profile = mkdtempSync(join(tmpdir(), "nexus-bench-"));
const context = await launchProfile(profile);
try {
  // NEXUS_BENCH_ONLY=workload,tabs,storage,load runs some parts (default: all).
  const only = (part) => !process.env.NEXUS_BENCH_ONLY || process.env.NEXUS_BENCH_ONLY.split(",").includes(part);
  if (only("workload")) await workload();
  if (only("tabs")) await tabs();
  if (only("storage")) await storages();
  if (only("load")) await loadTimes();
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

/**
 * Calls from a second tab, which go through the tab that holds the database
 * (tabs.js), against the same calls in the holder tab: one at a time (the
 * round trip) and 64 in flight. Medians of NEXUS_BENCH_ROUNDS.
 */
async function tabs() {
  const rounds = Number(process.env.NEXUS_BENCH_ROUNDS ?? 3);
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage();
    await page.goto(`${origin}/demo/blank.html`);
    await page.evaluate(async () => {
      const { open } = await import("/pkg/index.js");
      window.store = await open({ name: "bench-tabs", fallback: "error" });
      const files = Array.from({ length: 1000 }, (_, i) => ({ path: `/seed/${i}`, backend: "b", physicalPath: "p", size: i }));
      await window.store.putBatch(files);
    });
    pages.push(page);
  }
  const workload = async (page, round) =>
    page.evaluate(async (round) => {
      const { store } = window;
      const rate = async (n, f) => {
        const t = performance.now();
        await f();
        return Math.round(n / ((performance.now() - t) / 1000));
      };
      return {
        get: await rate(2000, async () => {
          for (let i = 0; i < 2000; i++) await store.get(`/seed/${i % 1000}`);
        }),
        put: await rate(300, async () => {
          for (let i = 0; i < 300; i++) {
            await store.put({ path: `/r${round}/${Math.random()}`, backend: "b", physicalPath: "p", size: i });
          }
        }),
        getInFlight: await rate(5000, async () => {
          const calls = [];
          for (let i = 0; i < 5000; i++) {
            calls.push(store.get(`/seed/${i % 1000}`));
            if (calls.length === 64) await Promise.all(calls.splice(0));
          }
          await Promise.all(calls);
        }),
      };
    }, round);
  const runs = { holder: [], second: [] };
  for (let r = 0; r < rounds; r++) {
    runs.holder.push(await workload(pages[0], `h${r}`));
    runs.second.push(await workload(pages[1], `s${r}`));
  }
  console.log(`\nanother tab through the holder tab, ops/s, median of ${rounds} rounds:`);
  console.log(`${"workload".padEnd(34)}${"holder tab".padStart(12)}${"second tab".padStart(12)}${"ratio".padStart(9)}`);
  for (const [key, label] of [
    ["get", "get, one at a time"],
    ["put", "put (own transaction), one at a time"],
    ["getInFlight", "get, 64 in flight"],
  ]) {
    const h = median(runs.holder.map((x) => x[key]));
    const s = median(runs.second.map((x) => x[key]));
    console.log(`${label.padEnd(34)}${`${h}/s`.padStart(12)}${`${s}/s`.padStart(12)}${(s / h).toFixed(2).padStart(8)}x`);
  }
  for (const page of pages) await page.close();
}

/** The same calls on OPFS and on IndexedDB storage (a named store through the package's Worker). */
async function storages() {
  const page = await context.newPage();
  await page.goto(`${origin}/demo/blank.html`);
  const results = {};
  for (const storage of ["opfs", "indexeddb"]) {
    results[storage] = await page.evaluate(async (storage) => {
      const { open, deleteDatabase } = await import("/pkg/index.js");
      const name = `bench-storage-${storage}`;
      await deleteDatabase(name).catch(() => {});
      const store = await open({ name, storage, fallback: "error" });
      const rate = async (n, f) => {
        const t = performance.now();
        await f();
        return Math.round(n / ((performance.now() - t) / 1000));
      };
      const file = (path) => ({ path, backend: "b", physicalPath: path, size: 1, etag: path });
      const out = {
        persistence: store.persistence,
        single: await rate(300, async () => {
          for (let i = 0; i < 300; i++) await store.put(file(`/single/${i}`));
        }),
        batch: await rate(5000, () => store.putBatch(Array.from({ length: 5000 }, (_, i) => file(`/batch/${i}`)))),
        get: await rate(2000, async () => {
          for (let i = 0; i < 2000; i++) await store.get(`/batch/${i}`);
        }),
      };
      await store.close();
      await deleteDatabase(name);
      return out;
    }, storage);
  }
  await page.close();
  console.log("\nstorage, ops/s (a named store through the package's Worker):");
  console.log(`${"workload".padEnd(34)}${"OPFS".padStart(10)}${"IndexedDB".padStart(12)}${"ratio".padStart(9)}`);
  for (const [key, label] of [
    ["single", "put (own transaction), one at a time"],
    ["batch", "5,000 puts, one putBatch"],
    ["get", "get, one at a time"],
  ]) {
    const [o, i] = [results.opfs[key], results.indexeddb[key]];
    console.log(`${label.padEnd(34)}${`${o}/s`.padStart(10)}${`${i}/s`.padStart(12)}${(i / o).toFixed(2).padStart(8)}x`);
  }
}

/**
 * What a user waits for: from navigation to the first query's result,
 * cold (a new profile: empty HTTP and code caches) and warm (the third load
 * in the same profile, served cacheable), our package against sqlite-wasm;
 * and each wasm's size compressed as a server would send it.
 */
async function loadTimes() {
  const rounds = Number(process.env.NEXUS_BENCH_ROUNDS ?? 3);
  const cached = await serve(
    { "/pkg/": pkg, "/sqlite/": sqliteDist, "/bench/": join(repo, "bench/browser") },
    0,
    { cache: true },
  );
  const libs = ["nexus", "nexus-named", "sqlite"];
  const times = Object.fromEntries(libs.map((l) => [l, { cold: [], warm: [] }]));
  try {
    for (let r = 0; r < rounds; r++) {
      for (const lib of libs) {
        const dir = mkdtempSync(join(tmpdir(), "nexus-load-"));
        const fresh = await launchProfile(dir);
        try {
          const page = await fresh.newPage();
          const load = async () => {
            await page.goto(`${cached.origin}/bench/load.html?lib=${lib}`);
            await page.waitForFunction(() => window.loadResult, null, { timeout: 60_000 });
            return page.evaluate(() => window.loadResult.ms);
          };
          times[lib].cold.push(await load());
          await load();
          times[lib].warm.push(await load());
        } finally {
          await fresh.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    cached.server.close();
  }
  console.log(`\nload time, navigation to the first query's result, ms, median of ${rounds} (each cold in a new profile):`);
  console.log(`${"".padEnd(44)}${"cold".padStart(8)}${"warm".padStart(8)}`);
  const label = {
    nexus: "nexus-metastore, in memory (schema created)",
    "nexus-named": "nexus-metastore, named (Worker, OPFS)",
    sqlite: "sqlite-wasm, in memory",
  };
  for (const lib of libs) {
    console.log(`${label[lib].padEnd(44)}${median(times[lib].cold).toFixed(0).padStart(8)}${median(times[lib].warm).toFixed(0).padStart(8)}`);
  }
  const sizes = (f) => {
    const bytes = readFileSync(f);
    const br = brotliCompressSync(bytes, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11 } }).length;
    return `${(bytes.length / 1e6).toFixed(2)} MB, gzip -9 ${(gzipSync(bytes, { level: 9 }).length / 1e6).toFixed(2)} MB, brotli 11 ${(br / 1e6).toFixed(2)} MB`;
  };
  console.log(`wasm: nexus-metastore ${sizes(join(pkg, "web/nexus_wasm_bg.wasm"))}; sqlite-wasm ${sizes(join(sqliteDist, "sqlite3.wasm"))}`);
}

/** The workload of worker.js on both sides, in rounds of fresh pages. */
async function workload() {
  // Rounds in fresh pages (fresh Workers and databases); the median of each figure.
  const rounds = Number(process.env.NEXUS_BENCH_ROUNDS ?? 3);
  const all = [];
  for (let i = 0; i < rounds; i++) {
    const page = await context.newPage();
    page.on("console", (m) => console.log(`page: ${m.text()}`));
    await page.goto(`${origin}/bench/?round=${i}`);
    all.push(await page.evaluate(() => window.results));
    await page.close();
  }
  const figure = (side, key) => median(all.map((r) => r[side][key].perSecond));
  const rows = [
    ["batch", "5,000 puts, one transaction"],
    ["single", "1,000 single-put transactions"],
    ["get", "5,000 gets"],
    ["list", "20 prefix lists of 500"],
  ];
  console.log(`\nops/s, median of ${rounds} rounds, each side warm (second run of the workload in its Worker):`);
  console.log(
    `${"workload".padEnd(32)}${"nexus-metastore".padStart(18)}${"sqlite-wasm".padStart(16)}${"ratio".padStart(9)}` +
      `${"nexus in memory".padStart(18)}`,
  );
  for (const [key, label] of rows) {
    const ours = figure("nexus", key), theirs = figure("sqlite", key);
    console.log(
      `${label.padEnd(32)}${`${ours}/s`.padStart(18)}${`${theirs}/s`.padStart(16)}${(ours / theirs).toFixed(2).padStart(8)}x` +
        `${`${figure("nexusMemory", key)}/s`.padStart(18)}`,
    );
  }
  console.log(`\nIndexedDB storage, ops/s, median of ${rounds} rounds, warm:`);
  console.log(`${"workload".padEnd(32)}${"nexus-metastore".padStart(18)}${"wa-sqlite IDBBatchAtomic".padStart(26)}${"ratio".padStart(9)}`);
  for (const [key, label] of rows) {
    const ours = figure("nexusIdb", key), theirs = figure("waSqliteIdb", key);
    console.log(`${label.padEnd(32)}${`${ours}/s`.padStart(18)}${`${theirs}/s`.padStart(26)}${(ours / theirs).toFixed(2).padStart(8)}x`);
  }
  const size = (f) => [statSync(f).size, gzipSync(readFileSync(f), { level: 9 }).length];
  const [ourRaw, ourGz] = size(join(pkg, "web/nexus_wasm_bg.wasm"));
  const [theirRaw, theirGz] = size(join(sqliteDist, "sqlite3.wasm"));
  const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
  console.log(`\nwasm size: nexus-metastore ${mb(ourRaw)} (${mb(ourGz)} gzipped), sqlite-wasm ${mb(theirRaw)} (${mb(theirGz)} gzipped)`);
  console.log("ratio = our ops/s / sqlite-wasm's (higher is better for us)");
  console.log(JSON.stringify(all));
}
