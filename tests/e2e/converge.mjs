// Convergence with a browser in the network: a store in headless Chromium
// (OPFS, in the package's Worker) and two native stores (the `nexus`
// command on files) change overlapping paths offline (puts with new etags,
// deletes, renames, metadata) and sync through one `nexus serve` in random
// orders, while the server is SIGKILLed mid-sync and restarted on its port.
// Once each store has synced twice with no new writes, the three stores
// and PostgreSQL hold the same files and metadata, `nexus verify` holds for
// the native stores, and no write is lost: every etag any store wrote is a
// version in PostgreSQL (current at a path, a conflict copy, or history).
//
// NEXUS_CONVERGE_SEED=N replays one run (the seed is printed);
// NEXUS_CONVERGE_RUNS=N runs N seeds (default 4). Needs what e2e.mjs needs.
// Run: node tests/e2e/converge.mjs
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import assert from "node:assert/strict";

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
const runs = Number(process.env.NEXUS_CONVERGE_RUNS ?? 4);
const firstSeed = Number(process.env.NEXUS_CONVERGE_SEED ?? Date.now() % 1_000_000);
const run = promisify(execFile);

const PATHS = ["/p/a", "/p/b", "/q/c", "/q/d", "/r"];
const TOKEN = "converge-token";

/** mulberry32: a small seeded generator, so that a seed replays a run. */
function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { int: (n) => Math.floor(next() * n), pick: (xs) => xs[Math.floor(next() * xs.length)] };
}

/** What a user sees: per live path its identity, etag, size, version, metadata. */
function normalize(files, metadata) {
  return Object.fromEntries(
    files.map((f) => [f.path, { id: f.pathId ?? f.path_id, etag: f.etag, size: f.size, version: f.version, meta: metadata[f.path] }]),
  );
}

/** `nexus --db DB ARGS...`: its output; `cliJson` parses its `--json` output. */
const cli = async (db, ...args) => (await run(nexus, ["--db", db, ...args])).stdout;
const cliJson = async (db, ...args) => JSON.parse(await cli(db, "--json", ...args));

/** A native store, through the `nexus` command. */
function native(db) {
  return {
    name: db,
    exists: async (path) => (await cliJson(db, "ls", "-r", path)).items.some((f) => f.path === path),
    put: (path, etag) =>
      cli(db, "put", path, "--backend", "local", "--physical", `/srv${path}`, "--size", String(etag.length), "--etag", etag),
    delete: (path) => cli(db, "rm", path),
    rename: (from, to) => cli(db, "mv", from, to),
    setMetadata: (path, key, value) => cli(db, "meta", "set", path, key, JSON.stringify(value)),
    sync: (url) => cli(db, "sync", "--with", url, "--token", TOKEN),
    state: () => stateOf(db),
  };
}

async function stateOf(db) {
  const files = (await cliJson(db, "ls", "-r", "/")).items;
  const metadata = {};
  for (const f of files) metadata[f.path] = (await cliJson(db, "meta", "ls", f.path)).metadata;
  return normalize(files, metadata);
}

/** The browser's store, in a page of a persistent profile. */
function browser(page) {
  const call = (method, ...args) =>
    page.evaluate(([method, args]) => window.store[method](...args), [method, args]);
  return {
    name: "browser",
    exists: (path) => call("exists", path),
    put: (path, etag) => call("put", { path, backend: "local", physicalPath: `/srv${path}`, size: etag.length, etag }),
    delete: (path) => call("delete", path),
    rename: (from, to) => call("rename", from, to),
    setMetadata: (path, key, value) => call("setMetadata", path, key, value),
    sync: (url) =>
      page.evaluate(([url, token]) => window.store.sync({ url, token }).catch((e) => Promise.reject(new Error(`${e.kind}: ${e.message}`))), [url, TOKEN]),
    state: async () => {
      const { files, metadata } = await page.evaluate(async () => {
        const files = await window.store.list("/");
        const metadata = {};
        for (const f of files) metadata[f.path] = await window.store.listMetadata(f.path);
        return { files, metadata };
      });
      return normalize(files, metadata);
    },
  };
}

async function converge(seed, { origin, context, pgUrl, work }) {
  console.log(`converge: seed ${seed}`);
  const rng = random(seed);
  const tokens = join(work, "tokens");
  writeTokenFile(tokens, TOKEN);
  const serveArgs = ["--tokens", tokens, "--cors-origin", origin];
  let server = await startNexusServe(nexus, pgUrl, ["--listen", "127.0.0.1:0", ...serveArgs]);
  const url = server.url;
  const listen = url.replace(/^http:\/\//, "");
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  try {
    await page.goto(`${origin}/demo/blank.html`);
    await page.evaluate(async (name) => {
      const { open } = await import("/pkg/index.js");
      window.store = await open({ name, fallback: "error" });
    }, `converge-${seed}`);
    const stores = [browser(page), native(join(work, `a-${seed}.db`)), native(join(work, `b-${seed}.db`))];
    // (A native store is made before anything reads it, as a user would.)
    for (const s of stores.slice(1)) await cli(s.name, "init");
    const written = [];
    const steps = 15 + rng.int(15);
    for (let i = 0; i < steps; i++) {
      const who = rng.int(stores.length);
      const s = stores[who];
      const kind = rng.pick(["put", "put", "put", "delete", "meta", "meta", "rename", "sync", "sync", "kill"]);
      const [a, b] = [rng.pick(PATHS), rng.pick(PATHS)];
      if (kind === "put") {
        const etag = `s${who}-e${rng.int(4)}-${seed}-${i}`;
        await s.put(a, etag);
        written.push(etag);
      } else if (kind === "delete") {
        if (await s.exists(a)) await s.delete(a);
      } else if (kind === "meta") {
        if (await s.exists(a)) await s.setMetadata(a, `k${rng.int(3)}`, `s${who}-${i}`);
      } else if (kind === "rename") {
        if (a !== b && (await s.exists(a)) && !(await s.exists(b))) await s.rename(a, b);
      } else if (kind === "sync") {
        await s.sync(url);
      } else {
        // The server dies mid-sync and comes back on its port: the sync
        // either completes (its retries reach the new server) or fails;
        // either way nothing is applied twice or lost.
        const inFlight = s.sync(url).then(
          () => "done",
          (e) => `failed: ${String(e.message).split("\n")[0]}`,
        );
        await new Promise((r) => setTimeout(r, rng.int(40)));
        server.child.kill("SIGKILL");
        await new Promise((r) => server.child.exitCode !== null || server.child.signalCode !== null ? r() : server.child.on("exit", r));
        server = await startNexusServe(nexus, pgUrl, ["--listen", listen, ...serveArgs]);
        console.log(`converge: store ${who}'s sync with the server killed: ${await inFlight}`);
      }
    }
    for (let round = 0; round < 2; round++) {
      for (const s of stores) await s.sync(url);
    }
    const pg = await stateOf(pgUrl);
    for (const s of stores) {
      assert.deepEqual(await s.state(), pg, `${s.name} differs from PostgreSQL (seed ${seed})`);
    }
    for (const s of stores.slice(1)) {
      execFileSync(nexus, ["--db", s.name, "verify", "--to", pgUrl], { stdio: ["ignore", "ignore", "inherit"] });
    }
    const versions = new Set(
      execFileSync("psql", [pgUrl, "-Atc", "SELECT content_hash FROM version_history WHERE content_hash IS NOT NULL"])
        .toString()
        .split("\n"),
    );
    for (const e of written) assert.ok(versions.has(e), `${e} was lost (seed ${seed})`);
    const copies = Object.keys(pg).filter((p) => p.includes(".sync-conflict-")).length;
    console.log(
      `converge: seed ${seed}: ${steps} steps, ${written.length} writes, ${Object.keys(pg).length} live files (${copies} conflict copies), all converged`,
    );
  } finally {
    await page.close();
    server.child.kill("SIGTERM");
  }
}

const work = mkdtempSync(join(tmpdir(), "nexus-converge-"));
const { server, origin } = await serve(demoRoutes);
const context = await launchProfile(join(work, "profile"));
let failed = false;
try {
  for (let r = 0; r < runs; r++) {
    // Each run its own database: the stores start empty.
    const postgres = startPostgres(testPgBin);
    try {
      await converge(firstSeed + r, { origin, context, pgUrl: await postgres.url, work });
    } finally {
      await postgres.stop();
    }
  }
  console.log("converge: passed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await context.close();
  server.close();
  if (!failed) rmSync(work, { recursive: true, force: true });
  else console.error(`converge: kept ${work} for inspection`);
}
process.exit(failed ? 1 : 0);
