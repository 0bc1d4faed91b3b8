// A static file server on 127.0.0.1 for the browser tests and the benchmark:
// `serve({ "/pkg/": dir, "/demo/": dir }, port = 0)` maps URL prefixes to
// folders.
// Plain HTTP, no COOP/COEP headers: the package must not need them.
import { execFileSync, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
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

export function serve(routes, port = 0) {
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
        "cache-control": "no-store",
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
export const { chromium } = createRequire(join(repo, "wasm/tools/package.json"))("playwright-core");
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

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

/** `nexus --db DB serve ARGS...`; resolves to `{ url, child }` once it listens. */
export function startNexusServe(nexus, db, args) {
  const child = spawn(nexus, ["--db", db, "serve", ...args], { stdio: ["ignore", "pipe", "inherit"] });
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
