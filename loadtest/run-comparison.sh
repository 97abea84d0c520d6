#!/usr/bin/env bash
# The whole comparison in one command: builds FerrisDB and the load generator (release),
# starts the peers (loadtest/peers.sh) and a FerrisDB dev cluster (3 safekeepers with
# fdatasync and a quorum of 2, pageserver, compute) on loopback, runs
# `ferrisdb-loadtest compare` against all four, and stops everything it started.
#
# Usage: loadtest/run-comparison.sh [OUT_DIR] [extra ferrisdb-loadtest compare flags…]
# Writes OUT_DIR/results.json, summary.md, throughput.svg, latency-p50.svg, latency-p99.svg
# and build.txt (which FerrisDB was measured) (default OUT_DIR: loadtest/results/latest).
# FERRISDB_BIN=/path/to/ferrisdb measures that binary instead of building the working tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrisdb-target}"
OUT="${1:-$ROOT/loadtest/results/latest}"
shift || true
BASE_PORT=24500

if [[ -n "${FERRISDB_BIN:-}" ]]; then
    cargo build --release -p ferrisdb-loadtest
    FERRISDB="$FERRISDB_BIN"
else
    cargo build --release -p ferrisdb -p ferrisdb-loadtest --bins
    FERRISDB="$CARGO_TARGET_DIR/release/ferrisdb"
fi
LOADTEST="$CARGO_TARGET_DIR/release/ferrisdb-loadtest"

FDB_DIR="$(mktemp -d /tmp/ferrisdb-loadtest-cluster.XXXXXX)"
FDB_PID=""
cleanup() {
    # Positive pids only, with bash's builtin kill: `ferrisdb dev` stops its own children
    # on SIGTERM.
    if [[ -n "$FDB_PID" ]] && kill -0 "$FDB_PID" 2>/dev/null; then
        kill -TERM "$FDB_PID" 2>/dev/null || true
        wait "$FDB_PID" 2>/dev/null || true
    fi
    "$ROOT/loadtest/peers.sh" stop || true
    rm -rf "$FDB_DIR"
}
trap cleanup EXIT

"$ROOT/loadtest/peers.sh" start

"$FERRISDB" dev --data-dir "$FDB_DIR" --base-port "$BASE_PORT" >"$FDB_DIR.log" 2>&1 </dev/null &
FDB_PID=$!
for _ in $(seq 1 120); do
    grep -q '^ready:' "$FDB_DIR.log" 2>/dev/null && break
    kill -0 "$FDB_PID" 2>/dev/null || { cat "$FDB_DIR.log" >&2; exit 1; }
    sleep 0.5
done
grep -q '^ready:' "$FDB_DIR.log" || { echo "FerrisDB did not become ready" >&2; cat "$FDB_DIR.log" >&2; exit 1; }
echo "ferrisdb: dev cluster ready at http://127.0.0.1:$BASE_PORT (data in $FDB_DIR)" >&2

mkdir -p "$OUT"
{
    echo "ferrisdb binary: $FERRISDB (built $(date -u -r "$FERRISDB" +%FT%TZ))"
    echo "repository HEAD: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "uncommitted changes outside loadtest/ when the run started:"
    git -C "$ROOT" status --short 2>/dev/null | grep -v ' loadtest/' || echo "  none"
} >"$OUT/build.txt"
# Server CPU per operation: the processes each target runs on (dev's children are the
# compute, safekeepers and pageserver; the postmaster's are PostgreSQL's backends).
PEERS_DIR="${LOADTEST_PEERS_DIR:-/tmp/ferrisdb-loadtest-peers}"
pids_of() { cat "$@" 2>/dev/null | head -n "$#" | paste -sd, -; }
ETCD_PIDS=$(for i in 0 1 2; do head -n1 "$PEERS_DIR/etcd$i.pid" 2>/dev/null; done | paste -sd, -)
REDIS_PIDS=$(pids_of "$PEERS_DIR/redis.pid")
PG_PIDS=$(head -n1 "$PEERS_DIR/pg/data/postmaster.pid" 2>/dev/null || true)
CPU_FLAGS=(--ferrisdb-pids "$FDB_PID")
[[ -n "$ETCD_PIDS" ]] && CPU_FLAGS+=(--etcd-pids "$ETCD_PIDS")
[[ -n "$REDIS_PIDS" ]] && CPU_FLAGS+=(--redis-pids "$REDIS_PIDS")
[[ -n "$PG_PIDS" ]] && CPU_FLAGS+=(--postgres-pids "$PG_PIDS")
"$LOADTEST" compare --out "$OUT" --ferrisdb-endpoint "http://127.0.0.1:$BASE_PORT" "${CPU_FLAGS[@]}" "$@"
rm -f "$FDB_DIR.log"
