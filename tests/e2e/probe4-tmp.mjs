import { mkdtempSync, readdirSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { demoRoutes, launchProfile, serve } from "./serve.mjs";
const profile = mkdtempSync("/tmp/probe-");
const { server, origin } = await serve(demoRoutes);
let ctx = await launchProfile(profile);
let page = await ctx.newPage();
await page.goto(`${origin}/demo/blank.html`);
await page.evaluate(async () => { const { open } = await import("/pkg/index.js"); const s = await open({ name: "p", storage: "indexeddb", fallback: "error" }); for (let i = 0; i < 20; i++) await s.put({ path: "/a" + i, backend: "b", physicalPath: "p", size: 1 }); await s.close(); });
await ctx.close();
const idb = join(profile, "Default", "IndexedDB");
const dir = join(idb, readdirSync(idb).find((d) => d.endsWith(".leveldb")));
console.log(readdirSync(dir));
const mode = process.argv[2];
if (mode === "current") writeFileSync(join(dir, "CURRENT"), "MANIFEST-999999\n");
if (mode === "log") for (const f of readdirSync(dir).filter((f) => f.endsWith(".log"))) { const b = readFileSync(join(dir, f)); for (let i = 100; i < b.length; i += 7) b[i] ^= 0xff; writeFileSync(join(dir, f), b); }
ctx = await launchProfile(profile);
page = await ctx.newPage();
await page.goto(`${origin}/demo/blank.html`);
const r = await page.evaluate(async () => {
  const ev = await new Promise((ok) => { const o = indexedDB.open("nexus-metastore:p", 1); o.onupgradeneeded = (e) => ok({ upgrade: true, dataLoss: e.dataLoss, msg: e.dataLossMessage, old: e.oldVersion }); o.onsuccess = () => { o.result.close(); ok({ upgrade: false }); }; o.onerror = () => ok({ error: String(o.error) }); });
  return ev;
});
console.log(mode, JSON.stringify(r));
await ctx.close(); server.close();
