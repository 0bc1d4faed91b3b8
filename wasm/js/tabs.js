// One named database for every tab and Worker of an origin.
//
// OPFS lets one context at a time hold a database's files. Every context
// that opens the database asks for its Web Lock ("nexus-metastore:<name>"):
// the one granted it is the holder, opens the files and serves everyone;
// the others queue for the lock and send their calls to the holder over a
// BroadcastChannel of the same name. When the holder's tab closes or
// crashes, the browser hands the lock to the next context in the queue,
// which opens the files (waiting while the old holder's handles are being
// released), announces itself, and serves from then on. A call that was in
// flight to the old holder is not sent again (it may have been applied):
// it rejects with kind `Unavailable`, which callers may retry. A new holder
// that still finds the files busy after about 5 s (something else opened
// them) lets the lock go: what waits rejects with `Unavailable`, and it
// queues for the lock again a second later, so its handles work again once
// the files are free. Two holders at once are impossible: the lock has one
// owner, and the files one opener.
//
// After every commit the holder tells each context (`onCommit`) what
// changed, so that every tab sees every tab's writes.
//
// Messages on the channel: { kind: "who" } asks the holder to announce
// itself; { kind: "holder", id, term } announces it (term: when it was
// granted the lock, so that a late announcement of an earlier holder is
// ignored); { kind: "call", to, from, id, tenant, method, args } and
// { kind: "reply", to, id, ok, result | error }; { kind: "commit", event };
// calls and replies of one task go together as { kind: "batch", messages }.
// Where Web Locks or BroadcastChannel are missing, a database is opened
// here alone, as before (another tab gets kind `Busy`).
//
// It imports neither index.js nor remote.js (see worker.js).
import { NexusStore } from "./web/nexus_wasm.js";
import { METHODS, nexusError, notify } from "./common.js";

const allowed = new Set(METHODS);
const lockName = (name) => `nexus-metastore:${name}`;
/** Databases open in this context, by name. */
const databases = new Map();
/** How long a new holder waits for the files of the last one to be released. */
const OPEN_ATTEMPTS = 100;
const OPEN_RETRY_MS = 50;
/** How long a context whose takeover found the files still busy waits before it asks for the lock again. */
const REQUEUE_MS = 1000;

/** Runs `f` in a new task, after those queued now (a MessageChannel: no timer clamping). */
const later = new MessageChannel();
const queued = [];
later.port1.onmessage = () => queued.shift()?.();
const afterQueuedTasks = (f) => {
  queued.push(f);
  later.port2.postMessage(null);
};

const shared = () => globalThis.navigator?.locks !== undefined && typeof BroadcastChannel !== "undefined";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const errorOf = (e) => ({ kind: e?.kind ?? "Internal", message: e?.message ?? String(e) });
const revive = (error) => nexusError(error.kind, error.message);


class Database {
  constructor(name, storage) {
    this.name = name;
    this.storage = storage;
    /** This database's id on its channel (one per Database, not per context). */
    this.id = crypto.randomUUID();
    /** Handles open on it in this context. */
    this.users = 0;
    /** The holder's id (`this.id` when held here, null while unknown), and its term. */
    this.holder = null;
    this.term = -Infinity;
    /** Why this context cannot use the database (it could not be opened). */
    this.error = null;
    /** Whether a holder served this context once (every later hold is a takeover). */
    this.servedOnce = false;
    /** Whether to ask for the lock again once it is released (a takeover found the files busy). */
    this.requeue = false;
    /** Whether listeners here are still to be told that a holder went away (`dispatchGap`). */
    this.gapOwed = false;
    /** When held here: the store (default tenant) and its tenants' handles. */
    this.store = null;
    this.scoped = new Map();
    /** Calls sent to the holder, by id; calls made while none is known. */
    this.pending = new Map();
    this.waiting = [];
    this.next = 1;
    /** Calls from other contexts being served here. */
    this.served = new Set();
    /** Commit listeners in this context, and the last change sequence number told. */
    this.listeners = new Set();
    this.toldThrough = 0;
    this.closing = false;
    this.abort = new AbortController();
    this.ready = new Promise((resolve, reject) => {
      this.becameReady = resolve;
      this.failed = reject;
    });
    this.ready.catch(() => {});
    this.channel = new BroadcastChannel(lockName(name));
    this.channel.onmessage = (ev) => this.receive(ev.data);
    /** Calls and replies to post at the end of this task, as one message. */
    this.outbox = [];
  }

  /**
   * Posts `message` together with the others posted before the tasks
   * already queued here have run (the calls a page sent at once arrive as
   * one task each): one message crosses to the other tabs.
   */
  post(message) {
    if (this.outbox.push(message) === 1) afterQueuedTasks(() => this.flush());
  }

  flush() {
    const messages = this.outbox.splice(0);
    if (this.channel === null || messages.length === 0) return;
    this.channel.postMessage(messages.length === 1 ? messages[0] : { kind: "batch", messages });
  }

  start() {
    // Settles once the lock is released (or the request given up).
    this.held = navigator.locks
      .request(lockName(this.name), { signal: this.abort.signal }, () => this.hold())
      .catch((e) => {
        if (e?.name !== "AbortError") this.fail(e);
      })
      .then(() => {
        if (!this.requeue || this.closing) return;
        this.requeue = false;
        setTimeout(() => {
          if (!this.closing) this.start();
        }, REQUEUE_MS);
      });
    this.channel.postMessage({ kind: "who" });
  }

  /** Holds the lock: opens the files and serves until closed here. */
  async hold() {
    // Later than every holder this context has seen: it followed them.
    const term = Math.max(Date.now(), this.term + 1);
    // From now on a late announcement of an earlier holder is ignored.
    this.term = term;
    // Whoever held it is gone: what was sent to it is in doubt; what comes
    // now waits for the files.
    const takeover = this.servedOnce;
    this.orphan();
    this.holder = null;
    let store;
    for (let attempt = 1; ; attempt++) {
      try {
        store = await NexusStore.open({ name: this.name, storage: this.storage });
        break;
      } catch (e) {
        // The files of the holder that just went may still be open.
        if (e?.kind === "Busy" && attempt < OPEN_ATTEMPTS && !this.closing) {
          await sleep(OPEN_RETRY_MS);
          continue;
        }
        if (e?.kind === "Busy" && takeover && !this.closing) {
          // Still busy: the handles of this context stay, what waits fails
          // as retryable, and this context queues for the lock again
          // (behind any other that waits for it).
          this.orphan();
          this.holder = null;
          this.unavailable(e);
          this.gapOwed = true;
          this.requeue = true;
          return;
        }
        this.fail(e);
        return; // the lock goes to the next context
      }
    }
    if (this.closing) {
      store.close();
      return;
    }
    this.store = store;
    this.stopCommits = store.onCommit((event) => {
      this.channel.postMessage({ kind: "commit", event });
      this.dispatch(event);
    });
    const released = new Promise((resolve) => (this.release = resolve));
    this.follow(this.id, term);
    this.channel.postMessage({ kind: "holder", id: this.id, term });
    // What the last holder committed and did not tell is unknown here.
    if (takeover) this.dispatchGap();
    await released;
  }

  /** This context cannot hold the database (`e`): every call of it fails with `e`. */
  fail(e) {
    this.error = e;
    this.failed(e);
    this.holder = null;
    this.orphan();
    for (const call of this.waiting.splice(0)) call.reject(e);
    // The next open in this context starts afresh.
    if (databases.get(this.name) === this) databases.delete(this.name);
  }

  /** The files could not be opened for now (`e`): what waits for a holder fails as retryable. */
  unavailable(e) {
    const error = nexusError(
      "Unavailable",
      `database ${JSON.stringify(this.name)} could not be opened after the tab that held it went away ` +
        `(${e.message}): try again`,
    );
    for (const call of this.waiting.splice(0)) call.reject(error);
  }

  receive(message) {
    switch (message.kind) {
      case "who":
        if (this.holder === this.id && !this.closing) {
          this.channel.postMessage({ kind: "holder", id: this.id, term: this.term });
        }
        break;
      case "holder":
        this.follow(message.id, message.term);
        break;
      case "call":
        if (message.to === this.id) this.serve(message);
        break;
      case "reply": {
        const call = message.to === this.id && this.pending.get(message.id);
        if (!call) break;
        this.pending.delete(message.id);
        if (message.ok) call.resolve(message.result);
        else call.reject(revive(message.error));
        break;
      }
      case "commit":
        this.dispatch(message.event);
        break;
      case "batch":
        for (const m of message.messages) this.receive(m);
        break;
    }
  }

  /** `id` holds the database since `term`: calls go there from now on. */
  follow(id, term) {
    if (this.error || term < this.term || (term === this.term && id <= this.holder) || id === this.holder) return;
    const takeover = (this.holder !== null && this.holder !== this.id) || this.gapOwed;
    if (takeover) this.orphan();
    this.holder = id;
    this.term = term;
    this.servedOnce = true;
    this.becameReady();
    for (const call of this.waiting.splice(0)) this.send(call);
    if (takeover && id !== this.id) this.dispatchGap();
  }

  /** Calls sent to a holder that is gone reject: they may have been applied. */
  orphan() {
    for (const call of this.pending.values()) {
      call.reject(
        nexusError(
          "Unavailable",
          `the tab that held database ${JSON.stringify(this.name)} went away while this call was in flight: ` +
            "it may or may not have been applied; try again",
        ),
      );
    }
    this.pending.clear();
  }

  /** Runs `method` of `tenant`'s handle: here when held here, else at the holder. */
  call(tenant, method, args) {
    if (this.error) return Promise.reject(this.error);
    if (this.holder === this.id) return this.run(tenant, method, args);
    return new Promise((resolve, reject) => {
      const call = { message: { kind: "call", from: this.id, id: this.next++, tenant, method, args }, resolve, reject };
      if (this.holder === null) this.waiting.push(call);
      else this.send(call);
    });
  }

  send(call) {
    if (this.holder === this.id) {
      const { tenant, method, args } = call.message;
      this.run(tenant, method, args).then(call.resolve, call.reject);
      return;
    }
    const message = { ...call.message, to: this.holder };
    try {
      // Checked here, so that one call that cannot be cloned fails alone
      // instead of the batch it would join.
      structuredClone(message.args);
    } catch (e) {
      call.reject(nexusError("InvalidArgument", `these arguments cannot be sent to the tab holding the database: ${e.message}`));
      return;
    }
    this.pending.set(call.message.id, call);
    this.post(message);
  }

  /** The handle of `tenant` on the store held here. */
  scope(tenant) {
    if (tenant === undefined || tenant === null || tenant === this.store.tenant) return this.store;
    let store = this.scoped.get(tenant);
    if (!store) {
      store = this.store.withTenant(tenant);
      this.scoped.set(tenant, store);
    }
    return store;
  }

  async run(tenant, method, args) {
    const store = this.scope(tenant);
    if (method === "describe") {
      return { persistence: store.persistence, location: store.location, tenant: store.tenant };
    }
    if (!allowed.has(method)) throw nexusError("InvalidArgument", `no such store method: ${method}`);
    return await store[method](...args);
  }

  async serve({ from, id, tenant, method, args }) {
    // A holder that is closing answers nothing more: the next one rejects
    // the call as in doubt.
    if (this.closing) return;
    const done = (async () => {
      let reply;
      try {
        reply = { kind: "reply", to: from, id, ok: true, result: await this.run(tenant, method, args) };
      } catch (e) {
        reply = { kind: "reply", to: from, id, ok: false, error: errorOf(e) };
      }
      this.post(reply);
    })();
    this.served.add(done);
    await done;
    this.served.delete(done);
  }

  dispatch(event) {
    this.toldThrough = Math.max(this.toldThrough, event.toSeq);
    for (const listener of this.listeners) notify(listener, event);
  }

  /** After a takeover: what the last holder committed last may not have been told. */
  dispatchGap() {
    this.gapOwed = false;
    const at = this.toldThrough;
    for (const listener of this.listeners) notify(listener, { fromSeq: at, toSeq: at, paths: [], truncated: true });
  }

  /** One handle fewer here; the last one lets the database go. */
  async leave() {
    if (--this.users > 0) return;
    if (databases.get(this.name) === this) databases.delete(this.name);
    this.closing = true;
    this.abort.abort();
    if (this.holder === this.id) {
      await Promise.allSettled([...this.served]);
      // After the calls served: their commits are told.
      this.stopCommits?.();
      for (const store of this.scoped.values()) store.close();
      this.store.close();
      this.store = null;
      this.release();
    }
    // Released once this returns: a `deleteDatabase` or another tab's open
    // that comes next finds it free.
    await this.held;
    this.channel.close();
    this.channel = null;
    this.orphan();
    for (const call of this.waiting.splice(0)) call.reject(nexusError("InvalidArgument", "this store handle is closed"));
  }
}

/** A handle on a database shared by the origin's contexts: the `Store` API. */
export class SharedStore {
  constructor(database, info) {
    this.database = database;
    this.persistence = info.persistence;
    this.location = info.location;
    this.tenant = info.tenant;
    this.closed = false;
    database.users++;
  }

  /** A handle on the same database scoped to `tenant`. */
  async withTenant(tenant) {
    const info = await this.database.call(tenant, "describe", []);
    return new SharedStore(this.database, info);
  }

  /** Calls `listener` after each commit by any context (see `NexusStore.onCommit`). */
  onCommit(listener) {
    if (this.closed) throw nexusError("InvalidArgument", "this store handle is closed");
    // Each registration its own entry, removed by its stop or by close().
    const entry = (event) => listener(event);
    this.database.listeners.add(entry);
    (this.entries ??= new Set()).add(entry);
    return () => {
      this.database.listeners.delete(entry);
      this.entries.delete(entry);
    };
  }

  /** Releases this handle; the last one of this context lets the database go. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.entries ?? []) this.database.listeners.delete(entry);
    await this.database.leave();
  }
}

for (const method of METHODS) {
  SharedStore.prototype[method] = function (...args) {
    if (this.closed) return Promise.reject(nexusError("InvalidArgument", "this store handle is closed"));
    return this.database.call(this.tenant, method, args);
  };
}

/**
 * Opens the database `options.name` for this context, shared with every
 * other context of the origin (see above). The WebAssembly module must be
 * loaded.
 */
export async function openShared(options) {
  if (!shared()) return NexusStore.open(options);
  const { name, tenant, storage } = options;
  if (typeof name !== "string") {
    throw nexusError("InvalidArgument", `invalid database name ${JSON.stringify(name)}: a string`);
  }
  let database = databases.get(name);
  if (!database) {
    // The first open in this context says where it lives (the holder's
    // storage is the one in use: `persistence` tells).
    database = new Database(name, storage);
    databases.set(name, database);
    database.start();
  }
  // Counted before waiting, so that a close meanwhile does not let it go.
  database.users++;
  try {
    await database.ready;
    // A takeover between the holder's announcement and this call leaves
    // it in doubt; it reads nothing, so it is asked again.
    for (let attempt = 1; ; attempt++) {
      try {
        return new SharedStore(database, await database.call(tenant, "describe", []));
      } catch (e) {
        if (e?.kind !== "Unavailable" || attempt === 5) throw e;
      }
    }
  } finally {
    await database.leave();
  }
}

/** Deletes the database `name`; rejects with kind `Busy` while any context has it open. */
export async function deleteShared(name) {
  if (!shared()) return NexusStore.deleteDatabase(name);
  const busy = () =>
    nexusError("Busy", `database ${JSON.stringify(name)} is open in a tab or worker: close it there first`);
  if (databases.has(name)) throw busy();
  const deleted = await navigator.locks.request(lockName(name), { ifAvailable: true }, async (lock) => {
    if (!lock) return false;
    await NexusStore.deleteDatabase(name);
    return true;
  });
  if (!deleted) throw busy();
}
