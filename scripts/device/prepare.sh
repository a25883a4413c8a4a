#!/usr/bin/env bash
# Fills .device/ (ignored by git) with what scripts/device/check.sh needs on a bare GPU test machine
# that has no package registry: run it here (a Debian 12 machine that reaches Debian's mirror), then
# carry `.device` with the device call. Idempotent; prints the carried size (keep it under 50 MiB).
#   .device/debs/   Debian 12 packages st builds against (headers + libraries), unpacked there with dpkg -x
#   .device/src/    FFmpeg 5.1 source (Debian's orig tarball: the same version as libavcodec59 here),
#                   built there with only FFmpeg's own codecs plus libx264; diffusers' src/ at a
#                   pinned commit (the reference side of the benchmark; pure Python)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD/.device
mkdir -p "$root/debs" "$root/src" /tmp/st-device-apt/lists/partial
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude

# Headers and libraries of st's build dependencies that a CUDA/PyTorch image does not have.
DEBS=(
  libboost1.81-dev libboost-program-options1.81-dev libboost-program-options1.81.0
  libboost-filesystem1.81-dev libboost-filesystem1.81.0 libboost-system1.81-dev libboost-system1.81.0
  libboost-atomic1.81.0 libboost-atomic1.81-dev
  nlohmann-json3-dev libtomlplusplus-dev libtomlplusplus3 libfmt-dev libfmt9
  libgtest-dev libgmock-dev
  libsentencepiece-dev libsentencepiece0
  liblua5.4-dev liblua5.4-0
  libcurl4-openssl-dev libcurl4 libnghttp2-14 libpsl5 librtmp1 libssh2-1 libbrotli1 libldap-2.5-0
  libsasl2-2 libsasl2-modules-db libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1
  libcom-err2 libunistring2 libidn2-0 libgnutls30 libhogweed6 libnettle8 libgmp10 libtasn1-6 libp11-kit0
  libffi8
  libx264-dev libx264-164
  zlib1g zlib1g-dev
  pkgconf pkgconf-bin libpkgconf3
)
(cd "$root/debs" && apt-get download "${DEBS[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)

# FFmpeg source: Debian's orig tarball through a private deb-src list (the system's lists untouched).
ver=$(dpkg-query -W -f='${Version}' libavcodec59 2>/dev/null | sed 's/^[0-9]*://; s/-.*//')
if [ -n "$ver" ] && [ ! -f "$root/src/ffmpeg_$ver.orig.tar.xz" ]; then
  cat > /tmp/st-device-apt/sources.list <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
LIST
  o="-o Dir::Etc::SourceList=/tmp/st-device-apt/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=/tmp/st-device-apt/lists"
  apt-get $o update -q >/dev/null
  (cd /tmp/st-device-apt && apt-get $o source --download-only ffmpeg >/dev/null 2>&1 || true)
  cp /tmp/st-device-apt/ffmpeg_"$ver".orig.tar.xz "$root/src/"
fi

# diffusers src/ at a pinned commit (from a local mirror: DIFFUSERS_GIT=path/to/diffusers.git).
DIFFUSERS_COMMIT=${DIFFUSERS_COMMIT:-58eb52c0803ea9af3abec60841c2a093bdf1f951}
if [ ! -f "$root/src/diffusers-$DIFFUSERS_COMMIT.tar.xz" ] && [ -n "${DIFFUSERS_GIT:-}" ]; then
  git -C "$DIFFUSERS_GIT" archive --prefix=diffusers/ "$DIFFUSERS_COMMIT" src/diffusers |
    xz -6 > "$root/src/diffusers-$DIFFUSERS_COMMIT.tar.xz"
fi
du -sh "$root"
ls "$root/src"
