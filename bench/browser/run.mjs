// The browser benchmark: our package vs @sqlite.org/sqlite-wasm (opfs-sahpool)
// in one headless Chromium run, same workload, both on OPFS in a Worker.
// Needs scripts/build-npm.sh first. Run: node bench/browser/run.mjs
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { launchProfile, pkgDir as pkg, repo, serve } from "../../tests/e2e/serve.mjs";

const sqliteDist = join(repo, "wasm/tools/node_modules/@sqlite.org/sqlite-wasm/dist");
const { server, origin } = await serve({
  "/pkg/": pkg,
  "/sqlite/": sqliteDist,
  "/migrations/": join(repo, "migrations"),
  "/bench/": join(repo, "bench/browser"),
  "/demo/": join(repo, "tests/e2e/demo"),
});
const profile = mkdtempSync(join(tmpdir(), "nexus-bench-"));
const context = await launchProfile(profile);
try {
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
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
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
  const size = (f) => [statSync(f).size, gzipSync(readFileSync(f), { level: 9 }).length];
  const [ourRaw, ourGz] = size(join(pkg, "web/nexus_wasm_bg.wasm"));
  const [theirRaw, theirGz] = size(join(sqliteDist, "sqlite3.wasm"));
  const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
  console.log(`\nwasm size: nexus-metastore ${mb(ourRaw)} (${mb(ourGz)} gzipped), sqlite-wasm ${mb(theirRaw)} (${mb(theirGz)} gzipped)`);
  console.log("ratio = our ops/s / sqlite-wasm's (higher is better for us)");
  console.log(JSON.stringify(all));
  await tabs();
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
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
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
