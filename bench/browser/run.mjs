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
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
