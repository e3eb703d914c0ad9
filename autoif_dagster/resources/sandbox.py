"""The verifier sandbox: LLM-written `evaluate(response)` functions run in supervisor processes.

Each worker thread owns one supervisor (autoif_dagster/sandbox/supervisor.py) and keeps up
to PIPELINE_DEPTH jobs in flight on it: the supervisor judges one job at a time, the next
request already waiting, so that round trips do not add to the time per job. The supervisor
enforces the per-call time limit and turns every way a verifier can misbehave into a
Verdict; this side only has to restart a supervisor that a verifier managed to kill, and
re-send the jobs it had. Where the supervisor runs is the `backend`:

- "local": a plain child process of this one, talking over two pipes. Rlimits and timeouts,
  but no isolation from the host (network, files readable by this user).
- "docker": one long-lived hardened container per worker (no network, read-only root,
  non-root user, no capabilities, memory/pids/CPU limits), talking over the container's
  attached stdin and stdout. Needs scripts/setup_docker.sh to have run.
- "host": the fallback without Docker. The supervisor runs on the host in new network, PID
  and mount namespaces (util-linux `unshare`), with private tmpfs over the world-writable
  directories, as `nobody` when we are root (`setpriv`); pipes as for "local".

Supervisors outlive a judge() call (`keep_warm`): they go back to a per-process pool keyed
by the settings that shape them, the next judge() call with the same settings takes them
again, and they are stopped when the process exits (or by `shutdown_supervisors()`). A
container is started once per run, not once per call.

With `cache_path`, verdicts are kept in a SQLite file (see verdict_cache.py) keyed by the
verifier's source, the input and `sandbox_version()`: a pair judged before is not run again.
"""

import atexit
import contextlib
import hashlib
import os
import queue
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import dagster as dg
from pydantic import Field, PrivateAttr
from tqdm import tqdm

from ..sandbox import protocol
from ..sandbox.protocol import CRASH, FAIL, PASS, Verdict
from .verdict_cache import NOT_CACHED, VerdictCache, VerdictCacheError, verdict_keys

SUPERVISOR_MODULE = "autoif_dagster.sandbox.supervisor"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding autoif_dagster/
SANDBOX_PACKAGE = PROJECT_ROOT / "autoif_dagster" / "sandbox"
DOCKERFILE = PROJECT_ROOT / "docker" / "sandbox.Dockerfile"
SETUP_SCRIPT = "scripts/setup_docker.sh"
SHUTDOWN_GRACE_S = 5.0
# Jobs sent to a supervisor before the first of them is answered: one being judged, one
# waiting. More buys nothing (the supervisor judges one at a time) and loses more work when
# a verifier kills its supervisor.
PIPELINE_DEPTH = 2
# A reply that takes longer than every input timing out plus this is a hung supervisor.
REPLY_GRACE_S = 30.0
# Verdicts stored in the cache per transaction: what a crash can lose at most.
CACHE_BATCH = 2000

# Docker backend
CONTAINER_LABEL = "org.autoif.sandbox"  # on every container we start: `docker ps -f label=...`
CONTAINER_USER = "10001:10001"  # the image's unprivileged `sandbox` user
CONTAINER_OVERHEAD_MB = 256  # the supervisor and page cache, on top of one child's memory_mb
# Imported once in each container's supervisor before it forks (see supervisor._warm_up).
# Not nltk (it brings numpy) nor langdetect (74 MB of language profiles): a parent that big
# made every fork, i.e. every job, about three times slower; the few verifiers that use them
# import them in their own child instead (~0.3 s each).
CONTAINER_PRELOAD = "emoji"

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
    keep_warm: bool = Field(
        True,
        description="Keep supervisors (containers) running after judge() for later calls in this "
        "process; they stop when it exits. False: started and stopped by each call.",
    )
    cache_path: str | None = Field(
        None,
        description="SQLite file of verdicts keyed by (sandbox version, verifier source, input): "
        "pairs judged before are not run again. None: no cache.",
    )

    _last_stats: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def last_stats(self) -> dict[str, int]:
        """Counts for the last judge() call: verdicts returned, cache_hits (from the cache),
        executed (pairs run in the sandbox), duplicates (pairs repeated within the call,
        run once; only deduplicated with a cache), stored (new verdicts written to it)."""
        return dict(self._last_stats)

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
        cache = (f"{self.cache_path} (sandbox version {self.sandbox_version()}; timeouts and crashes "
                 "are not cached)") if self.cache_path else "off"
        return {"sandbox_backend": self.backend, "isolation": isolation, "sandbox_limits": limits,
                "verdict_cache": cache}

    def sandbox_version(self) -> str:
        """What a verdict depends on besides the verifier and its input: the supervisor's code,
        the backend and where it runs, and the limits that can turn into exceptions (memory,
        processes). Part of every verdict cache key; the time limit is not (timeouts are not
        cached)."""
        if self.backend == "docker":
            # The default image's tag is the content hash of its sources; another image is
            # known by its id.
            where = self._image() if not self.image else f"{self.image}@{_docker_client().images.get(self.image).id}"
            return f"docker:{where}:mem{self.memory_mb}:pids{self.container_pids}"
        python = _HostCommand(self.memory_mb).python if self.backend == "host" else sys.executable
        return f"{self.backend}:{_sandbox_code_hash()}:python{sys.version.split()[0]}@{python}:mem{self.memory_mb}"

    def judge(self, jobs: Sequence[VerifierJob], progress: bool = False) -> list[list[Verdict]]:
        """One list of verdicts per job, one verdict per input, both in order."""
        jobs = list(jobs)
        total = sum(len(job.inputs) for job in jobs)
        self._last_stats = {}
        if not self.cache_path:
            results: list[list[Verdict]] = [[] for _ in jobs]  # a job without inputs stays []

            def done(index: int, verdicts: list[Verdict]) -> None:
                results[index] = verdicts

            self._run(jobs, progress, done)
            self._last_stats = {"verdicts": total, "cache_hits": 0, "executed": total, "duplicates": 0, "stored": 0}
            return results
        with VerdictCache(self.cache_path) as cache:
            return self._judge_cached(jobs, total, cache, progress)

    def _judge_cached(self, jobs: list[VerifierJob], total: int, cache: VerdictCache,
                      progress: bool) -> list[list[Verdict]]:
        keys = verdict_keys(self.sandbox_version(), [(job.source, job.inputs) for job in jobs])
        known = cache.get_many(k for row in keys for k in row)
        slots: list[list[Verdict | None]] = [[known.get(k) for k in row] for row in keys]
        # Pairs to run: each distinct missing key once, in the first job that has it.
        where: dict[bytes, list[tuple[int, int]]] = {}
        to_run: list[VerifierJob] = []
        run_keys: list[list[bytes]] = []
        for i, (job, row) in enumerate(zip(jobs, keys)):
            inputs: list[str] = []
            these: list[bytes] = []
            for j, key in enumerate(row):
                if slots[i][j] is not None:
                    continue
                if key not in where:
                    where[key] = []
                    inputs.append(job.inputs[j])
                    these.append(key)
                where[key].append((i, j))
            if inputs:
                to_run.append(VerifierJob(job.source, inputs))
                run_keys.append(these)
        unsaved: list[tuple[bytes, Verdict]] = []
        stored = 0

        def done(index: int, verdicts: list[Verdict]) -> None:
            nonlocal stored
            for key, verdict in zip(run_keys[index], verdicts):
                for i, j in where[key]:
                    slots[i][j] = verdict
                if verdict.kind not in NOT_CACHED:
                    unsaved.append((key, verdict))
            if len(unsaved) >= CACHE_BATCH:
                stored += cache.put_many(unsaved)
                unsaved.clear()

        try:
            self._run(to_run, progress, done, already_done=len(jobs) - len(to_run))
        except BaseException:
            with contextlib.suppress(VerdictCacheError):  # keep what was judged before the error
                cache.put_many(unsaved)
            raise
        stored += cache.put_many(unsaved)
        executed = sum(len(job.inputs) for job in to_run)
        hits = sum(1 for row in keys for key in row if key in known)
        self._last_stats = {"verdicts": total, "cache_hits": hits, "executed": executed,
                            "duplicates": total - hits - executed, "stored": stored}
        return [list(row) for row in slots]  # type: ignore[arg-type]  # every slot is filled

    def _run(self, jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
             already_done: int = 0) -> None:
        """Judge `jobs` in the sandbox, calling done(index, verdicts) in this thread as each
        job is finished (a job without inputs is skipped)."""
        todo = [i for i, job in enumerate(jobs) if job.inputs]
        if not todo:
            return
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in todo:
            pending.put(i)
        finished: queue.SimpleQueue[tuple[int, list[Verdict]] | BaseException] = queue.SimpleQueue()
        stopping = threading.Event()
        pool = self._pool()
        supervisors = pool.take(min(self.workers, len(todo)), stopping)
        threads = [
            threading.Thread(target=self._work, args=(s, jobs, pending, finished),
                             name=f"sandbox-worker-{n}", daemon=True)
            for n, s in enumerate(supervisors)
        ]
        with tqdm(total=already_done + len(jobs), initial=already_done + len(jobs) - len(todo),
                  disable=not progress, desc="sandbox", unit="job") as bar:
            for thread in threads:
                thread.start()
            try:
                for _ in todo:
                    outcome = finished.get()
                    if isinstance(outcome, BaseException):
                        raise outcome
                    done(*outcome)
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
                pool.give_back(supervisors)

    def _pool(self) -> "_Pool":
        """The pool of started supervisors for these settings (a private one without keep_warm)."""
        key = (self.backend, self.memory_mb, self.image, self.container_cpus, self.container_pids,
               os.environ.get("DOCKER_HOST"))  # a different engine is a different pool
        if not self.keep_warm:
            return _Pool(self._supervisor_factory, keep=False)
        with _POOLS_LOCK:
            pool = _POOLS.get(key)
        if pool is None:
            ours = _Pool(self._supervisor_factory, keep=True)  # checks engine and image first
            with _POOLS_LOCK:
                pool = _POOLS.setdefault(key, ours)
            if pool is not ours:  # another thread was quicker
                ours.close()
        return pool

    def _supervisor_factory(self, scratch: str) -> Callable[[], "_SupervisorLike"]:
        """How this backend makes a supervisor; checks up front what it needs (engine, image).
        `scratch` is a directory the supervisors may use while the pool lives."""
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
            return lambda: _ContainerSupervisor(client, image, command, host_config)
        if self.backend == "host":
            host = _HostCommand(self.memory_mb)
            return lambda: _Supervisor(host.command(), host.env(), scratch)
        command = [sys.executable, "-m", SUPERVISOR_MODULE, "--memory-mb", str(self.memory_mb)]
        return lambda: _Supervisor(command, _supervisor_env(scratch), scratch)

    def _image(self) -> str:
        return self.image or f"autoif-sandbox:{sandbox_image_version()}"

    def _work(self, supervisor: "_SupervisorLike", jobs: list[VerifierJob], pending: queue.SimpleQueue,
              finished: queue.SimpleQueue) -> None:
        """A worker thread: judge jobs from `pending` until none are left (or we are stopping),
        with up to PIPELINE_DEPTH of them sent ahead."""
        in_flight: deque[int] = deque()  # sent, unanswered, in the order the supervisor takes them
        again: deque[int] = deque()  # to send again on a fresh supervisor
        deaths: dict[int, int] = {}  # supervisors that died with this job at the head
        fruitless = 0  # deaths in a row with no job sent to blame
        try:
            while not supervisor.stopping.is_set():
                while len(in_flight) < PIPELINE_DEPTH:
                    if again:
                        index = again.popleft()
                    else:
                        try:
                            index = pending.get_nowait()
                        except queue.Empty:
                            break
                    if supervisor.send(self._request(index, jobs[index])):
                        in_flight.append(index)
                        continue
                    again.appendleft(index)
                    break  # it is dead: charged below to the job it was on, if any
                if not in_flight and not again:
                    return
                head = in_flight[0] if in_flight else None
                reply = supervisor.receive(self._reply_budget(jobs[head])) if head is not None else None
                if reply is not None:
                    in_flight.popleft()
                    finished.put((head, self._verdicts(head, jobs[head], reply)))
                    continue
                # The supervisor died (or hung). A verifier can kill it (see supervisor.py): the
                # job it was on (the first unanswered) is retried once on a fresh one, in case
                # something else did; the jobs sent after it are sent again.
                supervisor.discard()
                fruitless = fruitless + 1 if head is None else 0
                if fruitless > 3:
                    raise RuntimeError("sandbox supervisors keep dying before taking a request")
                lost = list(in_flight)
                in_flight.clear()
                if head is not None:
                    deaths[head] = deaths.get(head, 0) + 1
                    if deaths[head] >= 2:
                        crash = Verdict(CRASH, "sandbox supervisor died twice on this verifier")
                        finished.put((head, [crash] * len(jobs[head].inputs)))
                        lost.pop(0)
                again.extendleft(reversed(lost))
        except BaseException as exc:
            finished.put(exc)

    def _request(self, index: int, job: VerifierJob) -> dict[str, Any]:
        return {"id": index, "source": job.source, "inputs": list(job.inputs), "timeout_s": self.timeout_s}

    def _reply_budget(self, job: VerifierJob) -> float:
        """A safety net only: the supervisor answers within about timeout_s per input."""
        return len(job.inputs) * (self.timeout_s + 1) + REPLY_GRACE_S

    @staticmethod
    def _verdicts(index: int, job: VerifierJob, reply: dict[str, Any]) -> list[Verdict]:
        if reply.get("id") != index or len(reply.get("verdicts", ())) != len(job.inputs):
            raise RuntimeError(f"sandbox supervisor answered job {index} with {reply!r:.200}")
        return [_verdict_from_json(v) for v in reply["verdicts"]]


_COMMON_VERDICTS = {PASS: Verdict(PASS), FAIL: Verdict(FAIL)}


def _verdict_from_json(data: Any) -> Verdict:
    kind, detail = data
    if not detail and kind in _COMMON_VERDICTS:
        return _COMMON_VERDICTS[kind]  # one shared object for the commonest verdicts
    return Verdict.from_json(data)


def shutdown_supervisors() -> None:
    """Stop every pooled supervisor (container) of this process; called at exit. Later
    judge() calls start new ones."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


class _Pool:
    """Started supervisors of one configuration, idle between judge() calls."""

    def __init__(self, factory: Callable[[str], Callable[[], "_SupervisorLike"]], keep: bool) -> None:
        self._scratch = tempfile.mkdtemp(prefix="autoif-sandbox-")
        try:
            self._new = factory(self._scratch)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self.keep = keep
        self._idle: list[_SupervisorLike] = []
        self._most = 0  # the most supervisors taken at once: idle ones beyond that are stopped
        self._lock = threading.Lock()
        self._closed = False

    def take(self, count: int, stopping: threading.Event) -> list["_SupervisorLike"]:
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

    def give_back(self, supervisors: list["_SupervisorLike"]) -> None:
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


_POOLS: dict[tuple, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()  # another thread may have held it at the fork
    for pool in _POOLS.values():
        pool._lock = threading.Lock()
        pool.forget()
    _POOLS.clear()


atexit.register(shutdown_supervisors)
os.register_at_fork(after_in_child=_after_fork_in_child)


def _sandbox_code_hash() -> str:
    digest = hashlib.sha256()
    for path in (SANDBOX_PACKAGE / "protocol.py", SANDBOX_PACKAGE / "supervisor.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


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


class _SupervisorBase:
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

    def _start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        """Forget a dead (or broken, or hung) supervisor; the next send starts a new one."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop it: we are done with it."""
        raise NotImplementedError

    def forget(self) -> None:
        """In a forked child of our process: close our copies of its connection, nothing else."""
        raise NotImplementedError


class _Supervisor(_SupervisorBase):
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


_SupervisorLike = _SupervisorBase  # what a worker thread needs of its supervisor, whatever the backend


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


class _ContainerSupervisor(_SupervisorBase):
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
