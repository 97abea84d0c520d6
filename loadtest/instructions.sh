#!/usr/bin/env bash
# Instructions per operation on each FerrisDB server process, counted by valgrind's callgrind
# (works where there is no PMU, so `perf stat -e instructions` cannot).
#
# Usage: loadtest/instructions.sh FERRISDB_BIN LOADGEN_BIN OUT_DIR [workloads]
#   workloads: comma-separated (default: idle,reads,ycsb-c,writes,ycsb-e,txn); `idle` is the
#   baseline (keys loaded, no clients). A name may be given twice (e.g. reads,reads) to
#   see the spread; each run gets its own fresh cluster.
#
# For each workload: `ferrisdb dev` starts under
#   valgrind --tool=callgrind --trace-children=yes --instr-atstart=no
# so the dev supervisor and every child (3 safekeepers, pageserver, compute) run under
# callgrind with instrumentation off. The load generator (native, not under valgrind) loads
# KEYS keys; SETTLE seconds into the phase `callgrind_control -i on` switches every server's
# instrumentation on, the compute's counters are read, WINDOW seconds pass, the counters are
# read again and `callgrind_control --dump` writes each server's counts. Instructions per op
# = the Ir total of a process's dump / the operations done in the window, from the compute's
# counters:
#   reads, ycsb-c, ycsb-f  point reads            (reads_total, tiers other than `range`)
#   writes, txn            commits                (commits_total)
#   ycsb-a, ycsb-b         point reads + commits
#   ycsb-e                 range reads + commits
# Read versions handed out in the window (with and without a liveness check) are printed
# next to it as a cross-check (one per transaction that reads).
#
# Settings (environment): PORT (27500; compute gRPC, others at +1..3, +10, admin +80),
# KEYS (10000), CONC (8), WINDOW (40 s), SETTLE (8 s), VALGRIND_FLAGS (extra flags),
# TARGET (ferrisdb; ferrisdb-unary for the SDK with sessions off, a call per operation).
# Writes OUT_DIR/<run>/{callgrind.out.*,dev.log,lt.out,lt.err,m0,m1,meta} and
# OUT_DIR/table.md (printed at the end).
# Stops only the processes it started (by pid, with bash's builtin kill).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,8p' "$0" >&2
    exit 2
fi
BIN=$(readlink -f "$1")
LT=$(readlink -f "$2")
OUT=$3
WORKLOADS=${4:-idle,reads,ycsb-c,writes,ycsb-e,txn}
PORT=${PORT:-27500}
KEYS=${KEYS:-10000}
CONC=${CONC:-8}
WINDOW=${WINDOW:-40}
SETTLE=${SETTLE:-8}
VALGRIND_FLAGS=${VALGRIND_FLAGS:-}
TARGET=${TARGET:-ferrisdb}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    { echo "needs valgrind (callgrind_control)" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")

DEV_PID=""
LT_PID=""
cleanup() {
    if [[ -n "$LT_PID" ]] && kill -0 "$LT_PID" 2>/dev/null; then
        kill -TERM "$LT_PID" 2>/dev/null || true
        wait "$LT_PID" 2>/dev/null || true
    fi
    if [[ -n "$DEV_PID" ]] && kill -0 "$DEV_PID" 2>/dev/null; then
        # `ferrisdb dev` stops its children on SIGTERM.
        kill -TERM "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
    fi
    LT_PID=""
    DEV_PID=""
}
trap cleanup EXIT

port_busy() { ss -ltnH "sport = :$1" | grep -q .; }
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)) $((PORT + 10)) \
    $((PORT + 80)) $((PORT + 81)) $((PORT + 82)) $((PORT + 83)) $((PORT + 90)); do
    if port_busy "$p"; then echo "port $p is in use; set PORT=" >&2; exit 1; fi
done

# The dev supervisor's children under valgrind, as "pid kind" lines (kind: compute,
# pageserver, safekeeper-N).
server_pids() {
    local pid args kind
    for pid in $(pgrep -P "$DEV_PID"); do
        args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        kind=$(awk '{for (i = 1; i <= NF; i++) {
                       if ($i == "safekeeper") {for (j = i; j <= NF; j++) if ($j == "--name") {print $(j+1); exit}}
                       if ($i == "pageserver" || $i == "compute") {print $i; exit}}}' <<<"$args")
        [[ -n "$kind" ]] && echo "$pid $kind"
    done
}

metrics() { # metrics PORT -> FerrisDB metric lines
    curl -sf -m 30 -H "Authorization: Bearer $(cat "$D/cluster.token")" \
        "http://127.0.0.1:$1/metrics" | grep -E '^ferrisdb_' || true
}

snapshot() { # snapshot FILE: every server's counters, prefixed with the admin port
    local p
    for p in $((PORT + 80)) $((PORT + 81)) $((PORT + 82)) $((PORT + 83)) $((PORT + 90)); do
        metrics "$p" | grep -E '_total|_count|_sum' | sed "s/^/$p /"
    done >"$1"
}

callgrind_all() { # callgrind_all ARGS...: the same request to every server, in parallel
    local pid kind waits=()
    while read -r pid kind; do
        callgrind_control "$@" "$pid" >>"$R/callgrind_control.log" 2>&1 &
        waits+=($!)
    done <"$R/pids"
    wait "${waits[@]}" # not a bare `wait`: that would wait for the cluster too
}

run_one() { # run_one WORKLOAD RUN_DIR
    local w=$1
    R=$2
    rm -rf "$R"
    mkdir -p "$R"
    D="$R/data"
    echo "== $w: starting the cluster under callgrind ($R)" >&2
    # shellcheck disable=SC2086
    valgrind --tool=callgrind --trace-children=yes --instr-atstart=no \
        --callgrind-out-file="$R/callgrind.out.%p" $VALGRIND_FLAGS \
        "$BIN" dev --data-dir "$D" --base-port "$PORT" >"$R/dev.log" 2>&1 </dev/null &
    DEV_PID=$!
    local i
    for i in $(seq 1 600); do
        [[ -f "$D/cluster.token" ]] && [[ -n "$(metrics $((PORT + 80)) | head -1)" ]] &&
            [[ -n "$(metrics $((PORT + 90)) | head -1)" ]] && break
        kill -0 "$DEV_PID" 2>/dev/null || { tail -20 "$R/dev.log" >&2; return 1; }
        sleep 1
    done
    server_pids >"$R/pids"
    [[ $(wc -l <"$R/pids") -eq 5 ]] || { echo "expected 5 servers, got:" >&2; cat "$R/pids" >&2; return 1; }
    echo "   up after ${i}s: $(tr '\n' ' ' <"$R/pids")" >&2

    # Load the keys; for `idle` a 1 s reads phase ends the load generator right after.
    local phase=$w dur=$((SETTLE + WINDOW + 60))
    [[ $w == idle ]] && { phase=reads; dur=1; }
    "$LT" run --target "$TARGET" --ferrisdb-endpoint "http://127.0.0.1:$PORT" \
        --workloads "$phase" --concurrency "$CONC" --duration "$dur" --warmup 0 \
        --keys "$KEYS" --out "$R/lt" >"$R/lt.out" 2>"$R/lt.err" </dev/null &
    LT_PID=$!
    for i in $(seq 1 1200); do
        grep -q 'loaded in' "$R/lt.err" "$R/lt.out" 2>/dev/null && break
        kill -0 "$LT_PID" 2>/dev/null || { tail -5 "$R/lt.err" >&2; return 1; }
        sleep 0.5
    done
    echo "   $(grep -ho 'loaded in.*' "$R/lt.err" "$R/lt.out" | head -1)" >&2
    if [[ $w == idle ]]; then
        wait "$LT_PID" || true
        LT_PID=""
    fi
    sleep "$SETTLE"

    callgrind_all --instr=on
    local t0 t1
    t0=$(date +%s.%N)
    snapshot "$R/m0"
    sleep "$WINDOW"
    snapshot "$R/m1"
    t1=$(date +%s.%N)
    callgrind_all --dump="$w"
    # A dump is written when the process next runs; wait for every file.
    local pid kind
    while read -r pid kind; do
        for i in $(seq 1 120); do
            [[ -s "$R/callgrind.out.$pid.1" ]] && grep -q '^totals:' "$R/callgrind.out.$pid.1" && break
            sleep 0.5
        done
    done <"$R/pids"
    callgrind_all --instr=off
    echo "$w $t0 $t1" >"$R/meta"
    if [[ -n "$LT_PID" ]] && ! kill -0 "$LT_PID" 2>/dev/null; then
        echo "   the load generator ended before the window did: see $R/lt.err" >&2
    fi
    cleanup # stops the load generator (its phase outlasts the window) and the cluster
    rm -rf "$D"
}

IFS=, read -r -a LIST <<<"$WORKLOADS"
declare -A SEEN=()
RUNS=()
for w in "${LIST[@]}"; do
    n=${SEEN[$w]:-0}
    SEEN[$w]=$((n + 1))
    name=$w
    [[ $n -gt 0 ]] && name="$w.$((n + 1))"
    run_one "$w" "$OUT/$name"
    RUNS+=("$OUT/$name")
done

python3 - "$PORT" "${RUNS[@]}" <<'PY' | tee "$OUT/table.md"
import glob, json, os, re, sys

port = int(sys.argv[1])
runs = sys.argv[2:]
KINDS = ["compute", "pageserver", "safekeeper-1", "safekeeper-2", "safekeeper-3"]

def counters(path):
    m = {}
    for line in open(path):
        p = line.split()
        if len(p) != 3:
            continue
        m[(int(p[0]), p[1])] = float(p[2])
    return m

def compute_sum(m, name, pred=lambda labels: True):
    s = 0.0
    for (p, k), v in m.items():
        if p != port + 80:
            continue
        base, _, labels = k.partition("{")
        if base == name and pred(labels):
            s += v
    return s

def ops(w, m0, m1):
    d = lambda name, pred=lambda l: True: compute_sum(m1, name, pred) - compute_sum(m0, name, pred)
    point = d("ferrisdb_compute_reads_total", lambda l: 'tier="range"' not in l)
    rng = d("ferrisdb_compute_reads_total", lambda l: 'tier="range"' in l)
    commits = d("ferrisdb_compute_commits_total")
    rv = d("ferrisdb_compute_read_versions_total") + d("ferrisdb_compute_leased_read_versions_total")
    return {
        "reads": point, "ycsb-c": point, "ycsb-f": point,
        "writes": commits, "txn": commits,
        "ycsb-a": point + commits, "ycsb-b": point + commits,
        "ycsb-e": rng + commits, "idle": 0,
    }.get(w, 0), dict(point=point, range=rng, commits=commits, rv=rv)

def ir(path):
    for line in open(path):
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    return None

rows = []
idle_rate = None
for r in runs:
    meta = open(os.path.join(r, "meta")).read().split("\n")
    w, t0, t1 = meta[0].split()
    secs = float(t1) - float(t0)
    kinds = {}
    for line in open(os.path.join(r, "pids")):
        pid, kind = line.split()
        kinds[kind] = ir(os.path.join(r, f"callgrind.out.{pid}.1"))
    n, parts = ops(w, counters(os.path.join(r, "m0")), counters(os.path.join(r, "m1")))
    rows.append((os.path.basename(r), w, secs, n, parts, kinds, parts["rv"]))
    if w == "idle":
        idle_rate = {k: v / secs for k, v in kinds.items()}

def fmt(x):
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x/1e6:.2f}M"
    if x >= 1e3:
        return f"{x/1e3:.1f}k"
    return f"{x:.0f}"

print(f"Instructions (callgrind Ir) per operation, per server process; window ~{rows[0][2]:.0f} s.\n")
print("| run | ops in window | ops/s | read versions | compute | pageserver | safekeepers (sum) | sk-1 | sk-2 | sk-3 | total | total minus idle |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, w, secs, n, parts, kinds, rv in rows:
    sk = sum(kinds.get(k) or 0 for k in KINDS[2:])
    tot = sum(kinds.get(k) or 0 for k in KINDS)
    if w == "idle":
        print(f"| {name} (Ir per second) | - | - | - | {fmt(kinds.get('compute', 0)/secs)} | {fmt(kinds.get('pageserver', 0)/secs)} | "
              f"{fmt(sk/secs)} | " + " | ".join(fmt((kinds.get(k) or 0)/secs) for k in KINDS[2:]) + f" | {fmt(tot/secs)} | - |")
        continue
    if n <= 0:
        print(f"| {name} | 0 | | | | | | | | | | |")
        continue
    per = lambda x: fmt(x / n)
    net = "n/a"
    if idle_rate:
        net = fmt((tot - sum(idle_rate.values()) * secs) / n)
    print(f"| {name} | {n:.0f} | {n/secs:.0f} | {rv:.0f} | {per(kinds.get('compute') or 0)} | {per(kinds.get('pageserver') or 0)} | "
          f"{per(sk)} | " + " | ".join(per(kinds.get(k) or 0) for k in KINDS[2:]) + f" | {per(tot)} | {net} |")
print()
print("Counter deltas in the window (compute): " + "; ".join(
    f"{name}: point reads {p['point']:.0f}, range reads {p['range']:.0f}, commits {p['commits']:.0f}"
    for name, w, secs, n, p, kinds, lt in rows if w != "idle"))
PY
