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
- "host": the fallback without Docker. bubblewrap gives the supervisor a private root (only
  /usr, read-only, and empty tmpfs) in new user, PID, network, IPC, UTS and cgroup
  namespaces, as `nobody` when we are root; pipes as for "local".

On every backend each verifier child installs a seccomp filter on itself (no programs,
processes or signals of its own: sandbox/seccomp.py) and reports hitting its memory limit
as a `memory` verdict.

Supervisors outlive a judge() call (`keep_warm`): they go back to a per-process pool keyed
by the settings that shape them, the next judge() call with the same settings takes them
again, and they are stopped when the process exits (or by `shutdown_supervisors()`). A
container is started once per run, not once per call.

With `ledger_path`, verdicts are kept in the ledger (see ledger.py) keyed by the verifier's
source, the input and `sandbox_version()`: a pair judged before is not run again.
"""

import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import dagster as dg
from pydantic import Field
from tqdm import tqdm

from ..sandbox.protocol import CRASH, KINDS, MEMORY, TIMEOUT, Verdict, decode_verdicts
from .supervisors import (
    CONTAINER_USER,
    HOST_LAYOUT,
    ContainerSupervisor,
    HostCommand,
    Pool,
    Supervisor,
    SupervisorLike,
    check_container,
    check_image,
    docker_client,
    pooled,
    sandbox_code_hash,
    sandbox_image_version,
    supervisor_env,
)
from .ledger import BatchWriter, Ledger, LedgerError, verdict_keys

SUPERVISOR_MODULE = "autoif_dagster.sandbox.supervisor"
# Jobs sent to a supervisor before the first of them is answered: one being judged, one
# waiting. More buys nothing (the supervisor judges one at a time) and loses more work when
# a verifier kills its supervisor.
PIPELINE_DEPTH = 2
# A reply that takes longer than every input timing out plus this is a hung supervisor.
REPLY_GRACE_S = 30.0
CONTAINER_OVERHEAD_MB = 256  # the supervisor and page cache, on top of one child's memory_mb
# The image's packages are not imported in the container's supervisor before it forks (see
# supervisor._warm_up), only the standard library's commonest: every job pays for what the
# supervisor holds, in its fork and its child's exit. nltk (it brings numpy) or langdetect
# (74 MB of language profiles) made every job about three times slower; even emoji (4.4 MB)
# cost 0.24 ms a job, where an emoji-importing child pays ~50 ms once, and no verifier of
# the release's samples or of the recorded default run imports it.
# Verdicts stored in the ledger per transaction: what a crash can lose at most.
CACHE_BATCH = 2000
# Never stored: whether a call finishes in time depends on the machine's load, a crash can
# come from outside the verifier (the supervisor or container killed), and where the memory
# limit bites depends on what the supervisor had mapped when it forked.
NOT_CACHED = (TIMEOUT, CRASH, MEMORY)


def _verdicts(ledger: Ledger, keys) -> dict[bytes, Verdict]:
    """The stored verdicts among `keys` (one object per distinct verdict)."""
    shared: dict[tuple, Verdict] = {}
    found = {}
    for key, row in ledger.get_many("verdicts", keys).items():
        if row[0] not in KINDS:
            raise LedgerError(f"ledger {ledger.path} cannot be read: unknown verdict kind {row[0]!r}")
        found[key] = shared.setdefault(row, Verdict(*row))
    return found


class VerifierJob(NamedTuple):
    source: str  # Python source defining evaluate(response) -> bool
    inputs: Sequence[str]  # the strings to judge


class Judgement(NamedTuple):
    verdicts: list[list[Verdict]]  # per job, per input, in order
    # verdicts returned, cache_hits (from the ledger), executed (pairs run in the sandbox),
    # duplicates (pairs repeated within the call, run once; only with a ledger), stored
    stats: dict[str, int]


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
    ledger_path: str | None = Field(
        None,
        description="The ledger (SQLite file) that keeps verdicts keyed by (sandbox version, "
        "verifier source, input): pairs judged before are not run again. None: no ledger.",
    )

    def describe(self) -> dict[str, str]:
        """Backend and isolation facts for asset metadata."""
        limits = f"{self.timeout_s:g} s per call, {self.memory_mb} MiB"
        if self.backend == "docker":
            isolation = (
                f"one container per worker ({self._image()}): no network, read-only root, 64 MiB /tmp "
                f"tmpfs, user {CONTAINER_USER}, all capabilities dropped, no-new-privileges, Docker's "
                "default seccomp profile; child per verifier with rlimits, a seccomp filter (no processes, programs or signals), per-call SIGKILL timeout"
            )
            limits += f"; per container {self.memory_mb + CONTAINER_OVERHEAD_MB} MiB, " \
                      f"{self.container_pids} pids, {self.container_cpus:g} CPU"
        elif self.backend == "host":
            isolation = HostCommand(self.memory_mb).describe()
        else:
            isolation = "separate process, rlimits, per-call SIGKILL timeout (no network isolation)"
        ledger = (f"{self.ledger_path} (sandbox version {self.sandbox_version()}; timeouts and crashes "
                  "are not stored)") if self.ledger_path else "off"
        return {"sandbox_backend": self.backend, "isolation": isolation, "sandbox_limits": limits,
                "verdict_ledger": ledger}

    def sandbox_version(self) -> str:
        """What a verdict depends on besides the verifier and its input: the supervisor's code,
        the backend and where it runs, and the limits that can turn into exceptions (memory,
        processes). Part of every verdict cache key; the time limit is not (timeouts are not
        cached)."""
        if self.backend == "docker":
            # The default image's tag is the content hash of its sources; another image is
            # known by its id.
            where = self._image() if not self.image else f"{self.image}@{docker_client().images.get(self.image).id}"
            return f"docker:{where}:mem{self.memory_mb}:pids{self.container_pids}"
        if self.backend == "host":  # another interpreter, seen through another filesystem
            return f"host:{HOST_LAYOUT}:{sandbox_code_hash()}:{os.path.realpath(HostCommand(self.memory_mb).python)}:mem{self.memory_mb}"
        return f"local:{sandbox_code_hash()}:python{sys.version.split()[0]}@{sys.executable}:mem{self.memory_mb}"

    def judge(self, jobs: Sequence[VerifierJob], progress: bool = False) -> list[list[Verdict]]:
        """One list of verdicts per job, one verdict per input, both in order."""
        return self.judge_with_stats(jobs, progress).verdicts

    def judge_with_stats(self, jobs: Sequence[VerifierJob], progress: bool = False) -> Judgement:
        """judge(), with the call's counts."""
        jobs = list(jobs)
        total = sum(len(job.inputs) for job in jobs)
        if not self.ledger_path:
            results: list[list[Verdict]] = [[] for _ in jobs]  # a job without inputs stays []

            def done(index: int, verdicts: list[Verdict]) -> None:
                results[index] = verdicts

            self._run(jobs, progress, done)
            return Judgement(results, {"verdicts": total, "cache_hits": 0, "executed": total, "duplicates": 0, "stored": 0})
        with Ledger(self.ledger_path) as ledger:
            return self._judge_cached(jobs, total, ledger, progress)

    def _judge_cached(self, jobs: list[VerifierJob], total: int, ledger: Ledger, progress: bool) -> Judgement:
        keys = verdict_keys(self.sandbox_version(), [(job.source, job.inputs) for job in jobs])
        known = _verdicts(ledger, [k for row in keys for k in row])
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

        def done(index: int, verdicts: list[Verdict]) -> None:
            for key, verdict in zip(run_keys[index], verdicts):
                for i, j in where[key]:
                    slots[i][j] = verdict
                if verdict.kind not in NOT_CACHED:
                    writer.add((key, verdict.kind, verdict.detail))

        # what was judged before an error is kept
        with BatchWriter(ledger, "verdicts", CACHE_BATCH) as writer:
            self._run(to_run, progress, done, already_done=len(jobs) - len(to_run))
        stored = writer.stored
        executed = sum(len(job.inputs) for job in to_run)
        hits = sum(1 for row in keys for key in row if key in known)
        return Judgement([list(row) for row in slots],  # type: ignore[misc]  # every slot is filled
                         {"verdicts": total, "cache_hits": hits, "executed": executed,
                          "duplicates": total - hits - executed, "stored": stored})

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

    def _pool(self) -> Pool:
        """The pool of started supervisors for these settings (a private one without keep_warm)."""
        if not self.keep_warm:
            return Pool(self._supervisor_factory, keep=False)
        key = (self.backend, self.memory_mb, self.image, self.container_cpus, self.container_pids,
               os.environ.get("DOCKER_HOST"))  # a different engine is a different pool
        return pooled(key, self._supervisor_factory)

    def _supervisor_factory(self, scratch: str) -> Callable[[], SupervisorLike]:
        """How this backend makes a supervisor; checks up front what it needs (engine, image).
        `scratch` is a directory the supervisors may use while the pool lives."""
        if self.backend == "docker":
            client = docker_client()
            image = self._image()
            check_image(client, image)
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
            command = ["--memory-mb", str(self.memory_mb)]
            check_container(client, image, command, host_config)
            return lambda: ContainerSupervisor(client, image, command, host_config)
        if self.backend == "host":
            host = HostCommand(self.memory_mb)
            host.check(scratch)
            command = host.command(scratch)
            return lambda: Supervisor(command, host.env(), scratch)
        command = [sys.executable, "-m", SUPERVISOR_MODULE, "--memory-mb", str(self.memory_mb)]
        return lambda: Supervisor(command, supervisor_env(scratch), scratch)

    def _image(self) -> str:
        return self.image or f"autoif-sandbox:{sandbox_image_version()}"

    def _work(self, supervisor: SupervisorLike, jobs: list[VerifierJob], pending: queue.SimpleQueue,
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
        try:
            if reply.get("id") != index:
                raise ValueError(f"expected job {index}")
            return decode_verdicts(reply, len(job.inputs))
        except (ValueError, TypeError) as exc:
            raise RuntimeError(f"sandbox supervisor answered job {index} with {reply!r:.200} ({exc})") from None
