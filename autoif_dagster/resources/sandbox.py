"""The verifier sandbox: LLM-written `evaluate(response)` functions run in supervisor processes.

Each worker thread owns one supervisor (autoif_dagster/sandbox/supervisor.py) and keeps up
to PIPELINE_DEPTH jobs in flight on it: the supervisor judges one job at a time, the next
request already waiting, so that round trips do not add to the time per job. The supervisor
enforces the per-call time limit and turns every way a verifier can misbehave into a
Verdict; this side only has to restart a supervisor that a verifier managed to kill, and
re-send the jobs it had. Where the supervisor runs is the `backend` (sandbox_backends.py):
"docker" (hardened containers, the default), "host" (bubblewrap namespaces, without Docker) or
"local" (plain child processes, no isolation).

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

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import dagster as dg
from pydantic import Field

from ..sandbox.protocol import CRASH, KINDS, MEMORY, TIMEOUT, Verdict
from .sandbox_backends import SANDBOX_BACKENDS, SandboxBackend
from .sandbox_workers import VerifierJob
from .ledger import Ledger, LedgerError, memoize, verdict_keys

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


class Judgement(NamedTuple):
    verdicts: list[list[Verdict]]  # per job, per input, in order
    # verdicts returned, cache_hits (from the ledger), executed (pairs run in the sandbox),
    # duplicates (pairs repeated within the call, run once; only with a ledger), stored
    stats: dict[str, int]


class SandboxResource(dg.ConfigurableResource):
    """Runs LLM-written verifiers in a separate supervisor process with per-call time limits."""

    backend: Literal["docker", "host", "local", "ray"] = Field(
        "docker",
        description="Where verifiers run, the one default of every entry point (definitions, CLI). 'docker': "
        "hardened containers (make sandbox builds the image); 'host': the no-Docker fallback, supervisors "
        "in bubblewrap's network/PID/mount namespaces; 'local': plain child processes, no isolation; 'ray': "
        "`workers` Ray actors on the cluster at ray_address, each on its node's ray_node_backend.",
    )
    ray_address: str | None = Field(None, description="The Ray cluster (ray backend): 'auto' (None) for the one "
                                    "this machine belongs to, or ray://HEAD:10001.")
    ray_node_backend: Literal["docker", "host", "local"] = Field(
        "docker", description="Where each Ray worker runs its verifiers on its node (ray backend).")
    ray_worker_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each sandbox worker (ray backend).")
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit per evaluate() call (the paper's release: 5 s).")
    workers: int = Field(2, ge=1, description="Supervisors (processes or containers) run in parallel; with "
                         "the ray backend, Ray actors across the cluster.")
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

    def runner(self) -> SandboxBackend:
        """The backend these settings name (sandbox_backends.py)."""
        return SANDBOX_BACKENDS[self.backend](self)

    def describe(self) -> dict[str, str]:
        """Backend and isolation facts for asset metadata."""
        runner = self.runner()
        ledger = (f"{self.ledger_path} (sandbox version {runner.version()}; timeouts and crashes "
                  "are not stored)") if self.ledger_path else "off"
        return {"sandbox_backend": self.backend, "isolation": runner.isolation(), "sandbox_limits": runner.limits(),
                "verdict_ledger": ledger}

    def sandbox_version(self) -> str:
        """The version every verdict's ledger key carries (SandboxBackend.version)."""
        return self.runner().version()

    def judge(self, jobs: Sequence[VerifierJob], progress: bool = False) -> list[list[Verdict]]:
        """One list of verdicts per job, one verdict per input, both in order."""
        return self.judge_with_stats(jobs, progress).verdicts

    def judge_with_stats(self, jobs: Sequence[VerifierJob], progress: bool = False) -> Judgement:
        """judge(), with the call's counts. With a ledger, pairs it holds are not run and each
        distinct (source, input) pair is run once."""
        jobs = list(jobs)
        if not self.ledger_path:
            results: list[list[Verdict]] = [[] for _ in jobs]  # a job without inputs stays []

            def done(index: int, verdicts: list[Verdict]) -> None:
                results[index] = verdicts

            self._run(jobs, progress, done)
            total = sum(len(job.inputs) for job in jobs)
            return Judgement(results, {"verdicts": total, "cache_hits": 0, "executed": total, "duplicates": 0, "stored": 0})
        with Ledger(self.ledger_path) as ledger:
            return self._judge_cached(jobs, ledger, progress)

    def _judge_cached(self, jobs: list[VerifierJob], ledger: Ledger, progress: bool) -> Judgement:
        keys = verdict_keys(self.sandbox_version(), [(job.source, job.inputs) for job in jobs])
        pairs = [(i, j) for i, job in enumerate(jobs) for j in range(len(job.inputs))]
        shared: dict[tuple, Verdict] = {}  # one object per distinct stored verdict

        def read(row: tuple) -> Verdict:
            if row[0] not in KINDS:
                raise LedgerError(f"ledger {self.ledger_path} cannot be read: unknown verdict kind {row[0]!r}")
            return shared.setdefault(row, Verdict(*row))

        def compute(positions: list[int], done: Callable[[int, Verdict], None]) -> None:
            by_job: dict[int, list[int]] = {}  # the missing pairs of each job, in order
            for p in positions:
                by_job.setdefault(pairs[p][0], []).append(p)
            to_run = [(VerifierJob(jobs[i].source, [jobs[i].inputs[pairs[p][1]] for p in ps]), ps)
                      for i, ps in by_job.items()]

            def job_done(index: int, verdicts: list[Verdict]) -> None:
                for p, verdict in zip(to_run[index][1], verdicts):
                    done(p, verdict)

            self._run([job for job, _ in to_run], progress, job_done, already_done=len(jobs) - len(to_run))

        def to_row(key: bytes, verdict: Verdict) -> tuple | None:
            return None if verdict.kind in NOT_CACHED else (key, verdict.kind, verdict.detail)

        flat = [key for row in keys for key in row]
        memo = memoize(ledger, "verdicts", flat, read, compute, to_row, CACHE_BATCH)
        verdicts: list[list[Verdict]] = [[] for _ in jobs]  # a job without inputs stays []
        for (i, _), verdict in zip(pairs, memo.results):
            verdicts[i].append(verdict)
        return Judgement(verdicts, {"verdicts": len(flat), "cache_hits": memo.hits, "executed": memo.computed,
                                    "duplicates": len(flat) - memo.hits - memo.computed, "stored": memo.stored})

    def _run(self, jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
             already_done: int = 0) -> None:
        """Judge `jobs` where the backend runs them, calling done(index, verdicts) in this thread
        as each job is finished (a job without inputs is skipped)."""
        self.runner().run(jobs, progress, done, already_done)
