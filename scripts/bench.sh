#!/usr/bin/env bash
# tusring's benchmark suite: tusring against the tus servers found on this machine and
# against the plain loopback limits, all in one run, alternating servers.
#
#   scripts/bench.sh [--quick] [--with-node] [--install] [--data-dir DIR] [--disk-dir DIR]
#                    [--repeats N] [--servers LIST] [--scenarios LIST] [--out FILE]
#                    [--no-build]
#
# Servers (each measured with the same scenarios, one at a time, started fresh for each
# measurement on 127.0.0.1 and stopped after it):
#   tusring-w1, tusring-w2  this repository's tusring, --workers 1 and --workers 2
#   redis-w1, redis-w2      this tusring with its records and locks in Redis
#                           (--info-storage redis-info-storage), --workers 1 and 2:
#                           against tusring-wN, the cost of Redis records in the same
#                           run; needs redis-server ($REDIS_SERVER_BIN or on PATH;
#                           `--install` apt-installs it), of which the run starts one of
#                           its own on 127.0.0.1 and a free port (no persistence), emptied
#                           (FLUSHALL) before each measurement; its CPU counts as the
#                           server's
#   base-w1, base-w2        another tusring build, $TUSRING_BASE_BIN (e.g. the commit
#                           before a change, built in a separate directory), with the
#                           same flags: a before/after comparison in the same run
#   rustus                  $RUSTUS_BIN or `rustus` on PATH (e.g. `cargo install rustus
#                           --version 0.5.10 --root DIR`); started with -w 2 and
#                           -m 2000000000 so that a 1 GiB PATCH fits its body limit
#   tusd                    $TUSD_BIN or `tusd` on PATH
#   node                    @tus/server with @tus/file-store: $TUS_NODE_SERVER (a Node
#                           script taking PORT DIR), or scripts/bench/tus-node-server.mjs
#                           with --with-node, which npm-installs the two packages into
#                           target/bench-node
# Loopback limits (only in `big`):
#   iperf3                  one TCP stream memory to memory (`--install` apt-installs it)
#   sink                    `tusload sink`, the bare splice receiver: one thread moving
#                           the body socket -> pipe -> file with splice(2), no protocol
#
# Scenarios:
#   big     one 1 GiB upload in one PATCH (256 MiB with --quick): MB/s (10^6 bytes/s),
#           server CPU seconds per GB received (utime+stime from /proc/PID/stat) and the
#           server's RSS growth during it (VmHWM after - VmRSS before); the first upload
#           of each server is verified byte for byte
#   small   4 KiB creation-with-upload (POST + PATCH where a server lacks it) over 1, 16
#           and 64 keep-alive connections: uploads/s and p99 latency
#   disk    the same as small with the data on the machine's disk: in --disk-dir DIR
#           (default target/bench-disk, i.e. the file system of this repository; refused
#           when that is tmpfs), 2 s after 0.5 s of warm-up per run (1 s with --quick) so
#           that the files kept until the end of the run (see below) fit on the disk;
#           rows "small N conn, disk: ..."
#   hold    1000 concurrent uploads trickling slowly: peak RSS of the server (VmHWM),
#           and how many uploads are intact afterwards (HEAD offset == length)
#
# Method (see the pitfalls of this machine in the shared design notes):
# - data on tmpfs by default (--data-dir DIR to measure a disk instead);
# - every measurement gets a freshly started server and its own directory;
# - memory is touched and freed before each timed run;
# - on a disk, created files are kept until the end of the run and deleted last (mass
#   deletes slow later file creation on ext4 for minutes), and the file system is synced
#   (sync -f) before each timed run, so that the writeback of the runs before it happens
#   outside its timing; a disk measurement is skipped, with a note, when the disk has
#   less than $BENCH_DISK_MIN_FREE GiB (default 4) + 1 GiB free (the files it may keep;
#   the disk is shared); on tmpfs, which has no such
#   effect but holds everything in memory (a full run creates millions of files), each
#   measurement's directory is deleted right after it, outside the timing; the 1 GiB
#   files of `big` are deleted right after their measurement everywhere;
# - each measurement is repeated (3 times, 2 with --quick), servers in rotating order;
# - each timed run first waits for the machine to be quiet (up to $BENCH_QUIET_WAIT s,
#   default 30, 10 with --quick; at most $BENCH_QUIET_BUDGET s over the whole run,
#   default 240, 60 with --quick, so that a busy machine cannot stretch the run); the CPU
#   other processes use during the run is measured, and a run where they used more than
#   $BENCH_OTHER_MAX cores (default 0.15) is run again ($BENCH_RETRIES times, default 1),
#   then flagged as disturbed;
# - no server is told to fsync (neither tusring's nor rustus's --force-fsync): on a disk,
#   an upload is acknowledged once its data and record are in the page cache, by all;
#   each server's data and records are in the same directory, so on the same file system.
#
# Output: one table (metric x server: median, [min-max] over the repeats, ratio to
# tusring-w2's median) on stdout and in benches/results/<date>-<host>.md (with -quick
# for --quick runs) with a note of the machine (load average at the start and the end
# included) and the raw values; beside the page, charts of the same raw values as SVG
# (<page>-small.svg, -big.svg, -hold.svg, by scripts/bench/charts.py), linked from it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

QUICK=0 WITH_NODE=0 INSTALL=0 BUILD=1
DATA_PARENT="" DISK_PARENT="" REPEATS="" OUT="" ONLY_SERVERS="" SCENARIOS="big,small,disk,hold"
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --with-node) WITH_NODE=1 ;;
        --install) INSTALL=1 ;;
        --no-build) BUILD=0 ;;
        --data-dir) DATA_PARENT="$2"; shift ;;
        --disk-dir) DISK_PARENT="$2"; shift ;;
        --repeats) REPEATS="$2"; shift ;;
        --servers) ONLY_SERVERS="$2"; shift ;;
        --scenarios) SCENARIOS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    : "${REPEATS:=2}"
    BIG_SIZE=256M BIG_BYTES=$((256 << 20))
    SMALL_DUR=1s SMALL_WARM=0.5s DISK_DUR=1s DISK_WARM=0.5s
    HOLD_UPLOADS=1000 HOLD_SIZE=16K HOLD_PIECE=4K HOLD_INTERVAL=250ms
else
    : "${REPEATS:=3}"
    BIG_SIZE=1G BIG_BYTES=$((1 << 30))
    SMALL_DUR=5s SMALL_WARM=1s DISK_DUR=2s DISK_WARM=0.5s
    HOLD_UPLOADS=1000 HOLD_SIZE=64K HOLD_PIECE=4K HOLD_INTERVAL=200ms
fi
SMALL_SIZE=4K
SMALL_CONNS=(1 16 64)
OTHER_MAX="${BENCH_OTHER_MAX:-0.15}"
RETRIES="${BENCH_RETRIES:-1}"
QUIET_WAIT="${BENCH_QUIET_WAIT:-$([ "$QUICK" = 1 ] && echo 10 || echo 30)}"
QUIET_LEFT="${BENCH_QUIET_BUDGET:-$([ "$QUICK" = 1 ] && echo 60 || echo 240)}"
DISK_MIN_FREE="${BENCH_DISK_MIN_FREE:-4}"
TCK="$(getconf CLK_TCK)"

log() { printf '%s\n' "$*" >&2; }
step() { printf '\n==> %s\n' "$*" >&2; }

# ------------------------------------------------------------------------------ setup
if [ "$INSTALL" = 1 ] && ! command -v "${REDIS_SERVER_BIN:-redis-server}" >/dev/null; then
    step "apt-get install redis-server"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            redis-server >&2 || log "could not install redis-server; redis-wN are skipped"
    else
        log "--install needs root and apt-get; redis-wN are skipped"
    fi
fi
if [ "$INSTALL" = 1 ] && ! command -v iperf3 >/dev/null; then
    step "apt-get install iperf3"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >&2 ||
            log "could not install iperf3; the iperf3 limit is skipped"
    else
        log "--install needs root and apt-get; the iperf3 limit is skipped"
    fi
fi

NODE_MODULES="$ROOT/target/bench-node/node_modules"
NODE_NOTE=""
if [ "$WITH_NODE" = 1 ]; then
    step "npm install @tus/server @tus/file-store into target/bench-node"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        NODE_NOTE="@tus/server skipped: node/npm not found"
    elif [ -f "$NODE_MODULES/@tus/server/package.json" ] &&
        [ -f "$NODE_MODULES/@tus/file-store/package.json" ]; then
        log "already installed"
    elif ! npm install --prefix "$ROOT/target/bench-node" --no-audit --no-fund \
        --loglevel=error @tus/server @tus/file-store >&2; then
        NODE_NOTE="@tus/server skipped: npm install failed"
    fi
    if [ -z "$NODE_NOTE" ]; then
        : "${TUS_NODE_SERVER:=$ROOT/scripts/bench/tus-node-server.mjs}"
    fi
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TUSRING="$TARGET_DIR/release/tusring"
TUSLOAD="$TARGET_DIR/release/tusload"
if [ "$BUILD" = 1 ]; then
    step "cargo build --release --bin tusring --bin tusload"
    cargo build --release --bin tusring --bin tusload >&2
fi
[ -x "$TUSRING" ] && [ -x "$TUSLOAD" ] || { log "missing $TUSRING or $TUSLOAD"; exit 1; }

RUSTUS="${RUSTUS_BIN:-$(command -v rustus || true)}"
TUSD="${TUSD_BIN:-$(command -v tusd || true)}"
IPERF3="$(command -v iperf3 || true)"
REDIS_SERVER="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
REDIS_CLI="$(command -v redis-cli || true)"

# The servers, in table order; each only when it is there.
ALL=(tusring-w1 tusring-w2)
SKIPPED=()
if [ -n "$REDIS_SERVER" ] && [ -x "$REDIS_SERVER" ] && [ -n "$REDIS_CLI" ]; then
    ALL+=(redis-w1 redis-w2)
else
    SKIPPED+=("redis-wN: redis-server and redis-cli not found (--install installs them)")
fi
TUSRING_BASE="${TUSRING_BASE_BIN:-}"
if [ -n "$TUSRING_BASE" ]; then
    if [ -x "$TUSRING_BASE" ]; then ALL+=(base-w1 base-w2); else SKIPPED+=("base: $TUSRING_BASE is not executable"); fi
fi
if [ -n "$RUSTUS" ] && [ -x "$RUSTUS" ]; then ALL+=(rustus); else SKIPPED+=("rustus: set RUSTUS_BIN or put rustus on PATH"); fi
if [ -n "$TUSD" ] && [ -x "$TUSD" ]; then ALL+=(tusd); else SKIPPED+=("tusd: set TUSD_BIN or put tusd on PATH"); fi
if [ -n "${TUS_NODE_SERVER:-}" ] && [ -f "$TUS_NODE_SERVER" ] && command -v node >/dev/null; then
    ALL+=(node)
else
    SKIPPED+=("@tus/server: ${NODE_NOTE:-use --with-node or set TUS_NODE_SERVER}")
fi
if [ -n "$IPERF3" ]; then ALL+=(iperf3); else SKIPPED+=("iperf3: not installed (--install installs it)"); fi
ALL+=(sink)
if [ -n "$ONLY_SERVERS" ]; then
    KEEP=()
    for s in "${ALL[@]}"; do
        case ",$ONLY_SERVERS," in *",$s,"*) KEEP+=("$s") ;; esac
    done
    ALL=("${KEEP[@]}")
fi
TUS_SERVERS=()
for s in "${ALL[@]}"; do
    case "$s" in iperf3|sink) ;; *) TUS_SERVERS+=("$s") ;; esac
done

# Data on tmpfs unless told otherwise.
if [ -z "$DATA_PARENT" ]; then
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
        DATA_PARENT=/dev/shm
    else
        log "/dev/shm is not tmpfs here; pass --data-dir DIR"
        exit 1
    fi
fi
mkdir -p "$DATA_PARENT"
DATA="$(mktemp -d "$DATA_PARENT/tusring-bench.XXXXXX")"
DATA_FS="$(stat -f -c %T "$DATA")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tusring-bench-work.XXXXXX")"
RAW="$WORK/raw.tsv"
: >"$RAW"
NOTES=()

SRV_PID=""
REDIS_PID=""
cleanup() {
    local rc=$?
    if [ -n "$SRV_PID" ]; then
        kill -TERM "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
    if [ -n "$REDIS_PID" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    # Deleting last: what the run kept goes at once, after the last measurement.
    rm -rf "$DATA" "$WORK" ${DISK:+"$DISK"}
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The disk scenario's data: on the repository's file system unless told otherwise.
DISK="" DISK_FS=""
case ",$SCENARIOS," in
    *,disk,*)
        : "${DISK_PARENT:=$ROOT/target/bench-disk}"
        mkdir -p "$DISK_PARENT"
        DISK="$(mktemp -d "$DISK_PARENT/tusring-bench.XXXXXX")"
        DISK_FS="$(stat -f -c %T "$DISK")"
        if [ "$DISK_FS" = tmpfs ]; then
            log "bench.sh: $DISK_PARENT is on tmpfs, not a disk; pass --disk-dir DIR or leave out the disk scenario"
            exit 2
        fi
        ;;
esac

# ---------------------------------------------------------------------------- helpers
# free_port, wait_port
# shellcheck source=bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

# The run's own Redis (for redis-wN), started on first use: 127.0.0.1, a free port, no
# persistence, its files in $WORK. Sets REDIS_PID and REDIS_PORT.
start_redis() {
    [ -z "$REDIS_PID" ] || return 0
    REDIS_PORT="$(free_port)"
    mkdir -p "$WORK/redis"
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --dir "$WORK/redis" >"$WORK/redis/log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 200); do
        "$REDIS_CLI" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "redis-server did not start; its log:"
    cat "$WORK/redis/log" >&2 || true
    return 1
}

# start_server NAME DIR: starts NAME on a free port with its data in DIR; sets SRV_PID,
# SRV_PORT, SRV_URL and SRV_LOG. Tries three ports before giving up.
start_server() {
    local try
    for try in 1 2 3; do
        start_server_once "$@" && return 0
        [ -z "${SRV_STUCK:-}" ] || break
    done
    log "$1 did not start; its log:"
    cat "$SRV_LOG" >&2 || true
    return 1
}

start_server_once() {
    local name="$1" dir="$2" port
    port="$(free_port)"
    if ! mkdir -p "$dir"; then
        SRV_STUCK=1 # e.g. the data directory is full: other ports will not help
        return 1
    fi
    SRV_LOG="$dir.log"
    SRV_URL="http://127.0.0.1:$port/files"
    case "$name" in
        tusring-w1|tusring-w2)
            "$TUSRING" --host 127.0.0.1 --port "$port" --workers "${name#tusring-w}" \
                --data-dir "$dir" --info-dir "$dir" --log-level ERROR >"$SRV_LOG" 2>&1 &
            ;;
        redis-w1|redis-w2)
            start_redis || return 1
            "$REDIS_CLI" -p "$REDIS_PORT" flushall >/dev/null
            "$TUSRING" --host 127.0.0.1 --port "$port" --workers "${name#redis-w}" \
                --data-dir "$dir" --info-storage redis-info-storage \
                --info-db-dsn "redis://127.0.0.1:$REDIS_PORT/0" --log-level ERROR \
                >"$SRV_LOG" 2>&1 &
            ;;
        base-w1|base-w2)
            "$TUSRING_BASE" --host 127.0.0.1 --port "$port" --workers "${name#base-w}" \
                --data-dir "$dir" --info-dir "$dir" --log-level ERROR >"$SRV_LOG" 2>&1 &
            ;;
        rustus)
            "$RUSTUS" --host 127.0.0.1 --port "$port" --data-dir "$dir" --info-dir "$dir" \
                -w 2 -m 2000000000 --log-level ERROR >"$SRV_LOG" 2>&1 &
            ;;
        tusd)
            SRV_URL="http://127.0.0.1:$port/files/"
            "$TUSD" -host 127.0.0.1 -port "$port" -upload-dir "$dir" -base-path /files/ \
                -verbose=false >"$SRV_LOG" 2>&1 &
            ;;
        node)
            TUS_NODE_MODULES="$NODE_MODULES" node "$TUS_NODE_SERVER" "$port" "$dir" \
                >"$SRV_LOG" 2>&1 &
            ;;
        iperf3)
            "$IPERF3" -s -B 127.0.0.1 -p "$port" >"$SRV_LOG" 2>&1 &
            ;;
        sink)
            "$TUSLOAD" sink --listen "127.0.0.1:$port" --dir "$dir" >"$SRV_LOG" 2>&1 &
            ;;
    esac
    SRV_PID=$!
    SRV_NAME="$name"
    SRV_PORT="$port"
    SRV_STUCK=""
    if ! wait_port "$port" "$SRV_PID"; then
        # Still running but not listening after 10 s: no point in trying other ports.
        kill -0 "$SRV_PID" 2>/dev/null && SRV_STUCK=1
        stop_server
        return 1
    fi
}

stop_server() {
    [ -n "$SRV_PID" ] || return 0
    # redis-wN must have kept its records in Redis, not on disk.
    case "$SRV_NAME" in
        redis-w*)
            [ "$("$REDIS_CLI" -p "$REDIS_PORT" dbsize 2>/dev/null || echo 0)" -gt 0 ] ||
                NOTES+=("$SRV_NAME: no key in Redis after a measurement")
            ;;
    esac
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}

# CPU ticks (utime+stime, all threads) of process $1.
proc_cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# CPU ticks of the server under test: with redis-wN, tusring's plus the run's Redis's.
server_cpu() {
    local t r
    t="$(proc_cpu "$SRV_PID")" || return 1
    case "$SRV_NAME" in
        redis-w*)
            r="$(proc_cpu "$REDIS_PID")" || return 1
            echo $((t + r))
            ;;
        *) echo "$t" ;;
    esac
}
# CPU ticks of this shell's waited-for children (the clients).
children_cpu() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
# Busy ticks of the whole machine (user, nice, system, steal; not idle, iowait, irq).
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $9; exit}' /proc/stat; }
# VmRSS / VmHWM of process $1 in KiB.
proc_mem() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }

# measured OUT CMD...: runs CMD (the client) with its output in OUT and sets M_SERVER
# (server CPU s), M_CLIENT (client CPU s), M_WALL (s), M_OTHER (cores used by others).
measured() {
    local out="$1"; shift
    local s0 c0 b0 t0 s1 c1 b1 t1 rc=0
    s0="$(server_cpu)" c0="$(children_cpu)" b0="$(machine_busy)" t0="$(now)"
    "$@" >"$out" 2>&1 || rc=$?
    s1="$(server_cpu 2>/dev/null || echo "$s0")"
    c1="$(children_cpu)" b1="$(machine_busy)" t1="$(now)"
    read -r M_SERVER M_CLIENT M_WALL M_OTHER < <(awk -v s0="$s0" -v s1="$s1" -v c0="$c0" \
        -v c1="$c1" -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" -v tck="$TCK" 'BEGIN {
            s = (s1 - s0) / tck; c = (c1 - c0) / tck; w = t1 - t0; if (w <= 0) w = 1e-9
            o = ((b1 - b0) / tck - s - c) / w; if (o < 0) o = 0
            printf "%.3f %.3f %.3f %.3f\n", s, c, w, o }')
    return "$rc"
}

# record METRIC SERVER REP VALUE: one raw value (FLAG: the run's other-CPU note).
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$M_OTHER" "$FLAG" >>"$RAW"
}

disturbed() { awk -v o="$M_OTHER" -v m="$OTHER_MAX" 'BEGIN { exit !(o > m) }'; }

# Stops the run (cleanly) if the data directory or the memory is running out: tmpfs
# lives in memory, and a full one would hurt everything else on the machine.
check_room() {
    local need=$(($1 / 1024 + 4 * 1024 * 1024)) avail mem
    avail="$(df -Pk "$DATA" | awk 'NR == 2 {print $4}')"
    mem="$(awk '/MemAvailable/ {print $2}' /proc/meminfo)"
    if [ "$avail" -lt "$need" ] || { [ "$DATA_FS" = tmpfs ] && [ "$mem" -lt "$need" ]; }; then
        log "bench.sh: less than $((need / 1024)) MiB left in $DATA ($((avail / 1024)) MiB) or in memory ($((mem / 1024)) MiB); stopping"
        exit 1
    fi
}

# Touches and frees $1 bytes of memory (the VM hands free memory back to its host, and
# touching it again is slow), then waits (up to $BENCH_QUIET_WAIT s) until the machine
# has been quiet for 0.3 s: the server is idle then, so any CPU use is others'.
touch_memory() {
    check_room "$1"
    "$TUSLOAD" touch --size "$1" >/dev/null
    local b0 b1 waited=0
    while [ "$waited" -lt "$QUIET_WAIT" ] && [ "$QUIET_LEFT" -gt 0 ]; do
        b0="$(machine_busy)"
        sleep 0.3
        b1="$(machine_busy)"
        awk -v d=$((b1 - b0)) -v t="$TCK" -v m="$OTHER_MAX" 'BEGIN { exit !(d / t / 0.3 <= m) }' &&
            return 0
        [ "$waited" -eq 0 ] && log "  waiting for other processes to calm down"
        sleep 0.7
        waited=$((waited + 1))
        QUIET_LEFT=$((QUIET_LEFT - 1))
    done
}

# Removes a measurement's directory where keeping it costs memory (tmpfs); on a disk it
# stays until the end of the run.
done_with() {
    [ "$(stat -f -c %T "$(dirname "$1")")" != tmpfs ] || rm -rf "$1" "$1.log"
}

# Before a timed run on the disk: false (and a note) when the disk has less than
# DISK_MIN_FREE + 1 GiB free (1 GiB: more than a 2 s run of 4 KiB uploads keeps here);
# else the disk's dirty pages written back, outside the timing.
disk_ready() {
    local avail
    avail="$(df -Pk "$DISK" | awk 'NR == 2 {print $4}')"
    if [ "$avail" -lt $(((DISK_MIN_FREE + 1) << 20)) ]; then
        NOTES+=("disk: measurements skipped with $((avail >> 20)) GiB left on $DISK_PARENT (BENCH_DISK_MIN_FREE=$DISK_MIN_FREE)")
        return 1
    fi
    sync -f "$DISK"
}

# rotate N ITEMS...: the items starting at index N mod count.
rotate() {
    local n="$1"; shift
    local items=("$@") i
    for ((i = 0; i < ${#items[@]}; i++)); do
        echo "${items[$(((i + n) % ${#items[@]}))]}"
    done
}

csv_field() { awk -F, -v m="$1" -v f="$2" '$1 == m {v = $f} END {print v}' "$3"; }

# ----------------------------------------------------------------------------- scenarios
# Each measure_* runs one measurement (retried once when disturbed) and records it.
measure_big() {
    local srv="$1" rep="$2" attempt=0 dir out mbps rss0 hwm
    while :; do
        attempt=$((attempt + 1))
        dir="$DATA/big/$srv/r$rep-$attempt"
        out="$WORK/big-$srv-$rep-$attempt.out"
        start_server "$srv" "$dir" || { NOTES+=("big: $srv did not start"); return 0; }
        touch_memory $((2 * BIG_BYTES))
        rss0="$(proc_mem "$SRV_PID" VmRSS)"
        if [ "$srv" = iperf3 ]; then
            if ! measured "$out" "$IPERF3" -c 127.0.0.1 -p "$SRV_PORT" -n "$BIG_SIZE" -f m; then
                NOTES+=("big: iperf3 failed: $(tail -n 1 "$out")")
                stop_server
                return 0
            fi
            mbps="$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") v = $i / 8 } END { print v }' "$out")"
        else
            if ! measured "$out" "$TUSLOAD" big --url "$SRV_URL" --size "$BIG_SIZE" --csv \
                --ids-file "$dir.ids"; then
                NOTES+=("big: $srv failed: $(grep -m1 -iE 'error|fail' "$out" || tail -n 1 "$out")")
                stop_server
                rm -rf "$dir"
                return 0
            fi
            mbps="$(csv_field big 4 "$out")"
        fi
        hwm="$(proc_mem "$SRV_PID" VmHWM)"
        if [ "$rep" = 1 ] && [ "$srv" != iperf3 ] && [ "$attempt" = 1 ]; then
            if ! "$TUSLOAD" verify --ids-file "$dir.ids" --data-dir "$dir" >"$out.verify" 2>&1; then
                NOTES+=("big: $srv: VERIFY FAILED: $(head -n 3 "$out.verify" | tr '\n' ' ')")
            fi
        fi
        stop_server
        rm -rf "$dir" # 1 GiB each: see the header
        FLAG=""
        if disturbed && [ "$attempt" -le "$RETRIES" ]; then
            log "  big $srv #$rep: other processes used $M_OTHER cores; again"
            continue
        fi
        disturbed && FLAG="disturbed"
        log "  big $srv #$rep: $mbps MB/s, server cpu ${M_SERVER}s, other $M_OTHER cores"
        record "big: MB/s" "$srv" "$rep" "$mbps"
        record "big: server CPU s per GB" "$srv" "$rep" \
            "$(awk -v s="$M_SERVER" -v b="$BIG_BYTES" 'BEGIN { printf "%.3f", s / (b / 1e9) }')"
        [ "$srv" = iperf3 ] || record "big: server RSS growth, MiB" "$srv" "$rep" \
            "$(awk -v a="$rss0" -v b="$hwm" 'BEGIN { printf "%.1f", (b - a) / 1024 }')"
        return 0
    done
}

# measure_small SERVER CONNS REP [disk]: with "disk", the data go to $DISK and the rows
# are "small N conn, disk: ...".
measure_small() {
    local srv="$1" conns="$2" rep="$3" where="${4:-}" attempt=0 dir out rate p99 errors
    local base="$DATA" name="small$conns" row="small $conns conn" dur="$SMALL_DUR" warm="$SMALL_WARM"
    if [ "$where" = disk ]; then
        base="$DISK" name="disk$conns" row="small $conns conn, disk" dur="$DISK_DUR" warm="$DISK_WARM"
    fi
    while :; do
        attempt=$((attempt + 1))
        dir="$base/$name/$srv/r$rep-$attempt"
        out="$WORK/$name-$srv-$rep-$attempt.out"
        [ "$where" != disk ] || disk_ready || return 0
        start_server "$srv" "$dir" || { NOTES+=("$row: $srv did not start"); return 0; }
        touch_memory $((512 << 20))
        measured "$out" "$TUSLOAD" small --url "$SRV_URL" --size "$SMALL_SIZE" --conns "$conns" \
            --duration "$dur" --warmup "$warm" --csv || true
        stop_server
        done_with "$dir"
        rate="$(csv_field small 4 "$out")" p99="$(csv_field small 6 "$out")"
        errors="$(csv_field small 7 "$out")"
        if [ -z "$rate" ] || awk -v r="$rate" 'BEGIN { exit !(r == 0) }'; then
            NOTES+=("$row: $srv failed: $(grep -m1 -E 'errors|tusload:' "$out" || tail -n 1 "$out")")
            return 0
        fi
        [ "${errors:-0}" = 0 ] || NOTES+=("$row: $srv #$rep: $errors errors ($(grep -m1 'errors' "$out" | sed 's/^ *//'))")
        grep -q 'POST + PATCH' "$out" && NOTES+=("small: $srv has no creation-with-upload; tusload used POST + PATCH")
        FLAG=""
        if disturbed && [ "$attempt" -le "$RETRIES" ]; then
            log "  $name $srv #$rep: other processes used $M_OTHER cores; again"
            continue
        fi
        disturbed && FLAG="disturbed"
        log "  $name $srv #$rep: $rate uploads/s, p99 ${p99} us, server ${M_SERVER}s cpu in ${M_WALL}s, other $M_OTHER cores"
        record "$row: uploads/s" "$srv" "$rep" "$rate"
        record "$row: p99 ms" "$srv" "$rep" \
            "$(awk -v u="$p99" 'BEGIN { printf "%.2f", u / 1000 }')"
        return 0
    done
}

measure_hold() {
    local srv="$1" rep="$2" attempt=0 dir out hwm intact
    while :; do
        attempt=$((attempt + 1))
        dir="$DATA/hold/$srv/r$rep-$attempt"
        out="$WORK/hold-$srv-$rep-$attempt.out"
        start_server "$srv" "$dir" || { NOTES+=("hold: $srv did not start"); return 0; }
        touch_memory $((512 << 20))
        measured "$out" "$TUSLOAD" hold --url "$SRV_URL" --uploads "$HOLD_UPLOADS" \
            --size "$HOLD_SIZE" --piece "$HOLD_PIECE" --interval "$HOLD_INTERVAL" \
            --server-pid "$SRV_PID" --csv || true
        hwm="$(proc_mem "$SRV_PID" VmHWM)"
        stop_server
        done_with "$dir"
        intact="$(csv_field hold 6 "$out")"
        if [ -z "$intact" ]; then
            NOTES+=("hold: $srv failed: $(tail -n 1 "$out")")
            return 0
        fi
        [ "$intact" = "$HOLD_UPLOADS" ] ||
            NOTES+=("hold: $srv #$rep: only $intact of $HOLD_UPLOADS uploads intact")
        FLAG=""
        if disturbed && [ "$attempt" -le "$RETRIES" ]; then
            log "  hold $srv #$rep: other processes used $M_OTHER cores; again"
            continue
        fi
        disturbed && FLAG="disturbed"
        log "  hold $srv #$rep: peak RSS $((hwm / 1024)) MiB, $intact intact, other $M_OTHER cores"
        record "hold $HOLD_UPLOADS: server peak RSS, MiB" "$srv" "$rep" \
            "$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
        record "hold $HOLD_UPLOADS: uploads intact" "$srv" "$rep" "$intact"
        return 0
    done
}

# --------------------------------------------------------------------------------- run
step "servers: ${ALL[*]}; data in $DATA ($(stat -f -c %T "$DATA")); $REPEATS repeats"
for s in "${SKIPPED[@]}"; do log "  skipped: $s"; done
T_START="$(date +%s)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
FLAG=""
M_OTHER=0

for scen in ${SCENARIOS//,/ }; do
    case "$scen" in
        big)
            step "big: one $BIG_SIZE PATCH"
            for ((rep = 1; rep <= REPEATS; rep++)); do
                for srv in $(rotate $((rep - 1)) "${ALL[@]}"); do measure_big "$srv" "$rep"; done
            done
            ;;
        small)
            for conns in "${SMALL_CONNS[@]}"; do
                step "small: $SMALL_SIZE uploads over $conns connections, $SMALL_DUR each"
                for ((rep = 1; rep <= REPEATS; rep++)); do
                    for srv in $(rotate $((rep - 1)) "${TUS_SERVERS[@]}"); do
                        measure_small "$srv" "$conns" "$rep"
                    done
                done
            done
            ;;
        disk)
            for conns in "${SMALL_CONNS[@]}"; do
                step "disk: $SMALL_SIZE uploads over $conns connections, $DISK_DUR each, data in $DISK ($DISK_FS)"
                for ((rep = 1; rep <= REPEATS; rep++)); do
                    for srv in $(rotate $((rep - 1)) "${TUS_SERVERS[@]}"); do
                        measure_small "$srv" "$conns" "$rep" disk
                    done
                done
            done
            ;;
        hold)
            step "hold: $HOLD_UPLOADS uploads of $HOLD_SIZE, $HOLD_PIECE every $HOLD_INTERVAL"
            for ((rep = 1; rep <= REPEATS; rep++)); do
                for srv in $(rotate $((rep - 1)) "${TUS_SERVERS[@]}"); do measure_hold "$srv" "$rep"; done
            done
            ;;
        *) log "unknown scenario $scen (big, small, disk, hold)"; exit 2 ;;
    esac
done
T_END="$(date +%s)"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------------------ report
# The table: one row per metric and server, in the order measured.
table() {
    awk -F'\t' -v ref=tusring-w2 '
    function fmt(v) {
        if (v >= 100) return sprintf("%.0f", v)
        if (v >= 10) return sprintf("%.1f", v)
        return sprintf("%.2f", v)
    }
    function median(key,    n, i, j, t, a) {
        n = split(vals[key], a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
        lo = a[1]; hi = a[n]; cnt = n
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        if (!($1 in seen_m)) { seen_m[$1] = 1; metrics[++nm] = $1 }
        if (!($2 in seen_s)) { seen_s[$2] = 1; servers[++ns] = $2 }
        k = $1 SUBSEP $2
        vals[k] = vals[k] (k in vals ? " " : "") $4
        if ($6 != "") dist[k]++
    }
    END {
        print "| metric | server | median | [min–max] | vs tusring-w2 | runs |"
        print "|---|---|---:|---:|---:|---|"
        for (i = 1; i <= nm; i++) {
            m = metrics[i]
            r = (m SUBSEP ref) in vals ? median(m SUBSEP ref) : ""
            for (j = 1; j <= ns; j++) {
                k = m SUBSEP servers[j]
                if (!(k in vals)) continue
                med = median(k)
                ratio = (r != "" && r + 0 != 0 && m !~ /growth/) ? sprintf("%.2f×", med / r) : "–"
                runs = cnt (dist[k] ? sprintf(" (%d disturbed)", dist[k]) : "")
                printf "| %s | %s | %s | [%s–%s] | %s | %s |\n", m, servers[j], fmt(med), fmt(lo), fmt(hi), ratio, runs
            }
        }
    }' "$RAW"
}

# The same medians pivoted: one row per metric, one column per server (for README).
summary() {
    awk -F'\t' -v ref=tusring-w2 '
    function fmt(v) {
        if (v >= 100) return sprintf("%.0f", v)
        if (v >= 10) return sprintf("%.1f", v)
        return sprintf("%.2f", v)
    }
    function median(key,    n, i, j, t, a) {
        n = split(vals[key], a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        if (!($1 in seen_m)) { seen_m[$1] = 1; metrics[++nm] = $1 }
        if (!($2 in seen_s)) { seen_s[$2] = 1; servers[++ns] = $2 }
        k = $1 SUBSEP $2
        vals[k] = vals[k] (k in vals ? " " : "") $4
    }
    END {
        head = "| median (ratio to " ref ") |"; rule = "|---|"
        for (j = 1; j <= ns; j++) { head = head " " servers[j] " |"; rule = rule "---:|" }
        print head; print rule
        for (i = 1; i <= nm; i++) {
            m = metrics[i]; line = "| " m " |"
            r = (m SUBSEP ref) in vals ? median(m SUBSEP ref) : ""
            for (j = 1; j <= ns; j++) {
                k = m SUBSEP servers[j]
                if (!(k in vals)) { line = line " |"; continue }
                med = median(k); cell = fmt(med)
                if (servers[j] != ref && r != "" && r + 0 != 0 && m !~ /growth|intact/)
                    cell = cell sprintf(" (%.2f×)", med / r)
                line = line " " cell " |"
            }
            print line
        }
    }' "$RAW"
}

version_of() {
    case "$1" in
        tusring-w1|tusring-w2) echo "$("$TUSRING" --version 2>&1 | head -n 1) ($TUSRING)" ;;
        redis-w1|redis-w2)
            echo "$("$TUSRING" --version 2>&1 | head -n 1) ($TUSRING)," \
                "$("$REDIS_SERVER" --version 2>&1 | head -n 1 | awk '{print $1, $2, $3}')"
            ;;
        base-w1|base-w2) echo "$("$TUSRING_BASE" --version 2>&1 | head -n 1) ($TUSRING_BASE)" ;;
        rustus) "$RUSTUS" --version 2>&1 | head -n 1 ;;
        tusd) "$TUSD" -version 2>&1 | grep -m1 -i version || echo "tusd (version unknown)" ;;
        node)
            echo "@tus/server $(node -p "require('$NODE_MODULES/@tus/server/package.json').version" 2>/dev/null || echo '?')," \
                "@tus/file-store $(node -p "require('$NODE_MODULES/@tus/file-store/package.json').version" 2>/dev/null || echo '?')," \
                "node $(node --version)"
            ;;
        iperf3) "$IPERF3" --version 2>&1 | head -n 1 ;;
        sink) echo "tusload sink (this repository), pipe 1 MiB" ;;
    esac
}

DATE="$(date +%F)"
HOST="$(hostname -s 2>/dev/null || hostname)"
if [ -z "$OUT" ]; then
    SUFFIX=""
    [ "$QUICK" = 0 ] || SUFFIX="-quick"
    OUT="$ROOT/benches/results/$DATE-$HOST$SUFFIX.md"
fi
mkdir -p "$(dirname "$OUT")"
# The charts, beside the page, from the same raw values as its tables.
CHARTS=()
if command -v python3 >/dev/null; then
    if CHART_LIST="$(python3 "$ROOT/scripts/bench/charts.py" "$RAW" "${OUT%.md}")"; then
        [ -z "$CHART_LIST" ] || mapfile -t CHARTS <<<"$CHART_LIST"
    else
        NOTES+=("charts: scripts/bench/charts.py failed")
    fi
else
    NOTES+=("charts: python3 not found, none written")
fi
{
    echo "# tusring benchmark, $DATE on $HOST"
    echo
    echo "\`scripts/bench.sh $ARGS\`, $(((T_END - T_START) / 60)) min $(((T_END - T_START) % 60)) s."
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| CPU | $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores |"
    echo "| kernel | $(uname -r) |"
    echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
    echo "| data dir | $(stat -f -c %T "$DATA") ($DATA_PARENT) |"
    [ -z "$DISK" ] || echo "| disk dir (disk rows) | $DISK_FS ($DISK_PARENT, $(df -P "$DISK" | awk 'NR == 2 {print $1}')) |"
    echo "| load average (1, 5, 15 min) | $LOAD_START at the start, $LOAD_END at the end |"
    for s in "${ALL[@]}"; do echo "| $s | $(version_of "$s") |"; done
    echo
    echo "Parameters: $REPEATS repeats per measurement, servers in rotating order, each started"
    echo "fresh on 127.0.0.1; big = one $BIG_SIZE PATCH; small = $SMALL_SIZE creation-with-upload"
    echo "for $SMALL_DUR after $SMALL_WARM of warm-up; hold = $HOLD_UPLOADS uploads of $HOLD_SIZE,"
    echo "$HOLD_PIECE every $HOLD_INTERVAL. tusring-wN and base-wN: \`--workers N\`; redis-wN: \`--workers N\` with"
    echo "\`--info-storage redis-info-storage\` on a loopback redis-server of the run's own (its CPU counted as the server's);"
    echo "rustus: \`-w 2 -m 2000000000\`."
    if [ -n "$DISK" ]; then
        echo "Disk rows (\`small N conn, disk\`): the same uploads with the data on $DISK_FS, $DISK_DUR after"
        echo "$DISK_WARM of warm-up per run; files kept until the end of the run, the file system synced"
        echo "before each timed run; no server fsyncs (an upload is acknowledged from the page cache);"
        echo "the kernel's writeback done during a run counts as other processes' CPU."
    fi
    echo "Ratios: this server's median / tusring-w2's median (for p99, CPU and RSS lower is better)."
    echo "A run is disturbed when other processes used more than $OTHER_MAX cores during it."
    echo
    table
    echo
    echo "The medians side by side:"
    echo
    summary
    echo
    if [ ${#CHARTS[@]} -gt 0 ]; then
        echo "Charts of the same raw values (bars: medians; whiskers: min–max):"
        echo
        for c in "${CHARTS[@]}"; do
            c="$(basename "$c")"
            echo "![${c%.svg}]($c)"
            echo
        done
    fi
    if [ ${#SKIPPED[@]} -gt 0 ] || [ ${#NOTES[@]} -gt 0 ]; then
        echo "Notes:"
        echo
        for s in "${SKIPPED[@]}"; do echo "- skipped $s"; done
        if [ ${#NOTES[@]} -gt 0 ]; then
            printf '%s\n' "${NOTES[@]}" | sort | uniq -c | sed 's/^ *\([0-9]*\) \(.*\)/- \2 (x\1)/'
        fi
        echo
    fi
    echo "<details><summary>raw values (metric, server, repeat, value, other processes' cores, disturbed)</summary>"
    echo
    echo '```'
    cut -f1-6 "$RAW"
    echo '```'
    echo
    echo "</details>"
} >"$OUT"

echo
table
echo
[ ${#NOTES[@]} -eq 0 ] || { printf '%s\n' "${NOTES[@]}" | sort | uniq -c; echo; }
echo "written to ${OUT#"$ROOT"/}"
for c in "${CHARTS[@]}"; do echo "written to ${c#"$ROOT"/}"; done
