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
  "stats", "exportChanges",
];


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
