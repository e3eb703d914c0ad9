#!/usr/bin/env bash
# What the `host` sandbox backend needs (autoif_dagster/resources/supervisors.py, HostCommand):
# bubblewrap, the distribution's python3, and the packages verifiers may import, the same
# Debian packages the Docker image holds. Idempotent; needs root (make sandbox uses sudo).
set -euo pipefail
exec bash "$(dirname "$0")/apt_install.sh" setup_host_sandbox \
  bubblewrap python3 python3-nltk python3-langdetect python3-emoji python3-numpy
