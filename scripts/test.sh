#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what is missing first.
# This is the command the README gives and CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far, so CI's log shows where
# the time goes.
step() { printf '\n==> %s (at %dm%02ds)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

# Everything the run leaves in a temporary directory (Chromium's profiles and
# shared-memory files, above all after the crash tests kill it, throwaway
# PostgreSQL clusters, test stores) goes under one directory, removed at
# the end, so repeated runs do not fill the disk.
# It is world-writable with the sticky bit, as /tmp is: the throwaway
# PostgreSQL runs as another user (initdb refuses root) and keeps its
# cluster below it.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/nexus-test.XXXXXX")
chmod 1777 "$run_tmp"
npm_pid=
# The npm build started in the background (below) is a process group of its
# own: a run that stops early stops all of it (cargo, rustc, npm).
trap '[ -n "$npm_pid" ] && kill -- -"$npm_pid" 2>/dev/null; rm -rf "$run_tmp"' EXIT
export TMPDIR="$run_tmp"

step "toolchain"
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
# rust-toolchain.toml pins the version; make sure its wasm32 target is there.
rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$' \
    || rustup target add wasm32-unknown-unknown
# gcc builds the bundled C SQLite that the cross-checks and benchmark use.
if ! command -v cc >/dev/null; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq build-essential
    else
        echo "a C compiler (cc) is needed to build the bundled SQLite used by tests" >&2
        exit 1
    fi
fi
cargo --version

step "PostgreSQL (the sync and distributed tests run against a real server)"
have_pg() {
    [ -n "${NEXUS_TEST_DATABASE_URL:-}" ] && return 0
    [ -n "${NEXUS_PG_BIN:-}" ] && [ -x "$NEXUS_PG_BIN/initdb" ] && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null
}
if ! have_pg; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15
    else
        echo "PostgreSQL server binaries are needed: install postgresql-15, or set NEXUS_TEST_DATABASE_URL" >&2
        exit 1
    fi
fi
ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true

step "browser toolchain (headless Chromium, chromedriver, wasm-bindgen-cli)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "the browser tests need chromium and chromedriver on PATH" >&2
        exit 1
    fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    else
        echo "the npm package build and the end-to-end test need node and npm" >&2
        exit 1
    fi
fi
# wasm-bindgen-cli must be exactly the wasm-bindgen of Cargo.lock.
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg_version" ]; then
    cargo install wasm-bindgen-cli --version "$wbg_version"
fi
wasm-bindgen --version
chromium --version 2>/dev/null || true

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy, wasm32 (the core, the bindings, the browser tests)"
cargo clippy -p nexus-core -p nexus-wasm -p nexus-tests --all-targets \
    --target wasm32-unknown-unknown --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "browser tests: the conformance suite in headless Chromium (memory; OPFS in a Worker; IndexedDB)"
# Meanwhile the npm package's release build (below), in a target directory
# of its own (cargo locks one per build): its whole-program optimization
# runs on one core, and the suite's Chromium leaves the cores half idle.
npm_log="$run_tmp/build-npm.log"
NEXUS_NPM_TARGET_DIR=target/npm-cargo setsid -w bash scripts/build-npm.sh > "$npm_log" 2>&1 &
npm_pid=$!
# WASM_BINDGEN_TEST_TIMEOUT bounds a whole suite, not one test (default 20 s);
# the OPFS suite opens and migrates a database per test and takes close to
# that on a busy 2-core machine.
WASM_BINDGEN_TEST_TIMEOUT=300 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p nexus-tests --target wasm32-unknown-unknown --locked \
    --test browser_memory --test browser_opfs --test browser_idb

step "the npm package (release build, wasm-opt; started with the browser tests), then the end-to-end tests in Chromium"
npm_status=0
wait "$npm_pid" || npm_status=$?
npm_pid=
cat "$npm_log"
if [ "$npm_status" -ne 0 ]; then
    echo "the npm package's build failed (status $npm_status)" >&2
    exit 1
fi
# The end-to-end tests run target/debug/nexus and target/debug/test-pg,
# which `cargo test --workspace` above built (integration tests need their
# package's binaries). Building them again alone would compile most
# dependencies a second time, with another set of features.
step "end to end: the demo page, two profiles and a native store through nexus serve"
NEXUS_BIN=target/debug/nexus node tests/e2e/e2e.mjs
step "end to end: convergence with a browser store"
# On a durable cluster: pushes are then committed as durably as the
# server's pulls need to pass over a store's own pushes unread (the
# default throwaway cluster runs with synchronous_commit off, and the
# e2e test above reads them), so the browser's and the native stores'
# pulls take that path here.
NEXUS_TEST_PG_DURABLE=1 NEXUS_BIN=target/debug/nexus NEXUS_LOG=warn node tests/e2e/converge.mjs
step "end to end: tabs of one origin"
node tests/e2e/tabs.mjs
step "end to end: Chromium killed mid-write"
node tests/e2e/crash.mjs
step "end to end: the package in Node and TypeScript"
node tests/e2e/package.mjs
step "end to end: a Vite app"
node tests/e2e/vite.mjs

step "all checks passed"
