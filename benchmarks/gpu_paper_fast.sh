#!/usr/bin/env bash
# One GPU session (<= 10 min wall) for the faster-inference variants of the paper preset:
#   bash benchmarks/gpu_paper_fast.sh OUT_DIR
# card + versions; the GPU tests of the fast paths (CUDA graphs with a cached prefix, torch._scaled_mm vs the
# emulation); every variant side by side (base, fp8, fused-head, prefix-reuse, all; then the torch.compile ones
# while the budget lasts); FP8 accuracy per module group with the real kernel; the markdown table. Each step has
# its own time limit, so a slow step cannot eat the others; logs, JSON and the table land in OUT_DIR.
# Dry run of the same logic on a CPU: bash benchmarks/gpu_paper_fast.sh OUT_DIR --cpu
set -u
out=${1:?usage: gpu_paper_fast.sh OUT_DIR [--cpu]}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if [ "${2:-}" = "--cpu" ]; then
    dev=(--device cpu --preset tiny --iterations 5 --warmup 1); acc=(--device cpu --presets tiny)
else
    dev=(--compile --budget-s 260); acc=(--device cuda --presets paper --samples 2)
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
      $py -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)"
    } 2>&1 | tee "$out/card.txt"
    timeout 120 $py -m pytest -o addopts="" -p no:cacheprovider -q -m gpu -rs test/test_torch_fast_paths.py \
        test/test_backends.py 2>&1 \
        | tee "$out/pytest_gpu.log"
fi
# a Qwen3-VL tokenizer.json, if the checkout carries one (QWEN_TOKENIZER=path): the real prompt length
tok=(); [ -n "${QWEN_TOKENIZER:-}" ] && tok=(--tokenizer "$QWEN_TOKENIZER")
timeout 360 $py benchmarks/gpu_paper_fast.py "${dev[@]}" "${tok[@]}" --out "$out" 2>&1 | tee "$out/fast.log"
timeout 80 $py benchmarks/fp8_accuracy.py "${acc[@]}" --out "$out" 2>&1 | tee "$out/fp8_accuracy.log"
$py benchmarks/gpu_fast_table.py "$out"/fast_*.json > "$out/table.md" && cat "$out/table.md"
