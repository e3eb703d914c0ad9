"""The verifier sandbox: LLM-written `evaluate(response)` functions run in supervisor processes.

Each worker thread owns one supervisor process (autoif_dagster/sandbox/supervisor.py) and
sends it one job at a time over a pair of pipes. The supervisor enforces the per-call time
limit and turns every way a verifier can misbehave into a Verdict; this side only has to
restart a supervisor that a verifier managed to kill.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import dagster as dg
from pydantic import Field
from tqdm import tqdm

from ..sandbox import protocol
from ..sandbox.protocol import CRASH, Verdict

SUPERVISOR_MODULE = "autoif_dagster.sandbox.supervisor"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding autoif_dagster/
SHUTDOWN_GRACE_S = 5.0


class VerifierJob(NamedTuple):
    source: str  # Python source defining evaluate(response) -> bool
    inputs: Sequence[str]  # the strings to judge


class SandboxResource(dg.ConfigurableResource):
    """Runs LLM-written verifiers in a separate supervisor process with per-call time limits."""

    backend: Literal["local"] = Field(
        "local", description="Where verifiers run. 'local': supervisor processes on this host."
    )
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit per evaluate() call (the paper's release: 5 s).")
    workers: int = Field(2, ge=1, description="Supervisor processes run in parallel.")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per verifier process, MiB.")

    def describe(self) -> dict[str, str]:
        """Backend and isolation facts for asset metadata."""
        return {
            "sandbox_backend": self.backend,
            "isolation": "separate process, rlimits, per-call SIGKILL timeout (no network isolation)",
            "sandbox_limits": f"{self.timeout_s:g} s per call, {self.memory_mb} MiB",
        }

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
            supervisors = [
                _Supervisor(self._command(), _supervisor_env(scratch), scratch, stopping)
                for _ in range(min(self.workers, len(todo)))
            ]
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

    def _command(self) -> list[str]:
        return [sys.executable, "-m", SUPERVISOR_MODULE, "--memory-mb", str(self.memory_mb)]

    def _work(self, supervisor: "_Supervisor", jobs: list[VerifierJob], pending: queue.SimpleQueue,
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

    def _judge_job(self, supervisor: "_Supervisor", index: int, job: VerifierJob) -> list[Verdict]:
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
