"""The LLM's and the sandbox's work on a Ray cluster: engine replicas and sandbox workers are
Ray actors on the cluster's nodes, fed from one queue of chunks by the driver (the Dagster run's
process). The driver keeps the ledger as in-process: it hands the actors only the ledger's
misses and stores each chunk's results as they come back, so resume, replay and trace stay
exact. An actor lost with its node has its chunks sent to the others.

Every node needs this project installed (as the driver has it) and, for the sandbox, its
backend's own set-up (`make sandbox` builds the Docker image there).
"""

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .generation import ChatRequest, Finished, GenerationStats, Generator

# Chunks sent to an actor before the first comes back: one working, one waiting.
IN_FLIGHT = 2
# How long a replacement for a lost actor may take to start (an engine loads its weights).
REPLACEMENT_TIMEOUT_S = 600.0
# How long a sandbox worker may wait for a node with room before the run is told why.
WORKER_START_TIMEOUT_S = 120.0


class RayError(RuntimeError):
    """The cluster cannot do the work (no answer at the address, no worker left, a refused worker)."""


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto": the one this machine belongs to; ray://host:10001
    through Ray Client) unless this process already has."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address or "auto", namespace="autoif", log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as exc:
        raise RayError(f"no Ray cluster answers at {address or 'auto'}: {exc}") from exc


def chunked(n: int, parts: int, most: int) -> list[list[int]]:
    """0..n-1 in consecutive chunks: at least `parts` of them where n allows (every actor gets
    work), each at most `most` long."""
    if n == 0:
        return []
    size = max(1, min(most, math.ceil(n / parts)))
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]


class ActorPool:
    """Actors of one kind and settings, kept across calls: a run's engine replicas load their
    weights once, not once per stage. Actors die with the driver process that started them."""

    def __init__(self, start: Callable[[], Any], size: int, what: str) -> None:
        self.start, self.size, self.what = start, size, what
        self.actors: list[Any] = []

    def fill(self, wanted: int) -> list[Any]:
        """Live actors, up to `wanted` (at most the pool's size), starting the missing ones."""
        self.actors += [self.start() for _ in range(min(wanted, self.size) - len(self.actors))]
        return self.actors

    def lose(self, actor: Any) -> bool:
        """Forget an actor that died; False if it was already forgotten."""
        if actor not in self.actors:
            return False
        self.actors.remove(actor)
        return True

    def replace(self, count: int) -> None:
        """New actors for lost ones, once they answer; an error if the cluster has no room."""
        import ray
        from ray.exceptions import GetTimeoutError

        fresh = [self.start() for _ in range(min(count, self.size))]
        try:
            ray.get([actor.ready.remote() for actor in fresh], timeout=REPLACEMENT_TIMEOUT_S)
        except GetTimeoutError:
            for actor in fresh:
                ray.kill(actor)
            raise RayError(f"every {self.what} was lost and no node had room for a new one within "
                           f"{REPLACEMENT_TIMEOUT_S:.0f} s") from None
        self.actors += fresh

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors.clear()


_POOLS: dict[tuple, ActorPool] = {}


def actor_pool(key: tuple, start: Callable[[], Any], size: int, what: str) -> ActorPool:
    """The pool for these settings in this process (made on first use). One pool of each kind
    (key[0]: engines, sandbox workers) lives at a time: a new one closes the others of its kind,
    whose actors would otherwise hold the cluster's CPUs (or GPUs) and leave it no room, as
    `exclusive` does for in-process engines."""
    if key not in _POOLS:
        for other in [k for k in _POOLS if k[0] == key[0]]:
            _POOLS.pop(other).close()
        _POOLS[key] = ActorPool(start, size, what)
    return _POOLS[key]


def fan_out(pool: ActorPool, chunks: Sequence[Any], send: Callable[[Any, Any], Any],
            done: Callable[[int, Any], None]) -> dict[str, int]:
    """Run every chunk on the pool's actors (`send(actor, chunk)` returns the ObjectRef of its
    result), calling done(chunk index, result) in this thread as each comes back. A chunk whose
    actor died (its node lost, its process killed) goes back to the queue for the others; when
    none is left, replacements are started. An error raised by the work itself is raised here as
    it was, and the pool is closed (its actors may be mid-chunk). Returns {"actors": used,
    "lost": actors lost, "resent": chunks sent again}."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    queue = deque(range(len(chunks)))
    running: dict[Any, tuple[Any, int]] = {}  # result ref -> (actor, chunk index)
    counts = {"actors": len(pool.fill(len(chunks))), "lost": 0, "resent": 0}
    try:
        while queue or running:
            for actor in pool.actors:
                while queue and sum(a is actor for a, _ in running.values()) < IN_FLIGHT:
                    i = queue.popleft()
                    running[send(actor, chunks[i])] = (actor, i)
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, i = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayTaskError as exc:  # the work raised: not the cluster's doing
                raise exc.as_instanceof_cause() from None
            except (RayActorError, WorkerCrashedError):
                queue.appendleft(i)
                counts["resent"] += 1
                counts["lost"] += pool.lose(actor)
                if not pool.actors and not running:
                    pool.replace(len(queue))
                    counts["actors"] += len(pool.actors)
                continue
            done(i, result)
    except BaseException:
        pool.close()
        raise
    return counts


class EngineReplica:
    """A Ray actor holding one vLLM engine (vllm_engine.VLLMGenerator) with the driver's settings."""

    def __init__(self, settings: dict[str, Any]) -> None:
        import os

        from .llm import LLMResource
        from .vllm_engine import VLLMGenerator

        # vLLM-CPU binds its threads to every core of the node by default; a replica may share its
        # node with other actors, so it runs the threads Ray gives it (OMP_NUM_THREADS =
        # replica_cpus) where the OS puts them (a gain not measured apart: benchmarks page)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self.generator = VLLMGenerator(LLMResource(**settings))

    def ready(self) -> bool:
        return True

    def generate(self, requests: list) -> list:
        out: list = [None] * len(requests)
        self.generator.generate(requests, GenerationStats(), out.__setitem__, None)
        return out


class SandboxWorker:
    """A Ray actor judging verifiers on its node, with warm supervisors of the node backend."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from .sandbox import SandboxResource

        self.sandbox = SandboxResource(**settings)
        self.version = self.sandbox.sandbox_version()

    def ready(self) -> bool:
        return True

    def describe(self) -> tuple[str, str]:
        import socket

        return socket.gethostname(), self.version

    def judge(self, jobs: list) -> list:
        return self.sandbox.judge(jobs)


class RayGenerator(Generator):
    """`replicas` engine replicas on the cluster at `ray_address`, each a Ray actor holding the
    vllm backend's engine; the driver sends them the ledger's misses in chunks."""

    def generate(self, requests: Sequence[ChatRequest], stats: GenerationStats, finished: Finished,
                 log: Any) -> None:
        import ray

        s = self.settings
        connect(s.ray_address)
        # the replica's own settings: an in-process engine, no ledger (the driver keeps it)
        settings = {k: v for k, v in dict(s).items() if k not in RAY_ONLY and k != "gpu"}
        settings.update(backend="vllm", ledger_path=None)
        replica = ray.remote(num_cpus=s.replica_cpus, num_gpus=s.replica_gpus, scheduling_strategy="SPREAD")(EngineReplica)
        pool = actor_pool(("engine", s.ray_address, s.replicas, s.replica_cpus, s.replica_gpus, repr(sorted(settings.items()))),
                          lambda: replica.remote(settings), s.replicas, f"engine replica of {s.model!r}")
        chunks = chunked(len(requests), s.replicas * IN_FLIGHT, s.cpu_max_num_seqs)
        began = time.perf_counter()
        try:
            counts = fan_out(pool, chunks, lambda actor, chunk: actor.generate.remote([requests[i] for i in chunk]),
                             lambda c, completions: [finished(i, x) for i, x in zip(chunks[c], completions)])
        finally:
            stats.seconds += time.perf_counter() - began
        if log is not None:
            log.info(f"{s.model}: {len(requests)} requests on Ray, {counts}")


# LLMResource settings the driver reads, not the replicas
RAY_ONLY = ("ray_address", "replicas", "replica_cpus", "replica_gpus")
