#!/usr/bin/env bash
# Installs weft's build dependencies from Debian 12 (as root), configures and builds the Release
# tree in ./build. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential g++ clang clang-format clang-tidy libclang-rt-14-dev cmake ninja-build pkg-config
  liburing-dev libnuma-dev libfmt-dev libgtest-dev libgmock-dev googletest libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libxxhash-dev
  libcpp-httplib-dev prometheus systemd
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: missing Debian packages: ${missing[*]}; run as root (or install them)" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package is here for the metrics test, which runs its own server on a loopback
  # port: do not leave the service the package just started running on the default port.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

build_dir=${WEFT_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWEFT_WERROR=ON ${WEFT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir"
