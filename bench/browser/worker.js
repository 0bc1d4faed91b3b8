// One side of the browser benchmark, in a dedicated Worker, on OPFS:
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

async function nexus(memory, name) {
  const { open } = await import("/pkg/index.js");
  const store = await open(memory ? {} : { name, fallback: "error" });
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
  db.exec("PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
  const journal = db.selectValue("PRAGMA journal_mode");
  db.exec(await (await fetch("/migrations/sqlite/0001_initial.up.sql")).text());
  const bump = db.prepare("UPDATE nexus_state SET change_seq = change_seq + 1 WHERE id = 1 RETURNING change_seq");
  const insertFile = db.prepare(
    "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, " +
      "file_type, created_at, updated_at, current_version, change_seq) VALUES (?, 'default', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
  );
  const insertVersion = db.prepare(
    "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, content_hash, " +
      "size_bytes, mime_type, source_type, created_at, change_seq) VALUES (?, ?, 1, ?, ?, ?, ?, ?, 'original', ?, ?)",
  );
  const getOne = db.prepare(
    "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, " +
      "updated_at, current_version FROM file_paths WHERE tenant_id = 'default' AND virtual_path = ? AND deleted_at IS NULL",
  );
  const listRange = db.prepare(
    "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, " +
      "updated_at, current_version FROM file_paths WHERE tenant_id = 'default' AND virtual_path >= ? " +
      "AND virtual_path < ? AND deleted_at IS NULL ORDER BY virtual_path",
  );
  const put = (f, seq) => {
    const id = crypto.randomUUID();
    const now = Date.now() * 1000;
    insertFile.bind([id, f.path, f.backend, f.physicalPath, f.size, f.etag, f.mimeType, now, now, seq]).stepReset();
    insertVersion
      .bind([crypto.randomUUID(), id, f.backend, f.physicalPath, f.etag, f.size, f.mimeType, now, seq])
      .stepReset();
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
      const prefix = `/bench/d${i % DIRS}/`;
      listRange.bind([prefix, prefix.slice(0, -1) + "0"]);
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

try {
  const run = { nexus: (n) => nexus(false, n), "nexus-memory": (n) => nexus(true, n), sqlite: (n) => sqlite(null, n) }[which];
  const round = new URL(self.location.href).searchParams.get("round");
  const cold = await run(`${which}-${round}-cold`);
  const warm = await run(`${which}-${round}-warm`);
  self.postMessage({ ...warm, cold });
} catch (e) {
  self.postMessage({ error: `${which}: ${e.kind ?? e.name}: ${e.message}` });
}
