// What the entry points (index.js, node.mjs) and both sides of the Worker
// wrapper (remote.js, worker.js) share: the methods the wrapper forwards,
// the NexusError shape, and the rule of `open` on every platform (the store
// the options ask for; where the platform cannot persist it, kind
// Unsupported, an in-memory store and a console warning, unless
// `fallback: "error"`). No Worker URLs here, so bundlers following it from
// worker.js do not nest the Worker in itself.

/** Every async method of a store, forwarded as is. */
export const METHODS = [
  "put", "putBatch", "get", "exists", "getBatch", "delete", "deleteBatch", "list", "listPage",
  "listDirectories", "isDirectory", "rename", "setMetadata", "setMetadataBatch", "getMetadata",
  "listMetadata", "deleteMetadata", "findByMetadata", "listVersions", "getVersion", "rollback",
  "diffVersions", "addChunkRef", "releaseChunkRef", "getChunk", "gcCandidates", "removeChunk",
  "stats", "exportChanges", "sync", "integrityCheck",
];

/**
 * Keeps `store` in sync with a sync server: `store.sync(options)` now, then
 * every `intervalMs` (default 10 s). A failure is passed to `onError` and
 * retried later and later (doubling, at most 5 minutes); while the platform
 * says it is offline nothing is tried, and coming online syncs at once.
 * Returns `{ stop, syncNow }`; `stop()` resolves once a sync in flight ends.
 */
export function startSync(store, options = {}) {
  const { intervalMs = 10_000, onSync, onError, ...syncOptions } = options;
  if (!(typeof intervalMs === "number" && intervalMs > 0)) {
    throw nexusError("InvalidArgument", `invalid intervalMs ${intervalMs}: a number of milliseconds above 0`);
  }
  let stopped = false;
  let timer;
  let running = null;
  let again = false; // asked for (syncNow, coming online) while a sync ran
  let failures = 0;
  const online = () => globalThis.navigator?.onLine !== false;
  const schedule = (ms) => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(run, ms);
  };
  async function run() {
    if (stopped || !online()) return; // offline: the "online" event resumes
    if (running) return;
    again = false;
    running = (async () => {
      try {
        const result = await store.sync(syncOptions);
        failures = 0;
        onSync?.(result);
        schedule(again ? 0 : intervalMs);
      } catch (e) {
        failures += 1;
        // Asked for while this sync ran (coming online, syncNow): try again
        // at once; a syncNow from onError itself waits out the backoff.
        const soon = again;
        onError?.(e);
        schedule(soon ? 0 : Math.min(intervalMs * 2 ** failures, 300_000));
      } finally {
        running = null;
      }
    })();
    await running;
  }
  // While a sync runs, the next one comes right after it (scheduling now
  // would be undone by the end of the running sync, which schedules its
  // successor).
  const wake = () => {
    if (running) again = true;
    else schedule(0);
  };
  globalThis.addEventListener?.("online", wake);
  schedule(0);
  return {
    syncNow: wake,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      globalThis.removeEventListener?.("online", wake);
      await running;
    },
  };
}


/** Calls `listener(event)`; what it throws is reported, not passed on. */
export function notify(listener, event) {
  try {
    listener(event);
  } catch (e) {
    (globalThis.reportError ?? console.error)(e);
  }
}

/**
 * Calls `callback({ fromSeq, toSeq, paths, truncated })` after each commit
 * that changed paths of `store`'s tenant (any handle, any tab, a sync
 * pull), with those paths; returns the function that stops it.
 */
export function onChange(store, callback) {
  if (typeof callback !== "function") {
    throw nexusError("InvalidArgument", "onChange needs a callback function");
  }
  return store.onCommit((event) => {
    const paths = event.paths.filter((p) => p.tenant === store.tenant).map((p) => p.path);
    if (paths.length > 0 || event.truncated) {
      callback({ fromSeq: event.fromSeq, toSeq: event.toSeq, paths, truncated: event.truncated });
    }
  });
}

/** `onChange` for the paths that start with `prefix` (a raw string, as in `list`). */
export function watch(store, prefix, callback) {
  if (typeof prefix !== "string") {
    throw nexusError("InvalidArgument", `invalid prefix ${JSON.stringify(prefix)}: a string such as "/docs/"`);
  }
  if (typeof callback !== "function") {
    throw nexusError("InvalidArgument", "watch needs a callback function");
  }
  return onChange(store, (event) => {
    const paths = event.paths.filter((p) => p.startsWith(prefix));
    if (paths.length > 0 || event.truncated) callback({ ...event, paths });
  });
}

/** The methods every store class gets in JavaScript: `startSync`, `onChange`, `watch`. */
export function addMethods(cls) {
  cls.prototype.startSync = function (options) {
    return startSync(this, options);
  };
  cls.prototype.onChange = function (callback) {
    return onChange(this, callback);
  };
  cls.prototype.watch = function (prefix, callback) {
    return watch(this, prefix, callback);
  };
}

export function nexusError(kind, message) {
  return Object.assign(new Error(message), { name: "NexusError", kind });
}

/**
 * `openAsked()` opens what `storeOptions` ask for, `openMemory(tenant)` an
 * in-memory store; `fallback` is "memory" or "error".
 */
export async function openWithFallback(storeOptions, fallback, openAsked, openMemory) {
  if (fallback !== "memory" && fallback !== "error") {
    throw nexusError("InvalidArgument", `invalid fallback ${JSON.stringify(fallback)}: use "memory" or "error"`);
  }
  try {
    return await openAsked();
  } catch (e) {
    if (e?.kind !== "Unsupported" || fallback === "error") throw e;
    console.warn(
      `nexus-metastore: database ${JSON.stringify(storeOptions.name)} is in memory only ` +
        `and will be lost when it is closed: ${e.message}`,
    );
    return await openMemory(storeOptions.tenant);
  }
}
