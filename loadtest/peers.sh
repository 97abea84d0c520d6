#!/usr/bin/env bash
# Installs (from Debian's packages), starts and stops the peers the comparison measures
# FerrisDB against, all on loopback and on ports outside 4500-4600 and 20000-50000's test use:
#
#   etcd 3.4     3 members: clients 127.0.0.1:23379/23381/23383, peers 23380/23382/23384;
#                default fsync (every raft entry fdatasynced before it is acknowledged)
#   Redis 7      127.0.0.1:25379, --appendonly yes --appendfsync always --save ""
#   PostgreSQL   127.0.0.1:25432, fsync=on, synchronous_commit=on (one node), trust auth
#
# Usage: loadtest/peers.sh start|stop|status
# Data and logs live under $LOADTEST_PEERS_DIR (default /tmp/ferrisdb-loadtest-peers);
# `start` wipes it first, so every run starts from empty stores.
#
# Safety: processes are stopped by the positive pids recorded when they were started, with
# bash's builtin kill; never a process group, never by name.
set -euo pipefail

DIR="${LOADTEST_PEERS_DIR:-/tmp/ferrisdb-loadtest-peers}"
ETCD_CLIENT_PORTS=(23379 23381 23383)
ETCD_PEER_PORTS=(23380 23382 23384)
REDIS_PORT=25379
PG_PORT=25432
PG_BIN="${PG_BIN:-}"

log() { echo "peers: $*" >&2; }

pg_bin() {
    if [[ -n "$PG_BIN" ]]; then echo "$PG_BIN"; return; fi
    # The newest PostgreSQL Debian installed.
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [[ -n "$d" ]] || { log "no PostgreSQL under /usr/lib/postgresql"; exit 1; }
    echo "$d"
}

install() {
    if command -v etcd >/dev/null && command -v redis-server >/dev/null \
        && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        return
    fi
    log "installing etcd-server, redis-server and postgresql from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y etcd-server redis-server postgresql
}

# Waits until "$@" succeeds (up to 60 s).
wait_for() {
    local what="$1"; shift
    for _ in $(seq 1 120); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "$what did not come up; logs in $DIR"
    return 1
}

stop_pid_file() {
    local f="$1" pid
    [[ -f "$f" ]] || return 0
    pid=$(cat "$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && (( pid > 1 )) && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

start_etcd() {
    local cluster="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}etcd$i=http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
    done
    for i in 0 1 2; do
        mkdir -p "$DIR/etcd$i"
        nohup etcd --name "etcd$i" --data-dir "$DIR/etcd$i/data" \
            --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token ferrisdb-loadtest \
            --quota-backend-bytes 8589934592 \
            --listen-metrics-urls "" \
            >"$DIR/etcd$i/etcd.log" 2>&1 </dev/null &
        echo $! >"$DIR/etcd$i.pid"
    done
    for i in 0 1 2; do
        wait_for "etcd$i" curl -fsS "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}/health"
    done
    log "etcd: 3 members up (clients 127.0.0.1:${ETCD_CLIENT_PORTS[*]})"
}

start_redis() {
    mkdir -p "$DIR/redis"
    nohup redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" \
        --appendonly yes --appendfsync always --save "" --protected-mode yes \
        --daemonize no --logfile "$DIR/redis/redis.log" \
        >/dev/null 2>&1 </dev/null &
    echo $! >"$DIR/redis.pid"
    wait_for redis redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
    log "redis: up on 127.0.0.1:$REDIS_PORT (appendfsync always)"
}

as_postgres() { runuser -u postgres -- "$@"; }

start_postgres() {
    local bin; bin=$(pg_bin)
    mkdir -p "$DIR/pg"
    chown postgres:postgres "$DIR/pg"
    # initdb and postgres refuse to run as root.
    as_postgres "$bin/initdb" -D "$DIR/pg/data" -U postgres --auth=trust >"$DIR/pg/initdb.log" 2>&1
    as_postgres "$bin/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR/pg \
            -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200" \
        start >/dev/null
    wait_for postgres "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
    log "postgres: up on 127.0.0.1:$PG_PORT (fsync=on, synchronous_commit=on)"
}

stop_all() {
    local i bin
    for i in 0 1 2; do stop_pid_file "$DIR/etcd$i.pid"; done
    stop_pid_file "$DIR/redis.pid"
    if [[ -f "$DIR/pg/data/postmaster.pid" ]]; then
        bin=$(pg_bin)
        as_postgres "$bin/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    log "stopped"
}

case "${1:-}" in
    start)
        install
        [[ -d "$DIR" ]] && stop_all
        rm -rf "$DIR"
        mkdir -p "$DIR"
        chmod 755 "$DIR"
        start_etcd
        start_redis
        start_postgres
        ;;
    stop)
        stop_all
        ;;
    status)
        for i in 0 1 2; do
            curl -fsS "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}/health" && echo " etcd$i" || echo "etcd$i down"
        done
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || true
        "$(pg_bin)/pg_isready" -h 127.0.0.1 -p "$PG_PORT" || true
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
