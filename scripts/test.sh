#!/usr/bin/env bash
# tusring's test command: installs what the tests need, builds, and runs every test.
#
#   scripts/test.sh [extra cargo test args...]
#
# It installs, when missing or out of date:
#   - tuspy into a venv at target/interop-venv (from tests/interop/requirements.txt);
#   - tus-js-client into tests/interop/node_modules (npm ci, from package-lock.json).
# Then it runs `cargo build` and `cargo test` (unit, integration and doc tests) with
# TUSRING_REQUIRE_INTEROP=1, so the real-client interop tests must run, not skip.
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
    [ ! -f "$INTEROP/node_modules/tus-js-client/package.json" ]; then
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

# ------------------------------------------------------------------------ build and test
step "cargo build"
cargo build

step "cargo test (unit, integration with real clients, doc)"
export TUSRING_REQUIRE_INTEROP=1
export TUSRING_PYTHON="$VENV/bin/python"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Every integration test bounds itself; this is a safety net against a hung unit test, so
# that a hang fails the run instead of eating CI's time.
timeout --kill-after=30 "${TUSRING_TEST_TIMEOUT:-1800}" cargo test --no-fail-fast "$@"

step "all tests passed"
