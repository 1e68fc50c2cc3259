#!/usr/bin/env bash
# What one small upload costs a server: 4 KiB creation-with-upload (POST with the body)
# over N keep-alive connections, counted per upload, so that the figures hardly depend
# on how busy the machine is (unlike uploads/s).
#
#   scripts/bench/profile-small.sh [--server tusring|rustus] [--workers N] [--conns N]
#                                  [--seconds S] [--size SIZE] [--data-dir DIR]
#                                  [--no-trace] [--strace] [--pin SERVER:CLIENT]
#
#   --server   tusring (target/release/tusring, or $TUSRING_BIN) or rustus ($RUSTUS_BIN
#              or rustus on PATH, started with -w 2 as bench.sh does); default tusring
#   --workers  tusring's --workers (default 1)
#   --conns    connections of the load generator (default 1)
#   --seconds  length of each run (default 3)
#   --data-dir where the uploads go (default a fresh directory in /dev/shm); each run
#              gets a fresh subdirectory, kept until the end (mass deletes slow file
#              creation on ext4: see bench.sh)
#   --no-trace skip the perf runs (only CPU and context switches from /proc)
#   --strace   also count the system calls by name with `strace -f -c` (slows the
#              server a lot: only its counts are meaningful)
#   --pin S:C  run the server on the CPUs S and the load generator on the CPUs C
#              (taskset -c lists, e.g. 1:0), so that they do not share a CPU: what
#              bounds --workers 2 against 1 on a small machine. The server's threads,
#              its io-wq workers included, are listed with the CPUs they may use.
#
# Runs, each with a freshly started server and `tusload small --warmup 0`; the uploads
# are counted as the `.info` records the run left:
#   1. plain: uploads/s, server and client CPU per upload (utime+stime from
#      /proc/PID/stat, all threads, those that ended included), the server's CPU by
#      thread kind (core threads, io-wq workers `iou-wrk-*`, file threads, others), context switches
#      per upload (/proc/PID/task/*/status, live threads only);
#   2. perf stat (unless --no-trace): per upload, context switches, system calls, and
#      the io_uring tracepoints: requests submitted, requests punted to io-wq worker
#      threads (io_uring_queue_async_work), polls armed, task-work runs;
#   3. perf record (unless --no-trace): the submitted and the punted requests by opcode;
#   4. with --strace: system calls by name.
# Needs root (or perf_event_paranoid <= 1) for the tracepoints.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"

SERVER=tusring WORKERS=1 CONNS=1 SECS=3 SIZE=4K DATA_PARENT="" TRACE=1 STRACE=0 PIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER="$2"; shift ;;
        --workers) WORKERS="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --seconds) SECS="$2"; shift ;;
        --size) SIZE="$2"; shift ;;
        --data-dir) DATA_PARENT="$2"; shift ;;
        --no-trace) TRACE=0 ;;
        --strace) STRACE=1 ;;
        --pin) PIN="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "profile-small.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TUSLOAD="$TARGET_DIR/release/tusload"
case "$SERVER" in
    tusring) BIN="${TUSRING_BIN:-$TARGET_DIR/release/tusring}" ;;
    rustus) BIN="${RUSTUS_BIN:-$(command -v rustus || true)}" ;;
    *) echo "profile-small.sh: --server tusring or rustus" >&2; exit 2 ;;
esac
[ -x "$BIN" ] && [ -x "$TUSLOAD" ] || {
    echo "profile-small.sh: missing $BIN or $TUSLOAD (cargo build --release)" >&2
    exit 1
}
SRV_PIN=() CLI_PIN=()
if [ -n "$PIN" ]; then
    case "$PIN" in
        ?*:?*) ;;
        *) echo "profile-small.sh: --pin SERVER_CPUS:CLIENT_CPUS, e.g. 1:0" >&2; exit 2 ;;
    esac
    command -v taskset >/dev/null || { echo "profile-small.sh: --pin needs taskset" >&2; exit 1; }
    SRV_PIN=(taskset -c "${PIN%%:*}") CLI_PIN=(taskset -c "${PIN#*:}")
fi
[ -n "$DATA_PARENT" ] || DATA_PARENT=/dev/shm
mkdir -p "$DATA_PARENT"
DATA="$(mktemp -d "$DATA_PARENT/tusring-profile.XXXXXX")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tusring-profile-work.XXXXXX")"
TCK="$(getconf CLK_TCK)"
SRV_PID=""

cleanup() {
    local rc=$?
    stop_server
    rm -rf "$DATA" "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port, wait_port
# shellcheck source=lib.sh
source "$ROOT/scripts/bench/lib.sh"

start_server() {
    local dir="$1"
    mkdir -p "$dir"
    PORT="$(free_port)"
    case "$SERVER" in
        tusring)
            "${SRV_PIN[@]}" "$BIN" --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
                --data-dir "$dir" --info-dir "$dir" --log-level ERROR >"$dir.log" 2>&1 &
            ;;
        rustus)
            "${SRV_PIN[@]}" "$BIN" --host 127.0.0.1 --port "$PORT" --data-dir "$dir" \
                --info-dir "$dir" -w 2 -m 2000000000 --log-level ERROR >"$dir.log" 2>&1 &
            ;;
    esac
    SRV_PID=$!
    wait_port "$PORT" "$SRV_PID" && return 0
    echo "profile-small.sh: the server did not start:" >&2
    cat "$dir.log" >&2
    exit 1
}

stop_server() {
    [ -n "$SRV_PID" ] || return 0
    kill -TERM "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}

proc_cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
children_cpu() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $9; exit}' /proc/stat; }

# CPU ticks of the live threads of $1 by kind: "core io-wq files other".
threads_cpu() {
    local t comm ticks core=0 iowq=0 files=0 other=0
    for t in /proc/"$1"/task/*; do
        comm="$(cat "$t/comm" 2>/dev/null)" || continue
        ticks="$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}')" || continue
        case "$comm" in
            iou-wrk-*|iou-sqp-*) iowq=$((iowq + ticks)) ;;
            tusring-core*|tusring-c*) core=$((core + ticks)) ;;
            tusring-files*) files=$((files + ticks)) ;;
            *) other=$((other + ticks)) ;;
        esac
    done
    echo "$core $iowq $files $other"
}

# Context switches (voluntary + involuntary) of the live threads of $1.
ctxsw() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}'
}

uploads_in() { find "$1" -name '*.info' | wc -l; }

load() {
    "${CLI_PIN[@]}" "$TUSLOAD" small --url "http://127.0.0.1:$PORT/files" --size "$SIZE" --conns "$CONNS" \
        --duration "${SECS}s" --warmup 0s --csv
}

echo "# $SERVER$([ "$SERVER" = tusring ] && echo " --workers $WORKERS"), $SIZE creation-with-upload, $CONNS connection(s), ${SECS} s per run"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$PIN" ] || echo "# pinned: server on CPUs ${PIN%%:*}, load generator on CPUs ${PIN#*:}"

# 1. plain
dir="$DATA/plain"
start_server "$dir"
sleep 0.2
s0="$(proc_cpu "$SRV_PID")" c0="$(children_cpu)" b0="$(machine_busy)" x0="$(ctxsw "$SRV_PID")"
t0="$(date +%s.%N)"
load >"$WORK/plain.out"
t1="$(date +%s.%N)"
s1="$(proc_cpu "$SRV_PID")" c1="$(children_cpu)" b1="$(machine_busy)" x1="$(ctxsw "$SRV_PID")"
read -r tcore tiowq tfiles tother < <(threads_cpu "$SRV_PID")
if [ -n "$PIN" ]; then
    echo "server threads and the CPUs they may use:"
    for t in /proc/"$SRV_PID"/task/*; do
        printf '  %-16s %s\n' "$(cat "$t/comm" 2>/dev/null)" \
            "$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null)"
    done | sort | uniq -c
fi
stop_server
n="$(uploads_in "$dir")"
awk -v n="$n" -v s="$((s1 - s0))" -v c="$((c1 - c0))" -v b="$((b1 - b0))" -v x="$((x1 - x0))" \
    -v t0="$t0" -v t1="$t1" -v tck="$TCK" -v core="$tcore" -v iowq="$tiowq" -v files="$tfiles" -v other="$tother" 'BEGIN {
    w = t1 - t0; us = 1e6 / tck
    printf "uploads                      %d (%.0f/s)\n", n, n / w
    printf "server CPU per upload        %.1f us\n", s * us / n
    printf "  of which (whole run, live threads): core threads %.1f us, io-wq %.1f us, file threads %.1f us, other %.1f us, ended threads %.1f us\n",
        core * us / n, iowq * us / n, files * us / n, other * us / n, (s - core - iowq - files - other) * us / n
    printf "client CPU per upload        %.1f us\n", c * us / n
    printf "other processes              %.2f cores\n", (b - s - c) / tck / w
    printf "server context switches      %.2f per upload (live threads)\n", x / n
}'

if [ "$TRACE" = 1 ]; then
    EV=context-switches,cpu-migrations,raw_syscalls:sys_enter
    EV="$EV,io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work"
    EV="$EV,io_uring:io_uring_poll_arm,io_uring:io_uring_task_add"
    EV="$EV,io_uring:io_uring_task_work_run,io_uring:io_uring_complete"
    # 2. perf stat
    dir="$DATA/stat"
    start_server "$dir"
    sleep 0.2
    perf stat -x, -e "$EV" -p "$SRV_PID" -o "$WORK/stat.csv" &
    PERF=$!
    sleep 0.3
    load >"$WORK/stat.out"
    kill -INT "$PERF"
    wait "$PERF" || true
    stop_server
    n="$(uploads_in "$dir")"
    echo "per upload (perf stat, $n uploads):"
    awk -F, -v n="$n" '$3 != "" && $1 ~ /^[0-9.]+$/ { printf "  %-36s %8.2f\n", $3, $1 / n }' "$WORK/stat.csv"

    # 3. perf record: opcodes
    dir="$DATA/record"
    start_server "$dir"
    sleep 0.2
    perf record -q -e io_uring:io_uring_submit_req -e io_uring:io_uring_queue_async_work \
        -p "$SRV_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
    PERF=$!
    sleep 0.3
    load >"$WORK/record.out"
    kill -INT "$PERF"
    wait "$PERF" || true
    stop_server
    n="$(uploads_in "$dir")"
    echo "io_uring requests per upload, by opcode ($n uploads): submitted / punted to io-wq"
    perf script -i "$WORK/perf.data" -F event,trace 2>/dev/null | awk -v n="$n" '
        { op = ""; for (i = 1; i <= NF; i++) if ($i == "opcode") { op = $(i + 1); sub(/,$/, "", op) } }
        /io_uring_submit_req/ { sub_[op]++; ops[op] = 1 }
        /io_uring_queue_async_work/ { punt[op]++; ops[op] = 1 }
        END { for (o in ops) printf "  %-14s %6.2f / %6.2f\n", o, sub_[o] / n, punt[o] / n }' | sort
fi

if [ "$STRACE" = 1 ]; then
    dir="$DATA/strace"
    start_server "$dir"
    sleep 0.2
    strace -f -c -o "$WORK/strace.txt" -p "$SRV_PID" &
    ST=$!
    sleep 0.5
    load >"$WORK/strace.out"
    kill -INT "$ST"
    wait "$ST" || true
    stop_server
    n="$(uploads_in "$dir")"
    echo "system calls per upload (strace -f -c, $n uploads):"
    # Columns: % time, seconds, usecs/call, calls, [errors], syscall.
    awk -v n="$n" '$1 ~ /^[0-9.]+$/ && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" {
        printf "  %-20s %6.2f\n", $NF, $4 / n }' "$WORK/strace.txt"
fi
