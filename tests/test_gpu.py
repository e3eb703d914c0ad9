"""The GPU resource: which devices a run's models may use, and clear errors when they are not
there. The machine's GPUs are the one thing a CPU box cannot provide, so a stand-in `nvidia-smi`
(the tool the resource asks) plays a two-GPU machine; without it, the machine has none."""

import os
import stat

import dagster as dg
import pytest

from autoif_dagster.definitions import defs
from autoif_dagster.resources.gpu import GPUError, GPUResource, visible_gpus
from autoif_dagster.resources.llm import LLMResource


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")


def test_devices_default_to_every_gpu_and_an_engine_takes_the_first(two_gpus):
    assert visible_gpus() == [0, 1]
    assert GPUResource().claim(1, "m") == [0]
    assert GPUResource().claim(2, "m") == [0, 1]
    assert GPUResource(devices=[1]).claim(1, "m") == [1]
    assert GPUResource.environment([1]) == {"CUDA_VISIBLE_DEVICES": "1"}


def test_a_configured_gpu_that_is_absent_is_named(two_gpus):
    with pytest.raises(GPUError, match=r"names GPU \[3\] for model 'm', but this machine has GPUs \[0, 1\]"):
        GPUResource(devices=[0, 3]).claim(1, "model 'm'")
    with pytest.raises(GPUError, match="needs 2 GPU"):
        GPUResource(devices=[1]).claim(2, "m")


def test_no_gpu_machine(no_gpu):
    assert visible_gpus() == []
    with pytest.raises(GPUError, match="no GPU"):
        GPUResource(devices=[0]).claim(1, "m")
    with pytest.raises(GPUError, match="this machine has no GPU"):
        GPUResource().claim(1, "m")  # the GPU build of vLLM on a machine without one
    GPUResource().cpu_only()  # nothing asked for: the CPU build runs
    with pytest.raises(GPUError, match="CPU build of vLLM"):
        GPUResource(devices=[0]).cpu_only()


def test_one_gpu_resource_configures_both_roles_per_run():
    # the launchpad's resources.gpu.config reaches the supervisor's and the policy's engines
    @dg.asset
    def devices(supervisor_llm: LLMResource, policy_llm: LLMResource) -> list:
        return [supervisor_llm.gpu.devices, policy_llm.gpu.devices]

    resources = {k: defs.resources[k] for k in ("gpu", "supervisor_llm", "policy_llm")}
    result = dg.materialize([devices], resources=resources,
                            run_config={"resources": {"gpu": {"config": {"devices": [2, 3]}}}})
    assert result.output_for_node("devices") == [[2, 3], [2, 3]]
    engine_keys = {LLMResource(gpu=GPUResource(devices=d)).generator().engine_key() for d in ([0], [1])}
    assert len(engine_keys) == 2  # an engine on other devices is another engine
