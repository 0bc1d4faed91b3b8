#!/usr/bin/env bash
# Where each workload of nexus-bench spends its CPU time: the store, the
# same statements on turso_core directly, and C SQLite (rusqlite), from one
# `perf record` of one round.
#
#   bash bench/profile.sh [nexus-bench options, e.g. --files 100000]
#
# nexus-bench runs every measured workload on a thread named for its side and
# workload (nexus-get, turso-get, sqlite-get, ...). Each thread's samples
# are split into:
#   engine  turso_core, or the C SQLite functions
#   store   the store's own code (nexus_core; for turso-*, the baseline's
#           loop in nexus_bench), or the binding (rusqlite::)
#   rust    the rest of the Rust code (std, alloc, uuid, serde_json, ...)
#   libc    malloc/free, memcpy/memcmp
#   kernel  system calls (pread, pwrite, fsync) and page faults
# The time a thread waits off the CPU (for fsync) is not sampled.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -p nexus-bench --bin nexus-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf record -q -F 1999 -o "$out/perf.data" -- target/release/nexus-bench --rounds 1 "$@" \
    >"$out/bench.txt" 2>/dev/null
cat "$out/bench.txt"
echo
perf report -i "$out/perf.data" --no-children -n --sort comm,dso,sym --stdio -g none \
    >"$out/report.txt" 2>/dev/null
printf '%-16s %8s %8s %8s %8s %8s %8s\n' thread samples engine store rust libc kernel
for w in putbatch get list putone; do
    for side in nexus turso sqlite; do
        # (--comm loses samples of a thread renamed after it started: filter here.)
        awk -v name="$side-$w" '
                /^ +[0-9.]+%/ && $3 == name {
                    n = $2; dso = $4; kind = $5
                    sym = ""; for (i = 6; i <= NF; i++) sym = sym " " $i
                    if (kind == "[k]") c = "kernel"
                    else if (dso ~ /^libc/) c = "libc"
                    else if (sym ~ /turso_core::/) c = "engine"
                    else if (sym ~ /nexus_|rusqlite::/) c = "store"
                    else if (sym !~ /::/ && dso !~ /^\[/) c = "engine"  # a C function: SQLite
                    else c = "rust"
                    s[c] += n; total += n
                }
                END {
                    if (total == 0) { printf "%-16s %8s\n", name, "none"; exit }
                    printf "%-16s %8d %7.1f%% %7.1f%% %7.1f%% %7.1f%% %7.1f%%\n", name, total,
                        100 * s["engine"] / total, 100 * s["store"] / total, 100 * s["rust"] / total,
                        100 * s["libc"] / total, 100 * s["kernel"] / total
                }' "$out/report.txt"
    done
done
echo "samples at 1999 Hz: one is about 0.5 ms of CPU"
