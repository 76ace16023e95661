#!/usr/bin/env bash
# Every benchmark in one device call; results land in $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
date -u | tee -a "$OUT/device.txt"
for b in merge generate candidate; do
  echo "== bench/$b.py"
  timeout "${BENCH_TIMEOUT:-280}" python3 bench/$b.py --json "$OUT/$b.json" "$@" 2>&1 | tee "$OUT/$b.md"
done
