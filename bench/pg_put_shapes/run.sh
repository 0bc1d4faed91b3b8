#!/usr/bin/env bash
# The shapes a put could take on PostgreSQL, side by side in one pgbench run
# (each transaction picks one script at random, so all four share the same
# moments of the server): the store's PL/pgSQL function nexus_put (one
# statement), the same rows written by one data-modifying CTE (new files
# only: it cannot update, loop on a lost race or see its own rows), the
# former six-statement transaction around one counter row, and a plain
# single-row upsert (the limit).
#
#   bash bench/pg_put_shapes/run.sh postgresql://postgres@127.0.0.1:5432/bench [clients...]
#
# The database must be empty and is changed: the script migrates it with
# `nexus migrate up` (schema version 3) and adds two tables of its own
# (`ctr`, `plain`).
set -euo pipefail
cd "$(dirname "$0")"
url=${1:?usage: run.sh POSTGRESQL_URL [clients...]}
shift
clients=("${@:-1 8}")
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)
export PATH="$pgbin:$PATH"
cargo run -q --release --bin nexus -- --db "$url" migrate up >/dev/null
psql -q "$url" -c "CREATE TABLE IF NOT EXISTS ctr (id int PRIMARY KEY, v bigint);
  INSERT INTO ctr VALUES (1, 0) ON CONFLICT DO NOTHING;
  CREATE TABLE IF NOT EXISTS plain (tenant_id text COLLATE \"C\", path text COLLATE \"C\", backend_id text,
    physical_path text, size_bytes bigint, content_hash text, updated_at timestamptz, PRIMARY KEY (tenant_id, path));"
for c in ${clients[@]}; do
    echo "== $c client(s)"
    pgbench -n -M prepared -c "$c" -j 2 -T "${SECONDS_PER_RUN:-15}" \
        -f function.sql -f cte.sql -f counter_transaction.sql -f plain_upsert.sql "$url" 2>&1 |
        grep -E '^SQL script|latency average|^ - [0-9]+ transactions'
done
