#!/usr/bin/env bash
# ensure-deb.sh PACKAGE HINT BINARY...: the one way the ensure-* scripts make
# a tool the tests need available. It exits 0 when one of the binaries is on
# the PATH (or is an executable path); else, as root with apt-get, it
# installs Debian's PACKAGE; else it says what is missing and how to install
# it, then HINT (why it is needed, or another way), and fails.
set -euo pipefail
pkg=$1 hint=$2
shift 2
for b in "$@"; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "$pkg is missing: installing Debian's package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$pkg" >/dev/null
  exit 0
fi
cat >&2 <<MSG
$pkg is missing and this script cannot install it (not root, or no apt-get).
Install it yourself (Debian/Ubuntu: sudo apt-get install -y $pkg)$hint
MSG
exit 1
