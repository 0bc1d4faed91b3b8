// What the browser tests and the browser benchmark share: a static file
// server on 127.0.0.1 (`serve({ "/pkg/": dir, "/demo/": dir }, port = 0)`
// maps URL prefixes to folders; plain HTTP, no COOP/COEP headers: the
// package must not need them; `{ cache: true }` lets the browser cache
// what it serves, for load-time measurements), headless Chromium on a persistent profile,
// the throwaway PostgreSQL of the Rust harness, and `nexus serve`.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".ts": "text/plain",
};

export function serve(routes, port = 0, { cache = false } = {}) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    const prefix = Object.keys(routes).find((p) => url.pathname.startsWith(p));
    if (!prefix) {
      res.writeHead(404).end();
      return;
    }
    const root = resolve(routes[prefix]);
    let path = normalize(join(root, decodeURIComponent(url.pathname.slice(prefix.length))));
    if (!path.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    if (url.pathname.endsWith("/")) path = join(path, "index.html");
    try {
      const body = await readFile(path);
      res.writeHead(200, {
        "content-type": TYPES[extname(path)] ?? "application/octet-stream",
        "cache-control": cache ? "max-age=3600" : "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) =>
    server.listen(port, "127.0.0.1", () => ok({ server, origin: `http://127.0.0.1:${server.address().port}` })),
  );
}

const here = fileURLToPath(new URL(".", import.meta.url));
export const repo = resolve(here, "../..");
/** playwright-core, from the tools folder the build installs. */
const { chromium } = createRequire(join(repo, "wasm/tools/package.json"))("playwright-core");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** The `nexus` and `test-pg` binaries (NEXUS_BIN, NEXUS_TEST_PG_BIN; default target/debug/). */
export const nexusBin = process.env.NEXUS_BIN ?? join(repo, "target/debug/nexus");
export const testPgBin = process.env.NEXUS_TEST_PG_BIN ?? join(repo, "target/debug/test-pg");
/** The built package (scripts/build-npm.sh). */
export const pkgDir = join(repo, "target/npm/nexus-metastore");
/** The package at /pkg/ and the demo page at /demo/, for `serve`. */
export const demoRoutes = {
  "/pkg/": pkgDir,
  "/demo/": join(repo, "tests/e2e/demo"),
};

/** Headless Chromium on the persistent profile in `dir` (OPFS is kept there). */
export function launchProfile(dir) {
  return chromium.launchPersistentContext(dir, { executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
}

/** Writes a `nexus serve --tokens` file that lets `token` act for `tenant`. */
export function writeTokenFile(path, token, tenant = "default") {
  writeFileSync(path, `${tenant} ${createHash("sha256").update(token).digest("hex")}\n`);
}

/** `npm install` of the packed package (target/npm/*.tgz) into the project at `dir`. */
export function installPackage(dir) {
  const tgz = readdirSync(join(repo, "target/npm")).find((f) => /^nexus-metastore-.*\.tgz$/.test(f));
  if (!tgz) throw new Error("target/npm has no packed package (run scripts/build-npm.sh)");
  execFileSync("npm", ["install", "--no-audit", "--no-fund", join(repo, "target/npm", tgz)], { cwd: dir, stdio: "inherit" });
}

/**
 * A fresh PostgreSQL database from the Rust test harness (`test-pg`: a
 * throwaway cluster, or NEXUS_TEST_DATABASE_URL); it lives until `stop()`
 * closes the helper's stdin.
 */
export function startPostgres(testPg) {
  const child = spawn(testPg, [], { stdio: ["pipe", "pipe", "inherit"] });
  const url = new Promise((ok, fail) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) ok(out.trim());
    });
    child.on("exit", (code) => fail(new Error(`test-pg exited with ${code} before printing a URL`)));
  });
  const stop = () => new Promise((ok) => (child.exitCode !== null ? ok() : (child.on("exit", ok), child.stdin.end())));
  return { url, stop };
}

/**
 * `nexus --db DB serve ARGS...` (with `env` added to this process's);
 * resolves to `{ url, child }` once it listens.
 */
export function startNexusServe(nexus, db, args, env = {}) {
  const child = spawn(nexus, ["--db", db, "serve", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  // Its log goes on to ours, and is kept (`child.log`, one line per item).
  child.log = [];
  let partial = "";
  child.stderr.on("data", (d) => {
    process.stderr.write(d);
    const lines = (partial + d).split("\n");
    partial = lines.pop();
    child.log.push(...lines);
  });
  return new Promise((ok, fail) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) ok({ url: m[1], child });
    });
    child.on("exit", (code, signal) => fail(new Error(`nexus serve exited with ${code ?? signal}`)));
  });
}
