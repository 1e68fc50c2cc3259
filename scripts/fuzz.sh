#!/usr/bin/env bash
# Fuzzes tusring's parsers and a whole connection with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [--ci] [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGET defaults to every target `cargo fuzz list`
# reports (fuzz/Cargo.toml's [[bin]]s: head chunked metadata rules checksum
# concat info config connection draft answer, and any added since).
#
# --ci is the short pass `.ci/run` runs after the tests: every target for 20 s
# (SECONDS_PER_TARGET overrides it), the regressions replayed first. It prints how long
# the cargo-fuzz install (if any), the build and the runs took. So that each CI run (a
# fresh clone) does not rebuild every dependency with the sanitizer, --ci builds in
# ${XDG_CACHE_HOME:-~/.cache}/tusring-fuzz-target, a cache that is safe to delete.
# FUZZ_TARGET_DIR sets the build directory in either mode (default: fuzz/target).
#
# What it does:
#   1. installs cargo-fuzz with `cargo install` if it is missing;
#   2. builds the targets (release, debug assertions, AddressSanitizer) once. cargo-fuzz
#      needs nightly `-Z` flags; this machine has the stable toolchain, so the script sets
#      RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none (or address, ...) overrides the sanitizer;
#      if the AddressSanitizer build fails the script retries without one;
#   3. for each target, replays every file in fuzz/regressions/<target>/ (inputs that
#      once crashed: they must pass), then fuzzes for SECONDS_PER_TARGET seconds
#      (-max_total_time) starting from the committed seeds in fuzz/corpus/<target>/ plus
#      what earlier runs found (fuzz/work/corpus/<target>/, not committed).
#
# Exit status: 0 if every replay and every run passed; 1 otherwise, after running the
# remaining targets. A crash prints the artifact path (fuzz/artifacts/<target>/...) and
# the end of the log (fuzz/work/logs/<target>.log); reproduce it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> <artifact>
# (or under $FUZZ_TARGET_DIR, or the --ci cache, when the build went there).
# Once it is fixed, copy the artifact into fuzz/regressions/<target>/ so it is replayed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
FUZZ="$ROOT/fuzz"
CI_MODE=0
if [ "${1:-}" = --ci ]; then
    CI_MODE=1
    shift
fi
SECONDS_PER_TARGET=60
[ "$CI_MODE" = 0 ] || SECONDS_PER_TARGET=20
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    SECONDS_PER_TARGET=$1
    shift
fi

step() { printf '\n==> %s\n' "$*"; }

export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"
RUN_START=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
    step "cargo install cargo-fuzz"
    install_start=$SECONDS
    cargo install --locked cargo-fuzz || cargo install cargo-fuzz || exit 1
    echo "cargo-fuzz installed in $((SECONDS - install_start)) s"
fi
echo "$(cargo fuzz --version)"

# Every target fuzz/Cargo.toml declares, as cargo-fuzz sees them.
mapfile -t ALL_TARGETS < <(cargo fuzz list --fuzz-dir "$FUZZ" 2>/dev/null)
if [ ${#ALL_TARGETS[@]} -eq 0 ]; then
    echo "cargo fuzz list found no targets in $FUZZ" >&2
    exit 2
fi
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi
for t in "${TARGETS[@]}"; do
    if [[ " ${ALL_TARGETS[*]} " != *" $t "* ]]; then
        echo "unknown fuzz target '$t' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
echo "targets: ${TARGETS[*]} (${SECONDS_PER_TARGET} s each)"

if [ -z "${FUZZ_TARGET_DIR:-}" ]; then
    FUZZ_TARGET_DIR="$FUZZ/target"
    [ "$CI_MODE" = 0 ] || FUZZ_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/tusring-fuzz-target"
fi
mkdir -p "$FUZZ_TARGET_DIR"
echo "build directory: $FUZZ_TARGET_DIR"

# libFuzzer flags per target: dictionaries, input sizes big enough to reach the limits.
target_flags() {
    case "$1" in
        head) echo "-dict=$FUZZ/dict/http.dict -max_len=70000" ;;
        chunked) echo "-dict=$FUZZ/dict/chunked.dict -max_len=20000" ;;
        metadata) echo "-dict=$FUZZ/dict/metadata.dict -max_len=20000" ;;
        info) echo "-dict=$FUZZ/dict/info.dict -max_len=4096" ;;
        rules) echo "-max_len=4096" ;;
        checksum) echo "-dict=$FUZZ/dict/checksum.dict -max_len=4096" ;;
        concat) echo "-dict=$FUZZ/dict/concat.dict -max_len=4096" ;;
        config) echo "-max_len=4096" ;;
        # The 64 KiB answer limit is reached by a flag in the first byte (padding), so
        # 16 KiB is enough for every other check (8 KiB of header fields, 16 KiB of
        # metadata as a header from 12 KiB of JSON).
        answer) echo "-dict=$FUZZ/dict/answer.dict -max_len=16384" ;;
        # The daemons run on threads of the fuzzer's process: LeakSanitizer would take
        # their live allocations for leaks.
        connection) echo "-dict=$FUZZ/dict/http.dict -max_len=8192 -detect_leaks=0 -timeout=60" ;;
        # A target added since: libFuzzer's defaults, a dictionary if one is named after it.
        *)
            if [ -f "$FUZZ/dict/$1.dict" ]; then
                echo "-dict=$FUZZ/dict/$1.dict -max_len=4096"
            else
                echo "-max_len=4096"
            fi
            ;;
    esac
}

SANITIZER=${FUZZ_SANITIZER:-address}
# `cargo fuzz build` builds every target, or the one it is given.
build() {
    if [ ${#TARGETS[@]} -eq ${#ALL_TARGETS[@]} ]; then
        cargo fuzz build --target-dir "$FUZZ_TARGET_DIR" --sanitizer "$1"
    else
        for t in "${TARGETS[@]}"; do
            cargo fuzz build --target-dir "$FUZZ_TARGET_DIR" --sanitizer "$1" "$t" || return 1
        done
    fi
}
step "cargo fuzz build (sanitizer: $SANITIZER)"
build_start=$SECONDS
if ! build "$SANITIZER"; then
    if [ "$SANITIZER" = address ] && [ -z "${FUZZ_SANITIZER:-}" ]; then
        step "the AddressSanitizer build failed; retrying with --sanitizer none"
        SANITIZER=none
        build none || exit 1
    else
        echo "building the fuzz targets failed" >&2
        exit 1
    fi
fi
echo "built in $((SECONDS - build_start)) s"

BIN="$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release"
mkdir -p "$FUZZ/work/logs"
failures=()
summary=()

for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046  # the flags are meant to split
    flags=($(target_flags "$t"))
    log="$FUZZ/work/logs/$t.log"
    artifacts="$FUZZ/artifacts/$t"
    corpus="$FUZZ/work/corpus/$t"
    mkdir -p "$artifacts" "$corpus"
    # The committed seeds, when the target has any.
    seeds=()
    [ ! -d "$FUZZ/corpus/$t" ] || seeds=("$FUZZ/corpus/$t")

    regressions=()
    if [ -d "$FUZZ/regressions/$t" ]; then
        while IFS= read -r -d '' f; do regressions+=("$f"); done \
            < <(find "$FUZZ/regressions/$t" -type f ! -name '*.md' -print0 | sort -z)
    fi
    if [ ${#regressions[@]} -gt 0 ]; then
        step "$t: replaying ${#regressions[@]} regression input(s)"
        if ! "$BIN/$t" "${flags[@]}" -artifact_prefix="$artifacts/" "${regressions[@]}" \
            >"$log.replay" 2>&1; then
            echo "FAILED: a regression input of $t crashes again"
            grep -E '^Running: ' "$log.replay" | tail -n 1
            grep -E -A3 'panicked at|ERROR: ' "$log.replay" | head -n 20
            echo "(full log: $log.replay)"
            failures+=("$t (regression)")
            summary+=("$(printf '%-16s regression input crashes' "$t")")
            continue
        fi
    fi

    step "$t: fuzzing for ${SECONDS_PER_TARGET} s"
    start=$SECONDS
    "$BIN/$t" "${flags[@]}" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    took=$((SECONDS - start))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/p' \
        <<<"${done_line:-$(grep -E ' cov: ' "$log" | tail -n 1)}")
    if [ "$rc" -ne 0 ]; then
        artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
        echo "FAILED: $t exited with $rc after ${took} s"
        grep -E -A3 'panicked at|ERROR: ' "$log" | head -n 20
        echo "artifact: ${artifact:-none}"
        echo "(full log: $log)"
        failures+=("$t")
        summary+=("$(printf '%-16s CRASH %s' "$t" "${artifact:-?}")")
    else
        echo "ok: ${execs:-?} runs, ${rate:-?} exec/s, ${cov:-?}"
        summary+=("$(printf '%-16s ok  %8s runs %6s exec/s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
    fi
done

step "summary (${SECONDS_PER_TARGET} s per target, sanitizer: $SANITIZER, $((SECONDS - RUN_START)) s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
    echo "fuzz: $((${#TARGETS[@]} - ${#failures[@]})) passed, ${#failures[@]} failed"
    exit 1
fi
echo "all fuzz targets passed"
echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
