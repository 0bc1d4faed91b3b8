#!/usr/bin/env bash
# Builds the npm package `nexus-metastore` from wasm/ into
# target/npm/nexus-metastore (and target/npm/nexus-metastore-VERSION.tgz):
# ESM for browsers (web/), a Node build (node/), the Worker wrapper, .d.ts,
# the WebAssembly optimized by wasm-opt (npm `binaryen`). Needs only the
# package registries. Prints the wasm size, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=wasm/tools
out=target/npm/nexus-metastore
version=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version/ { print $2; exit }' Cargo.toml)

if [ ! -x "$tools/node_modules/.bin/wasm-opt" ] || [ ! -x "$tools/node_modules/.bin/tsc" ] \
    || [ ! -d "$tools/node_modules/playwright-core" ] || [ ! -d "$tools/node_modules/vite" ] \
    || [ ! -d "$tools/node_modules/wa-sqlite" ]; then
    (cd "$tools" && npm ci --no-audit --no-fund)
fi
wasm_bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wasm_bindgen_version" ]; then
    cargo install wasm-bindgen-cli --version "$wasm_bindgen_version"
fi

# NEXUS_NPM_TARGET_DIR: build in another target directory (scripts/test.sh
# builds the package while other cargo commands hold target/).
target_dir=${NEXUS_NPM_TARGET_DIR:-target}
cargo build --profile wasm-release -p nexus-wasm --target wasm32-unknown-unknown --locked \
    --target-dir "$target_dir"
wasm=$target_dir/wasm32-unknown-unknown/wasm-release/nexus_wasm.wasm

rm -rf "$out"
mkdir -p "$out/web" "$out/node"
wasm-bindgen --target web --out-dir "$out/web" "$wasm"
wasm-bindgen --target experimental-nodejs-module --out-dir "$out/node" "$wasm"
# The features rustc enables by default for wasm32-unknown-unknown, and SIMD
# (some dependencies carry simd128 functions; every current browser has it).
features=(--enable-bulk-memory --enable-mutable-globals --enable-sign-ext
    --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue
    --enable-simd)
"$tools/node_modules/.bin/wasm-opt" -Oz --strip-debug --strip-producers "${features[@]}" \
    "$out/web/nexus_wasm_bg.wasm" -o "$out/web/nexus_wasm_bg.wasm"
cp "$out/web/nexus_wasm_bg.wasm" "$out/node/nexus_wasm_bg.wasm"
# The Node build is ESM like the rest (its inline JS snippets are ES modules).
echo '{ "type": "module" }' > "$out/node/package.json"

cp wasm/js/index.js wasm/js/remote.js wasm/js/common.js wasm/js/tabs.js wasm/js/worker.js wasm/js/node.mjs wasm/js/index.d.ts \
    wasm/js/README.md "$out/"
cat > "$out/package.json" <<JSON
{
  "name": "nexus-metastore",
  "version": "$version",
  "description": "The Nexus file-metadata store in the browser: paths, versions, JSON metadata, content chunks; persisted in the Origin Private File System.",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./node.mjs",
  "module": "./index.js",
  "types": "./index.d.ts",
  "exports": {
    ".": {
      "types": "./index.d.ts",
      "node": "./node.mjs",
      "default": "./index.js"
    },
    "./worker.js": "./worker.js",
    "./package.json": "./package.json"
  },
  "files": ["index.js", "remote.js", "common.js", "tabs.js", "worker.js", "node.mjs", "index.d.ts", "web/", "node/", "README.md"],
  "sideEffects": ["./worker.js"],
  "keywords": ["metadata", "filesystem", "opfs", "sqlite", "wasm"]
}
JSON

(cd target/npm && npm pack --silent ./nexus-metastore >/dev/null)
raw=$(stat -c %s "$out/web/nexus_wasm_bg.wasm")
gz=$(gzip -9 -c "$out/web/nexus_wasm_bg.wasm" | wc -c)
awk -v v="$version" -v r="$raw" -v g="$gz" 'BEGIN {
    printf "nexus-metastore %s: wasm %d bytes (%.2f MB), gzipped %d bytes (%.2f MB)\n", v, r, r / 1e6, g, g / 1e6 }'
ls -l target/npm/*.tgz
