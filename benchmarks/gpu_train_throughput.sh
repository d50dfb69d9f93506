#!/usr/bin/env bash
# Training throughput of the tiny and small presets on a lent GPU (synthetic episodes, bf16), for planning a
# retrain: bash benchmarks/gpu_train_throughput.sh OUT_DIR  (python3 with CUDA torch; tyro carried as wheels)
set -u
out=${1:?usage: gpu_train_throughput.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/training:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/card.txt"
for preset in tiny small; do
  for batch in 16 64 256; do
    run=/tmp/throughput_${preset}_$batch
    timeout 150 python3 -m vla_jepa.train --preset "$preset" --synthetic-episodes 16 --synthetic-length 48 \
        --device cuda --train.bf16 --train.total-steps 40 --train.batch-size "$batch" --train.log-every 1 \
        --out-dir "$run" --no-progress > "$out/${preset}_$batch.log" 2>&1 || echo "$preset batch $batch: failed (see log)"
    python3 - "$run/metrics.jsonl" "$preset" "$batch" <<'PY' | tee -a "$out/throughput.txt"
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
sps = [r["samples_per_s"] for r in rows[len(rows) // 2:]]  # steady state: the second half of the steps
print(f"{sys.argv[2]:5s} batch {int(sys.argv[3]):4d}: " + (f"{statistics.median(sps):8.1f} samples/s (median of steps "
      f"{len(rows) - len(sps) + 1}..{len(rows)}), loss {rows[-1]['loss']:.3f}" if sps else "no metrics"))
PY
  done
done
