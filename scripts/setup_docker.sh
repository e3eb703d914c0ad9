#!/usr/bin/env bash
# Sets up the Docker verifier sandbox (SandboxResource(backend="docker")). Idempotent; run as root.
#   1. If no Docker engine answers: install docker.io (Debian) and start dockerd in the background.
#   2. If the image autoif-sandbox:<version> is missing: build it from docker/sandbox.Dockerfile,
#      first making its base image from Debian packages with debootstrap, since Docker Hub
#      cannot be reached (no `docker pull`, no `FROM python:...`).
# <version> is a content hash of the Dockerfile and the supervisor sources: editing them makes
# the client ask for a new image, and re-running this script builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=autoif-sandbox-base:bookworm
SUITE=bookworm
DOCKERD_LOG=/var/log/autoif-dockerd.log
SOURCES=(docker/sandbox.Dockerfile autoif_dagster/sandbox/protocol.py autoif_dagster/sandbox/seccomp.py
         autoif_dagster/sandbox/supervisor.py)
# Must match sandbox_image_version() in autoif_dagster/resources/supervisors.py.
VERSION=$(cat "${SOURCES[@]}" | sha256sum | cut -c1-12)
IMAGE=autoif-sandbox:$VERSION

say() { echo "[setup_docker] $*"; }
elapsed() { echo "$((SECONDS))s"; }

if [ "$(id -u)" != 0 ]; then
  echo "scripts/setup_docker.sh must run as root (it installs packages and starts dockerd)" >&2
  exit 1
fi

apt_install() {  # apt_install PACKAGE...: install those not installed yet
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- the engine
if docker info >/dev/null 2>&1; then
  say "Docker engine already running"
else
  # iptables: dockerd sets up NAT for the bridge network that `docker build` uses for apt.
  apt_install docker.io iptables
  if ! pgrep -x dockerd >/dev/null; then
    # No systemd on these machines: start the daemon ourselves, detached from this shell.
    # It picks overlay2 and the cgroup driver the host has (cgroup v1 here) by itself.
    say "starting dockerd (log: $DOCKERD_LOG)"
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not answer within 60 s; see $DOCKERD_LOG" >&2
    tail -20 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  say "Docker engine up after $(elapsed): $(docker info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}')"
fi

# ---------------------------------------------------------------- the image
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "image $IMAGE already built"
  exit 0
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  apt_install debootstrap
  # The first Debian mirror this machine's apt uses (deb822 .sources or one-line .list files),
  # skipping the security archive, which has no full suite to bootstrap from.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -oE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
    | grep -oE '[a-z]+://[^[:space:]]+' | grep -v security | grep debian | head -1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /var/tmp/autoif-sandbox-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap $SUITE from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,passwd,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" >/var/tmp/autoif-debootstrap.log 2>&1 \
    || { tail -20 /var/tmp/autoif-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  say "docker import -> $BASE_IMAGE"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

# A context with only what the Dockerfile copies: the repository holds .venv and data.
context=$(mktemp -d /var/tmp/autoif-sandbox-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "${SOURCES[@]}" "$context/"
say "docker build -> $IMAGE"
docker build -f "$context/sandbox.Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "SANDBOX_VERSION=$VERSION" -t "$IMAGE" "$context" >/var/tmp/autoif-docker-build.log 2>&1 \
  || { tail -20 /var/tmp/autoif-docker-build.log >&2; exit 1; }
say "done after $(elapsed): $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
