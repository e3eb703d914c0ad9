#!/usr/bin/env bash
# What the `host` sandbox backend needs (autoif_dagster/resources/supervisors.py, HostCommand):
# bubblewrap, the distribution's python3, and the packages verifiers may import, the same
# Debian packages the Docker image holds. Idempotent; needs root (make sandbox uses sudo).
set -euo pipefail
packages=(bubblewrap python3 python3-nltk python3-langdetect python3-emoji python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[setup_host_sandbox] already installed: ${packages[*]}"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[setup_host_sandbox] no apt-get here: install ${missing[*]} (or their equivalents) by hand" >&2
  exit 1
fi
echo "[setup_host_sandbox] apt-get install ${missing[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
