// nexus-metastore under Node: the same store, in memory (Node has no OPFS;
// for files on disk use the native `nexus` CLI or the nexus-core crate).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { NexusStore } = require("./node/nexus_wasm.js");

export async function load() {}

export async function open(options = {}) {
  const { fallback = "memory", worker: _worker, ...storeOptions } = options;
  try {
    return await NexusStore.open(storeOptions);
  } catch (e) {
    if (e?.kind !== "Unsupported" || fallback === "error") throw e;
    console.warn(
      `nexus-metastore: database ${JSON.stringify(storeOptions.name)} is in memory only: ${e.message}`,
    );
    return await NexusStore.open({ tenant: storeOptions.tenant });
  }
}

/** Node has no OPFS: there are no named databases to delete. */
export async function deleteDatabase(name) {
  throw Object.assign(new Error(`there is no OPFS database ${JSON.stringify(name)} under Node`), {
    name: "NexusError",
    kind: "Unsupported",
  });
}

export { NexusStore };
