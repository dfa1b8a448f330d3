#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool; see docs/benchmarks.md, "GPU"): install the
# carried wheels (pydantic, diffusers, ...: the machine has torch and transformers but cannot reach
# a registry), run the CUDA tests, then the GPU suite with what time is left. Results go to $OUT.
#
#   device run --carry .whl -- bash benchmarks/gpu_device.sh      (BUDGET_S: seconds for both)
set -uo pipefail
OUT=${OUT:-/tmp/sfumato-gpu-out}
BUDGET_S=${BUDGET_S:-560}
TESTS_S=${TESTS_S:-150}
mkdir -p "$OUT"
started=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . ; then
    export PYTHONPATH=/tmp/site:$PWD/core:$PWD/plugins  # the packaged registry.toml still names the plugins
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv | tee "$OUT/nvidia-smi.txt"
timeout "$TESTS_S" python3 -m pytest -m cuda tests/gpu -q -rA -s -W ignore::DeprecationWarning \
    > "$OUT/cuda-tests.log" 2>&1
echo "cuda tests exit $?"; grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|max \||relative error|2 steps" "$OUT/cuda-tests.log" | cut -c1-400
left=$((BUDGET_S - (SECONDS - started)))
echo "benchmarks: ${left}s left"
python3 -m benchmarks.gpu --deadline $((left - 15)) --variants "${VARIANTS:-fp16,compiled-fp16,bf16,compiled-bf16}" \
    --out "$OUT/gpu.json" > "$OUT/gpu-bench.log" 2>&1
echo "benchmarks exit $?"; grep -vE "Loading|Writing|it/s\]|torchvision|^\s*$" "$OUT/gpu-bench.log" | tail -40
