// nexus-metastore: the Nexus metadata store in the browser.
//
// `open()` picks where the store runs:
// - with a `name`, on a page: in a dedicated Worker (the only place OPFS sync
//   access handles exist), behind a proxy with the same async methods;
// - with a `name`, inside a Worker: right here, on OPFS;
// - without a name: in memory, right here.
// Where OPFS is missing, it falls back to memory and says so (`persistence`
// is "memory", and a console warning), unless `fallback: "error"`.
import init, { NexusStore } from "./web/nexus_wasm.js";
import { RemoteStore } from "./remote.js";

let loading;
/** Loads and instantiates the WebAssembly module (once). */
export function load(module) {
  loading ??= init(module === undefined ? undefined : { module_or_path: module });
  return loading;
}

const inWorker =
  typeof WorkerGlobalScope !== "undefined" && globalThis instanceof WorkerGlobalScope;

export async function open(options = {}) {
  const { fallback = "memory", worker, ...storeOptions } = options;
  if (fallback !== "memory" && fallback !== "error") {
    throw Object.assign(new Error(`invalid fallback ${JSON.stringify(fallback)}: use "memory" or "error"`), {
      name: "NexusError",
      kind: "InvalidArgument",
    });
  }
  try {
    if (storeOptions.name !== undefined && !inWorker) {
      return await RemoteStore.open(storeOptions, worker);
    }
    await load();
    return await NexusStore.open(storeOptions);
  } catch (e) {
    if (e?.kind !== "Unsupported" || fallback === "error") throw e;
    console.warn(
      `nexus-metastore: database ${JSON.stringify(storeOptions.name)} is in memory only ` +
        `and will be lost when the page closes: ${e.message}`,
    );
    await load();
    return await NexusStore.open({ tenant: storeOptions.tenant });
  }
}

/**
 * Deletes the OPFS database `name` and all its data. Rejects with kind
 * `Busy` while any tab has it open.
 */
export async function deleteDatabase(name) {
  if (!inWorker) return RemoteStore.deleteDatabase(name);
  await load();
  return NexusStore.deleteDatabase(name);
}

export { NexusStore, RemoteStore };
