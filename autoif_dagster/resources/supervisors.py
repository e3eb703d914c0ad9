"""Clients of the sandbox supervisor (autoif_dagster/sandbox/supervisor.py) wherever it runs:
a child process ("local"), host namespaces ("host") or a hardened container ("docker"); the
framed link to it; and the per-process pool that keeps supervisors warm between calls.

SandboxResource (sandbox.py) is the only user: it decides what to judge, these decide how the
bytes get to a supervisor and back, and restart one that a verifier killed.
"""

import atexit
import hashlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any


from ..sandbox import protocol

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding autoif_dagster/
SANDBOX_PACKAGE = PROJECT_ROOT / "autoif_dagster" / "sandbox"
SANDBOX_SOURCES = ("protocol.py", "seccomp.py", "supervisor.py")  # all the supervisor runs
DOCKERFILE = PROJECT_ROOT / "docker" / "sandbox.Dockerfile"
SETUP_SCRIPT = "scripts/setup_docker.sh"
SHUTDOWN_GRACE_S = 5.0

# Docker backend
CONTAINER_LABEL = "org.autoif.sandbox"  # on every container we start: `docker ps -f label=...`
CONTAINER_USER = "10001:10001"  # the image's unprivileged `sandbox` user

# Host backend
NOBODY = 65534  # uid and gid the host backend's supervisor runs as when we are root
HOST_MAX_PROCS = 64  # RLIMIT_NPROC of each child there (the user `nobody` is all ours)



def shutdown_supervisors() -> None:
    """Stop every pooled supervisor (container) of this process; called at exit. Later
    judge() calls start new ones."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


class Pool:
    """Started supervisors of one configuration, idle between judge() calls."""

    def __init__(self, factory: Callable[[str], Callable[[], "SupervisorLike"]], keep: bool) -> None:
        self._scratch = tempfile.mkdtemp(prefix="autoif-sandbox-")
        try:
            self._new = factory(self._scratch)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self.keep = keep
        self._idle: list[SupervisorLike] = []
        self._most = 0  # the most supervisors taken at once: idle ones beyond that are stopped
        self._lock = threading.Lock()
        self._closed = False

    def take(self, count: int, stopping: threading.Event) -> list["SupervisorLike"]:
        with self._lock:
            taken, self._idle = self._idle[:count], self._idle[count:]
            self._most = max(self._most, count)
        for supervisor in taken:
            if not supervisor.alive():  # died while idle (engine restarted, killed...)
                supervisor.discard()  # started again on first use
        taken += [self._new() for _ in range(count - len(taken))]
        for supervisor in taken:
            supervisor.stopping = stopping
        return taken

    def give_back(self, supervisors: list["SupervisorLike"]) -> None:
        stop = supervisors
        if self.keep:
            with self._lock:
                if not self._closed:
                    keep = [s for s in supervisors if not s.stopping.is_set()]
                    room = max(0, self._most - len(self._idle))
                    self._idle += keep[:room]
                    stop = [s for s in supervisors if s not in self._idle]
        for supervisor in stop:
            supervisor.close()
        if not self.keep:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for supervisor in idle:
            supervisor.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def forget(self) -> None:
        """In a forked child: drop our copies of the connections, leave the processes alone."""
        for supervisor in self._idle:
            supervisor.forget()
        self._idle = []


_POOLS: dict[tuple, Pool] = {}
_POOLS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()  # another thread may have held it at the fork
    for pool in _POOLS.values():
        pool._lock = threading.Lock()
        pool.forget()
    _POOLS.clear()


def pooled(key: tuple, factory: Callable[[str], Callable[[], "SupervisorLike"]]) -> Pool:
    """This process's warm pool for `key`, made with `factory` the first time."""
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
    if pool is None:
        ours = Pool(factory, keep=True)  # checks engine and image first: not under the lock
        with _POOLS_LOCK:
            pool = _POOLS.setdefault(key, ours)
        if pool is not ours:  # another thread was quicker
            ours.close()
    return pool


atexit.register(shutdown_supervisors)
os.register_at_fork(after_in_child=_after_fork_in_child)


def sandbox_code_hash() -> str:
    digest = hashlib.sha256()
    for name in SANDBOX_SOURCES:
        digest.update((SANDBOX_PACKAGE / name).read_bytes())
    return digest.hexdigest()[:12]


def sandbox_image_version() -> str:
    """Content hash of what goes into the sandbox image: a Dockerfile or supervisor change
    asks for a new image. scripts/setup_docker.sh computes the same hash."""
    digest = hashlib.sha256()
    for path in (DOCKERFILE, *(SANDBOX_PACKAGE / name for name in SANDBOX_SOURCES)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def docker_client() -> Any:
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


def check_image(client: Any, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(
            f"sandbox backend 'docker': image {image} is missing (the supervisor or Dockerfile "
            f"changed, or it was never built). Run `sudo {SETUP_SCRIPT}` to build it."
        ) from None


_CHECKED_CONTAINERS: set[str] = set()


def check_container(client: Any, image: str, command: list[str], host_config: dict[str, Any]) -> None:
    """Start the sandbox container once, as judging would, to run the supervisor's
    --self-check (once per process and settings): an engine that refuses the security options
    or a kernel the filter cannot be installed on stops the run here, named."""
    import docker

    key = repr((image, command, sorted(host_config.items())))
    if key in _CHECKED_CONTAINERS:
        return
    api = client.api
    # Kept until its output is read; and logged: this output is the supervisor's, not a verifier's.
    config = {**host_config, "AutoRemove": False, "LogConfig": {"Type": "json-file", "Config": {}}}
    try:
        container = api.create_container(image, [*command, "--self-check"], user=CONTAINER_USER,
                                         host_config=config, labels={CONTAINER_LABEL: "1"})["Id"]
    except docker.errors.APIError as exc:
        raise RuntimeError(f"sandbox backend 'docker': the engine refused the sandbox container's "
                           f"settings: {exc.explanation or exc}") from None
    try:
        api.start(container)
        status = api.wait(container, timeout=60)["StatusCode"]
        output = api.logs(container, stdout=True, stderr=True).decode(errors="replace").strip()
    except docker.errors.APIError as exc:
        raise RuntimeError(f"sandbox backend 'docker': the sandbox container could not run: "
                           f"{exc.explanation or exc}") from None
    finally:
        api.remove_container(container, force=True)
    if status != 0:
        raise RuntimeError(f"sandbox backend 'docker' cannot confine verifiers here: {output or f'exit {status}'}")
    _CHECKED_CONTAINERS.add(key)


def supervisor_env(scratch: str) -> dict[str, str]:
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


class _Link:
    """Frames to and from one supervisor: requests over `write_fd`, replies from `read_fd`
    (for a container both are its attach socket, with Docker's stream headers on replies).

    Both ends are non-blocking, and sending never waits: what the supervisor cannot take yet
    (it is busy with an earlier job) stays in a buffer, written while we wait for replies. A
    request sent ahead then never waits for the supervisor while it waits for us.
    """

    def __init__(self, write_fd: int, read_fd: int, docker_streams: bool) -> None:
        self.write_fd, self.read_fd, self.docker_streams = write_fd, read_fd, docker_streams
        for fd in {write_fd, read_fd}:
            os.set_blocking(fd, False)
        self._out = bytearray()  # requests not written yet
        self._raw = bytearray()  # read, not yet split into Docker stream chunks
        self._replies = bytearray()  # the supervisor's output (stdout), not yet framed
        self._stream, self._left = 1, 0  # the current Docker chunk's stream and bytes to come
        self._ended = False
        self.texts = protocol.TextTable()  # inputs sent on this connection
        self._poller = select.poll()
        self._poller.register(read_fd, select.POLLIN)
        if write_fd != read_fd:
            self._poller.register(write_fd, 0)
        self._writing = False  # whether the poller waits for room to write

    def send(self, frame: bytes) -> None:
        """Queue a frame and write what fits now; BrokenPipeError if the supervisor is gone."""
        if self._ended:
            raise BrokenPipeError("the supervisor's output ended")
        self._out += frame
        self._flush()

    def receive(self, deadline: float) -> Any | None:
        """The next reply; None once the supervisor's output ends (or breaks off mid-frame).
        TimeoutError past the deadline."""
        while True:
            try:
                framed = protocol.split_frame(self._replies)
            except protocol.FrameError:
                return None
            if framed is not None:
                reply, used = framed
                del self._replies[:used]
                return reply
            if self._ended:
                return None
            self._want_to_write(bool(self._out))
            events = self._poller.poll(_poll_ms(deadline))
            if not events:
                raise TimeoutError
            for fd, event in events:
                if event & select.POLLOUT:
                    self._flush()
                if fd == self.read_fd and event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._read()
                elif event & (select.POLLERR | select.POLLNVAL):  # our write end
                    self._ended = True

    def _flush(self) -> None:
        while self._out:
            try:
                written = os.write(self.write_fd, self._out[: 1 << 20])
            except BlockingIOError:
                return
            except OSError:  # EPIPE, ECONNRESET: the supervisor is gone
                self._ended = True
                self._out.clear()
                return
            del self._out[:written]

    def _want_to_write(self, wanted: bool) -> None:
        if wanted != self._writing:
            self._writing = wanted
            mask = select.POLLOUT if wanted else 0
            if self.write_fd == self.read_fd:
                mask |= select.POLLIN
            self._poller.modify(self.write_fd, mask)

    def idle_and_open(self) -> bool:
        """Nothing unread or unwritten and the supervisor's output still open (checked
        without waiting)."""
        if self._replies or self._raw or self._out or self._ended:
            return False
        self._want_to_write(False)
        return not self._poller.poll(0)

    def _read(self) -> None:
        try:
            data = os.read(self.read_fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:  # ECONNRESET...
            data = b""
        if not data:
            self._ended = True
            return
        if not self.docker_streams:
            self._replies += data
            return
        # Docker multiplexes stdout and stderr on the attach socket (no TTY): each chunk comes
        # after an 8-byte header [stream (1: stdout, 2: stderr), 0, 0, 0, big-endian uint32
        # length]. Only the supervisor writes to either (verifier children have /dev/null);
        # stderr is a supervisor traceback at most, dropped: a dead container says enough.
        raw = self._raw
        raw += data
        while raw:
            if self._left == 0:
                if len(raw) < 8:
                    break
                self._stream, self._left = raw[0], int.from_bytes(raw[4:8], "big")
                del raw[:8]
                continue
            chunk = raw[: self._left]
            del raw[: len(chunk)]
            self._left -= len(chunk)
            if self._stream == 1:
                self._replies += chunk


def _poll_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000) + 1)


class _SupervisorBase(ABC):
    """A supervisor used by one worker thread at a time: started on first use and again after
    it dies. `kill` is the only method other threads call."""

    stopping: threading.Event

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # orders a restart against a concurrent kill
        self._link: _Link | None = None

    def send(self, body: dict[str, Any]) -> bool:
        """Send a request (starting the supervisor if need be); False if it is dead."""
        if self._link is None:
            self._start()
        assert self._link is not None
        try:
            self._link.send(protocol.encode_frame(self._link.texts.pack(body)))
        except OSError:
            return False
        return True

    def receive(self, budget_s: float) -> dict[str, Any] | None:
        """The next reply, or None if the supervisor died or gave none within budget_s."""
        if self._link is None:
            return None
        try:
            return self._link.receive(time.monotonic() + budget_s)
        except TimeoutError:  # hung: discard() kills it
            return None

    def alive(self) -> bool:
        return self._link is None or self._link.idle_and_open()

    @abstractmethod
    def _start(self) -> None:
        """Start the supervisor and connect `_link` to it."""

    @abstractmethod
    def kill(self) -> None:
        """Kill it at once (from any thread)."""

    @abstractmethod
    def discard(self) -> None:
        """Forget a dead (or broken, or hung) supervisor; the next send starts a new one."""

    @abstractmethod
    def close(self) -> None:
        """Stop it: we are done with it."""

    @abstractmethod
    def forget(self) -> None:
        """In a forked child of our process: close our copies of its connection, nothing else."""


class Supervisor(_SupervisorBase):
    """One supervisor process (local and host backends), talking over two pipes."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: str) -> None:
        super().__init__()
        self.command, self.env, self.cwd = command, env, cwd
        self._proc: subprocess.Popen | None = None
        self._to_fd = self._from_fd = -1

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
        self._link = _Link(request_w, reply_r, docker_streams=False)

    def alive(self) -> bool:
        return self._proc is None or (self._proc.poll() is None and super().alive())

    def kill(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()

    def discard(self) -> None:
        if self._proc is not None:
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

    def forget(self) -> None:
        for fd in (self._to_fd, self._from_fd):
            if fd >= 0:
                os.close(fd)
        self._proc, self._link, self._to_fd, self._from_fd = None, None, -1, -1

    def _shut(self) -> None:
        """Reap the process and close our pipe ends."""
        assert self._proc is not None
        self._proc.wait()
        for fd in (self._to_fd, self._from_fd):
            if fd >= 0:
                os.close(fd)
        with self._lock:
            self._proc = None
        self._link = None
        self._to_fd = self._from_fd = -1


SupervisorLike = _SupervisorBase  # what a worker thread needs of its supervisor, whatever the backend


# ---------------------------------------------------------------- host backend

HOST_PYTHON = "/usr/bin/python3"  # the distribution's: it lives under /usr, all that is bound
HOST_ROOT = "/opt/autoif_sandbox"  # where the supervisor's sources appear inside
HOST_LAYOUT = "bwrap2"  # part of the verdict cache key: what a verifier can see changed


class HostCommand:
    """The host backend's supervisor command line: bubblewrap (Debian's `bubblewrap`) builds
    a private root for it, new user, PID (it is PID 1: out of the verifiers' signal reach,
    and it sweeps their leftovers), network (no interfaces but a down loopback), IPC, UTS and
    cgroup namespaces, and a filesystem of only /usr read-only (the interpreter, its standard
    library and the Debian packages verifiers may import), the loader's cache, the
    supervisor's three sources, a private /proc, a minimal /dev, and empty size-capped tmpfs
    at /tmp and /dev/shm. Nothing else of the host is there: no /home, /root, /var, /etc,
    Docker socket or project. No capabilities, no-new-privs; each verifier child adds the
    seccomp filter (sandbox/seccomp.py). As root, bwrap itself runs as `nobody`.
    """

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.as_root = os.geteuid() == 0
        self.python = HOST_PYTHON

    def check(self, scratch: str) -> None:
        """Stop with what is missing, naming how to get it: no silent fallback to less
        isolation. Runs the supervisor's own self-check inside the sandbox once."""
        if shutil.which("bwrap") is None:
            raise RuntimeError("sandbox backend 'host' needs bubblewrap: `sudo apt-get install bubblewrap` "
                               "(or choose backend 'docker')")
        if self.as_root and shutil.which("setpriv") is None:
            raise RuntimeError("sandbox backend 'host' needs util-linux's setpriv to run as nobody: "
                               "`sudo apt-get install util-linux`")
        if not Path(HOST_PYTHON).is_file():
            raise RuntimeError(f"sandbox backend 'host' runs verifiers with the system's {HOST_PYTHON}, which "
                               "is missing: `sudo apt-get install python3`")
        try:
            probe = subprocess.run(self.command(scratch) + ["--self-check"], capture_output=True, text=True,
                                   timeout=60, env={})
        except subprocess.TimeoutExpired:
            raise RuntimeError("sandbox backend 'host': the sandbox did not start within 60 s") from None
        if probe.returncode != 0:
            problem = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
            hint = ""
            if "namespace" in problem[0]:
                hint = (" (bubblewrap needs unprivileged user namespaces: `sudo sysctl -w "
                        "kernel.unprivileged_userns_clone=1`, and user.max_user_namespaces > 0)")
            raise RuntimeError(f"sandbox backend 'host' cannot confine verifiers here: {problem[0]}{hint}")

    def command(self, scratch: str) -> list[str]:
        """bwrap + supervisor. The sources are copied to `scratch` (which the user it runs as
        may read) and bound read-only: the project itself stays out of sight."""
        sources = self._stage_sources(scratch)
        bwrap = ["bwrap", "--unshare-all", "--as-pid-1", "--new-session", "--cap-drop", "ALL",
                 "--hostname", "sandbox", "--uid", str(NOBODY), "--gid", str(NOBODY),
                 "--ro-bind", "/usr", "/usr", "--tmpfs", "/usr/local"]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # merged /usr: symlinks
            path = Path("/", top)
            if path.is_symlink():
                bwrap += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                bwrap += ["--ro-bind", str(path), str(path)]
        for etc in ("/etc/ld.so.cache", "/etc/alternatives"):  # where the loader finds libraries
            if os.path.exists(etc):
                bwrap += ["--ro-bind", etc, etc]
        bwrap += ["--proc", "/proc", "--dev", "/dev",
                  "--size", str(64 * 1024 * 1024), "--perms", "1777", "--tmpfs", "/tmp",
                  "--size", str(64 * 1024 * 1024), "--perms", "1777", "--tmpfs", "/dev/shm",
                  "--ro-bind", sources, HOST_ROOT,
                  # bwrap builds the root and /dev on writable tmpfs: read-only once set up, or
                  # a verifier could leave files there for the next one
                  "--remount-ro", "/dev", "--remount-ro", "/usr/local", "--remount-ro", "/", "--chdir", "/tmp",
                  "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
                  "--setenv", "TMPDIR", "/tmp",
                  # Without a home, nltk fails to import (it looks for its data directory there)
                  "--setenv", "HOME", "/tmp"]
        supervisor = [self.python, "-I", f"{HOST_ROOT}/supervisor.py", "--memory-mb", str(self.memory_mb)]
        drop: list[str] = []
        if self.as_root:  # bwrap then builds the sandbox as nobody, through a user namespace
            drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
                    "--inh-caps=-all", "--bounding-set=-all"]
            supervisor += ["--max-procs", str(HOST_MAX_PROCS)]  # nobody's processes are all ours
        return [*drop, *bwrap, *supervisor]

    @staticmethod
    def _stage_sources(scratch: str) -> str:
        target = Path(scratch, "sources")
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(dir=scratch))
            for name in SANDBOX_SOURCES:
                shutil.copyfile(SANDBOX_PACKAGE / name, staging / name)
                (staging / name).chmod(0o644)
            staging.chmod(0o755)
            os.chmod(scratch, 0o711)  # nobody may pass through, not list
            staging.rename(target)
        return str(target)

    def env(self) -> dict[str, str]:
        return {"PATH": os.defpath}  # bwrap clears it for the supervisor in any case

    def describe(self) -> str:
        who = f"as nobody ({NOBODY}), {HOST_MAX_PROCS} threads max" if self.as_root else "as the invoking user"
        return (f"bubblewrap private root: /usr read-only ({self.python}), private /proc and /dev, 64 MiB "
                f"tmpfs /tmp and /dev/shm, nothing else of the host; new user, PID, network, IPC, UTS and "
                f"cgroup namespaces, {who}, no capabilities, no-new-privs; child per verifier with rlimits, "
                "a seccomp filter (no processes, programs or signals), per-call SIGKILL timeout")


# ---------------------------------------------------------------- docker backend


class ContainerSupervisor(_SupervisorBase):
    """One container running the supervisor, talking over Docker's attach socket: the
    container's stdin and (multiplexed with stderr) stdout."""

    def __init__(self, client: Any, image: str, command: list[str], host_config: dict[str, Any]) -> None:
        super().__init__()
        self.client, self.image, self.command, self.host_config = client, image, command, host_config
        self._container: str | None = None
        self._raw: Any = None  # docker's SocketIO wrapper; holding it keeps the connection open
        self._sock: socket.socket | None = None

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
            self._raw = api.attach_socket(self._container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._sock = getattr(self._raw, "_sock", self._raw)
            api.start(self._container)
        except BaseException:
            self.discard()
            raise
        fd = self._sock.fileno()
        self._link = _Link(fd, fd, docker_streams=True)

    def kill(self) -> None:
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            import docker

            try:
                self.client.api.remove_container(container, force=True)
            except docker.errors.APIError:  # already gone (auto_remove) or being removed
                pass

    def discard(self) -> None:
        self.kill()
        self._close_socket()

    def close(self) -> None:
        self.discard()

    def forget(self) -> None:
        self._close_socket()
        self._container = None

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._raw.close()
        self._sock = self._raw = self._link = None
