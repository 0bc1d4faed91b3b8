// A minimal app as a web developer writes it: the package from npm, bundled
// by Vite; a named store (OPFS through the package's Worker), one more file
// per page load.
import { open } from "nexus-metastore";

const status = document.getElementById("status");
try {
  const store = await open({ name: "vite-app", fallback: "error" });
  const n = (await store.list("/visits/")).length;
  await store.put({ path: `/visits/${n}`, backend: "app", physicalPath: `visit-${n}`, size: n });
  status.textContent = `ok: ${store.persistence}, visits ${(await store.stats()).files}`;
} catch (e) {
  status.textContent = `error: ${e.kind}: ${e.message}`;
}
