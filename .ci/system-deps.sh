#!/usr/bin/env bash
# Installs the Debian packages napari needs to draw headless (Xvfb + GL + xcb), when missing.
set -euo pipefail
if ! command -v dpkg-query > /dev/null || ! command -v apt-get > /dev/null; then
  echo "no apt here: install Xvfb and OpenGL yourself for headless napari (see DEVELOPERS.md)" >&2
  exit 0
fi
PKGS="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libfontconfig1 libdbus-1-3
libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0
libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1"
missing=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
