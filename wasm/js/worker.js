// The Worker side of the wrapper: runs stores and answers the page's
// messages { id, op, handle, method, args } with { id, ok, result | error };
// commits of a handle that the page listens to come as { commitOf, event }.
// A named database is shared with every other tab and Worker of the origin
// (tabs.js): this Worker holds it or reaches the one that does.
// It imports neither index.js nor remote.js: those start this Worker, and a
// bundler following them from here would nest the Worker inside itself.
import init from "./web/nexus_wasm.js";
import { METHODS, nexusError } from "./common.js";
import { deleteShared, openShared } from "./tabs.js";

let loading;
const load = () => (loading ??= init());

const allowed = new Set(METHODS);
const stores = new Map();
/** The functions that stop forwarding a handle's commits, by handle. */
const forwarding = new Map();
let nextHandle = 1;

function describe(store) {
  const handle = nextHandle++;
  stores.set(handle, store);
  return { handle, persistence: store.persistence, location: store.location, tenant: store.tenant };
}

function storeOf(handle) {
  const store = stores.get(handle);
  if (!store) throw nexusError("InvalidArgument", "this store handle is closed");
  return store;
}

function stopForwarding(handle) {
  forwarding.get(handle)?.();
  forwarding.delete(handle);
}

async function run({ op, handle, method, args = [] }) {
  switch (op) {
    case "open":
      await load();
      return describe(await openShared(args[0]));
    case "deleteDatabase":
      await load();
      return (await deleteShared(args[0])) ?? null;
    case "withTenant":
      return describe(await storeOf(handle).withTenant(args[0]));
    case "close": {
      const store = stores.get(handle);
      stores.delete(handle);
      stopForwarding(handle);
      await store?.close();
      return null;
    }
    case "onCommit":
      if (!forwarding.has(handle)) {
        forwarding.set(
          handle,
          storeOf(handle).onCommit((event) => self.postMessage({ commitOf: handle, event })),
        );
      }
      return null;
    case "offCommit":
      stopForwarding(handle);
      return null;
    case "call": {
      if (!allowed.has(method)) throw nexusError("InvalidArgument", `no such store method: ${method}`);
      return await storeOf(handle)[method](...args);
    }
    default:
      throw nexusError("Internal", `unknown operation ${op}`);
  }
}

self.onmessage = async (ev) => {
  const { id } = ev.data;
  try {
    const result = await run(ev.data);
    const bytes = result instanceof Uint8Array ? result : result?.bytes;
    const transfer = bytes instanceof Uint8Array ? [bytes.buffer] : [];
    self.postMessage({ id, ok: true, result }, transfer);
  } catch (e) {
    self.postMessage({
      id,
      ok: false,
      error: { kind: e?.kind ?? "Internal", message: e?.message ?? String(e) },
    });
  }
};
