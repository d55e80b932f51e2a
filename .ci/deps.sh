#!/usr/bin/env bash
# Install the Debian packages bilo needs to build, test and plot (bilo-compare), if any is missing.
set -euo pipefail
packages=(meson ninja-build pkg-config gcc libsleef-dev zlib1g-dev python3 dataset-fashion-mnist gnuplot-nox)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
