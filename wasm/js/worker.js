// The Worker side of the wrapper: runs stores on OPFS and answers the page's
// messages { id, op, handle, method, args } with { id, ok, result | error }.
// It imports neither index.js nor remote.js: those start this Worker, and a
// bundler following them from here would nest the Worker inside itself.
import init, { NexusStore } from "./web/nexus_wasm.js";
import { METHODS, nexusError } from "./common.js";

let loading;
const load = () => (loading ??= init());

const allowed = new Set(METHODS);
const stores = new Map();
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

async function run({ op, handle, method, args = [] }) {
  switch (op) {
    case "open":
      await load();
      return describe(await NexusStore.open(args[0]));
    case "deleteDatabase":
      await load();
      return (await NexusStore.deleteDatabase(args[0])) ?? null;
    case "withTenant":
      return describe(storeOf(handle).withTenant(args[0]));
    case "close": {
      const store = stores.get(handle);
      stores.delete(handle);
      store?.close();
      return null;
    }
    case "call":
      if (!allowed.has(method)) {
        throw nexusError("InvalidArgument", `no such store method: ${method}`);
      }
      return await storeOf(handle)[method](...args);
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
