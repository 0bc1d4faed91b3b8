// The page side of the Worker wrapper: a store whose every method is a
// message to `worker.js`, which runs the real store on OPFS. Same methods,
// same results, same errors (an Error named NexusError with a `kind`).

import { METHODS, nexusError, notify } from "./common.js";

/** The package's Worker (one place, in the form bundlers recognize). */
const startWorker = () =>
  new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "nexus-metastore" });

/** A NexusError again, from the `{ kind, message }` the Worker sent. */
const revive = (error) => nexusError(error.kind, error.message);

/** One Worker and its pending calls, shared by every handle opened through it. */
class Channel {
  constructor(worker) {
    this.worker = worker;
    this.pending = new Map();
    this.next = 1;
    this.handles = 0;
    /** The handles whose commits the page listens to, by handle. */
    this.listening = new Map();
    worker.onmessage = (ev) => {
      if (ev.data.commitOf !== undefined) {
        this.listening.get(ev.data.commitOf)?.dispatch(ev.data.event);
        return;
      }
      const { id, ok, result, error } = ev.data;
      const call = this.pending.get(id);
      if (!call) return;
      this.pending.delete(id);
      if (ok) call.resolve(result);
      else call.reject(revive(error));
    };
    worker.onerror = (ev) => {
      ev.preventDefault?.();
      this.fail(`the store's worker failed: ${ev.message || "it could not start"}`);
    };
  }

  fail(message) {
    for (const call of this.pending.values()) call.reject(nexusError("Internal", message));
    this.pending.clear();
  }

  call(message) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...message });
    });
  }
}

export class RemoteStore {
  /** Starts a Worker (or uses `worker`) and opens the store in it. */
  static async open(options, worker) {
    if (typeof Worker === "undefined") {
      throw nexusError("Unsupported", "Web Workers are not available here");
    }
    const channel = new Channel(
      worker ?? startWorker(),
    );
    try {
      const info = await channel.call({ op: "open", args: [options] });
      return new RemoteStore(channel, info);
    } catch (e) {
      if (channel.handles === 0 && !worker) channel.worker.terminate();
      throw e;
    }
  }

  /** Deletes an OPFS database from a Worker of its own (see `deleteDatabase`). */
  static async deleteDatabase(name, worker) {
    const channel = new Channel(
      worker ?? startWorker(),
    );
    try {
      await channel.call({ op: "deleteDatabase", args: [name] });
    } finally {
      if (!worker) channel.worker.terminate();
    }
  }

  constructor(channel, info) {
    this.channel = channel;
    this.handle = info.handle;
    this.persistence = info.persistence;
    this.location = info.location;
    this.tenant = info.tenant;
    this.closed = false;
    channel.handles++;
  }

  /** A handle on the same store scoped to `tenant`. */
  async withTenant(tenant) {
    const info = await this.channel.call({ op: "withTenant", handle: this.handle, args: [tenant] });
    return new RemoteStore(this.channel, info);
  }

  /** Calls `listener` after each commit by any tab (see `NexusStore.onCommit`). */
  onCommit(listener) {
    if (this.closed) throw nexusError("InvalidArgument", "this store handle is closed");
    this.listeners ??= new Set();
    this.listeners.add(listener);
    if (this.listeners.size === 1) {
      this.channel.listening.set(this.handle, this);
      this.channel.call({ op: "onCommit", handle: this.handle }).catch(() => {});
    }
    return () => {
      if (!this.listeners.delete(listener) || this.listeners.size > 0 || this.closed) return;
      this.channel.listening.delete(this.handle);
      this.channel.call({ op: "offCommit", handle: this.handle }).catch(() => {});
    };
  }

  dispatch(event) {
    for (const listener of this.listeners ?? []) notify(listener, event);
  }

  /** Releases this handle; the last one closes the database and stops the Worker. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    this.channel.listening.delete(this.handle);
    await this.channel.call({ op: "close", handle: this.handle });
    if (--this.channel.handles === 0) this.channel.worker.terminate();
  }
}

for (const method of METHODS) {
  RemoteStore.prototype[method] = function (...args) {
    if (this.closed) {
      return Promise.reject(nexusError("InvalidArgument", "this store handle is closed"));
    }
    return this.channel.call({ op: "call", handle: this.handle, method, args });
  };
}
