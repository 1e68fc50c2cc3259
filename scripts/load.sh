#!/usr/bin/env bash
# Holds tusring under a mixed load and checks that nothing leaks and nothing is lost.
#
#   scripts/load.sh [--conns C] [--duration S] [--size N] [--workers W] [--debug]
#                   [--no-build] [--rss-tol MIB] [--fd-tol N] [--data-dir DIR]
#
# Defaults: 2000 connections for 60 s, uploads of 1 B..64 KiB, --workers 2, release build.
#
# What it does:
#   1. builds tusring and tusload (release; --debug uses the debug build; --no-build
#      uses what is in target/ as it is);
#   2. raises the open-file limit (the C connections are open at both ends, client and
#      server, each in its own process) and starts tusring --workers W on 127.0.0.1 port 0
#      with its data and info in a fresh directory (on /dev/shm when it is tmpfs: a
#      minute of uploads creates tens of thousands of files; --data-dir DIR puts the
#      directory under DIR instead);
#   3. warms up (`tusload mix` with 50 connections for 3 s, so that the per-core buffer
#      pools and the allocator's arenas have grown), waits for the connections to close,
#      and takes the baseline: the daemon's VmRSS (/proc/PID/status) and its open file
#      descriptors (`ls /proc/PID/fd | wc -l`);
#   4. runs `tusload mix --conns C --duration S` (see `tusload --help`: creations,
#      PATCHes, HEADs and DELETEs; the only 4xx it accepts are 409 for its deliberate
#      wrong offsets and 404/410 after a DELETE), sampling RSS and fds every second;
#   5. after the run, waits up to 30 s for the fds to come back to the baseline (+ the
#      tolerance, 8 by default) and checks that RSS is back within --rss-tol MiB (64 by
#      default) of the baseline;
#   6. verifies every upload the run kept: HEAD offset == length, and the data file under
#      the data directory byte for byte (`tusload verify --data-dir`);
#   7. checks the daemon's log has no panic, and prints a summary.
#
# Exit status: 0 when every check passed, 1 otherwise. The daemon is stopped and its
# directory removed in any case. The load stays on 127.0.0.1 and ends by itself.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

CONNS=2000
DURATION=60
SIZE=64K
WORKERS=2
PROFILE=release
BUILD=1
RSS_TOL_MIB=64
FD_TOL=8
PARENT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --conns) CONNS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --debug) PROFILE=debug; shift ;;
        --no-build) BUILD=0; shift ;;
        --rss-tol) RSS_TOL_MIB=$2; shift 2 ;;
        --fd-tol) FD_TOL=$2; shift 2 ;;
        --data-dir) PARENT=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*"; }

if [ "$BUILD" = 1 ]; then
    step "cargo build ($PROFILE): tusring, tusload"
    if [ "$PROFILE" = release ]; then
        cargo build --release --bin tusring --bin tusload || exit 1
    else
        cargo build --bin tusring --bin tusload || exit 1
    fi
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
for b in tusring tusload; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing (build it or drop --no-build)" >&2; exit 1; }
done

# Both processes hold C sockets (plus files, pipes and the listeners).
WANT_FDS=$((CONNS * 2 + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$WANT_FDS" ]; then
    ulimit -n "$WANT_FDS" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
fi
echo "open-file limit $(ulimit -n)"

if [ -z "$PARENT" ]; then
    PARENT="${TMPDIR:-/tmp}"
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" != tmpfs ] || PARENT=/dev/shm
fi
WORK="$(mktemp -d "$PARENT/tusring-load.XXXXXX")"
PID=""
SAMPLER=""
finish() {
    [ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap finish EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$PID/fd" 2>/dev/null | wc -l; }

step "start tusring --workers $WORKERS (data in $WORK)"
"$BIN/tusring" --host 127.0.0.1 --port 0 --workers "$WORKERS" --data-dir "$WORK/data" \
    --info-dir "$WORK/data" --disable-access-log 2>"$WORK/server.log" &
PID=$!
ADDR=""
for _ in $(seq 1 300); do
    ADDR="$(grep -o -m1 'listening on http://[^ ]*' "$WORK/server.log" | sed 's|.*http://||')"
    [ -z "$ADDR" ] || break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    echo "tusring did not start; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
URL="http://$ADDR/files"
echo "tusring pid $PID at $URL"

# Waits (up to $1 s) for the fd count to drop to at most $2; prints the last count.
wait_fds() {
    local n
    n=$(fds)
    for _ in $(seq 1 $(($1 * 10))); do
        [ "$n" -gt "$2" ] || break
        sleep 0.1
        n=$(fds)
    done
    echo "$n"
}

step "warm-up: tusload mix, 50 connections, 3 s"
"$BIN/tusload" mix --url "$URL" --conns 50 --duration 3s --size "$SIZE" --seed 7 \
    >"$WORK/warmup.out" 2>&1 || { cat "$WORK/warmup.out"; echo "warm-up failed" >&2; exit 1; }
fds_idle=$(fds)
# The warm-up's connections are closed by now or within moments; take the lowest count.
sleep 1
BASE_FDS=$(wait_fds 10 0)
BASE_RSS=$(rss_kib)
echo "baseline: RSS $((BASE_RSS / 1024)) MiB, $BASE_FDS fds (right after the warm-up: $fds_idle)"

step "load: tusload mix --conns $CONNS --duration ${DURATION}s --size $SIZE"
(
    t0=$SECONDS
    while kill -0 "$PID" 2>/dev/null; do
        echo "$((SECONDS - t0)) $(rss_kib) $(fds)"
        sleep 1
    done
) >"$WORK/samples" &
SAMPLER=$!
"$BIN/tusload" mix --url "$URL" --conns "$CONNS" --duration "${DURATION}s" --size "$SIZE" \
    --ids-file "$WORK/kept.ids" 2>&1 | tee "$WORK/mix.out"
MIX_RC=${PIPESTATUS[0]}
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
SAMPLER=""
PEAK_RSS=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$WORK/samples")
PEAK_FDS=$(awk 'BEGIN {m = 0} $3 > m {m = $3} END {print m}' "$WORK/samples")

step "after the load: fds back to baseline (+$FD_TOL), RSS within $RSS_TOL_MIB MiB"
t_wait=$SECONDS
AFTER_FDS=$(wait_fds 30 $((BASE_FDS + FD_TOL)))
fd_secs=$((SECONDS - t_wait))
AFTER_RSS=$(rss_kib)
failures=()
[ "$MIX_RC" = 0 ] || failures+=("tusload mix exited $MIX_RC (errors above)")
[ "$AFTER_FDS" -le $((BASE_FDS + FD_TOL)) ] ||
    failures+=("fds: $AFTER_FDS after the load, baseline $BASE_FDS (+$FD_TOL allowed)")
[ "$AFTER_RSS" -le $((BASE_RSS + RSS_TOL_MIB * 1024)) ] ||
    failures+=("RSS: $((AFTER_RSS / 1024)) MiB after the load, baseline $((BASE_RSS / 1024)) MiB (+$RSS_TOL_MIB allowed)")
kill -0 "$PID" 2>/dev/null || failures+=("tusring is no longer running")

step "verify the kept uploads byte for byte"
if [ -f "$WORK/kept.ids" ]; then
    "$BIN/tusload" verify --ids-file "$WORK/kept.ids" --data-dir "$WORK/data" 2>&1 |
        tee "$WORK/verify.out"
    [ "${PIPESTATUS[0]}" = 0 ] || failures+=("verify failed")
else
    failures+=("no ids file from tusload mix")
fi
if grep -n -m5 -i 'panic' "$WORK/server.log"; then
    failures+=("the daemon's log has a panic")
fi

step "summary"
printf 'load          %s connections, %s s, uploads 1 B..%s, tusring --workers %s (%s)\n' \
    "$CONNS" "$DURATION" "$SIZE" "$WORKERS" "$PROFILE"
grep -E '^  (requests|latency|scenarios|expected|errors)' "$WORK/mix.out"
printf 'verify        %s\n' "$(grep -E '^verify:' "$WORK/verify.out" 2>/dev/null || echo '-')"
printf 'server RSS    baseline %d MiB, peak %d MiB, after %d MiB\n' \
    $((BASE_RSS / 1024)) $((PEAK_RSS / 1024)) $((AFTER_RSS / 1024))
printf 'server fds    baseline %d, peak %d, after %d (%d s after the load)\n' \
    "$BASE_FDS" "$PEAK_FDS" "$AFTER_FDS" "$fd_secs"
printf 'machine       %s cores, load average %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
if [ ${#failures[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failures[@]}"
    exit 1
fi
echo "load test passed"
