#!/usr/bin/env bash
# The GPU checks of the policy runtime in one go, for a lent GPU machine whose python3 has CUDA torch:
#   bash benchmarks/gpu_session.sh OUT_DIR
# card + versions, paper-preset latency (fp32 / bf16 SDPA / CUDA graphs, kernel profile), the CUDA tests of
# test/test_backends.py, then the torch.compile variants. Each step has its own time limit so a slow step
# cannot eat the others; logs and JSON land in OUT_DIR.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)"
} 2>&1 | tee "$out/card.txt"
timeout 200 python3 benchmarks/gpu_paper_latency.py --profile --json "$out/paper.json" 2>&1 | tee "$out/paper.log"
timeout 120 python3 -m pytest -o addopts="" -p no:cacheprovider -q -m gpu -rs test/test_backends.py 2>&1 \
    | tee "$out/pytest_gpu.log"
timeout 220 python3 benchmarks/gpu_paper_latency.py --compile --no-fp32 --iterations 50 \
    --json "$out/paper_compile.json" 2>&1 | tee "$out/compile.log"
