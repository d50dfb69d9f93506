#!/usr/bin/env bash
# One DAgger round in simulation (Ross et al. 2011): the learned policy drives, the scripted expert labels.
#   1. roll the bundle out through the full sim graph on new layouts, recording every episode (vla-jepa eval --record)
#   2. relabel every step of those bags with the scripted expert's action (bags-to-dataset --relabel-expert)
#   3. fine-tune the checkpoint on the demonstrations plus every relabelled round so far (--data A B ...)
#   4. export the result
# Usage: CKPT=runs/fw/train_jepa/step_003500 BUNDLE=runs/fw/bundle_jepa DATA="runs/fw/dataset" OUT=runs/fw/dagger1 \
#        bash scripts/dagger_round.sh
# Knobs (environment): SEED (first layout of the rollouts), EPISODES (per task family), TIMEOUT_S, STEPS, LR,
# THREADS, EXTRA_TRAIN_ARGS (e.g. --train.no-use-wm-loss for the ablation).
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
: "${CKPT:?checkpoint to fine-tune}" "${BUNDLE:?bundle of that checkpoint (it drives the rollouts)}"
: "${DATA:?dataset folder(s) to keep training on (demonstrations, earlier rounds)}" "${OUT:?output folder}"
SEED=${SEED:-3000}
EPISODES=${EPISODES:-20}
TIMEOUT_S=${TIMEOUT_S:-20}
STEPS=${STEPS:-1500}
LR=${LR:-1e-4}
THREADS=${THREADS:-1}
export MUJOCO_GL=${MUJOCO_GL:-egl}

[ -f "$OUT/rollouts/eval_results.json" ] || $V/vla-jepa eval "$BUNDLE" --episodes-per-family "$EPISODES" --seed "$SEED" \
    --task-timeout-s "$TIMEOUT_S" --out-dir "$OUT/rollouts" --record "$OUT/bags"
[ -f "$OUT/relabelled/meta.json" ] || $V/vla-jepa bags-to-dataset "$OUT/bags" "$OUT/relabelled" --image-size-px 128 \
    --no-lerobot --relabel-expert
# shellcheck disable=SC2086  # DATA and EXTRA_TRAIN_ARGS are word lists
$V/vla-jepa-train --preset tiny --data $DATA "$OUT/relabelled" --init-from "$CKPT" --out-dir "$OUT/train" \
    --threads "$THREADS" --train.total-steps "$STEPS" --train.batch-size 16 --train.seed 0 --image-shift-px 2 \
    --train.object-loss-weight 1 --train.lr-vlm "$LR" --train.lr-action-head "$LR" --train.lr-predictor "$LR" \
    --train.warmup-steps 50 ${EXTRA_TRAIN_ARGS:-} > "$OUT/train.log" 2>&1
$V/vla-jepa export "$OUT/train/$(printf 'step_%06d' "$STEPS")" "$OUT/bundle" --model-id "$(basename "$OUT")"
echo "next: vla-jepa eval $OUT/bundle --episodes-per-family 10 --seed 1000; the next round adds $OUT/relabelled to DATA"
