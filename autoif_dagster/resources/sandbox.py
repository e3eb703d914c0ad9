"""The verifier sandbox: LLM-written `evaluate(response)` functions run in supervisor processes.

Each worker thread owns one supervisor (autoif_dagster/sandbox/supervisor.py) and sends it
one job at a time. The supervisor enforces the per-call time limit and turns every way a
verifier can misbehave into a Verdict; this side only has to restart a supervisor that a
verifier managed to kill, and re-send the job it was on. Where the supervisor runs is the
`backend`:

- "local": a plain child process of this one, talking over two pipes. Rlimits and timeouts,
  but no isolation from the host (network, files readable by this user).
- "docker": one long-lived hardened container per worker (no network, read-only root,
  non-root user, no capabilities, memory/pids/CPU limits), talking over the container's
  attached stdin and stdout. Needs scripts/setup_docker.sh to have run.
- "host": the fallback without Docker. The supervisor runs on the host in new network, PID
  and mount namespaces (util-linux `unshare`), with private tmpfs over the world-writable
  directories, as `nobody` when we are root (`setpriv`); pipes as for "local".
"""

import hashlib
import os
import queue
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import dagster as dg
from pydantic import Field
from tqdm import tqdm

from ..sandbox import protocol
from ..sandbox.protocol import CRASH, Verdict

SUPERVISOR_MODULE = "autoif_dagster.sandbox.supervisor"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding autoif_dagster/
SANDBOX_PACKAGE = PROJECT_ROOT / "autoif_dagster" / "sandbox"
DOCKERFILE = PROJECT_ROOT / "docker" / "sandbox.Dockerfile"
SETUP_SCRIPT = "scripts/setup_docker.sh"
SHUTDOWN_GRACE_S = 5.0

# Docker backend
CONTAINER_LABEL = "org.autoif.sandbox"  # on every container we start: `docker ps -f label=...`
CONTAINER_USER = "10001:10001"  # the image's unprivileged `sandbox` user
CONTAINER_OVERHEAD_MB = 256  # the supervisor and page cache, on top of one child's memory_mb
# Imported once in each container's supervisor before it forks (see supervisor._warm_up).
# Not nltk (it brings numpy) nor langdetect (74 MB of language profiles): a parent that big
# made every fork, i.e. every job, about three times slower; the few verifiers that use them
# import them in their own child instead (~0.3 s each).
CONTAINER_PRELOAD = "emoji"
# A reply that takes longer than every input timing out plus this is a hung supervisor.
REPLY_GRACE_S = 30.0

# Host backend
NOBODY = 65534  # uid and gid the host backend's supervisor runs as when we are root
HOST_MAX_PROCS = 64  # RLIMIT_NPROC of each child there (the user `nobody` is all ours)


class VerifierJob(NamedTuple):
    source: str  # Python source defining evaluate(response) -> bool
    inputs: Sequence[str]  # the strings to judge


class SandboxResource(dg.ConfigurableResource):
    """Runs LLM-written verifiers in a separate supervisor process with per-call time limits."""

    backend: Literal["local", "docker", "host"] = Field(
        "local",
        description="Where verifiers run. 'local': plain supervisor processes on this host; "
        "'docker': hardened containers (run scripts/setup_docker.sh first); "
        "'host': the no-Docker fallback, supervisors in network/PID/mount namespaces.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit per evaluate() call (the paper's release: 5 s).")
    workers: int = Field(2, ge=1, description="Supervisors (processes or containers) run in parallel.")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per verifier process, MiB.")
    image: str = Field("", description="Docker image; empty: the one scripts/setup_docker.sh builds for this code.")
    container_cpus: float = Field(1.0, gt=0, description="CPU limit per container (docker backend).")
    container_pids: int = Field(64, ge=8, description="Process/thread limit per container (docker backend).")

    def describe(self) -> dict[str, str]:
        """Backend and isolation facts for asset metadata."""
        limits = f"{self.timeout_s:g} s per call, {self.memory_mb} MiB"
        if self.backend == "docker":
            isolation = (
                f"one container per worker ({self._image()}): no network, read-only root, 64 MiB /tmp "
                f"tmpfs, user {CONTAINER_USER}, all capabilities dropped, no-new-privileges, Docker's "
                "default seccomp profile; child per verifier with rlimits, per-call SIGKILL timeout"
            )
            limits += f"; per container {self.memory_mb + CONTAINER_OVERHEAD_MB} MiB, " \
                      f"{self.container_pids} pids, {self.container_cpus:g} CPU"
        elif self.backend == "host":
            isolation = _HostCommand(self.memory_mb).describe()
        else:
            isolation = "separate process, rlimits, per-call SIGKILL timeout (no network isolation)"
        return {"sandbox_backend": self.backend, "isolation": isolation, "sandbox_limits": limits}

    def judge(self, jobs: Sequence[VerifierJob], progress: bool = False) -> list[list[Verdict]]:
        """One list of verdicts per job, one verdict per input, both in order."""
        jobs = list(jobs)
        results: list[list[Verdict]] = [[] for _ in jobs]  # a job without inputs stays []
        todo = [i for i, job in enumerate(jobs) if job.inputs]
        if not todo:
            return results
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in todo:
            pending.put(i)
        finished: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
        stopping = threading.Event()

        with tempfile.TemporaryDirectory(prefix="autoif-sandbox-", ignore_cleanup_errors=True) as scratch, tqdm(
            total=len(jobs), initial=len(jobs) - len(todo), disable=not progress, desc="sandbox", unit="job"
        ) as bar:
            new_supervisor = self._supervisor_factory(scratch, stopping)
            supervisors = [new_supervisor() for _ in range(min(self.workers, len(todo)))]
            threads = [
                threading.Thread(target=self._work, args=(s, jobs, pending, results, finished),
                                 name=f"sandbox-worker-{n}", daemon=True)
                for n, s in enumerate(supervisors)
            ]
            for thread in threads:
                thread.start()
            try:
                for _ in todo:
                    outcome = finished.get()
                    if isinstance(outcome, BaseException):
                        raise outcome
                    bar.update()
            except BaseException:
                # Don't wait for the in-flight jobs: kill their supervisors, the workers then stop.
                stopping.set()
                for supervisor in supervisors:
                    supervisor.kill()
                raise
            finally:
                for thread in threads:
                    thread.join()
        return results

    def _supervisor_factory(self, scratch: str, stopping: threading.Event) -> Callable[[], "_SupervisorLike"]:
        """How this backend makes a supervisor; checks up front what it needs (engine, image)."""
        if self.backend == "docker":
            client = _docker_client()
            image = self._image()
            _check_image(client, image)
            host_config = client.api.create_host_config(
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": "size=64m,mode=1777,noexec,nosuid,nodev"},
                mem_limit=f"{self.memory_mb + CONTAINER_OVERHEAD_MB}m",
                memswap_limit=f"{self.memory_mb + CONTAINER_OVERHEAD_MB}m",  # equal: no swap
                pids_limit=self.container_pids,
                nano_cpus=int(self.container_cpus * 1e9),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                # The container removes itself once its supervisor exits, which it does when our
                # attach connection closes (StdinOnce), even if this process is killed.
                auto_remove=True,
                log_config={"type": "none"},  # nothing a verifier prints reaches the host's disk
            )
            command = ["--memory-mb", str(self.memory_mb), "--preload", CONTAINER_PRELOAD]
            return lambda: _ContainerSupervisor(client, image, command, host_config, stopping)
        if self.backend == "host":
            host = _HostCommand(self.memory_mb)
            return lambda: _Supervisor(host.command(), host.env(), scratch, stopping)
        command = [sys.executable, "-m", SUPERVISOR_MODULE, "--memory-mb", str(self.memory_mb)]
        return lambda: _Supervisor(command, _supervisor_env(scratch), scratch, stopping)

    def _image(self) -> str:
        return self.image or f"autoif-sandbox:{sandbox_image_version()}"

    def _work(self, supervisor: "_SupervisorLike", jobs: list[VerifierJob], pending: queue.SimpleQueue,
              results: list[list[Verdict]], finished: queue.SimpleQueue) -> None:
        """A worker thread: judge jobs from `pending` until none are left (or we are stopping)."""
        try:
            while not supervisor.stopping.is_set():
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                results[index] = self._judge_job(supervisor, index, jobs[index])
                finished.put(index)
        except BaseException as exc:
            finished.put(exc)
        finally:
            supervisor.close()

    def _judge_job(self, supervisor: "_SupervisorLike", index: int, job: VerifierJob) -> list[Verdict]:
        request = {"id": index, "source": job.source, "inputs": list(job.inputs), "timeout_s": self.timeout_s}
        # A verifier can kill its supervisor (see supervisor.py); the request is retried once
        # on a fresh one, in case something else killed it.
        for _attempt in range(2):
            reply = supervisor.request(request)
            if reply is not None:
                if reply.get("id") != index or len(reply["verdicts"]) != len(request["inputs"]):
                    raise RuntimeError(f"sandbox supervisor answered job {index} with {reply!r:.200}")
                return [Verdict.from_json(v) for v in reply["verdicts"]]
        return [Verdict(CRASH, "sandbox supervisor died twice on this verifier")] * len(request["inputs"])


def sandbox_image_version() -> str:
    """Content hash of what goes into the sandbox image: a Dockerfile or supervisor change
    asks for a new image. scripts/setup_docker.sh computes the same hash."""
    digest = hashlib.sha256()
    for path in (DOCKERFILE, SANDBOX_PACKAGE / "protocol.py", SANDBOX_PACKAGE / "supervisor.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _docker_client() -> Any:
    try:
        import docker  # only the docker backend needs the SDK and an engine
    except ImportError as exc:
        raise RuntimeError("sandbox backend 'docker' needs the `docker` Python package") from exc
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeError(
            f"sandbox backend 'docker': no Docker engine is reachable ({exc}). "
            f"Run `sudo {SETUP_SCRIPT}` to install and start one, or choose backend 'host'."
        ) from exc
    return client


def _check_image(client: Any, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(
            f"sandbox backend 'docker': image {image} is missing (the supervisor or Dockerfile "
            f"changed, or it was never built). Run `sudo {SETUP_SCRIPT}` to build it."
        ) from None


def _supervisor_env(scratch: str) -> dict[str, str]:
    """Just enough to start Python and import the package: host secrets in the environment
    (API keys, tokens) are not passed on to LLM-written code."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "TMPDIR": scratch,  # the supervisor's per-child scratch directories land here
    }


class _Supervisor:
    """One supervisor process, used by one worker thread; started on first use and again
    after it dies. `kill` is the only method other threads call."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: str, stopping: threading.Event) -> None:
        self.command, self.env, self.cwd, self.stopping = command, env, cwd, stopping
        self._lock = threading.Lock()  # orders a restart against a concurrent kill
        self._proc: subprocess.Popen | None = None
        self._to_fd = self._from_fd = -1

    def request(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The supervisor's reply, or None if it died on the way (the next call restarts it)."""
        if self._proc is None:
            self._start()
        try:
            protocol.write_frame(self._to_fd, body)
        except (BrokenPipeError, ConnectionResetError):
            return self._discard()
        try:
            reply = protocol.read_frame(self._from_fd)
        except protocol.FrameError:  # cut off mid-frame
            reply = None
        return reply if reply is not None else self._discard()

    def _start(self) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        command = self.command + ["--in-fd", str(request_r), "--out-fd", str(reply_w)]
        try:
            with self._lock:
                if self.stopping.is_set():
                    raise RuntimeError("the sandbox is shutting down")
                self._proc = subprocess.Popen(
                    command, pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                )
        except BaseException:
            for fd in (request_w, reply_r):
                os.close(fd)
            raise
        finally:  # the supervisor's ends; ours stay open
            os.close(request_r)
            os.close(reply_w)
        self._to_fd, self._from_fd = request_w, reply_r

    def kill(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()

    def _discard(self) -> None:
        """Forget a dead (or broken) supervisor."""
        self.kill()
        self._shut()

    def close(self) -> None:
        """Let the supervisor exit on end of input; kill it if it does not."""
        if self._proc is None:
            return
        os.close(self._to_fd)
        self._to_fd = -1
        try:
            self._proc.wait(timeout=SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self._shut()

    def _shut(self) -> None:
        """Reap the process and close our pipe ends."""
        assert self._proc is not None
        self._proc.wait()
        for fd in (self._to_fd, self._from_fd):
            if fd >= 0:
                os.close(fd)
        with self._lock:
            self._proc = None
        self._to_fd = self._from_fd = -1


class _SupervisorLike(Protocol):
    """What a worker thread needs of its supervisor, whatever the backend."""

    stopping: threading.Event

    def request(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The reply, or None if the supervisor died on the way (the next call restarts it)."""

    def kill(self) -> None:
        """Stop it now; the only method other threads call."""

    def close(self) -> None:
        """Stop it when the worker is done."""


# ---------------------------------------------------------------- host backend

# Run by `sh -c` as (namespace) root inside the new namespaces, before dropping privileges:
# "$1" is the package's sandbox directory, the rest is the command to exec.
_HOST_WRAPPER = r"""
set -eu
sources=$1; shift
# Read the supervisor's sources now: the tmpfs mounts below may hide where they live.
protocol=$(cat "$sources/protocol.py")
supervisor=$(cat "$sources/supervisor.py")
# Private, empty, size-capped stand-ins for the directories everyone may write to: what a
# verifier writes there vanishes with the namespace instead of landing on the host.
for dir in /tmp /dev/shm /run/lock; do
  if [ -d "$dir" ]; then mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs "$dir"; fi
done
# /var/tmp holds the supervisor's code, read-only to the user it will run as.
mount -t tmpfs -o size=1m,mode=0755,nosuid,nodev tmpfs /var/tmp
mkdir /var/tmp/autoif-sandbox
printf '%s\n' "$protocol" >/var/tmp/autoif-sandbox/protocol.py
printf '%s\n' "$supervisor" >/var/tmp/autoif-sandbox/supervisor.py
cd /
exec "$@"
"""
_HOST_SUPERVISOR = "/var/tmp/autoif-sandbox/supervisor.py"


class _HostCommand:
    """The host backend's supervisor command line and environment.

    unshare gives it new network (loopback only, down), PID (it is PID 1: out of the
    verifiers' signal reach, and it can sweep their leftovers) and mount namespaces (private
    tmpfs). As root we also drop to `nobody` with setpriv, so that host files are only
    readable where anyone may read them. Not root: a user namespace maps us to its root, and
    verifiers keep our own user's file access. No seccomp filter is applied.
    """

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.as_root = os.geteuid() == 0
        self.python = _python_for_nobody() if self.as_root else sys.executable
        missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"sandbox backend 'host' needs util-linux's {' and '.join(missing)}")

    def command(self) -> list[str]:
        unshare = ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]
        setpriv = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
        supervisor = [self.python, "-I", _HOST_SUPERVISOR, "--memory-mb", str(self.memory_mb)]
        if self.as_root:
            setpriv += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            supervisor += ["--max-procs", str(HOST_MAX_PROCS)]  # nobody's processes are all ours
        else:
            unshare[1:1] = ["--user", "--map-root-user"]
        return [*unshare, "sh", "-c", _HOST_WRAPPER, "sh", str(SANDBOX_PACKAGE), *setpriv, *supervisor]

    def env(self) -> dict[str, str]:
        return {"PATH": os.defpath, "LANG": os.environ.get("LANG", "C.UTF-8"), "TMPDIR": "/tmp"}

    def describe(self) -> str:
        who = (f"as nobody ({NOBODY}), {HOST_MAX_PROCS} processes max" if self.as_root
               else "as the invoking user (user namespace)")
        return (f"host supervisor ({self.python}) in new network, PID and mount namespaces, {who}, "
                "private tmpfs /tmp /dev/shm /var/tmp, no capabilities, no-new-privs, no seccomp; "
                "child per verifier with rlimits, per-call SIGKILL timeout")


def _python_for_nobody() -> str:
    """An interpreter that `nobody` may run: ours (a virtualenv's packages come along) unless
    it lives somewhere private, such as under /root; then the system's python3."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        real = Path(candidate).resolve()
        if real.is_file() and all(d.stat().st_mode & stat.S_IXOTH for d in real.parents) \
                and real.stat().st_mode & stat.S_IXOTH:
            return candidate
    raise RuntimeError("sandbox backend 'host': no Python interpreter that user nobody may run")


# ---------------------------------------------------------------- docker backend


class _ContainerSupervisor:
    """One container running the supervisor, used by one worker thread; started on first use
    and again after it dies. `kill` is the only method other threads call."""

    def __init__(self, client: Any, image: str, command: list[str], host_config: dict[str, Any],
                 stopping: threading.Event) -> None:
        self.client, self.image, self.command, self.host_config = client, image, command, host_config
        self.stopping = stopping
        self._lock = threading.Lock()  # orders a restart against a concurrent kill
        self._container: str | None = None
        self._stream: _AttachStream | None = None

    def request(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self._stream is None:
            self._start()
        assert self._stream is not None
        # A safety net only: the supervisor answers within about timeout_s per input.
        self._stream.sock.settimeout(len(body["inputs"]) * (body["timeout_s"] + 1) + REPLY_GRACE_S)
        try:
            protocol.write_frame(self._stream, body)
            reply = protocol.read_frame(self._stream)
        except (OSError, protocol.FrameError):  # the container died, or hung (socket timeout)
            reply = None
        if reply is None:
            self._discard()
        return reply

    def _start(self) -> None:
        api = self.client.api
        with self._lock:
            if self.stopping.is_set():
                raise RuntimeError("the sandbox is shutting down")
            self._container = api.create_container(
                self.image, self.command, user=CONTAINER_USER, stdin_open=True, host_config=self.host_config,
                labels={CONTAINER_LABEL: "1"}, use_config_proxy=False,
            )["Id"]
        try:
            # Attach before starting: nothing the supervisor writes can be missed.
            self._stream = _AttachStream(
                api.attach_socket(self._container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            )
            api.start(self._container)
        except BaseException:
            self._discard()
            raise

    def kill(self) -> None:
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            import docker

            try:
                self.client.api.remove_container(container, force=True)
            except docker.errors.APIError:  # already gone (auto_remove) or being removed
                pass

    def _discard(self) -> None:
        """Forget a dead (or broken) container."""
        self.kill()
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._discard()


class _AttachStream:
    """The container's stdin (write) and stdout (read) over Docker's attach socket, as the
    file-like object protocol.write_frame/read_frame take.

    Without a TTY, Docker multiplexes stdout and stderr on the socket: each chunk comes after
    an 8-byte header [stream (1: stdout, 2: stderr), 0, 0, 0, length as big-endian uint32].
    Only the supervisor writes to either: verifier children have /dev/null as stdio.
    """

    STDOUT = 1

    def __init__(self, raw: Any) -> None:
        self._raw = raw  # docker's SocketIO wrapper; holding it keeps the connection open
        self.sock: socket.socket = getattr(raw, "_sock", raw)
        self._stream = self.STDOUT
        self._left = 0  # bytes of the current chunk not read yet

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def flush(self) -> None:
        pass

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of stdout; b"" once the container's output ends."""
        while True:
            while self._left == 0:
                header = self._recv_exactly(8)
                if header is None:
                    return b""
                self._stream, self._left = header[0], int.from_bytes(header[4:], "big")
            chunk = self.sock.recv(min(size, self._left))
            if not chunk:
                return b""
            self._left -= len(chunk)
            if self._stream == self.STDOUT:
                return chunk
            # stderr: a supervisor traceback at most; dropped, a dead container says enough

    def _recv_exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
        self._raw.close()
