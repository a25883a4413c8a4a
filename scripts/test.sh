#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything (host, SDK, plugins, tests,
# the AddressSanitizer build of the malformed-file tests) and runs the whole test suite.
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
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" --timeout 900
echo "test.sh: build + tests took $(( $(date +%s) - start ))s"
