#!/usr/bin/env bash
# Rebuild the default model bundle (models/tiny_sim) from nothing: the data flywheel in simulation.
#   1. scripted-expert demonstrations through the full sim graph, recorded as MCAP episode bags
#   2. bags -> training dataset (128 px, the tiny preset's image size)
#   3. train `tiny` with the JEPA world-model alignment loss, and the same run without it (ablation)
#   4. export both to bundles (ONNX, parity-checked) and evaluate both in the sim graph on held-out layouts
# Every seed is fixed; knobs via the environment: EPISODES, STEPS, EVAL_EPISODES, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
OUT=${OUT:-runs/flywheel}
EPISODES=${EPISODES:-20}         # demonstrations per task family
STEPS=${STEPS:-2000}             # optimizer steps
EVAL_EPISODES=${EVAL_EPISODES:-5}   # per task family
export MUJOCO_GL=${MUJOCO_GL:-egl}
# tiny starts from random weights: the paper's fine-tuning LRs (VLM 1e-5) are far too low from scratch
LRS=(--train.lr-vlm 3e-4 --train.lr-action-head 3e-4 --train.lr-predictor 3e-4 --train.warmup-steps 100)
step=$(printf "step_%06d" "$STEPS")
stamp() { date +%s; }

t0=$(stamp)
[ -f "$OUT/bags/collect_summary.json" ] || $V/vla-jepa collect "$OUT/bags" --episodes "$EPISODES" --seed 0
t1=$(stamp)
$V/vla-jepa bags-to-dataset "$OUT/bags" "$OUT/dataset" --image-size-px 128 --overwrite
t2=$(stamp)
for variant in jepa no_wm; do
  extra=(); [ "$variant" = no_wm ] && extra=(--train.no-use-wm-loss)
  [ -d "$OUT/train_$variant/$step" ] || $V/vla-jepa-train --preset tiny --data "$OUT/dataset" \
      --out-dir "$OUT/train_$variant" --threads 2 --train.total-steps "$STEPS" --train.batch-size 16 \
      --train.seed 0 "${LRS[@]}" "${extra[@]}"
done
t3=$(stamp)
$V/vla-jepa export "$OUT/train_jepa/$step" "$OUT/bundle_jepa" --model-id tiny-sim-jepa
$V/vla-jepa export "$OUT/train_no_wm/$step" "$OUT/bundle_no_wm" --model-id tiny-sim-no-wm
t4=$(stamp)
$V/vla-jepa eval "$OUT/bundle_jepa" --episodes "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --out-dir "$OUT/eval_jepa"
$V/vla-jepa eval "$OUT/bundle_no_wm" --episodes "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --out-dir "$OUT/eval_no_wm"
t5=$(stamp)
echo "stage times (s): collect $((t1 - t0)), convert $((t2 - t1)), train x2 $((t3 - t2)), export x2 $((t4 - t3)), eval x2 $((t5 - t4))"
echo "ship it: $V/vla-jepa export $OUT/train_jepa/$step models/tiny_sim --model-id tiny-sim-jepa --no-torch-weights --overwrite"
