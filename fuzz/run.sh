#!/usr/bin/env bash
# fuzz/run.sh [SECONDS [TARGET...]]: builds the fuzz targets once, then runs each (default: all)
# for SECONDS (default 60) on its seeds (seeds/) and the corpus it grew so far (corpus/, not
# committed). Prints per target the executions and whether it crashed, then the totals; exits
# non-zero when any target crashed (the input is in fuzz/artifacts/TARGET/: fix the cause, add
# the input as a regression test).
#
# Built with --sanitizer none: the crate has no unsafe code of its own that the fuzzed inputs
# reach (the decoders' C libraries are not instrumented either way), and it halves the build;
# optimized with debug assertions and overflow checks on, so an overflow is a crash.
#
# fuzz/run.sh build: only the build (CI builds in the background while other checks run).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
flags=(-O -a --sanitizer none --codegen-units 16)
cargo +nightly fuzz build "${flags[@]}"
[ "$seconds" != build ] || exit 0
# The targets that load from a path write their inputs here (fuzz/src/lib.rs: scratch_file).
scratch=$(mktemp -d -p "$([ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")" edgeclass-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export EDGECLASS_FUZZ_SCRATCH=$scratch
total=0
crashed=()
targets=("${@:2}")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  log=target/$target.log
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  runs=${runs:-0}
  total=$((total + runs))
  if [ "$status" -ne 0 ]; then
    crashed+=("$target")
    tail -40 "$log"
  fi
  printf '%-14s %12d executions  %s\n' "$target" "$runs" "$([ "$status" -eq 0 ] && echo ok || echo CRASHED)"
done
printf '%-14s %12d executions  %d crashed\n' total "$total" "${#crashed[@]}"
[ ${#crashed[@]} -eq 0 ] || { echo "fuzz targets that crashed: ${crashed[*]}" >&2; exit 1; }
