#!/usr/bin/env bash
# Fuzzes st's parsers of untrusted input (docs/security.md): safetensors headers, config files
# (JSON/TOML), dataset lists, checkpoint manifests and LoRA key maps. Builds the libFuzzer targets of
# tests/fuzz with clang (AddressSanitizer + UndefinedBehaviorSanitizer) into build-fuzz/, then runs
# each target over its seeds and every past crash (tests/fuzz/{corpus,regressions}/<target>) and
# fuzzes it for ST_FUZZ_SECONDS. Fails on any crash, sanitizer report, leak, timeout or exception
# other than st::Error. scripts/test.sh (CI) runs it with the defaults.
#
#   scripts/fuzz.sh [--build-only | --run-only] [target...]    targets: safetensors config dataset
#                                                              checkpoint lora (default: all)
#   ST_FUZZ_SECONDS   fuzzing time per target (default 30; 0 only replays the seeds and regressions)
#   ST_FUZZ_JOBS      targets fuzzed at once (default nproc)
#   ST_FUZZ_DIR       build folder (default build-fuzz)
#
# Inputs that reach new code are kept in $ST_FUZZ_DIR/corpus/<target> (reused by the next run, never
# committed). A crash leaves $ST_FUZZ_DIR/artifacts/<target>/crash-* (timeout-*, oom-*): fix the bug,
# then add the file as tests/fuzz/regressions/<target>/<what-it-was> so CI replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(safetensors config dataset checkpoint lora)
BUILD=1 RUN=1
targets=()
for arg in "$@"; do
  case "$arg" in
    --build-only) RUN=0 ;;
    --run-only) BUILD=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (${ALL_TARGETS[*]})" >&2; exit 2; }
done

DIR=${ST_FUZZ_DIR:-build-fuzz}
SECONDS_PER_TARGET=${ST_FUZZ_SECONDS:-30}
JOBS=${ST_FUZZ_JOBS:-$(nproc)}
CXX_CLANG=${ST_FUZZ_CXX:-clang++}
start=$(date +%s)

if [ "$BUILD" = 1 ]; then
  cmake --log-level=WARNING -S tests/fuzz/libfuzzer -B "$DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG"
  cmake --build "$DIR" -j "$JOBS"
  echo "fuzz.sh: build took $(( $(date +%s) - start ))s"
fi
[ "$RUN" = 1 ] || exit 0

# Sanitizer reports are fatal and carry a stack; libFuzzer itself turns them into a crash-* file.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_target() {
  local t=$1 bin="$DIR/fuzz_$t" log="$DIR/logs/$t.log"
  local seeds=tests/fuzz/corpus/$t regressions=tests/fuzz/regressions/$t
  local dict=() inputs=("$seeds")
  mkdir -p "$DIR/corpus/$t" "$DIR/artifacts/$t" "$DIR/logs"
  [ -d "$regressions" ] && inputs+=("$regressions")
  [ -f "tests/fuzz/dict/$t.dict" ] && dict=(-dict="tests/fuzz/dict/$t.dict")
  local opts=(-rss_limit_mb=2048 -timeout=10 -artifact_prefix="$DIR/artifacts/$t/" "${dict[@]}")
  {
    # Whole files (no -max_len: a regression may be larger than what the fuzzer generates).
    echo "== $t: replaying ${inputs[*]}"
    "$bin" "${opts[@]}" -runs=0 "${inputs[@]}" || return 1
    # -max_total_time=0 would mean "no limit": 0 seconds only replays.
    [ "$SECONDS_PER_TARGET" -gt 0 ] || return 0
    echo "== $t: fuzzing for ${SECONDS_PER_TARGET}s"
    "$bin" "${opts[@]}" -max_len=16384 -print_final_stats=1 -max_total_time="$SECONDS_PER_TARGET" \
      "$DIR/corpus/$t" "${inputs[@]}"
  } >"$log" 2>&1
}

fuzz_start=$(date +%s)
declare -A pid_of
failed=()
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  pid_of[$t]=$!
  running=$((running + 1))
done
for t in "${targets[@]}"; do
  if wait "${pid_of[$t]}"; then
    runs=$(grep -E '^stat::number_of_executed_units' "$DIR/logs/$t.log" | awk '{print $2}' || true)
    echo "fuzz.sh: $t ok (seeds and regressions replayed${runs:+, $runs fuzzing runs})"
  else
    failed+=("$t")
    echo "fuzz.sh: $t FAILED; last lines of $DIR/logs/$t.log:" >&2
    tail -n 60 "$DIR/logs/$t.log" >&2
    ls "$DIR/artifacts/$t" >&2 || true
  fi
done
echo "fuzz.sh: fuzzing took $(( $(date +%s) - fuzz_start ))s (${SECONDS_PER_TARGET}s per target, $JOBS at once)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]} (inputs in $DIR/artifacts/<target>/; see docs/security.md)" >&2
  exit 1
fi
