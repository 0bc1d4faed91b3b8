// One side of the browser benchmark, in a dedicated Worker, on OPFS or
// IndexedDB:
//   batch:  5,000 puts in one transaction
//   single: 1,000 puts, one transaction each
//   get:    5,000 point reads by path
//   list:   20 prefix listings of 500 files each
// Each side runs the workload twice, on two fresh databases: the first
// ("cold") includes the browser optimizing the WebAssembly of the engine
// (either side's), the second ("warm") is the steady state.
// `nexus`: the nexus-metastore package; `nexus-memory`: the same in memory
// (no file I/O: what the engine and the bindings cost). `sqlite`: @sqlite.org/sqlite-wasm
// with its opfs-sahpool VFS, the store's own schema (migration 0001), and
// per put the same rows written: the change-sequence bump, the file row and
// its first version row (without the store's validation and lookups).
// On IndexedDB: `nexus-idb`, the package with `storage: "indexeddb"`, and
// `wa-sqlite-idb`, wa-sqlite with its IDBBatchAtomicVFS (strict durability,
// as ours: a commit resolves once IndexedDB has it), the same SQL as `sqlite`.
const which = new URL(self.location.href).searchParams.get("which");
const BATCH = 5000, SINGLE = 1000, GETS = 5000, LISTS = 20, DIRS = 10;

const file = (i) => ({
  path: `/bench/d${i % DIRS}/f${String(i).padStart(6, "0")}.dat`,
  backend: "local",
  physicalPath: `/srv/blobs/${i}`,
  size: 1000 + i,
  etag: `etag-${i}`,
  mimeType: "application/octet-stream",
});

async function time(n, f) {
  const t0 = performance.now();
  await f();
  const ms = performance.now() - t0;
  return { ops: n, ms: Math.round(ms * 10) / 10, perSecond: Math.round((n / ms) * 1000) };
}

async function nexus(storage, name) {
  const { open } = await import("/pkg/index.js");
  const store = await open(storage === "memory" ? {} : { name, storage, fallback: "error" });
  if ((await store.stats()).files !== 0) throw new Error(`${name} is not empty; use a fresh profile`);
  const out = {};
  const batch = Array.from({ length: BATCH }, (_, i) => file(i));
  out.batch = await time(BATCH, () => store.putBatch(batch));
  out.single = await time(SINGLE, async () => {
    for (let i = BATCH; i < BATCH + SINGLE; i++) await store.put(file(i));
  });
  out.get = await time(GETS, async () => {
    for (let i = 0; i < GETS; i++) {
      if (!(await store.get(file((i * 7919) % BATCH).path))) throw new Error("missing");
    }
  });
  out.list = await time(LISTS, async () => {
    for (let i = 0; i < LISTS; i++) {
      const n = (await store.list(`/bench/d${i % DIRS}/`)).length;
      if (n !== (BATCH + SINGLE) / DIRS) throw new Error(`listed ${n}`);
    }
  });
  store.close();
  return out;
}

// The baselines' page cache: the engine's of our store (2,000 pages, as the
// native benchmark's C SQLite gets; SQLite's default is 2 MiB, 500 pages).
const CACHE = "PRAGMA cache_size = 2000;";
// The baselines' statements (the store's schema, migration 0001) and the
// parameters of one put's two rows.
const SQL = {
  bump: "UPDATE nexus_state SET change_seq = change_seq + 1 WHERE id = 1 RETURNING change_seq",
  insertFile:
    "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, " +
    "file_type, created_at, updated_at, current_version, change_seq) VALUES (?, 'default', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
  insertVersion:
    "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, content_hash, " +
    "size_bytes, mime_type, source_type, created_at, change_seq) VALUES (?, ?, 1, ?, ?, ?, ?, ?, 'original', ?, ?)",
  getOne:
    "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, " +
    "updated_at, current_version FROM file_paths WHERE tenant_id = 'default' AND virtual_path = ? AND deleted_at IS NULL",
  listRange:
    "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, " +
    "updated_at, current_version FROM file_paths WHERE tenant_id = 'default' AND virtual_path >= ? " +
    "AND virtual_path < ? AND deleted_at IS NULL ORDER BY virtual_path",
};
const putParams = (f, seq) => {
  const id = crypto.randomUUID();
  const now = Date.now() * 1000;
  return [
    [id, f.path, f.backend, f.physicalPath, f.size, f.etag, f.mimeType, now, now, seq],
    [crypto.randomUUID(), id, f.backend, f.physicalPath, f.etag, f.size, f.mimeType, now, seq],
  ];
};
const listBounds = (i) => {
  const prefix = `/bench/d${i % DIRS}/`;
  return [prefix, prefix.slice(0, -1) + "0"];
};

let pool;
async function sqlite(_, name) {
  if (!pool) {
    const { default: init } = await import("/sqlite/index.mjs");
    const sqlite3 = await init();
    pool = await sqlite3.installOpfsSAHPoolVfs({ name: "bench-sahpool", initialCapacity: 16 });
  }
  const db = new pool.OpfsSAHPoolDb(`/${name}.db`);
  // Its fastest durable setup: one connection holding the file, WAL (which
  // needs exclusive locking here: the VFS has no shared memory), synchronous
  // commits, foreign keys on as in the store.
  db.exec(`PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; ${CACHE}`);
  const journal = db.selectValue("PRAGMA journal_mode");
  db.exec(await (await fetch("/migrations/sqlite/0001_initial.up.sql")).text());
  const bump = db.prepare(SQL.bump);
  const insertFile = db.prepare(SQL.insertFile);
  const insertVersion = db.prepare(SQL.insertVersion);
  const getOne = db.prepare(SQL.getOne);
  const listRange = db.prepare(SQL.listRange);
  const put = (f, seq) => {
    const [file, version] = putParams(f, seq);
    insertFile.bind(file).stepReset();
    insertVersion.bind(version).stepReset();
  };
  const nextSeq = () => {
    bump.step();
    const seq = bump.get(0);
    bump.reset();
    return seq;
  };
  const out = { journal };
  out.batch = await time(BATCH, () => {
    db.transaction(() => {
      const seq = nextSeq();
      for (let i = 0; i < BATCH; i++) put(file(i), seq);
    });
  });
  out.single = await time(SINGLE, () => {
    for (let i = BATCH; i < BATCH + SINGLE; i++) db.transaction(() => put(file(i), nextSeq()));
  });
  out.get = await time(GETS, () => {
    for (let i = 0; i < GETS; i++) {
      getOne.bind([file((i * 7919) % BATCH).path]);
      if (!getOne.step()) throw new Error("missing");
      getOne.get({});
      getOne.reset();
    }
  });
  out.list = await time(LISTS, () => {
    for (let i = 0; i < LISTS; i++) {
      listRange.bind(listBounds(i));
      let n = 0;
      while (listRange.step()) {
        listRange.get({});
        n++;
      }
      listRange.reset();
      if (n !== (BATCH + SINGLE) / DIRS) throw new Error(`listed ${n}`);
    }
  });
  for (const s of [bump, insertFile, insertVersion, getOne, listRange]) s.finalize();
  db.close();
  pool.unlink(`/${name}.db`);
  return out;
}

/** wa-sqlite (its asynchronous build) on its IDBBatchAtomicVFS. */
async function waSqlite(name) {
  const { default: factory } = await import("/wa-sqlite/dist/wa-sqlite-async.mjs");
  const SQLite = await import("/wa-sqlite/src/sqlite-api.js");
  const { IDBBatchAtomicVFS } = await import("/wa-sqlite/src/examples/IDBBatchAtomicVFS.js");
  const sqlite3 = SQLite.Factory(await factory());
  const vfs = new IDBBatchAtomicVFS(`bench-${name}`, { durability: "strict" });
  sqlite3.vfs_register(vfs, false);
  const db = await sqlite3.open_v2(`${name}.db`, SQLite.SQLITE_OPEN_CREATE | SQLite.SQLITE_OPEN_READWRITE, vfs.name);
  // One connection holding the file, as the sqlite side and our store do
  // (otherwise every statement takes a Web Lock and rereads the header from
  // IndexedDB), and the default rollback journal: the VFS declares
  // batch-atomic writes, so SQLite skips the journal and each commit is one
  // IndexedDB transaction. Foreign keys on as in the store.
  await sqlite3.exec(db, `PRAGMA locking_mode = EXCLUSIVE; PRAGMA foreign_keys = ON; ${CACHE}`);
  await sqlite3.exec(db, await (await fetch("/migrations/sqlite/0001_initial.up.sql")).text());
  const prepare = async (sql) => {
    const str = sqlite3.str_new(db, sql);
    try {
      return (await sqlite3.prepare_v2(db, sqlite3.str_value(str))).stmt;
    } finally {
      sqlite3.str_finish(str);
    }
  };
  const s = {};
  for (const [k, sql] of Object.entries(SQL)) s[k] = await prepare(sql);
  /** Runs `stmt` with `params`; its rows. */
  const run = async (stmt, params, limit = Infinity) => {
    if (params) sqlite3.bind_collection(stmt, params);
    const rows = [];
    while (rows.length < limit && (await sqlite3.step(stmt)) === SQLite.SQLITE_ROW) rows.push(sqlite3.row(stmt));
    await sqlite3.reset(stmt);
    return rows;
  };
  const put = async (f, seq) => {
    const [file, version] = putParams(f, seq);
    await run(s.insertFile, file);
    await run(s.insertVersion, version);
  };
  const transaction = async (f) => {
    await sqlite3.exec(db, "BEGIN");
    try {
      await f();
      await sqlite3.exec(db, "COMMIT");
    } catch (e) {
      await sqlite3.exec(db, "ROLLBACK");
      throw e;
    }
  };
  const nextSeq = async () => (await run(s.bump))[0][0];
  const out = {};
  out.batch = await time(BATCH, () =>
    transaction(async () => {
      const seq = await nextSeq();
      for (let i = 0; i < BATCH; i++) await put(file(i), seq);
    }),
  );
  out.single = await time(SINGLE, async () => {
    for (let i = BATCH; i < BATCH + SINGLE; i++) await transaction(async () => put(file(i), await nextSeq()));
  });
  out.get = await time(GETS, async () => {
    for (let i = 0; i < GETS; i++) {
      // One step, as the sqlite side.
      if ((await run(s.getOne, [file((i * 7919) % BATCH).path], 1)).length !== 1) throw new Error("missing");
    }
  });
  out.list = await time(LISTS, async () => {
    for (let i = 0; i < LISTS; i++) {
      const n = (await run(s.listRange, listBounds(i))).length;
      if (n !== (BATCH + SINGLE) / DIRS) throw new Error(`listed ${n}`);
    }
  });
  for (const stmt of Object.values(s)) await sqlite3.finalize(stmt);
  await sqlite3.close(db);
  await vfs.close();
  await new Promise((resolve, reject) => {
    const deleting = indexedDB.deleteDatabase(`bench-${name}`);
    deleting.onsuccess = resolve;
    deleting.onerror = () => reject(deleting.error);
  });
  return out;
}

try {
  const run = {
    nexus: (n) => nexus("opfs", n),
    "nexus-memory": (n) => nexus("memory", n),
    "nexus-idb": (n) => nexus("indexeddb", n),
    sqlite: (n) => sqlite(null, n),
    "wa-sqlite-idb": (n) => waSqlite(n),
  }[which];
  const round = new URL(self.location.href).searchParams.get("round");
  const cold = await run(`${which}-${round}-cold`);
  const warm = await run(`${which}-${round}-warm`);
  self.postMessage({ ...warm, cold });
} catch (e) {
  self.postMessage({ error: `${which}: ${e.kind ?? e.name}: ${e.message}` });
}
