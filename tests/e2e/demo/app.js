// The demo: record a picked folder's files, list them, export the changes,
// and sync them through `nexus serve` with every other store of the tenant.
// The server's address can come in the page's URL (?sync=http://HOST:PORT);
// the token is typed, never kept.
import { open } from "/pkg/index.js";

const status = document.getElementById("status");
const list = document.getElementById("files");

async function render(store) {
  const files = await store.list("/");
  list.replaceChildren(
    ...files.map((f) => {
      const li = document.createElement("li");
      li.dataset.path = f.path;
      li.dataset.size = String(f.size);
      li.textContent = `${f.path} (${f.size} bytes, ${f.mimeType ?? "unknown type"})`;
      return li;
    }),
  );
  return files.length;
}

async function record(store, fileList) {
  const files = [...fileList].map((file) => ({
    path: "/" + file.webkitRelativePath,
    backend: "browser",
    physicalPath: file.webkitRelativePath,
    size: file.size,
    mimeType: file.type || null,
    modifiedAt: new Date(file.lastModified).toISOString(),
  }));
  await store.putBatch(files);
  await store.setMetadataBatch(
    [...fileList].map((file) => ["/" + file.webkitRelativePath, "picked", { name: file.name }]),
  );
  return files.length;
}

function download(bytes) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/json" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: "changes.nexus.json" });
  a.click();
  URL.revokeObjectURL(url);
}

try {
  const store = await open({ name: "demo", fallback: "error" });
  window.nexusDemo = { store };
  document.getElementById("persistence").textContent = `stored in ${store.persistence} (${store.location})`;
  const count = await render(store);
  status.textContent = `ready: ${count} files`;
  document.getElementById("folder").addEventListener("change", async (ev) => {
    status.textContent = "recording…";
    try {
      const n = await record(store, ev.target.files);
      const total = await render(store);
      status.textContent = `recorded ${n} files; ${total} in all`;
    } catch (e) {
      status.textContent = `error: ${e.kind}: ${e.message}`;
    }
  });
  document.getElementById("export").addEventListener("click", async () => {
    const { bytes } = await store.exportChanges(0);
    download(bytes);
  });
  const syncUrl = document.getElementById("sync-url");
  syncUrl.value = new URLSearchParams(location.search).get("sync") ?? "";
  document.getElementById("sync-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "syncing…";
    try {
      const token = document.getElementById("sync-token").value;
      const { pushed, pulled, conflicts } = await store.sync({ url: syncUrl.value, token });
      const total = await render(store);
      status.textContent = `synced: pushed ${pushed}, pulled ${pulled}, ${conflicts.length} conflicts; ${total} in all`;
    } catch (e) {
      status.textContent = `error: ${e.kind}: ${e.message}`;
    }
  });
} catch (e) {
  status.textContent = `error: ${e.kind}: ${e.message}`;
}
