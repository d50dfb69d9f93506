#!/usr/bin/env bash
# The shipped bundle (models/tiny_sim, ONNX only) on a lent GPU: the CUDA tests of test/test_backends.py, then
# `vla-jepa bench` of torch eager / torch + CUDA graphs (bf16, weights read back from the graphs; frames resized on
# the GPU, and on the host for comparison) beside onnxruntime on one CPU thread, in one run:
#   bash benchmarks/gpu_shipped_bundle.sh OUT_DIR
set -u
out=${1:?usage: gpu_shipped_bundle.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)"
} 2>&1 | tee "$out/card.txt"
timeout 240 python3 -m pytest -o addopts="" -p no:cacheprovider -q -m gpu -rs test/test_backends.py 2>&1 \
    | tee "$out/pytest_gpu.log"
timeout 240 python3 -m vla_jepa_ros.cli bench --bundle models/tiny_sim --device cuda \
    --backends torch,torch-graphs,torch-graphs-host,onnxruntime --iterations 300 --e2e-seconds 0 --plot "$out/bench_tiny_sim.png" \
    --json "$out/bench_tiny_sim.json" 2>&1 | grep -v "^\[torch.onnx\]" | tee "$out/bench.log"
