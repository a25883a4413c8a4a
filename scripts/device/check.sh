#!/usr/bin/env bash
# The one prepared GPU check of st (issue #24). Runs from the repository root on a bare GPU test
# machine (PyTorch 2.x with CUDA, nvcc, CMake, ninja; no package registry) with `.device/` carried
# (made here by scripts/device/prepare.sh), and writes everything it learns under $OUT:
#   summary.txt   one line per stage: ok / FAILED / skipped, seconds
#   facts.txt     GPU, driver, nvcc, torch, cores
#   build.log     FFmpeg + st configure and build
#   ctest.log     the `kernels` tests (the CUDA ones run here)
#   train.log     a short Wan LoRA training run on the GPU (tiny model, 3 steps)
#   bench.json    Wan 2.1 1.3B real shapes, LoRA rank 16, bf16, checkpointing, 832x480x81
#                 (32,760 tokens): st's step next to diffusers' WanTransformer3DModel in PyTorch eager
# On a machine without a GPU (the rehearsal) it does everything it can and skips the GPU stages.
# Budget: 9 minutes in all (each stage has its own timeout). Usage:
#   bash scripts/device/check.sh            # OUT defaults to ./device-out
set -uo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
OUT=${OUT:-$SRC/device-out}
DEPS=${ST_DEVICE_DEPS:-/tmp/st-deps}
BUILD=${ST_DEVICE_BUILD:-/tmp/st-gpu-build}
JOBS=$(nproc)
mkdir -p "$OUT"
: > "$OUT/summary.txt"
START=$(date +%s)
FAILURES=0
export SRC OUT DEPS BUILD JOBS

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
# stage NAME TIMEOUT_S CMD...: runs CMD with a timeout, records the outcome and the time it took.
# ST_CHECK_TIME_SCALE multiplies every limit (a 2-core rehearsal needs ~10; the GPU machine has 16 cores).
SCALE=${ST_CHECK_TIME_SCALE:-1}
stage() {
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  local t0=$(date +%s) rc
  # Shell functions run in a child bash (exported below), so the timeout can stop them.
  timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@"; rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then note "ok       $name (${dt} s)"; elif [ $rc -eq 124 ]; then note "TIMEOUT  $name (${limit} s)"; else note "FAILED   $name (rc $rc, ${dt} s)"; fi
  [ $rc -eq 0 ] || FAILURES=$((FAILURES + 1))
  return $rc
}

HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAVE_GPU=1; fi
PY=${PYTHON:-python3}
export PY
TORCH_CUDA=$($PY -c 'import torch;print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
export HAVE_GPU TORCH_CUDA

facts() {
  {
    echo "date: $(date -u)"; echo "cores: $JOBS"; uname -a
    [ $HAVE_GPU = 1 ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    command -v nvcc >/dev/null && nvcc --version | tail -2
    $PY -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    cmake --version | head -1; ninja --version; g++ --version | head -1
  } > "$OUT/facts.txt" 2>&1
  cat "$OUT/facts.txt"
}
export -f facts
stage facts 30 facts

# ---- dependencies: carried Debian packages + a minimal FFmpeg ---------------------------------
unpack_debs() {
  mkdir -p "$DEPS"
  for f in .device/debs/*.deb; do dpkg -x "$f" "$DEPS" || return 1; done
  # Absolute symlinks (zlib1g-dev's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) name the
  # machine's root, whose libraries differ: point them at the carried files.
  local l t
  while read -r l; do
    t=$(readlink "$l")
    case "$t" in /*) if [ -e "$DEPS$t" ]; then ln -sfn "$DEPS$t" "$l"; else echo "dangling: $l -> $t"; return 1; fi ;; esac
  done < <(find "$DEPS" -type l)
  # The packages' pkg-config files and CMake configs say /usr: pkgconf's sysroot maps them here.
  ls "$DEPS/usr/lib/x86_64-linux-gnu" | wc -l
}
export -f unpack_debs
stage deps 60 unpack_debs
export PKG_CONFIG_SYSROOT_DIR=$DEPS
export PKG_CONFIG_PATH=$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig:$DEPS/usr/share/pkgconfig
export PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH
# The carried libraries are seen by the build and by st only: Python (the reference benchmark) keeps
# the machine's own library path.
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/lib/x86_64-linux-gnu${ORIG_LD_LIBRARY_PATH:+:$ORIG_LD_LIBRARY_PATH}
if ! command -v pkg-config >/dev/null && [ -x "$DEPS/usr/bin/pkgconf" ]; then
  mkdir -p "$DEPS/bin" && ln -sf "$DEPS/usr/bin/pkgconf" "$DEPS/bin/pkg-config" && export PATH=$DEPS/bin:$PATH
fi

build_ffmpeg() {
  local tarball
  [ -f "$DEPS/.ffmpeg-built" ] && { echo "FFmpeg already built in $DEPS"; return 0; }
  tarball=$(ls .device/src/ffmpeg_*.orig.tar.xz | head -1) || return 1
  rm -rf /tmp/st-ffmpeg && mkdir -p /tmp/st-ffmpeg && tar -xJf "$tarball" -C /tmp/st-ffmpeg --strip-components=1 || return 1
  cd /tmp/st-ffmpeg || return 1
  # FFmpeg's own codecs for what st reads and writes (H.264/HEVC/VP9/MPEG video, PNG/JPEG images,
  # AAC/MP3/PCM/FLAC/Opus/Vorbis audio; H.264 out through libx264), no external codec libraries.
  ./configure --prefix=/usr --libdir=/usr/lib/x86_64-linux-gnu --shlibdir=/usr/lib/x86_64-linux-gnu \
    --enable-shared --disable-static --disable-programs --disable-doc --disable-avdevice \
    --disable-avfilter --disable-postproc --disable-network --disable-x86asm --disable-autodetect \
    --disable-everything --enable-gpl --enable-libx264 --enable-zlib \
    --enable-decoder=h264,hevc,mpeg4,mpeg1video,mpeg2video,vp8,vp9,mjpeg,png,bmp,aac,mp3,mp3float,pcm_s16le,pcm_s24le,pcm_f32le,flac,opus,vorbis \
    --enable-encoder=libx264,png,aac,pcm_s16le \
    --enable-demuxer=mov,matroska,avi,mpegps,mpegts,mpegvideo,image2,png_pipe,jpeg_pipe,wav,mp3,flac,ogg,aac \
    --enable-muxer=mp4,mov,wav,image2 \
    --enable-parser=h264,hevc,mpeg4video,mpegvideo,vp8,vp9,aac,mpegaudio,png,mjpeg,flac,opus,vorbis \
    --enable-protocol=file,pipe --enable-bsf=h264_mp4toannexb,aac_adtstoasc,extract_extradata,vp9_superframe_split \
    --enable-swscale --enable-swresample \
    --extra-cflags="-I$DEPS/usr/include" --extra-ldflags="-L$DEPS/usr/lib/x86_64-linux-gnu" > /tmp/st-ffmpeg/configure.log 2>&1 ||
    { tail -20 /tmp/st-ffmpeg/configure.log; return 1; }
  make -j"$JOBS" > /tmp/st-ffmpeg/make.log 2>&1 || { tail -30 /tmp/st-ffmpeg/make.log; return 1; }
  make install DESTDIR="$DEPS" > /dev/null 2>&1 && touch "$DEPS/.ffmpeg-built"
}
export -f build_ffmpeg
stage ffmpeg 240 build_ffmpeg >> "$OUT/build.log" 2>&1

# ---- st: configure and build what the check runs ----------------------------------------------
TORCH_CMAKE=$($PY -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null)
CUDA_FLAG=OFF
[ "$TORCH_CUDA" = 1 ] && CUDA_FLAG=ON
export TORCH_CMAKE CUDA_FLAG
configure_st() {
  local torch_dir=${ST_TORCH_DIR:-$TORCH_CMAKE/Torch}
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_CUDA=$CUDA_FLAG \
    -DTorch_DIR="$torch_dir" -DCMAKE_PREFIX_PATH="$DEPS/usr" -DST_ASAN_TESTS=OFF \
    -DST_SKIP_PLUGINS="sanavideo;wan_s2v;crepa"
}
export -f configure_st
stage configure 120 configure_st >> "$OUT/build.log" 2>&1
TARGETS=(st-host st_plugin_wan st_plugin_optim st_plugin_data_local kernels_test_cpu_reference kernels_test_cuda_dit
  optim_test_optimizers optim_test_quant8)
ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^kernels_test_cuda:' && TARGETS+=(kernels_test_cuda)
stage build 300 ninja -C "$BUILD" -j"$JOBS" -k 0 "${TARGETS[@]}" >> "$OUT/build.log" 2>&1
grep -E ": error:|^FAILED:|CMake Error" "$OUT/build.log" | head -40 >> "$OUT/summary.txt"

# ---- tests ------------------------------------------------------------------------------------
run_tests() {
  local bin=$BUILD/bin rc=0
  for t in kernels_test_cpu_reference kernels_test_cuda kernels_test_cuda_dit optim_test_optimizers optim_test_quant8; do
    if [ ! -x "$bin/$t" ]; then
      # kernels_test_cuda exists only where nvcc was found; every other test must have been built.
      [ $t = kernels_test_cuda ] && ! command -v nvcc >/dev/null && continue
      echo "$t: not built"; rc=1; continue
    fi
    "$bin/$t" --gtest_brief=1 || rc=1
  done
  return $rc
}
export -f run_tests
stage tests 120 run_tests > "$OUT/ctest.log" 2>&1
grep -E "PASSED|FAILED|SKIPPED" "$OUT/ctest.log" | head -20 >> "$OUT/summary.txt"

# ---- a short training run on the device -------------------------------------------------------
train_run() {
  local dir=/tmp/st-check-train host=$BUILD/bin/st-host
  rm -rf "$dir" && mkdir -p "$dir"
  "$host" make-model --plugin wan --preset tiny --out "$dir/model" || return 1
  "$host" bench train --plugin wan --model "$dir/model" --out "$dir/bench" --steps 3 --warmup 1 \
    --frames 17 --resolution 128 --mixed_precision bf16 --json
}
# Without CUDA (the rehearsal) the same run goes through the CPU: it still proves the carried
# libraries and the minimal FFmpeg (clips written with libx264, decoded, cached, trained on).
export -f train_run
stage train 120 train_run > "$OUT/train.log" 2>&1
grep -E "host.device|training on|median|error" "$OUT/train.log" | head -10 >> "$OUT/summary.txt"

# ---- benchmark: Wan 2.1 1.3B real shapes, 832x480x81, LoRA 16, bf16, checkpointing ---------------
ELAPSED=$(( $(date +%s) - START ))
if [ "$CUDA_FLAG" = ON ] && [ $ELAPSED -lt $(( 360 * SCALE )) ]; then
  stage bench-st 200 bash scripts/device/bench_st.sh "$BUILD/bin/st-host" "$OUT/bench-st.json" > "$OUT/bench-st.log" 2>&1
  stage bench-diffusers 100 env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" $PY scripts/device/bench_diffusers.py \
    --out "$OUT/bench-diffusers.json" > "$OUT/bench-diffusers.log" 2>&1
  cat "$OUT"/bench-*.json >> "$OUT/summary.txt" 2>/dev/null
else
  note "skipped  bench (no GPU, or ${ELAPSED} s already spent)"
fi
note "total $(( $(date +%s) - START )) s"
[ $FAILURES -eq 0 ] || { note "$FAILURES stage(s) failed"; exit 1; }
