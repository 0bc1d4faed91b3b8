// The packed npm package as a user installs it: `npm install` of the .tgz
// into an empty project, then
// - Node resolves `nexus-metastore` to its Node build: an in-memory store
//   that works, typed errors, and a named (OPFS) store falling back to memory
//   with a warning, or rejecting with kind Unsupported under fallback "error";
// - TypeScript (strict) accepts a program using the package's types, and
//   rejects one that misuses them.
// Needs scripts/build-npm.sh. Run: node tests/e2e/package.mjs
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

import { installPackage, repo } from "./serve.mjs";

const app = mkdtempSync(join(tmpdir(), "nexus-package-"));
let failed = false;
try {
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  installPackage(app);

  writeFileSync(
    join(app, "main.mjs"),
    `import { open } from "nexus-metastore";
const out = {};
const store = await open();
out.persistence = store.persistence;
out.put = await store.put({ path: "/a/b.txt", backend: "local", physicalPath: "/srv/b", size: 3, etag: "h1" });
await store.setMetadata("/a/b.txt", "tags", ["x", { y: 1.5 }]);
out.meta = await store.getMetadata("/a/b.txt", "tags");
out.page = await store.listPage({ prefix: "/a/", limit: 10 });
try { await store.put({ path: "/a/b.txt", backend: "local", physicalPath: "/srv/b", size: 4 }, { version: 9 }); }
catch (e) { out.conflict = [e.name, e.kind, e.message]; }
try { await store.rename("/nope", "/x"); } catch (e) { out.notFound = e.kind; }
const warnings = [];
console.warn = (m) => warnings.push(m);
const named = await open({ name: "db" });
out.fallback = [named.persistence, warnings.length];
try { await open({ name: "db", fallback: "error" }); } catch (e) { out.strict = e.kind; }
const bad = async (f) => { try { await f(); return "accepted"; } catch (e) { return [e.kind, e.message]; } };
out.bad = {
  noSize: await bad(() => store.put({ path: "/n", backend: "l", physicalPath: "p" })),
  snake: await bad(() => store.put({ path: "/n", backend: "l", physical_path: "p", size: 1 })),
  fraction: await bad(() => store.put({ path: "/n", backend: "l", physicalPath: "p", size: 1.5 })),
  undefinedValue: await bad(() => store.setMetadata("/a/b.txt", "k", undefined)),
  twoPreconditions: await bad(() => store.put({ path: "/a/b.txt", backend: "l", physicalPath: "p", size: 1 }, { version: 1, etag: "x" })),
  relative: await bad(() => store.put({ path: "rel", backend: "l", physicalPath: "p", size: 1 })),
};
out.filesAfterBad = (await store.stats()).files;
const seen = { changes: [], watched: [] };
const stop = store.onChange((e) => seen.changes.push(e));
const stopWatch = store.watch("/w/", (e) => seen.watched.push(e.paths));
const tick = () => new Promise((r) => setTimeout(r, 20));
await tick();
await store.put({ path: "/w/1", backend: "local", physicalPath: "/srv/1", size: 1 });
await store.put({ path: "/v/1", backend: "local", physicalPath: "/srv/2", size: 1 });
await store.withTenant("other").put({ path: "/w/other", backend: "local", physicalPath: "/o", size: 1 });
await tick();
stop();
stopWatch();
await store.rename("/w/1", "/w/2");
await tick();
// Commits that came before the callback ran arrive merged: compare the union.
out.changes = [...new Set(seen.changes.flatMap((e) => e.paths))].sort();
out.ranges = seen.changes.every((e) => e.toSeq > e.fromSeq && e.paths.length > 0);
out.watched = seen.watched.flat();
const exported = await store.exportChanges();
out.exported = [exported.bytes instanceof Uint8Array, exported.after, exported.through > 0];
console.log(JSON.stringify(out));
`,
  );
  const out = JSON.parse(execFileSync("node", ["main.mjs"], { cwd: app }).toString());
  assert.equal(out.persistence, "memory");
  assert.equal(out.put.version, 1);
  assert.equal(out.put.physicalPath, "/srv/b");
  assert.deepEqual(out.meta, ["x", { y: 1.5 }]);
  assert.deepEqual(out.page.items.map((r) => r.path), ["/a/b.txt"]);
  assert.equal(out.page.nextCursor, null);
  assert.deepEqual(out.conflict, ["NexusError", "Conflict", "conflict on /a/b.txt: expected version 9, found version 1"]);
  assert.equal(out.notFound, "NotFound");
  assert.deepEqual(out.fallback, ["memory", 1]);
  assert.equal(out.strict, "Unsupported");
  assert.deepEqual(out.exported, [true, 0, true]);
  const kinds = Object.fromEntries(Object.entries(out.bad).map(([k, v]) => [k, v[0]]));
  assert.deepEqual(kinds, {
    noSize: "InvalidArgument",
    snake: "InvalidArgument",
    fraction: "InvalidArgument",
    undefinedValue: "InvalidArgument",
    twoPreconditions: "InvalidArgument",
    relative: "InvalidPath",
  });
  assert.match(out.bad.noSize[1], /size/);
  assert.match(out.bad.snake[1], /physical_path/);
  assert.match(out.bad.fraction[1], /1\.5/);
  assert.equal(out.filesAfterBad, 1, "nothing written by a bad call");
  assert.deepEqual(out.changes, ["/v/1", "/w/1"], "onChange: this tenant's commits, until stopped");
  assert.ok(out.ranges, "each event has a range and paths");
  assert.deepEqual(out.watched, ["/w/1"], "watch: under its prefix only, until stopped");
  console.log("package: the Node build works");

  const tsc = join(repo, "wasm/tools/node_modules/.bin/tsc");
  const flags = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext",
    "--target", "es2022", "--lib", "es2022,dom,esnext.disposable", "--skipLibCheck", "false"];
  writeFileSync(
    join(app, "good.ts"),
    `import { open, RemoteStore, type FileRecord, type Store, type NexusError, type Page, type SyncResult, type SyncHandle } from "nexus-metastore";
const store: Store = await open({ name: "photos", fallback: "error" });
const rec: FileRecord = await store.put({ path: "/a", backend: "b", physicalPath: "p", size: 1 }, { version: 1 });
const page: Page = await store.listPage({ prefix: "/", limit: 10, recursive: false });
const v: number = rec.version + page.items.length;
const { bytes, through }: { bytes: Uint8Array; through: number } = await store.exportChanges(v);
try { await store.get("/x"); } catch (e) { const kind: string = (e as NexusError).kind; }
// Every kind the package rejects with is one of ErrorKind's (a missing one
// fails --strict: "This comparison appears to be unintentional").
const retry = (e: NexusError): boolean => e.kind === "Busy" || e.kind === "Unavailable";
const denied = (e: NexusError): boolean => e.kind === "Unauthorized" || e.kind === "Forbidden";
const waiting = (e: NexusError): boolean => e.kind === "PullUnfinished" || e.kind === "ChangeFileGap";
void retry; void denied; void waiting;
const stop: () => void = store.onChange((e) => { const p: string[] = e.paths; const n: number = e.toSeq - e.fromSeq; void p; void n; });
store.watch("/docs/", (e) => { const t: boolean = e.truncated; void t; })();
stop();
const synced: SyncResult = await store.sync({ url: "http://127.0.0.1:9", token: "t", maxRows: 100 });
const copies: string[] = synced.conflicts.map((c) => c.copy + c.path + c.source);
const rows: number = synced.pushed + synced.pulled + copies.length;
const handle: SyncHandle = store.startSync({
  url: "http://127.0.0.1:9", token: "t", intervalMs: 1000,
  onSync: (r) => { const n: number = r.pushed + r.pulled; void n; },
  onError: (e) => { const k: string = e.kind; void k; },
});
handle.syncNow();
await handle.stop();
void rows;
const remote: Store = await RemoteStore.open({ name: "r" });
const other: RemoteStore = await (await RemoteStore.open({ name: "r" })).withTenant("t");
await other.close();
export { bytes, through, remote };
`,
  );
  execFileSync(tsc, [...flags, "good.ts"], { cwd: app, stdio: "inherit" });
  // Misuses tsc must reject, each with the name of what is wrong.
  const misuses = [
    [`await store.put({ path: "/a", backend: "b", physical_path: "p", size: 1 });`, /physical_path/],
    [`await store.sync({ url: "http://127.0.0.1:9" });`, /token/],
    [`store.startSync({ url: "u", token: "t", interval: 5 });`, /interval/],
  ];
  for (const [i, [line, expected]] of misuses.entries()) {
    writeFileSync(
      join(app, `bad${i}.ts`),
      `import { open } from "nexus-metastore";
const store = await open();
${line}
export {};
`,
    );
    let rejected = false;
    try {
      execFileSync(tsc, [...flags, `bad${i}.ts`], { cwd: app, stdio: "pipe" });
    } catch (e) {
      rejected = expected.test(e.stdout.toString());
    }
    assert.ok(rejected, `tsc rejects ${line}`);
  }
  console.log("package: the types check (and catch misuses)");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  if (!failed) rmSync(app, { recursive: true, force: true });
  else console.error(`package: kept ${app}`);
}
process.exit(failed ? 1 : 0);
