// The package in a Vite app: install the packed .tgz into a copy of
// tests/e2e/vite-app, build it with Vite, serve the bundle on 127.0.0.1
// (no COOP/COEP headers) and load it in Chromium: the store opens on OPFS
// through the bundled Worker and keeps its data across a reload.
// Needs scripts/build-npm.sh. Run: node tests/e2e/vite.mjs
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import assert from "node:assert/strict";

import { installPackage, launchProfile, repo, serve } from "./serve.mjs";

const work = mkdtempSync(join(tmpdir(), "nexus-vite-"));
const app = join(work, "app");
let failed = false;
try {
  cpSync(join(repo, "tests/e2e/vite-app"), app, { recursive: true });
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "vite-app", private: true, type: "module" }));
  installPackage(app);

  const vite = await import(pathToFileURL(join(repo, "wasm/tools/node_modules/vite/dist/node/index.js")).href);
  await vite.build({ root: app, logLevel: "warn", configFile: join(app, "vite.config.js") });
  const assets = readdirSync(join(app, "dist/assets"));
  console.log(`vite: built ${assets.join(", ")}`);
  assert.ok(assets.some((f) => f.endsWith(".wasm")), "the bundle carries the .wasm");

  const { server, origin } = await serve({ "/": join(app, "dist") });
  const context = await launchProfile(join(work, "profile"));
  try {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
    const status = async () => {
      await page.waitForFunction(() => /^(ok|error)/.test(document.getElementById("status").textContent), null, {
        timeout: 30_000,
      });
      return page.locator("#status").textContent();
    };
    await page.goto(`${origin}/`);
    assert.equal(await status(), "ok: opfs, visits 1");
    await page.reload();
    assert.equal(await status(), "ok: opfs, visits 2");
    console.log("vite: passed");
  } finally {
    await context.close();
    server.close();
  }
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  if (!failed) rmSync(work, { recursive: true, force: true });
  else console.error(`vite: kept ${work}`);
}
process.exit(failed ? 1 : 0);
