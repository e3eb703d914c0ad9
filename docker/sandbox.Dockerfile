# The verifier sandbox image: Debian's python3, the packages LLM-written verifiers commonly
# import, and the sandbox supervisor as entrypoint. Built by scripts/setup_docker.sh, which
# passes a build context holding only this file and the supervisor's three sources.
#
# Docker Hub cannot be reached here, so the base is not `python:3.11-slim` but a Debian
# root filesystem made with debootstrap and loaded with `docker import` (see the script).
ARG BASE_IMAGE=autoif-sandbox-base:bookworm
FROM ${BASE_IMAGE}

# Content hash of this file and the supervisor sources; the client checks it (see
# autoif_dagster/resources/supervisors.py) so that a stale image is never used silently.
ARG SANDBOX_VERSION=dev
LABEL org.autoif.sandbox.version="${SANDBOX_VERSION}"

# Debian's packages rather than pip: the same mirror that built the base serves them, and
# they match its python3. NLTK's data (punkt, wordnet...) is not included: it is downloaded
# from GitHub, which is unreachable here; verifiers that need it get an exception verdict.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-nltk python3-langdetect python3-emoji python3-numpy \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

# Verifiers and the supervisor run as this unprivileged user; the container also drops all
# capabilities and sets no-new-privileges when it is started.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sandbox

COPY protocol.py seccomp.py supervisor.py /opt/autoif_sandbox/

USER 10001:10001
WORKDIR /tmp
ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0 TMPDIR=/tmp
# -I: ignore PYTHON* variables and the user site; the supervisor runs as a plain script.
# It speaks the protocol on the container's stdin (fd 0) and stdout (fd 1); verifier
# children get /dev/null there and report over a private pipe instead.
ENTRYPOINT ["python3", "-I", "/opt/autoif_sandbox/supervisor.py", "--in-fd", "0", "--out-fd", "1"]
