#!/usr/bin/env bash
# tusring under a live systemd: boots a Debian bookworm guest (systemd 252 as its PID 1)
# with systemd-nspawn, installs tusring into it with scripts/install.sh --destdir, and
# checks the unit for real:
#
#   1. `systemctl start` returns only once the daemon is serving (Type=notify, READY=1):
#      the unit is active, `systemctl status` shows the daemon's STATUS= line, /health
#      answers at once, the daemon runs as a transient user (DynamicUser=) and logs to
#      the journal.
#   2. An upload from the host (the guest shares the host's network: 127.0.0.1 and a
#      free port set in /etc/tusring/tusring.env) is half written, then the daemon is
#      killed (`systemctl kill -s KILL`): systemd restarts it (Restart=on-failure), HEAD
#      gives the same offset, the upload is finished and reads back byte for byte.
#   3. A file hook (/etc/tusring/hooks/evidence) runs under the unit's sandbox for every
#      event and leaves its evidence in the state directory: it ran as the transient user,
#      with no_new_privs, and /etc was read-only for it.
#   4. `systemctl stop` with a slow PATCH in flight: the unit goes through STOPPING=1
#      (deactivating, "stopping: ..." status), the daemon exits 0 well within
#      TimeoutStopSec, the bytes of the cut PATCH are kept; then the guest powers off
#      cleanly.
#
#   scripts/systemd-test.sh [--binary FILE]
#
#   --binary FILE  the tusring binary to install (default: the debug build,
#                  ${CARGO_TARGET_DIR:-target}/debug/tusring; build it first)
#
# It needs root, Linux and a working systemd-nspawn. Otherwise it prints
# "systemd-test: SKIP: <why>" and exits 0 (TUSRING_REQUIRE_SYSTEMD=1 makes that a
# failure; TUSRING_SYSTEMD_TEST=0 skips it on purpose). On Debian it installs debootstrap
# and systemd-container with apt-get when they are missing. Any failed check exits 1
# after printing the unit's status and journal.
#
# The guest tree (debootstrap --variant=minbase, plus systemd, systemd-sysv and dbus, from
# the Debian mirror apt uses here) is built once and cached under
# ${TUSRING_CI_CACHE:-/var/cache/tusring-ci}, keyed on what it contains; each run boots
# a throw-away overlay of it, so a run never changes the cache. About 2 minutes the first
# time on a machine (mostly debootstrap), 11-15 s after that.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINARY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) [ $# -ge 2 ] || { echo "--binary needs a file" >&2; exit 2; }; BINARY="$2"; shift 2 ;;
    --binary=*) BINARY="${1#*=}"; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "systemd-test.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
BINARY="${BINARY:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/tusring}"

# What the guest is made of. Changing any of it (or GUEST_RECIPE, for a change in how the
# tree is prepared below) makes a new cache entry.
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus
GUEST_RECIPE=1
CACHE="${TUSRING_CI_CACHE:-/var/cache/tusring-ci}"
# Bounds of the waits (seconds).
BOOT_WAIT=90
START_WAIT=30
RESTART_WAIT=30
POWEROFF_WAIT=60

STARTED=$SECONDS
say() { printf 'systemd-test: %s\n' "$*"; }
step() { printf '\n--> systemd-test: %s (%ss)\n' "$*" "$((SECONDS - STARTED))"; }
skip() {
    if [ "${TUSRING_REQUIRE_SYSTEMD:-0}" = 1 ]; then
        say "FAIL: cannot run (TUSRING_REQUIRE_SYSTEMD=1): $*" >&2
        exit 1
    fi
    say "SKIP: $*"
    exit 0
}

# ------------------------------------------------------------------ can it run here?
if [ "${TUSRING_SYSTEMD_TEST:-1}" = 0 ]; then
    skip "TUSRING_SYSTEMD_TEST=0"
fi
[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn boots the guest); run as root to test the unit under systemd"
[ -x "$BINARY" ] || { say "FAIL: no tusring binary at $BINARY (cargo build first, or --binary FILE)" >&2; exit 1; }
for tool in curl python3 flock nsenter mount; do
    command -v "$tool" >/dev/null || skip "$tool is missing"
done

need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v systemd-nspawn >/dev/null || need_pkgs+=(systemd-container)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "${need_pkgs[*]} missing and no apt-get to install them"
    step "apt-get install ${need_pkgs[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

# ---------------------------------------------------------------- the guest tree, cached
# The Debian mirror apt already uses on this machine.
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror="$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit} $1=="deb" {print $3; exit}' /etc/apt/sources.list)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
key="$(printf '%s\n' "$SUITE" minbase "$INCLUDE" "$arch" "$mirror" "$GUEST_RECIPE" | sha256sum | cut -c1-16)"
GUEST="$CACHE/guest-$SUITE-$key"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
# Shared while a run uses the tree, exclusive while it is built or old ones are removed.
flock -x 9
if [ ! -f "$GUEST/complete" ]; then
    step "debootstrap $SUITE (minbase + $INCLUDE) from $mirror into $GUEST (cached for later runs)"
    rm -rf "$GUEST" "$GUEST.build"
    mkdir -p "$GUEST.build"
    # dpkg syncs every file it unpacks: on tmpfs, where a sync costs nothing, debootstrap
    # took half the time (80 s instead of 173 s here); the tree is copied to the cache after.
    work="$GUEST.build"
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] &&
        [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt $((1024 * 1024)) ]; then
        work="$(mktemp -d /dev/shm/tusring-guest.XXXXXX)"
        trap 'rm -rf "$work"' EXIT
    fi
    keyring=()
    [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ] ||
        keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    if ! debootstrap --variant=minbase --include="$INCLUDE" "${keyring[@]}" "$SUITE" \
        "$work/tree" "$mirror" >"$GUEST.build/debootstrap.log" 2>&1; then
        tail -n 30 "$GUEST.build/debootstrap.log" >&2
        say "FAIL: debootstrap failed (log above)" >&2
        exit 1
    fi
    t="$work/tree"
    # Smaller and quicker to boot: no downloaded packages, no console login or timers; an
    # empty /etc/machine-id, so the guest's systemd makes a transient one at each boot.
    rm -f "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/*_Packages
    : >"$t/etc/machine-id"
    echo tusring-guest >"$t/etc/hostname"
    for unit in console-getty.service getty@.service systemd-timesyncd.service \
        apt-daily.timer apt-daily-upgrade.timer; do
        ln -sf /dev/null "$t/etc/systemd/system/$unit"
    done
    if [ "$work" != "$GUEST.build" ]; then
        cp -a "$work/tree" "$GUEST.build/tree"
        rm -rf "$work"
        trap - EXIT
    fi
    touch "$GUEST.build/complete"
    mv "$GUEST.build" "$GUEST"
    say "guest tree: $(du -sh "$GUEST/tree" | cut -f1)"
fi
# Entries for other recipes are never used again; remove them.
for old in "$CACHE"/guest-*; do
    [ "$old" = "$GUEST" ] || [ ! -e "$old" ] || rm -rf "$old"
done
flock -s 9

# ------------------------------------------------------------------------ one run's root
RUN="$(mktemp -d "${TMPDIR:-/tmp}/tusring-systemd.XXXXXX")"
GROOT="$RUN/root"
OVERLAY=0
NSPAWN=""
GPID=""
MACHINE="tusring-ci-$$"
finish() {
    local rc=$?
    set +e
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        # SIGTERM makes nspawn ask the guest's systemd to power off; then it is forced.
        kill -TERM "$NSPAWN"
        for _ in $(seq 1 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$NSPAWN" 2>/dev/null; then
            [ -z "$GPID" ] || kill -KILL "$GPID"
            kill -KILL "$NSPAWN"
        fi
        wait "$NSPAWN" 2>/dev/null
    fi
    if [ "$OVERLAY" = 1 ]; then
        umount "$GROOT" 2>/dev/null || umount -l "$GROOT"
    fi
    rm -rf "$RUN"
    exit "$rc"
}
trap finish EXIT

mkdir -p "$RUN/upper" "$RUN/work" "$GROOT"
if mount -t overlay overlay -o "lowerdir=$GUEST/tree,upperdir=$RUN/upper,workdir=$RUN/work" \
    "$GROOT" 2>"$RUN/overlay.err"; then
    OVERLAY=1
else
    say "no overlayfs here ($(cat "$RUN/overlay.err")); copying the guest tree instead"
    rm -rf "$GROOT"
    cp -a "$GUEST/tree" "$GROOT"
fi

# Can nspawn run a container at all? (Not: can it boot; that is tested below.)
if ! systemd-nspawn -q -D "$GROOT" --register=no --keep-unit --pipe /bin/true \
    </dev/null >"$RUN/probe.log" 2>&1; then
    skip "systemd-nspawn cannot run a container here: $(tr '\n' ' ' <"$RUN/probe.log")"
fi

# -------------------------------------------------------------------- the checks
CHECKS=0
ok() { CHECKS=$((CHECKS + 1)); say "ok: $*"; }
guest() {
    nsenter -t "$GPID" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
}
prop() { guest systemctl show tusring.service -p "$1" --value; }
fail() {
    say "FAIL: $*" >&2
    if [ -n "$GPID" ] && kill -0 "$GPID" 2>/dev/null; then
        echo "---- systemctl status tusring" >&2
        guest systemctl status tusring.service --no-pager -l >&2 || true
        echo "---- journalctl -u tusring (last 60 lines)" >&2
        guest journalctl -u tusring.service --no-pager -n 60 >&2 || true
    fi
    echo "---- systemd-nspawn's output (last 20 lines)" >&2
    tail -n 20 "$RUN/nspawn.log" >&2 2>/dev/null || true
    exit 1
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
    local limit="$1" what="$2" end=$((SECONDS + $1))
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || fail "$what: not within ${limit} s"
        sleep 0.2
    done
}

# HTTP from the host. http METHOD URL [curl args]: prints the status code; the answer's
# head is in $RUN/head, its body in $RUN/body.
http() {
    local method="$1" url="$2"
    shift 2
    local how=(-X "$method")
    [ "$method" != HEAD ] || how=(-I)
    curl -sS --noproxy '*' --max-time 30 "${how[@]}" -H 'Tus-Resumable: 1.0.0' \
        -D "$RUN/head" -o "$RUN/body" -w '%{http_code}' "$@" "$url" || echo "curl-failed"
}
header() { tr -d '\r' <"$RUN/head" | awk -v h="$(echo "$1" | tr '[:upper:]' '[:lower:]')" \
    'BEGIN{FS=": "} tolower($1)==h {v=substr($0, length($1)+3)} END{print v}'; }
expect() { # expect WHAT WANTED GOT
    [ "$2" = "$3" ] || fail "$1: expected $2, got $3 $(head -c 300 "$RUN/body" 2>/dev/null)"
}

# A port for the guest's daemon, free now, below the ephemeral range that tests using
# port 0 (and outgoing connections) draw from, so nothing else picks it meanwhile.
PORT="$(python3 - <<'EOF'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()
EOF
)"
[ -n "$PORT" ] || fail "found no free port"
BASE="http://127.0.0.1:$PORT"

step "boot the guest ($MACHINE): systemd-nspawn --boot, host network"
systemd-nspawn -D "$GROOT" --boot --register=no --keep-unit --machine "$MACHINE" \
    --console=passive </dev/null >"$RUN/nspawn.log" 2>&1 9>&- &
NSPAWN=$!
guest_pid1() {
    kill -0 "$NSPAWN" 2>/dev/null || fail "systemd-nspawn exited during boot"
    GPID="$(ps --ppid "$NSPAWN" -o pid=,comm= | awk '$2=="systemd"{print $1; exit}')"
    [ -n "$GPID" ]
}
wait_for 30 "the guest's PID 1 (systemd)" guest_pid1
booted() {
    local state
    state="$(guest systemctl is-system-running 2>/dev/null)" || true
    case "$state" in
    running | degraded) return 0 ;;
    stopping | maintenance) fail "the guest's systemd is $state" ;;
    *) return 1 ;; # initializing, starting, or "offline" until it answers on its socket
    esac
}
wait_for "$BOOT_WAIT" "the guest finishing its boot" booted
say "guest up: $(guest systemctl --version | head -n 1), $(guest systemctl is-system-running || true)"
failed="$(guest systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
[ -z "$failed" ] || say "note: units failed in the guest (not tusring's): $failed"

step "scripts/install.sh --destdir <guest root> --binary $BINARY"
"$ROOT/scripts/install.sh" --destdir "$GROOT" --binary "$BINARY" | sed 's/^/    /'
[ -x "$GROOT/usr/local/bin/tusring" ] || fail "install.sh did not install /usr/local/bin/tusring"
# The settings a user would change: the port, and a hook. The installed env file is the
# shipped example (every line commented out); these lines come after it.
mkdir -p "$GROOT/etc/tusring/hooks"
cat >>"$GROOT/etc/tusring/tusring.env" <<EOF

# ---- added by scripts/systemd-test.sh
RUSTUS_SERVER_HOST=127.0.0.1
RUSTUS_SERVER_PORT=$PORT
RUSTUS_WORKERS=2
RUSTUS_SHUTDOWN_TIMEOUT=3
RUSTUS_HOOKS_FILE=/etc/tusring/hooks/evidence
EOF
# The hook: root-owned in /etc (read-only for the service, as the README advises); it
# writes one line per event into the state directory, the one place it may write.
cat >"$GROOT/etc/tusring/hooks/evidence" <<'EOF'
#!/bin/sh
# run by tusring for every event as: evidence <event> <json>
if touch /etc/tusring/hook-probe 2>/dev/null; then etc=rw; rm -f /etc/tusring/hook-probe; else etc=ro; fi
nnp="$(awk '/^NoNewPrivs:/{print $2}' /proc/self/status)"
printf '%s uid=%s nnp=%s etc=%s %s\n' "$1" "$(id -u)" "$nnp" "$etc" "$2" >>/var/lib/tusring/hook-evidence
echo "evidence hook ran for $1"
EOF
chmod 0755 "$GROOT/etc/tusring/hooks/evidence"

step "systemctl enable tusring; systemctl start tusring (Type=notify: returns at READY=1)"
guest systemctl daemon-reload
guest systemctl enable tusring.service 2>&1 | sed 's/^/    /'
expect "Type= of the installed unit" notify "$(prop Type)"
t0=$SECONDS
if ! guest timeout "$START_WAIT" systemctl start tusring.service; then
    fail "systemctl start tusring did not succeed within $START_WAIT s (no READY=1?)"
fi
# Type=notify: the start job ended at READY=1, which carries the first STATUS= line, and
# READY=1 comes only once every listener is bound. So all of this holds at once, no retry.
expect "ActiveState right after start" active "$(prop ActiveState)"
expect "SubState right after start" running "$(prop SubState)"
status_text="$(prop StatusText)"
case "$status_text" in
"serving on 127.0.0.1:$PORT: 2 core(s),"*) ok "started in $((SECONDS - t0)) s; STATUS: $status_text" ;;
*) fail "StatusText right after start is '$status_text', not the daemon's READY=1 status" ;;
esac
expect "GET /health right after start" 200 "$(http GET "$BASE/health")"
ok "/health answers 200 as soon as systemctl start returns"
guest systemctl status tusring.service --no-pager -l >"$RUN/status.txt" || true
sed 's/^/    /' "$RUN/status.txt"
grep -q 'Active: active (running)' "$RUN/status.txt" || fail "systemctl status does not say active (running)"
grep -qF "Status: \"serving on 127.0.0.1:$PORT" "$RUN/status.txt" || fail "systemctl status shows no STATUS= line"
ok "systemctl status: active (running), with the daemon's status line"
main_pid="$(prop MainPID)"
uid="$(guest awk '/^Uid:/{print $2}' "/proc/$main_pid/status")"
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "the daemon runs as uid '$uid', not a transient user"
state_uid="$(stat -c %u "$GROOT/var/lib/private/tusring")"
expect "owner of the state directory /var/lib/private/tusring" "$uid" "$state_uid"
ok "DynamicUser: the daemon runs as uid $uid, which owns its state directory"

step "upload from the host, first half"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$RUN/upload.bin"
size="$(stat -c %s "$RUN/upload.bin")"
half=$((size / 2))
head -c "$half" "$RUN/upload.bin" >"$RUN/part1"
tail -c +$((half + 1)) "$RUN/upload.bin" >"$RUN/part2"
expect "POST /files" 201 "$(http POST "$BASE/files" -H "Upload-Length: $size" \
    -H 'Upload-Metadata: filename c3lzdGVtZC50ZXN0')"
location="$(header Location)"
id="${location##*/}"
[ -n "$id" ] || fail "POST answered no Location"
patch() { # patch OFFSET FILE [curl args]
    local offset="$1" file="$2"
    shift 2
    http PATCH "$BASE/files/$id" -H 'Content-Type: application/offset+octet-stream' \
        -H "Upload-Offset: $offset" --data-binary "@$file" "$@"
}
expect "PATCH of the first half" 204 "$(patch 0 "$RUN/part1")"
expect "Upload-Offset after the first half" "$half" "$(header Upload-Offset)"
ok "upload $id: $half of $size bytes written"

step "systemctl kill -s KILL tusring: Restart=on-failure brings it back"
guest systemctl kill -s KILL tusring.service
restarted() {
    [ "$(prop NRestarts)" = 1 ] && [ "$(prop ActiveState)" = active ] &&
        [ "$(prop SubState)" = running ] && [ "$(prop MainPID)" != "$main_pid" ]
}
wait_for "$RESTART_WAIT" "restart after SIGKILL (NRestarts=1, active again)" restarted
new_pid="$(prop MainPID)"
case "$(prop StatusText)" in
"serving on 127.0.0.1:$PORT"*) ;;
*) fail "after the restart, StatusText is '$(prop StatusText)'" ;;
esac
ok "restarted: main PID $main_pid -> $new_pid, NRestarts=1, STATUS set again"
# The transient user may get another uid at each start (it usually keeps it).
uid2="$(guest awk '/^Uid:/{print $2}' "/proc/$new_pid/status")"
[ -n "$uid2" ] && [ "$uid2" != 0 ] || fail "after the restart the daemon runs as uid '$uid2'"
expect "HEAD after the restart" 200 "$(http HEAD "$BASE/files/$id")"
expect "Upload-Offset after the restart" "$half" "$(header Upload-Offset)"
data="$GROOT/var/lib/private/tusring/data/$id"
cmp -s "$data" "$RUN/part1" || fail "the data file after the restart is not the first half"
ok "after the restart HEAD gives offset $half and the data file holds exactly the first half"

step "second half, read back, hook evidence"
expect "PATCH of the second half" 204 "$(patch "$half" "$RUN/part2")"
expect "Upload-Offset at the end" "$size" "$(header Upload-Offset)"
expect "HEAD at the end" 200 "$(http HEAD "$BASE/files/$id")"
expect "Upload-Offset of HEAD at the end" "$size" "$(header Upload-Offset)"
expect "GET of the upload" 200 "$(http GET "$BASE/files/$id")"
cmp -s "$RUN/body" "$RUN/upload.bin" || fail "GET does not return the bytes uploaded"
cmp -s "$data" "$RUN/upload.bin" || fail "the data file does not hold the bytes uploaded"
ok "upload finished across the restart: GET and the data file match byte for byte"
evidence="$GROOT/var/lib/private/tusring/hook-evidence"
hook_fired() { [ -f "$evidence" ] && grep -q "^post-finish .*\"$id\"" "$evidence"; }
wait_for 15 "the file hook's post-finish evidence for $id" hook_fired
for event in pre-create post-create post-receive post-finish; do
    line="$(grep -m1 "^$event .*\"$id\"" "$evidence")" ||
        fail "no $event line for $id in the hook's evidence: $(cat "$evidence")"
    case "$line" in
    "$event uid=$uid nnp=1 etc=ro "* | "$event uid=$uid2 nnp=1 etc=ro "*) ;;
    *) fail "the $event hook did not run under the sandbox (want uid=$uid nnp=1 etc=ro): ${line:0:120}" ;;
    esac
done
ok "file hook fired (pre-create, post-create, post-receive, post-finish) as the transient user, no_new_privs, /etc read-only"
guest journalctl -u tusring.service --no-pager -o cat >"$RUN/journal.txt"
for want in "listening on http://127.0.0.1:$PORT" "POST /files 201" "PATCH /files/$id 204" \
    "evidence hook ran for post-finish" "Main process exited, code=killed, status=9/KILL"; do
    grep -qF "$want" "$RUN/journal.txt" || fail "the journal has no '$want'"
done
[ "$(grep -cF "listening on http://127.0.0.1:$PORT" "$RUN/journal.txt")" = 2 ] ||
    fail "the journal should show two starts (before and after the SIGKILL)"
ok "journal: both starts, the access log, the hook's output, the SIGKILL"

step "systemctl stop with a slow PATCH in flight (RUSTUS_SHUTDOWN_TIMEOUT=3)"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$RUN/slow.bin"
slow_size="$(stat -c %s "$RUN/slow.bin")"
expect "POST /files (slow upload)" 201 "$(http POST "$BASE/files" -H "Upload-Length: $slow_size")"
slow_id="$(header Location)"
slow_id="${slow_id##*/}"
slow_data="$GROOT/var/lib/private/tusring/data/$slow_id"
curl -sS --noproxy '*' --max-time 60 --limit-rate 256K -X PATCH -H 'Tus-Resumable: 1.0.0' \
    -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' \
    --data-binary "@$RUN/slow.bin" -o /dev/null -w '%{http_code}' "$BASE/files/$slow_id" \
    >"$RUN/slow.code" 2>"$RUN/slow.err" &
slow_curl=$!
slow_started() { [ "$(stat -c %s "$slow_data" 2>/dev/null || echo 0)" -gt 0 ]; }
wait_for 15 "the slow PATCH's first bytes on disk" slow_started
timeout_stop="$(prop TimeoutStopUSec)"
t0=$(date +%s.%N)
guest systemctl stop --no-block tusring.service
draining() {
    [ "$(prop ActiveState)" = deactivating ] && case "$(prop StatusText)" in stopping:*) true ;; *) false ;; esac
}
wait_for 5 "deactivating with a 'stopping: ...' status (STOPPING=1)" draining
ok "stopping: $(prop StatusText)"
stopped() { [ "$(prop ActiveState)" != deactivating ]; }
wait_for 60 "the end of the stop" stopped
t1=$(date +%s.%N)
stop_s="$(python3 -c "print(f'{$t1 - $t0:.1f}')")"
expect "ActiveState after the stop" inactive "$(prop ActiveState)"
expect "Result of the stop (not a timeout or a signal)" success "$(prop Result)"
expect "exit status of the daemon" 0 "$(prop ExecMainStatus)"
limit_s="$(guest systemd-analyze timespan "$timeout_stop" | awk '/μs:|us:/{print $2 / 1000000; exit}')"
[ -n "$limit_s" ] || fail "cannot read TimeoutStopSec ($timeout_stop)"
# Well within: the drain (3 s) and the cut take a few seconds; a daemon that ignored
# SIGTERM would run into the timeout (Result=timeout, SIGKILL).
python3 -c "import sys; sys.exit(0 if $stop_s < $limit_s / 2 else 1)" ||
    fail "the stop took $stop_s s, not well within TimeoutStopSec=$timeout_stop"
ok "stopped in $stop_s s (TimeoutStopSec=$timeout_stop): Result=success, exit 0"
wait "$slow_curl" || true
slow_code="$(cat "$RUN/slow.code")"
[ "$slow_code" = 503 ] || fail "the cut PATCH got '$slow_code' ($(cat "$RUN/slow.err")), not 503"
kept="$(stat -c %s "$slow_data")"
[ "$kept" -gt 0 ] && [ "$kept" -lt "$slow_size" ] || fail "the cut upload kept $kept bytes"
cmp -s "$slow_data" <(head -c "$kept" "$RUN/slow.bin") || fail "the cut upload's bytes on disk are not the prefix sent"
ok "the cut PATCH got 503 and its first $kept bytes are kept"
guest journalctl -u tusring.service --no-pager -o cat >"$RUN/journal.txt"
for want in "signal SIGTERM: stopping accepting" "tusring stopped"; do
    grep -qF "$want" "$RUN/journal.txt" || fail "the journal has no '$want' after the stop"
done
ok "journal: SIGTERM taken, 'tusring stopped'"

step "systemctl poweroff: the guest shuts down cleanly"
guest systemctl poweroff
nspawn_done() { ! kill -0 "$NSPAWN" 2>/dev/null; }
wait_for "$POWEROFF_WAIT" "the guest powering off" nspawn_done
rc=0
wait "$NSPAWN" || rc=$?
NSPAWN=""
[ "$rc" = 0 ] || fail "systemd-nspawn exited $rc after poweroff"
ok "guest powered off, systemd-nspawn exited 0"

say "ok: all $CHECKS checks of tusring under systemd passed in $((SECONDS - STARTED)) s"
