// nexus-metastore under Node: the same store, in memory (Node has no OPFS;
// for files on disk use the native `nexus` CLI or the nexus-core crate).
import { addMethods, nexusError, openWithFallback } from "./common.js";
import { NexusStore } from "./node/nexus_wasm.js";

addMethods(NexusStore);

export async function load() {}

export async function open(options = {}) {
  const { fallback = "memory", worker: _worker, ...storeOptions } = options;
  return openWithFallback(
    storeOptions,
    fallback,
    () => NexusStore.open(storeOptions),
    (tenant) => NexusStore.open({ tenant }),
  );
}

/** Node has no OPFS: there are no named databases to delete. */
export async function deleteDatabase(name) {
  throw nexusError("Unsupported", `there is no OPFS database ${JSON.stringify(name)} under Node`);
}

export { NexusStore };
