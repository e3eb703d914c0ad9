#!/usr/bin/env bash
# Installs the named Debian packages that are missing (idempotent; needs root: make uses sudo).
# Usage: scripts/apt_install.sh WHAT PACKAGE...  (WHAT names the caller in messages)
set -euo pipefail
what=$1; shift
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[$what] already installed: $*"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[$what] no apt-get here: install ${missing[*]} (or their equivalents) by hand" >&2
  exit 1
fi
echo "[$what] apt-get install ${missing[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
