// nexus-metastore: the Nexus metadata store in the browser.
//
// `open()` picks where the store runs:
// - with a `name`, on a page: in a dedicated Worker (the only place OPFS sync
//   access handles exist), behind a proxy with the same async methods;
// - with a `name`, inside a Worker: right here, on OPFS;
// - either way shared with every other tab and Worker of the origin that
//   opens the same name (tabs.js: one of them holds it, the others reach it);
// - with a `name`, on a page without Workers (some embedded webviews): right
//   here, where OPFS sync access handles do not exist, so "auto" storage is
//   IndexedDB;
// - without a name: in memory, right here.
// Where OPFS is missing, it falls back to IndexedDB; where that is missing
// too, to memory, and says so (`persistence` is "memory", and a console
// warning), unless `fallback: "error"`.
import init, { NexusStore } from "./web/nexus_wasm.js";
import { RemoteStore } from "./remote.js";
import { addMethods, openWithFallback } from "./common.js";
import { SharedStore, deleteShared, openShared } from "./tabs.js";

let loading;
/** Loads and instantiates the WebAssembly module (once). */
export function load(module) {
  loading ??= init(module === undefined ? undefined : { module_or_path: module });
  return loading;
}

const inWorker =
  typeof WorkerGlobalScope !== "undefined" && globalThis instanceof WorkerGlobalScope;
/** Whether a named store runs in a Worker of its own: on a page given one or able to start one. */
const viaWorker = (worker) => !inWorker && (worker !== undefined || typeof Worker !== "undefined");

export async function open(options = {}) {
  const { fallback = "memory", worker, ...storeOptions } = options;
  return openWithFallback(
    storeOptions,
    fallback,
    async () => {
      if (storeOptions.name !== undefined && viaWorker(worker)) return RemoteStore.open(storeOptions, worker);
      await load();
      if (storeOptions.name !== undefined) return openShared(storeOptions);
      return NexusStore.open(storeOptions);
    },
    async (tenant) => {
      await load();
      return NexusStore.open({ tenant });
    },
  );
}

/**
 * Deletes the database `name` and all its data (OPFS and IndexedDB).
 * Rejects with kind
 * `Busy` while any tab has it open.
 */
export async function deleteDatabase(name) {
  if (viaWorker(undefined)) return RemoteStore.deleteDatabase(name);
  await load();
  return deleteShared(name);
}

// `startSync` runs where it is called (a page's timers, its online events),
// around the store's `sync`, which a Worker-held store forwards; `onChange`
// and `watch` filter the store's `onCommit`.
for (const cls of [NexusStore, RemoteStore, SharedStore]) addMethods(cls);

export { NexusStore, RemoteStore, SharedStore };
