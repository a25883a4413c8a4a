#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything (host, SDK, plugins, tests,
# the AddressSanitizer build of the malformed-file tests), runs the whole test suite, then fuzzes the
# parsers of untrusted input for a bounded time (scripts/fuzz.sh; ST_FUZZ_SECONDS per target, 30 by
# default; ST_FUZZ_SECONDS=0 only replays the seeds and past crashes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
BUILD_DIR=${ST_BUILD_DIR:-build-test}
JOBS=${ST_JOBS:-$(nproc)}
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DST_BUILD_TESTS=ON -DST_ASAN_TESTS=ON
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "test.sh: build took $(( $(date +%s) - start ))s"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 900)
echo "test.sh: build + tests took $(( $(date +%s) - start ))s"
fuzz_start=$(date +%s)
ST_FUZZ_JOBS=${ST_FUZZ_JOBS:-$JOBS} bash scripts/fuzz.sh
echo "test.sh: fuzzing (clang build + runs) took $(( $(date +%s) - fuzz_start ))s; in all $(( $(date +%s) - start ))s"
