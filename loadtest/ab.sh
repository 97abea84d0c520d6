#!/usr/bin/env bash
# A/B of FerrisDB builds: each binary gets a fresh `ferrisdb dev` cluster, one after the other,
# and `ferrisdb-loadtest compare --targets ferrisdb` runs the given workloads against it; the
# compute's /metrics are saved at the end of each run (tier hit counters and the like).
#
# Usage: loadtest/ab.sh LOADGEN_BIN OUT_DIR FERRISDB_BIN... [-- compare flags…]
#   e.g. loadtest/ab.sh target/release/ferrisdb-loadtest /tmp/ab old/ferrisdb new/ferrisdb \
#            -- --workloads ycsb-e
# Writes OUT_DIR/<n>/{summary.md,results.json,…}, OUT_DIR/<n>.log, OUT_DIR/<n>.metrics per
# binary (n = 1, 2, …) and prints each run's summary line per workload. Compare figures only
# within one invocation: this machine's speed drifts between runs minutes apart.
# Settings (environment): PORT (26700; the cluster's base port, admin at +80).
# Stops only the processes it started (by pid, with bash's builtin kill).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,11p' "$0" >&2
    exit 2
fi
LT=$(readlink -f "$1")
OUT=$2
shift 2
BINS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    BINS+=("$(readlink -f "$1")")
    shift
done
[[ "${1:-}" == "--" ]] && shift
PORT=${PORT:-26700}
mkdir -p "$OUT"

DEV_PID=""
DATA=""
cleanup() {
    if [[ -n "$DEV_PID" ]] && kill -0 "$DEV_PID" 2>/dev/null; then
        # `ferrisdb dev` stops its children on SIGTERM.
        kill -TERM "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
    fi
    [[ -n "$DATA" ]] && rm -rf "$DATA"
    DEV_PID=""
    DATA=""
}
trap cleanup EXIT

n=0
for bin in "${BINS[@]}"; do
    n=$((n + 1))
    DATA=$(mktemp -d /tmp/ferrisdb-ab.XXXXXX)
    "$bin" dev --data-dir "$DATA" --base-port "$PORT" >"$OUT/$n.dev.log" 2>&1 </dev/null &
    DEV_PID=$!
    for _ in $(seq 1 120); do
        grep -q '^ready:' "$OUT/$n.dev.log" 2>/dev/null && break
        kill -0 "$DEV_PID" 2>/dev/null || break
        sleep 0.5
    done
    grep -q '^ready:' "$OUT/$n.dev.log" || { echo "$bin: no cluster" >&2; cat "$OUT/$n.dev.log" >&2; exit 1; }
    "$LT" compare --targets ferrisdb --ferrisdb-endpoint "http://127.0.0.1:$PORT" \
        --ferrisdb-pids "$DEV_PID" --open-loop-writes-rate 0 --out "$OUT/$n" "$@" \
        >"$OUT/$n.log" 2>&1
    curl -sf -H "Authorization: Bearer $(tr -d '\n' <"$DATA/cluster.token")" \
        "http://127.0.0.1:$((PORT + 80))/metrics" >"$OUT/$n.metrics" || true
    cleanup
    echo "== $n: $bin"
    grep -E '^\| [a-z]' "$OUT/$n/summary.md" | grep -F '| ferrisdb |' || true
done
