#!/usr/bin/env bash
# tusring's test command: installs what the tests need, builds, and runs every test.
#
#   scripts/test.sh [extra cargo test args...]
#
# It installs, when missing or out of date:
#   - tuspy, fastapi + uvicorn for the hooks example, celery for the AMQP example and
#     moto[server] (an S3-compatible server, which the hybrid-s3 tests start on loopback
#     ports of their own; TUSRING_REQUIRE_S3=1: they must run), into a venv at
#     target/interop-venv (from tests/interop/requirements.txt);
#   - rabbitmq-server (apt-get, as root on Debian), started on 127.0.0.1:5672 by
#     scripts/rabbitmq.sh for the AMQP tests (TUSRING_REQUIRE_AMQP=1: they must run);
#   - nats-server (apt-get, as root on Debian) for the NATS tests, each of which starts
#     its own server on a free loopback port (TUSRING_REQUIRE_NATS=1: they must run);
#   - tus-js-client into tests/interop/node_modules (npm ci, from package-lock.json).
#   - redis-server (apt-get, as root on Debian) for the Redis and several-node tests, which
#     start private servers of their own on free loopback ports (TUSRING_REQUIRE_REDIS=1:
#     they must run, not skip).
#   - for the headless-browser test: uppy and playwright-core (same npm ci), and Debian's
#     chromium with apt-get (as root on Debian) when /usr/bin/chromium is missing.
# Then it runs `cargo build`, checks the systemd units with `systemd-analyze verify` (and
# prints their `systemd-analyze security` exposure score; as root on Debian it installs
# systemd with apt-get when systemd-analyze is missing), runs the service under a live
# systemd with scripts/systemd-test.sh (as root: a Debian guest booted with systemd-nspawn;
# it installs debootstrap and systemd-container with apt-get, and skips with the reason
# when it cannot run), and runs `cargo test` (unit,
# integration and doc tests) with TUSRING_REQUIRE_INTEROP=1, so the real-client interop
# tests must run, not skip; then a tusload smoke run against the debug binary and the
# check of the benchmark charts (scripts/bench/test_charts.py).
# Re-running is fast: installs are skipped when their inputs have not changed.
# Needs python3 and Node.js 20 with npm on the machine; on Debian, as root, it installs
# python3-venv itself if the venv module is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
INTEROP="$ROOT/tests/interop"
VENV="$ROOT/target/interop-venv"

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- Python client (tuspy)
step "python: tuspy venv at target/interop-venv"
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
make_venv() {
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    echo "python3 -m venv target/interop-venv ($(python3 --version 2>&1))"
    python3 -m venv "$VENV"
}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    if ! make_venv; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "python3 -m venv failed; installing python3-venv with apt-get"
            apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip
            make_venv
        else
            echo "python3 -m venv failed (install python3-venv)" >&2
            exit 1
        fi
    fi
fi
STAMP="$VENV/.requirements.installed"
if ! cmp -s "$INTEROP/requirements.txt" "$STAMP"; then
    echo "pip install -r tests/interop/requirements.txt"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$INTEROP/requirements.txt"
    cp "$INTEROP/requirements.txt" "$STAMP"
else
    echo "up to date"
fi
# Fail now if the install is broken.
"$VENV/bin/python" -c 'import importlib.metadata as m, tusclient.client; print("tuspy", m.version("tuspy"))'
"$VENV/bin/python" -c 'import fastapi, uvicorn; print("fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)'
"$VENV/bin/python" -c 'import celery; print("celery", celery.__version__)'
"$VENV/bin/python" -c 'import moto, moto.server, flask; print("moto", moto.__version__)'

# ---------------------------------------------------------- Node.js client (tus-js-client)
step "node: tus-js-client in tests/interop/node_modules"
command -v node >/dev/null || { echo "node (Node.js 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required" >&2; exit 1; }
echo "node $(node --version), npm $(npm --version)"
NSTAMP="$INTEROP/node_modules/.tusring-installed"
if [ -f "$INTEROP/package-lock.json" ]; then
    WANT="$(cat "$INTEROP/package.json" "$INTEROP/package-lock.json" | cksum)"
else
    WANT="$(cksum <"$INTEROP/package.json")"
fi
if [ ! -f "$NSTAMP" ] || [ "$(cat "$NSTAMP")" != "$WANT" ] ||
    [ ! -f "$INTEROP/node_modules/tus-js-client/package.json" ] ||
    [ ! -f "$INTEROP/node_modules/uppy/package.json" ] ||
    [ ! -f "$INTEROP/node_modules/playwright-core/package.json" ]; then
    if [ -f "$INTEROP/package-lock.json" ]; then
        echo "npm ci (tests/interop)"
        (cd "$INTEROP" && npm ci --no-audit --no-fund --loglevel=error)
    else
        echo "npm install (tests/interop)"
        (cd "$INTEROP" && npm install --no-audit --no-fund --loglevel=error)
    fi
    printf '%s' "$WANT" >"$NSTAMP"
else
    echo "up to date"
fi
(cd "$INTEROP" && node -e "import('tus-js-client').then(m => { if (!m.Upload) process.exit(1) })" &&
    echo "tus-js-client $(node -p "require('tus-js-client/package.json').version")")
(cd "$INTEROP" && echo "uppy $(node -p "require('uppy/package.json').version")," \
    "playwright-core $(node -p "require('playwright-core/package.json').version")")

# ------------------------------------------------- Chromium (the headless-browser test)
step "chromium: /usr/bin/chromium for tests/integration/browser.rs"
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "chromium is missing; installing it with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
    else
        echo "chromium is required (install the Debian package chromium)" >&2
        exit 1
    fi
fi
# (Debian's launcher script prints a harmless shell warning on stderr here.)
/usr/bin/chromium --version 2>/dev/null

# ------------------------------------------------------------------------ build and test
step "cargo build"
cargo build

# ------------------------------------------------------------------- the systemd units
step "systemd: systemd-analyze verify and security of systemd/tusring.{service,socket}"
if ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "systemd-analyze is missing; installing systemd with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
    else
        echo "systemd-analyze is required (install the systemd package)" >&2
        exit 1
    fi
fi
systemd-analyze --version | head -n 1
UNITS="$(mktemp -d)"
trap 'rm -rf "$UNITS"' EXIT
# verify checks that ExecStart= exists: point it at the binary just built.
BIN="$(cd "${CARGO_TARGET_DIR:-$ROOT/target}" && pwd)/debug/tusring"
sed "s|^ExecStart=/usr/local/bin/tusring\$|ExecStart=$BIN|" systemd/tusring.service >"$UNITS/tusring.service"
grep -q "^ExecStart=$BIN\$" "$UNITS/tusring.service" || { echo "ExecStart= not found in the unit" >&2; exit 1; }
cp systemd/tusring.socket "$UNITS/"
(cd "$UNITS" && systemd-analyze verify ./tusring.service ./tusring.socket)
echo "systemd-analyze verify: ok"
# The exposure score is printed, not enforced (it depends on the systemd version).
if ! (cd "$UNITS" && systemd-analyze security --offline=true ./tusring.service) >"$UNITS/security.txt" 2>&1; then
    echo "note: systemd-analyze security --offline=true is not available here:"
fi
grep -E "Overall exposure level|offline" "$UNITS/security.txt" || tail -n 3 "$UNITS/security.txt"

# ------------------------------------------------- the service under a live systemd
# The installed unit in a booted Debian guest (systemd-nspawn): READY, STATUS, the sandbox
# with a file hook, a restart after SIGKILL with the upload intact, a graceful stop. As
# root only (it prints why it skips otherwise); the guest tree is cached in
# /var/cache/tusring-ci, so only the first run on a machine pays for debootstrap.
step "systemd: the service under a live systemd in a booted guest (scripts/systemd-test.sh)"
bash scripts/systemd-test.sh --binary "$BIN"

# ------------------------------------------------------------ RabbitMQ for the AMQP tests
# A loopback broker (apt-installed when missing, as root on Debian), left running for the
# next run. TUSRING_REQUIRE_AMQP makes the AMQP tests fail, not skip, without it; the tests
# that stop and kill the broker start it again.
step "rabbitmq: a broker on 127.0.0.1:5672 for the AMQP tests"
bash scripts/rabbitmq.sh start
export TUSRING_AMQP_URL="amqp://guest:guest@127.0.0.1:5672"
export TUSRING_REQUIRE_AMQP=1

# ------------------------------------------------------------ nats-server for the NATS tests
# Each NATS test starts its own nats-server on a free loopback port (and kills it); this
# only installs the binary (Debian's package, as root) when it is missing.
# TUSRING_REQUIRE_NATS makes the NATS tests fail, not skip, without it.
step "nats: the nats-server binary for the NATS tests"
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "nats-server is missing; installing it with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server
    else
        echo "nats-server is required (install the Debian package nats-server)" >&2
        exit 1
    fi
fi
# The package may start a system daemon on 4222; the tests never use it (their own servers
# listen on free ports), so it is left alone.
NATS_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
"$NATS_BIN" --version
export TUSRING_NATS_SERVER="$NATS_BIN"
export TUSRING_REQUIRE_NATS=1

# ------------------------------------------- redis-server for the Redis and node tests
# Only the binary: each test starts its own server on 127.0.0.1 and a free port, in its
# temporary directory, and stops it (tests/integration/redisd.rs).
step "redis: redis-server for the Redis and several-node tests"
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "redis-server is missing; installing it with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server
    else
        echo "redis-server is required (install the Debian package redis-server)" >&2
        exit 1
    fi
fi
redis-server --version
export TUSRING_REQUIRE_REDIS=1

step "cargo test (unit, integration with real clients, doc)"
export TUSRING_REQUIRE_INTEROP=1
# The hybrid-s3 tests start moto's server (from the venv above) themselves.
export TUSRING_REQUIRE_S3=1
export TUSRING_PYTHON="$VENV/bin/python"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Every integration test bounds itself; this is a safety net against a hung unit test, so
# that a hang fails the run instead of eating CI's time.
timeout --kill-after=30 "${TUSRING_TEST_TIMEOUT:-1800}" cargo test --no-fail-fast "$@"

# ----------------------------------------------------------- load generator smoke run
# tusload against a debug tusring on a free port: one 8 MiB PATCH and 1 s of 4 KiB
# uploads over 4 connections, then `tusload verify` checks every upload's offset and its
# bytes on disk. Self-contained: its own server, directory and cleanup.
step "tusload smoke: big and small uploads against a debug tusring, verified on disk"
(
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
    # On tmpfs when there is one: tens of thousands of files created and deleted on ext4
    # slow later file creation there for minutes.
    SMOKE_PARENT="${TMPDIR:-/tmp}"
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" != tmpfs ] || SMOKE_PARENT=/dev/shm
    SMOKE="$(mktemp -d "$SMOKE_PARENT/tusring-smoke.XXXXXX")"
    SMOKE_PID=""
    smoke_finish() {
        if [ -n "$SMOKE_PID" ]; then
            kill -TERM "$SMOKE_PID" 2>/dev/null || true
            wait "$SMOKE_PID" 2>/dev/null || true
        fi
        rm -rf "$SMOKE"
    }
    trap smoke_finish EXIT
    "$BIN/tusring" --host 127.0.0.1 --port 0 --workers 2 --data-dir "$SMOKE/data" \
        --info-dir "$SMOKE/data" 2>"$SMOKE/server.log" &
    SMOKE_PID=$!
    ADDR=""
    for _ in $(seq 1 300); do
        ADDR="$(grep -o -m1 'listening on http://[^ ]*' "$SMOKE/server.log" | sed 's|.*http://||')" ||
            true
        [ -z "$ADDR" ] || break
        kill -0 "$SMOKE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$ADDR" ]; then
        echo "tusring did not start; its log:" >&2
        cat "$SMOKE/server.log" >&2
        exit 1
    fi
    URL="http://$ADDR/files"
    "$BIN/tusload" big --url "$URL" --size 8M --ids-file "$SMOKE/big.ids"
    "$BIN/tusload" small --url "$URL" --size 4K --duration 1s --warmup 0s --conns 4 --keep-ids \
        --ids-file "$SMOKE/small.ids"
    "$BIN/tusload" verify --ids-file "$SMOKE/big.ids" --data-dir "$SMOKE/data"
    "$BIN/tusload" verify --ids-file "$SMOKE/small.ids" --data-dir "$SMOKE/data"
)

# ------------------------------------------------------------- benchmark charts check
# scripts/bench/charts.py (the SVG charts beside each bench.sh results page): the charts
# of every page in benches/results parse as SVG and show the medians of its table.
step "bench charts: scripts/bench/test_charts.py"
python3 scripts/bench/test_charts.py

step "all tests passed"
