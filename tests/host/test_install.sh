#!/usr/bin/env bash
# cmake --install st into a temporary prefix, build examples/third_party_plugin against that
# install only, install the plugin there, and check that the installed st-host accepts and runs it.
set -euo pipefail
build_dir=$1
src_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
test -x "$prefix/bin/st-host"
test -f "$prefix/include/st/plugin.h"
test -f "$prefix/lib/cmake/st_sdk/st_sdkConfig.cmake"
# Configure with nothing of the build tree visible: only the prefix.
cmake -S "$src_dir/examples/third_party_plugin" -B "$work/ex" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$work/configure.log"
cmake --build "$work/ex" > "$work/build.log"
cmake --install "$work/ex" --prefix "$prefix" > /dev/null
test -f "$prefix/lib/st/plugins/st-step_decay.so"
out=$(env -u ST_PLUGIN_PATH "$prefix/bin/st-host" plugins 2>&1)
echo "$out"
echo "$out" | grep -q "st-step_decay.so \[install\]: accepted"
echo "$out" | grep -q "component lr.step_decay@1"
curve=$(env -u ST_PLUGIN_PATH "$prefix/bin/st-host" lr-curve --scheduler step_decay --learning_rate 1 --steps 300 \
  --every 100 --step_decay_every 100 --step_decay_gamma 0.5 2>&1)
echo "$curve"
# step 0 -> 1, step 100 -> 0.5, step 200 -> 0.25
echo "$curve" | grep -qx "0 1"
echo "$curve" | grep -qx "100 0.5"
echo "$curve" | grep -qx "200 0.25"
echo "install test: OK"
