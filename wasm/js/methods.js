// The store methods the Worker wrapper forwards (shared by both sides, and
// free of Worker URLs so that bundlers do not nest the Worker in itself).

/** Every async method of a store, forwarded as is. */
export const METHODS = [
  "put", "putBatch", "get", "exists", "getBatch", "delete", "deleteBatch", "list", "listPage",
  "listDirectories", "isDirectory", "rename", "setMetadata", "setMetadataBatch", "getMetadata",
  "listMetadata", "deleteMetadata", "findByMetadata", "listVersions", "getVersion", "rollback",
  "diffVersions", "addChunkRef", "releaseChunkRef", "getChunk", "gcCandidates", "removeChunk",
  "stats", "exportChanges",
];

