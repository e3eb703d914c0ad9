"""Where the sandbox's supervisors run: one class per backend behind one small interface.

SandboxResource (sandbox.py) decides what to judge and keeps the ledger; a backend says how
to start a supervisor there, what isolates it, and the version its verdicts are stored under.
"""

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sandbox.protocol import Verdict
from .sandbox_workers import VerifierJob, run_supervised
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

if TYPE_CHECKING:
    from .sandbox import SandboxResource

SUPERVISOR_MODULE = "autoif_dagster.sandbox.supervisor"
CONTAINER_OVERHEAD_MB = 256  # the supervisor and page cache, on top of one child's memory_mb


class SandboxBackend(ABC):
    def __init__(self, settings: "SandboxResource") -> None:
        self.settings = settings

    @abstractmethod
    def version(self) -> str:
        """What a verdict depends on besides the verifier and its input: the supervisor's code,
        where it runs, and the limits that can turn into exceptions (memory, processes). Part
        of every verdict's ledger key; the time limit is not (timeouts are not stored)."""

    @abstractmethod
    def isolation(self) -> str:
        """How a verifier is kept from the host, in a sentence for asset metadata."""

    def limits(self) -> str:
        return f"{self.settings.timeout_s:g} s per call, {self.settings.memory_mb} MiB"

    @abstractmethod
    def run(self, jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
            already_done: int = 0) -> None:
        """Judge `jobs`, calling done(index, verdicts) in this thread as each finishes (a job
        without inputs is skipped)."""


class SupervisedSandbox(SandboxBackend):
    """Supervisors this process starts and talks to, fed by worker threads (sandbox_workers.py)."""

    def run(self, jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
            already_done: int = 0) -> None:
        run_supervised(jobs, progress, done, already_done, self.pool(), self.settings.workers, self.settings.timeout_s)

    def pool(self) -> Pool:
        """The pool of started supervisors for these settings (a private one without keep_warm)."""
        s = self.settings
        if not s.keep_warm:
            return Pool(self.supervisor_factory, keep=False)
        key = (s.backend, s.memory_mb, s.image, s.container_cpus, s.container_pids,
               os.environ.get("DOCKER_HOST"))  # a different engine is a different pool
        return pooled(key, self.supervisor_factory)

    @abstractmethod
    def supervisor_factory(self, scratch: str) -> Callable[[], SupervisorLike]:
        """How to start a supervisor here, after checking up front what that needs (engine,
        image, bubblewrap). `scratch` is a directory the supervisors may use while the pool lives."""


class LocalSandbox(SupervisedSandbox):
    """A plain child process of this one, talking over two pipes: rlimits and timeouts, but no
    isolation from the host (network, files readable by this user)."""

    def version(self) -> str:
        return f"local:{sandbox_code_hash()}:python{sys.version.split()[0]}@{sys.executable}:mem{self.settings.memory_mb}"

    def isolation(self) -> str:
        return "separate process, rlimits, per-call SIGKILL timeout (no network isolation)"

    def supervisor_factory(self, scratch: str) -> Callable[[], SupervisorLike]:
        command = [sys.executable, "-m", SUPERVISOR_MODULE, "--memory-mb", str(self.settings.memory_mb)]
        return lambda: Supervisor(command, supervisor_env(scratch), scratch)


class HostSandbox(SupervisedSandbox):
    """The fallback without Docker: bubblewrap gives the supervisor a private root (only /usr,
    read-only, and empty tmpfs) in new user, PID, network, IPC, UTS and cgroup namespaces, as
    `nobody` when we are root; pipes as for local."""

    def version(self) -> str:  # another interpreter, seen through another filesystem
        python = os.path.realpath(HostCommand(self.settings.memory_mb).python)
        return f"host:{HOST_LAYOUT}:{sandbox_code_hash()}:{python}:mem{self.settings.memory_mb}"

    def isolation(self) -> str:
        return HostCommand(self.settings.memory_mb).describe()

    def supervisor_factory(self, scratch: str) -> Callable[[], SupervisorLike]:
        host = HostCommand(self.settings.memory_mb)
        host.check(scratch)
        command = host.command(scratch)
        return lambda: Supervisor(command, host.env(), scratch)


class DockerSandbox(SupervisedSandbox):
    """One long-lived hardened container per worker (no network, read-only root, non-root
    user, no capabilities, memory/pids/CPU limits), talking over the container's attached stdin
    and stdout. Needs scripts/setup_docker.sh to have run."""

    def image(self) -> str:
        return self.settings.image or f"autoif-sandbox:{sandbox_image_version()}"

    def version(self) -> str:
        s = self.settings
        # the default image's tag is the content hash of its sources; another image is known by its id
        where = self.image() if not s.image else f"{s.image}@{docker_client().images.get(s.image).id}"
        return f"docker:{where}:mem{s.memory_mb}:pids{s.container_pids}"

    def isolation(self) -> str:
        return (f"one container per worker ({self.image()}): no network, read-only root, 64 MiB /tmp "
                f"tmpfs, user {CONTAINER_USER}, all capabilities dropped, no-new-privileges, Docker's "
                "default seccomp profile; child per verifier with rlimits, a seccomp filter (no processes, "
                "programs or signals), per-call SIGKILL timeout")

    def limits(self) -> str:
        s = self.settings
        return (f"{super().limits()}; per container {s.memory_mb + CONTAINER_OVERHEAD_MB} MiB, "
                f"{s.container_pids} pids, {s.container_cpus:g} CPU")

    def supervisor_factory(self, scratch: str) -> Callable[[], SupervisorLike]:
        s = self.settings
        client = docker_client()
        image = self.image()
        check_image(client, image)
        host_config = client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "size=64m,mode=1777,noexec,nosuid,nodev"},
            mem_limit=f"{s.memory_mb + CONTAINER_OVERHEAD_MB}m",
            memswap_limit=f"{s.memory_mb + CONTAINER_OVERHEAD_MB}m",  # equal: no swap
            pids_limit=s.container_pids,
            nano_cpus=int(s.container_cpus * 1e9),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            # The container removes itself once its supervisor exits, which it does when our
            # attach connection closes (StdinOnce), even if this process is killed.
            auto_remove=True,
            log_config={"type": "none"},  # nothing a verifier prints reaches the host's disk
        )
        command = ["--memory-mb", str(s.memory_mb)]
        check_container(client, image, command, host_config)
        return lambda: ContainerSupervisor(client, image, command, host_config)


class RaySandbox(SandboxBackend):
    """Workers on the Ray cluster at `ray_address`: `workers` Ray actors, each judging on its
    own node with the `ray_node_backend` there; the driver keeps the ledger."""

    def node(self) -> SupervisedSandbox:
        """The backend every node runs (its version is the one verdicts are stored under)."""
        return NODE_BACKENDS[self.settings.ray_node_backend](self.node_settings())

    def node_settings(self) -> "SandboxResource":
        return self.settings.model_copy(update={"backend": self.settings.ray_node_backend, "ledger_path": None,
                                                "workers": 1, "ray_address": None})

    def version(self) -> str:
        return self.node().version()

    def isolation(self) -> str:
        return f"on Ray workers, each node: {self.node().isolation()}"

    def limits(self) -> str:
        return self.node().limits()

    def run(self, jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
            already_done: int = 0) -> None:
        import ray
        from tqdm import tqdm

        from ray.exceptions import GetTimeoutError

        from .ray_cluster import (
            IN_FLIGHT, WORKER_START_TIMEOUT_S, RayError, SandboxWorker, actor_pool, chunked, connect, fan_out,
        )

        s = self.settings
        connect(s.ray_address)
        todo = [i for i, job in enumerate(jobs) if job.inputs]
        settings = dict(self.node_settings())
        expected = self.version()
        worker = ray.remote(num_cpus=s.ray_worker_cpus, scheduling_strategy="SPREAD")(SandboxWorker)

        def start() -> object:
            actor = worker.remote(settings)
            try:
                host, version = ray.get(actor.describe.remote(), timeout=WORKER_START_TIMEOUT_S)
            except GetTimeoutError:
                ray.kill(actor)
                raise RayError(f"no node of the Ray cluster had room for a sandbox worker ({s.ray_worker_cpus:g} "
                               f"CPU) within {WORKER_START_TIMEOUT_S:.0f} s") from None
            if version != expected:  # its verdicts would be stored under another key
                ray.kill(actor)
                raise RayError(f"the sandbox worker on {host} runs sandbox version {version!r}, this driver "
                               f"{expected!r}: install the same project (and sandbox image) on every node")
            return actor

        chunks = [[todo[k] for k in chunk] for chunk in chunked(len(todo), s.workers * IN_FLIGHT, 32)]
        with tqdm(total=already_done + len(jobs), initial=already_done + len(jobs) - len(todo),
                  disable=not progress, desc="sandbox (ray)", unit="job") as bar:
            def finished(c: int, verdicts: list[list[Verdict]]) -> None:
                for i, row in zip(chunks[c], verdicts):
                    done(i, row)
                bar.update(len(verdicts))

            pool = actor_pool(("sandbox", s.ray_address, s.workers, s.ray_worker_cpus, expected,
                               repr(sorted(settings.items()))), start, s.workers, "sandbox worker")
            fan_out(pool, chunks, lambda actor, chunk: actor.judge.remote([jobs[i] for i in chunk]), finished)


NODE_BACKENDS: dict[str, type[SupervisedSandbox]] = {"docker": DockerSandbox, "host": HostSandbox, "local": LocalSandbox}
SANDBOX_BACKENDS: dict[str, type[SandboxBackend]] = {**NODE_BACKENDS, "ray": RaySandbox}
