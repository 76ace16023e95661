#!/usr/bin/env bash
# Wheels the GPU machine lacks for bench/ (its image has torch, transformers, triton; see
# /work/.library/device/KINDS.md): evomerge's pydantic and mergekit, the peer. Run here, then carry `.whl`:
#   bash scripts/bench_wheels.sh
#   device run, carry [".whl"], command:
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash scripts/bench_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 mergekit==0.1.5 dill==0.4.1
du -sh .whl
