#!/usr/bin/env bash
# Installs the Debian packages mgmtd needs to build and test.
# Idempotent: when every package is already present it does nothing and prints nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  clang libclang-rt-14-dev
  libboost-dev
  libmsgpack-cxx-dev
  libyaml-cpp-dev
  libspdlog-dev
  nlohmann-json3-dev
  catch2
  python3
  util-linux
  dpkg-dev file   # cpack -G DEB: dpkg-shlibdeps computes the packages' dependencies
  curl            # the metrics tests scrape the HTTP endpoint
  systemd         # systemd-socket-activate and systemd-analyze verify, for the systemd tests
  openssh-server openssh-client  # the remote tests: mgmtctl --host ssh:// against a local sshd
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
