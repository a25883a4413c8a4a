#!/usr/bin/env bash
# Installs everything st needs to build and test on Debian 12 (bookworm). Idempotent: packages
# already installed are skipped, and `apt-get update` runs only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libtorch-dev                       # LibTorch 1.13.1 (CPU)
  libgloo-dev                        # Gloo headers: data-parallel training through c10d's ProcessGroupGloo
  libopenblas0-pthread               # fast BLAS for LibTorch (the reference BLAS is ~15x slower)
  libboost-dev libboost-program-options-dev libboost-filesystem-dev   # Boost.DLL is header-only
  nlohmann-json3-dev libtomlplusplus-dev libfmt-dev
  libgtest-dev libgmock-dev
  libsentencepiece-dev               # UMT5 tokenizer
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev  # media I/O
  zlib1g-dev                         # compressed disk caches
  liblua5.4-dev                      # Lua hooks
  libcurl4-openssl-dev               # webhooks
  python3 python3-torch python3-numpy   # independent readers and golden generators in tests
  ffmpeg espeak-ng sox               # test and demo media (never used by st itself at run time)
  clang libclang-rt-14-dev           # the libFuzzer build of scripts/fuzz.sh (fuzzer and sanitizer runtimes)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup-deps: all ${#PACKAGES[@]} packages already installed"
fi

# LibTorch links libblas.so.3 through Debian's alternatives: make sure OpenBLAS is the one in use.
alt=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
case "$alt" in
  *openblas*) echo "setup-deps: BLAS is $alt" ;;
  *) echo "setup-deps: selecting OpenBLAS for libblas.so.3"
     $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu \
       /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 || true ;;
esac
