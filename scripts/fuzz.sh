#!/usr/bin/env bash
# Fuzzes mailid's parsers with cargo-fuzz (libFuzzer): CSR checks, PEM,
# strong key IDs, addresses and serials, every JSON request body, and the
# MTA's certificate/CRL upload path (targets in fuzz/fuzz_targets/, bodies in
# fuzz/src/lib.rs, seed corpora in fuzz/seeds/).
#
#   scripts/fuzz.sh                  long campaign: 10,000,000 executions per target
#   scripts/fuzz.sh --runs N         N executions per target
#   scripts/fuzz.sh --time S         S seconds per target
#   scripts/fuzz.sh --short S        CI smoke pass: S seconds per target
#   scripts/fuzz.sh [...] csr json   only these targets
#   MAILID_FUZZ_TARGET_DIR=DIR       build there instead of fuzz/target
#
# One fuzzer runs at a time, in one process (libFuzzer's default, the same
# as -jobs=1 -workers=1 but without the log-file indirection), under
# `nice -n 19`. Working corpora go to fuzz/corpus/<target>, findings to
# fuzz/artifacts/<target> (both gitignored). Prints, per target, the
# executions done and the corpus size; exits 1 on any crash, panic, hang
# or out-of-memory, and 0 with one line saying why when this toolchain
# cannot build fuzz targets.
#
# The stable toolchain is used with RUSTC_BOOTSTRAP=1 (cargo-fuzz wants
# nightly flags). Targets are built without AddressSanitizer: the project
# has no unsafe code and cargo-fuzz leaves C dependencies uninstrumented, so
# ASan would only halve the speed; overflow checks and debug assertions are
# on. A fuzzer paused with SIGSTOP past its per-input timeout reports a false
# timeout when resumed: such an input is replayed, and if it then runs
# quickly the run is resumed instead of failed.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(csr upload json pem keyid address lint)
runs=10000000
total_time=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short | --time)
      [ $# -ge 2 ] || { echo "fuzz.sh: $1 needs a number of seconds" >&2; exit 2; }
      total_time="$2"; runs=""; shift 2 ;;
    --runs)
      [ $# -ge 2 ] || { echo "fuzz.sh: --runs needs a number" >&2; exit 2; }
      runs="$2"; total_time=""; shift 2 ;;
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target '$t' (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

skip() { echo "fuzz.sh: skipped: $*"; exit 0; }
log() { printf '\n==> %s\n' "$*"; }

export RUSTC_BOOTSTRAP=1
command -v cargo >/dev/null 2>&1 || skip "no cargo on PATH"
command -v c++ >/dev/null 2>&1 || skip "no C++ compiler (libFuzzer is built from C++)"

# cargo-fuzz from crates.io when missing.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >/dev/null 2>&1 \
    || skip "cargo-fuzz could not be installed"
fi

# Can this rustc build coverage-instrumented code at all?
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'pub fn f(x: u8) -> bool { x == 7 }' >"$probe/p.rs"
if ! rustc --edition 2021 --crate-type lib --emit obj -O -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -o "$probe/p.o" "$probe/p.rs" >"$probe/log" 2>&1; then
  skip "this toolchain ($(rustc --version)) cannot build fuzz targets: $(head -1 "$probe/log")"
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# MAILID_FUZZ_TARGET_DIR puts the build outside the checkout (a cache kept
# between fresh clones makes the CI pass mostly a link step).
TARGET_DIR=${MAILID_FUZZ_TARGET_DIR:-$PWD/fuzz/target}
BUILD_FLAGS=(--sanitizer none --codegen-units 16 --target "$TRIPLE" --target-dir "$TARGET_DIR")
log "cargo fuzz build (${targets[*]})"
build_start=$(date +%s)
if [ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]; then
  (cd fuzz && nice -n 19 cargo fuzz build "${BUILD_FLAGS[@]}")
else
  for t in "${targets[@]}"; do (cd fuzz && nice -n 19 cargo fuzz build "${BUILD_FLAGS[@]}" "$t"); done
fi
echo "build took $(($(date +%s) - build_start)) s"
BIN=$TARGET_DIR/$TRIPLE/release

# Longest input per target: a CSR, upload or JSON body with a chain fits in
# 8 KiB; identifiers and addresses are short.
max_len() {
  case "$1" in
    keyid) echo 256 ;;
    address) echo 512 ;;
    *) echo 8192 ;;
  esac
}

# Runs one libFuzzer session; sets $done_units, $corp and $status.
session() {
  local t=$1 budget=$2 out=$3
  local args=("fuzz/corpus/$t" "fuzz/seeds/$t"
    -max_len="$(max_len "$t")" -timeout=30 -rss_limit_mb=2048
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1)
  if [ -n "$total_time" ]; then args+=(-max_total_time="$budget"); else args+=(-runs="$budget"); fi
  status=0
  nice -n 19 "$BIN/$t" "${args[@]}" >"$out" 2>&1 || status=$?
  done_units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  if [ -z "$done_units" ]; then
    done_units=$(grep -Eo '^#[0-9]+' "$out" | tail -1 | tr -d '#')
  fi
  done_units=${done_units:-0}
  corp=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out" | tail -1 | sed 's/corp: //')
}

summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  if [ -n "$total_time" ]; then
    log "fuzzing $t for $total_time s"
  else
    log "fuzzing $t for $runs executions"
  fi
  start=$(date +%s)
  total=0
  corp="?/?"
  result=ok
  logf="fuzz/artifacts/$t/last-run.log"
  while :; do
    if [ -n "$total_time" ]; then
      budget=$((total_time - ($(date +%s) - start)))
      [ "$budget" -ge 1 ] || break
    else
      budget=$((runs - total))
      [ "$budget" -ge 1 ] || break
    fi
    before=$(ls "fuzz/artifacts/$t" | grep -E '^(crash|timeout|oom|leak|slow-unit)-' || true)
    session "$t" "$budget" "$logf"
    total=$((total + done_units))
    [ "$status" -ne 0 ] || { [ -z "$total_time" ] || break; [ "$done_units" -gt 0 ] || break; continue; }
    new=$(comm -13 <(echo "$before") <(ls "fuzz/artifacts/$t" | grep -E '^(crash|timeout|oom|leak)-' || true) | head -1)
    if [ -n "$new" ] && [[ "$new" == timeout-* ]]; then
      # A pause (SIGSTOP) looks like a hang: replay the input alone.
      if timeout 60 "$BIN/$t" -timeout=30 "fuzz/artifacts/$t/$new" >/dev/null 2>&1; then
        echo "  $new ran quickly when replayed: the fuzzer was paused, not hung; resuming"
        rm -f "fuzz/artifacts/$t/$new"
        continue
      fi
    fi
    result="FAILED (exit $status${new:+, fuzz/artifacts/$t/$new})"
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$logf" | head -5 || true
    [ -z "$new" ] || echo "  reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} $t artifacts/$t/$new)"
    failed=1
    break
  done
  secs=$(($(date +%s) - start))
  files=$(find "fuzz/corpus/$t" -type f | wc -l)
  line=$(printf '%-8s %-9s executions: %11d  corpus: %s units, %s (%s files in fuzz/corpus/%s)  time: %d s' \
    "$t" "$result" "$total" "${corp%%/*}" "${corp#*/}" "$files" "$t" "$secs")
  echo "$line"
  summary+=("$line")
done

log "fuzzing summary"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: a target failed; see above"
  exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} targets"
