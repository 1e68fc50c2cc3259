#!/usr/bin/env bash
# Installs (or uninstalls) tusring as a systemd service.
#
#   scripts/install.sh [options]
#
# Installs:
#   $DESTDIR$PREFIX/bin/tusring                     the release binary
#   $DESTDIR$UNITDIR/tusring.service                the unit, ExecStart= pointing at $PREFIX/bin
#   $DESTDIR$UNITDIR/tusring.socket                 optional socket activation (not enabled)
#   $DESTDIR/etc/tusring/tusring.env                settings (RUSTUS_* variables); an existing
#                                                   one is never overwritten: the new example
#                                                   goes to tusring.env.new instead
#   $DESTDIR$PREFIX/share/doc/tusring/systemd.md    systemd/README.md
#
# Options (PREFIX and DESTDIR may also come from the environment):
#   --prefix DIR      installation prefix (default /usr/local)
#   --destdir DIR     staging root for packaging or trying it out without root (default
#                     empty: the live system)
#   --unit-dir [DIR]  where the units go: DIR, or $PREFIX/lib/systemd/system when given
#                     without a value (default /etc/systemd/system)
#   --no-build        do not run `cargo build --release`; use the existing
#                     ${CARGO_TARGET_DIR:-target}/release/tusring
#   --binary FILE     install FILE as the binary (implies --no-build)
#   --uninstall       remove what an install with the same options installed; keeps
#                     /etc/tusring/tusring.env (your settings) and the uploads in
#                     /var/lib/tusring
#   --purge           with --uninstall: remove /etc/tusring/tusring.env too
#   -h, --help        this text
#
# Running it again is harmless: files are replaced by identical ones. With an empty
# DESTDIR on a machine running systemd, it runs `systemctl daemon-reload` (and, on
# uninstall, `systemctl disable --now` first).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
UNITDIR=""
UNITDIR_FROM_PREFIX=0
BUILD=1
BINARY=""
UNINSTALL=0
PURGE=0

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "install.sh: $*" >&2; exit 2; }

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --destdir) need_value "$@"; DESTDIR="$2"; shift 2 ;;
    --destdir=*) DESTDIR="${1#*=}"; shift ;;
    --unit-dir)
        if [ $# -ge 2 ] && [ "${2#/}" != "$2" ]; then
            UNITDIR="$2"; shift 2
        else
            UNITDIR_FROM_PREFIX=1; shift
        fi ;;
    --unit-dir=*) UNITDIR="${1#*=}"; [ -n "$UNITDIR" ] || die "--unit-dir= needs a directory"; shift ;;
    --no-build) BUILD=0; shift ;;
    --binary) need_value "$@"; BINARY="$2"; BUILD=0; shift 2 ;;
    --binary=*) BINARY="${1#*=}"; BUILD=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
    esac
done

case "$PREFIX" in
/*) ;;
*) die "--prefix must be an absolute path: $PREFIX" ;;
esac
PREFIX="${PREFIX%/}"
if [ -n "$DESTDIR" ]; then
    mkdir -p "$DESTDIR"
    DESTDIR="$(cd "$DESTDIR" && pwd)"
fi
if [ "$UNITDIR_FROM_PREFIX" = 1 ]; then
    UNITDIR="$PREFIX/lib/systemd/system"
fi
UNITDIR="${UNITDIR:-/etc/systemd/system}"
case "$UNITDIR" in
/*) ;;
*) die "--unit-dir must be an absolute path: $UNITDIR" ;;
esac
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"

BIN_PATH="$PREFIX/bin/tusring"
DOC_DIR="$PREFIX/share/doc/tusring"
CONF_DIR="/etc/tusring"
ENV_FILE="$CONF_DIR/tusring.env"

# systemd is running as init (sd_booted(3)), and this installs into the live system.
live_systemd() {
    [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

say() { printf '%s\n' "$*"; }

# ----------------------------------------------------------------------------- uninstall
if [ "$UNINSTALL" = 1 ]; then
    if live_systemd; then
        systemctl disable --now tusring.socket tusring.service 2>/dev/null || true
    fi
    for f in "$BIN_PATH" "$UNITDIR/tusring.service" "$UNITDIR/tusring.socket" \
        "$DOC_DIR/systemd.md" "$ENV_FILE.new"; do
        if [ -e "$DESTDIR$f" ] || [ -L "$DESTDIR$f" ]; then
            rm -f "$DESTDIR$f"
            say "removed $DESTDIR$f"
        fi
    done
    rmdir "$DESTDIR$DOC_DIR" 2>/dev/null || true
    if [ "$PURGE" = 1 ] && [ -e "$DESTDIR$ENV_FILE" ]; then
        rm -f "$DESTDIR$ENV_FILE"
        say "removed $DESTDIR$ENV_FILE"
    elif [ -e "$DESTDIR$ENV_FILE" ]; then
        say "kept $DESTDIR$ENV_FILE (your settings; --purge removes it)"
    fi
    rmdir "$DESTDIR$CONF_DIR" 2>/dev/null || true
    if live_systemd; then
        systemctl daemon-reload
    fi
    say "tusring uninstalled. Uploads are kept in /var/lib/tusring (/var/lib/private/tusring)."
    exit 0
fi

# ------------------------------------------------------------------------------- install
if [ -z "$BINARY" ]; then
    BINARY="${CARGO_TARGET_DIR:-$ROOT/target}/release/tusring"
    if [ "$BUILD" = 1 ]; then
        say "==> cargo build --release"
        (cd "$ROOT" && cargo build --release --bin tusring)
    fi
fi
[ -x "$BINARY" ] || die "no executable at $BINARY (build it, or drop --no-build)"

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ] && ! [ -w "$(dirname "$BIN_PATH")" ]; then
    die "installing into the live system needs root (sudo), or try --destdir DIR"
fi

# install_file MODE SRC DEST: copies only when DEST differs, so a rerun changes nothing.
install_file() {
    local mode="$1" src="$2" dest="$3"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        say "up to date $dest"
    else
        mkdir -p "$(dirname "$dest")"
        # Into a temporary name, then renamed: a running binary is replaced, not written over.
        install -m "$mode" "$src" "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
        say "installed $dest"
    fi
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The units name /usr/local; point them at this prefix.
for unit in tusring.service tusring.socket; do
    sed -e "s|^ExecStart=/usr/local/bin/tusring|ExecStart=$BIN_PATH|" \
        -e "s|^Documentation=file:///usr/local/share/doc/tusring/|Documentation=file://$DOC_DIR/|" \
        "$ROOT/systemd/$unit" >"$TMP/$unit"
done
grep -q "^ExecStart=$BIN_PATH\$" "$TMP/tusring.service" ||
    die "could not rewrite ExecStart= in systemd/tusring.service"

install_file 0755 "$BINARY" "$DESTDIR$BIN_PATH"
install_file 0644 "$TMP/tusring.service" "$DESTDIR$UNITDIR/tusring.service"
install_file 0644 "$TMP/tusring.socket" "$DESTDIR$UNITDIR/tusring.socket"
install_file 0644 "$ROOT/systemd/README.md" "$DESTDIR$DOC_DIR/systemd.md"

mkdir -p "$DESTDIR$CONF_DIR"
chmod 0755 "$DESTDIR$CONF_DIR"
if [ ! -e "$DESTDIR$ENV_FILE" ]; then
    install_file 0644 "$ROOT/systemd/tusring.env" "$DESTDIR$ENV_FILE"
elif cmp -s "$ROOT/systemd/tusring.env" "$DESTDIR$ENV_FILE"; then
    say "up to date $DESTDIR$ENV_FILE"
    rm -f "$DESTDIR$ENV_FILE.new"
else
    install_file 0644 "$ROOT/systemd/tusring.env" "$DESTDIR$ENV_FILE.new"
    say "kept your $DESTDIR$ENV_FILE; the current example is $DESTDIR$ENV_FILE.new"
fi

if live_systemd; then
    systemctl daemon-reload
    say ""
    say "Next: systemctl enable --now tusring"
    say "      (settings: $ENV_FILE; logs: journalctl -u tusring)"
else
    say ""
    if [ -n "$DESTDIR" ]; then
        say "Staged under $DESTDIR. On the target machine: systemctl daemon-reload && systemctl enable --now tusring"
    else
        say "Next (on a machine running systemd): systemctl daemon-reload && systemctl enable --now tusring"
    fi
fi
