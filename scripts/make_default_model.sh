#!/usr/bin/env bash
# The data flywheel in simulation, from nothing to two evaluated bundles (the recipe for models/tiny_sim; see its
# README for which version of this script made the shipped bundle and what each round measured).
#   1. scripted-expert demonstrations through the full sim graph, recorded as MCAP episode bags
#   2. bags -> training dataset (128 px, the tiny preset's image size; with the recorded object positions)
#   2b. render LAYOUTS random layouts (arm posed as in the recordings) and pretrain the backbone + object head on
#      them to localise the objects (no actions; a few hundred demonstrations alone teach it to memorise layouts)
#   3. from that checkpoint, train `tiny` with the JEPA world-model alignment loss, and the same run without it
#      (ablation), side by side with one thread each (the right split on a 2-core machine; set THREADS for a bigger one); both with the
#      auxiliary object-position loss (simulation ground truth, training only) and the state normalised in-graph
#   4. export both to bundles (ONNX, parity-checked); offline-eval both on held-out demonstrations (seconds), then
#      evaluate both in the sim graph on held-out layouts
#   5. (rounds 4-7 in docs/experiments/tiny_sim/README.md) the round-3 bundle's own rollouts, recorded (DAgger), and DART
#      episodes (the expert aiming off target); fine-tune on demonstrations + DART; convert every bag with
#      counterfactual instructions (each reach phase again naming every other cube); fine-tune on demonstrations +
#      counterfactual, then on counterfactual alone at 3x the learning rate, with and without the alignment loss;
#      export and evaluate both (round 7).
#   6. (round 14) from the round-7 bundle (its ONNX weights read back), the action head also reads the object head's
#      estimate; 2000 steps on demonstrations + DART with counterfactual instructions, with and without the
#      alignment loss; export and evaluate both. The JEPA bundle of that stage is the shipped models/tiny_sim.
#   7. (round 15, session 11) a DAgger round of round 14: its rollouts on 40 new layouts, relabelled by the expert,
#      added to step 6's data; 2000 steps from each round-14 checkpoint (the action statistics of round 14 kept).
#   8. (round 16, session 12) round 14's weak case, the cube nearest the robot (`--target near`): 60 expert
#      demonstrations and 40 round-14 rollouts (DAgger) on such layouts, added to step 7's data; 2000 steps from
#      each round-14 checkpoint; export and evaluate both on held-out layouts, the near-cube ones included.
#   9. (round 17, session 13) step 8's bags converted with --named-object (a fifth tracked object: the cube the
#      instruction names); 3000 steps from each round-16 checkpoint, whose object head grows the new slot and whose
#      action head then reads the named cube's offset from the gripper; export and evaluate both.
# Every seed is fixed; knobs via the environment: EPISODES, SEEDS, LAYOUTS, PRE_STEPS, STEPS, SHIFT_PX, OBJ_WEIGHT,
# EVAL_EPISODES, THREADS, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
OUT=${OUT:-runs/flywheel}
EPISODES=${EPISODES:-20}         # demonstrations per task family and collection batch
SEEDS=${SEEDS:-0 100 200 300 400 600 700 800}  # a collection batch per seed (layouts seed .. seed+EPISODES-1)
LAYOUTS=${LAYOUTS:-4000}         # rendered layouts for the localisation pretraining (2 arm poses each)
PRE_STEPS=${PRE_STEPS:-2000}     # pretraining steps (batch 32, object loss only)
STEPS=${STEPS:-3500}             # optimizer steps on the demonstrations (batch 16)
SHIFT_PX=${SHIFT_PX:-2}          # random-shift image augmentation (+-px at 128 px)
OBJ_WEIGHT=${OBJ_WEIGHT:-1.0}    # auxiliary object-position loss weight (0 = off)
EVAL_EPISODES=${EVAL_EPISODES:-10}  # per task family
THREADS=${THREADS:-1}            # torch threads per training run (the two runs go side by side)
export MUJOCO_GL=${MUJOCO_GL:-egl}
# tiny starts from random weights: the paper's fine-tuning LRs (VLM 1e-5) are far too low from scratch
LRS=(--train.lr-vlm 3e-4 --train.lr-action-head 3e-4 --train.lr-predictor 3e-4 --train.warmup-steps 100)
step=$(printf "step_%06d" "$STEPS")
stamp() { date +%s; }

t0=$(stamp)
bags=()
for seed in $SEEDS; do
  [ -f "$OUT/bags_$seed/collect_summary.json" ] || $V/vla-jepa collect "$OUT/bags_$seed" --episodes-per-family "$EPISODES" --seed "$seed"
  bags+=("$OUT/bags_$seed")
done
t1=$(stamp)
$V/vla-jepa bags-to-dataset "${bags[@]}" "$OUT/dataset" --image-size-px 128 --overwrite
[ -f "$OUT/layouts/meta.json" ] || $V/vla-jepa render-layouts "$OUT/layouts" --layouts "$LAYOUTS" --seed 100000 \
    --arm-poses-from "${bags[@]:0:2}"
pre=$(printf "$OUT/pretrain/step_%06d" "$PRE_STEPS")
[ -d "$pre" ] || $V/vla-jepa-train --preset tiny --data "$OUT/layouts" --out-dir "$OUT/pretrain" \
    --threads $((THREADS * 2)) --train.total-steps "$PRE_STEPS" --train.batch-size 32 --train.seed 0 \
    --image-shift-px "$SHIFT_PX" --train.action-loss-weight 0 --train.no-use-wm-loss --train.object-loss-weight 1 \
    "${LRS[@]}" > "$OUT/pretrain.log" 2>&1
t2=$(stamp)
for variant in jepa no_wm; do
  extra=(); [ "$variant" = no_wm ] && extra=(--train.no-use-wm-loss)
  [ -d "$OUT/train_$variant/$step" ] || $V/vla-jepa-train --preset tiny --data "$OUT/dataset" \
      --init-from "$pre" --out-dir "$OUT/train_$variant" --threads "$THREADS" --train.total-steps "$STEPS" --train.batch-size 16 \
      --train.seed 0 --image-shift-px "$SHIFT_PX" --train.object-loss-weight "$OBJ_WEIGHT" "${LRS[@]}" "${extra[@]}" \
      > "$OUT/train_$variant.log" 2>&1 &
done
wait
t3=$(stamp)
$V/vla-jepa export "$OUT/train_jepa/$step" "$OUT/bundle_jepa" --model-id tiny-sim-jepa
$V/vla-jepa export "$OUT/train_no_wm/$step" "$OUT/bundle_no_wm" --model-id tiny-sim-no-wm
t4=$(stamp)
# held-out demonstrations (layouts 500..509, never trained on) -> chunk error per phase, in seconds
[ -f "$OUT/heldout_bags/collect_summary.json" ] || $V/vla-jepa collect "$OUT/heldout_bags" --episodes-per-family 5 --seed 500
[ -f "$OUT/heldout/meta.json" ] || $V/vla-jepa bags-to-dataset "$OUT/heldout_bags" "$OUT/heldout" --image-size-px 128 --no-lerobot
for variant in jepa no_wm; do
  $V/vla-jepa offline-eval "$OUT/bundle_$variant" "$OUT/heldout" --stride 3 --json "$OUT/offline_$variant.json"
done
$V/vla-jepa eval "$OUT/bundle_jepa" --episodes-per-family "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --out-dir "$OUT/eval_jepa"
$V/vla-jepa eval "$OUT/bundle_no_wm" --episodes-per-family "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --out-dir "$OUT/eval_no_wm"
t5=$(stamp)
echo "stage times (s): collect $((t1 - t0)), convert + layouts + pretrain $((t2 - t1)), train x2 $((t3 - t2)), export x2 $((t4 - t3)), eval x2 $((t5 - t4))"

# ---- rounds 4-7: recovery data and counterfactual instructions (each stage 2000 steps x 16) ----
tune() {  # tune OUT_DIR INIT LR SEED DATA... [-- EXTRA...]
  local out=$1 init=$2 lr=$3 seed=$4; shift 4
  [ -d "$out/step_002000" ] || $V/vla-jepa-train --preset tiny --data "$@" --init-from "$init" --out-dir "$out" \
      --threads $((THREADS * 2)) --train.total-steps 2000 --train.batch-size 16 --train.seed "$seed" --image-shift-px "$SHIFT_PX" \
      --train.object-loss-weight "$OBJ_WEIGHT" --train.lr-vlm "$lr" --train.lr-action-head "$lr" --train.lr-predictor "$lr" \
      --train.warmup-steps 50 ${EXTRA:-} > "$out.log" 2>&1
}
[ -d "$OUT/dagger_bags" ] || $V/vla-jepa eval "$OUT/bundle_jepa" \
    --episodes-per-family 20 --seed 3000 --task-timeout-s 20 --out-dir "$OUT/dagger_rollouts" --record "$OUT/dagger_bags"
[ -f "$OUT/dart_bags/collect_summary.json" ] || $V/vla-jepa collect "$OUT/dart_bags" --episodes-per-family 30 --seed 5000 --aim-noise-m 0.015
[ -f "$OUT/dart/meta.json" ] || $V/vla-jepa bags-to-dataset "$OUT/dart_bags" "$OUT/dart" --image-size-px 128 --no-lerobot --relabel-expert
tune "$OUT/round5" "$OUT/train_jepa/$step" 1e-4 0 "$OUT/dataset" "$OUT/dart"
[ -f "$OUT/cf/meta.json" ] || $V/vla-jepa bags-to-dataset "${bags[@]:0:2}" "$OUT/dart_bags" "$OUT/dagger_bags" "$OUT/cf" \
    --image-size-px 128 --no-lerobot --relabel-expert --counterfactual-colours
tune "$OUT/round6" "$OUT/round5/step_002000" 1e-4 0 "$OUT/dataset" "$OUT/cf"
tune "$OUT/round7_jepa" "$OUT/round6/step_002000" 3e-4 1 "$OUT/cf"
EXTRA=--train.no-use-wm-loss tune "$OUT/round7_no_wm" "$OUT/round6/step_002000" 3e-4 1 "$OUT/cf"
for variant in jepa no_wm; do
  $V/vla-jepa export "$OUT/round7_$variant/step_002000" "$OUT/bundle7_$variant" --model-id "tiny-sim-$variant"
  $V/vla-jepa offline-eval "$OUT/bundle7_$variant" "$OUT/heldout" --stride 3
  $V/vla-jepa eval "$OUT/bundle7_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --out-dir "$OUT/eval7_$variant"
done
# ---- round 14 (session 10): the action head reads the object head's estimate; from the round-7 bundle's ONNX ----
# (--init-from a bundle reads its inference weights back from the graphs; predictor and object head start fresh),
# on the demonstrations + DART episodes with counterfactual instructions (no DAgger bags), both variants side by side
[ -f "$OUT/cf14/meta.json" ] || $V/vla-jepa bags-to-dataset "${bags[@]:0:2}" "$OUT/dart_bags" "$OUT/cf14" \
    --image-size-px 128 --no-lerobot --relabel-expert --counterfactual-colours
# pair ROUND DATA SEED INIT [FLAGS...]: 2000 steps from INIT ("{v}" in it stands for the variant) with and without
# the alignment loss, side by side, at the learning rates of the object-input rounds
# (ROUND_STEPS=N before it: N steps instead of 2000)
pair() {
  local round=$1 data=$2 seed=$3 init=$4 steps=${ROUND_STEPS:-2000} variant extra
  shift 4
  for variant in jepa no_wm; do
    extra=""; [ $variant = no_wm ] && extra=--train.no-use-wm-loss
    [ -d "$OUT/round${round}_$variant/$(printf step_%06d "$steps")" ] || $V/vla-jepa-train --preset tiny --data "$data" \
        --init-from "${init//\{v\}/$variant}" "$@" --out-dir "$OUT/round${round}_$variant" --threads "$THREADS" \
        --train.total-steps "$steps" --train.batch-size 16 --train.seed "$seed" --image-shift-px "$SHIFT_PX" \
        --train.object-loss-weight "$OBJ_WEIGHT" --train.lr-vlm 1e-4 --train.lr-action-head 3e-4 \
        --train.lr-predictor 3e-4 --train.warmup-steps 50 $extra > "$OUT/round${round}_$variant.log" 2>&1 &
  done
  wait
}
pair 14 "$OUT/cf14" 8 "$OUT/bundle7_jepa" --action-head-objects
for variant in jepa no_wm; do
  $V/vla-jepa export "$OUT/round14_$variant/step_002000" "$OUT/bundle14_$variant" --model-id "tiny-sim-objects-$variant"
  $V/vla-jepa eval "$OUT/bundle14_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 2000 --task-timeout-s 30 --out-dir "$OUT/eval14_$variant"
  $V/vla-jepa eval "$OUT/bundle14_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 1000 --task-timeout-s 30 --same-layouts \
      --out-dir "$OUT/evalsl14_$variant"
done
echo "ship it: $V/vla-jepa export $OUT/round14_jepa/step_002000 models/tiny_sim --model-id tiny-sim-objects-jepa --no-torch-weights --overwrite"
# ---- round 15 (session 11): DAgger on round 14; the fine-tune keeps round 14's action statistics (the default) ----
[ -d "$OUT/dagger15_bags" ] || $V/vla-jepa eval "$OUT/bundle14_jepa" \
    --episodes-per-family 20 --seed 7000 --task-timeout-s 25 --out-dir "$OUT/dagger15_rollouts" --record "$OUT/dagger15_bags"
[ -f "$OUT/cf15/meta.json" ] || $V/vla-jepa bags-to-dataset "${bags[@]:0:2}" "$OUT/dart_bags" "$OUT/dagger15_bags" \
    "$OUT/cf15" --image-size-px 128 --no-lerobot --relabel-expert --counterfactual-colours
pair 15 "$OUT/cf15" 9 "$OUT/round14_{v}/step_002000"
for variant in jepa no_wm; do
  $V/vla-jepa export "$OUT/round15_$variant/step_002000" "$OUT/bundle15_$variant" --model-id "tiny-sim-dagger-$variant"
  $V/vla-jepa eval "$OUT/bundle15_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 2000 --task-timeout-s 30 --out-dir "$OUT/eval15_$variant"
done
# ---- round 16 (session 12): demonstrations and DAgger rollouts where the named cube is the one nearest the robot ----
[ -f "$OUT/near_bags/collect_summary.json" ] || $V/vla-jepa collect "$OUT/near_bags" --episodes-per-family 30 --seed 9000 --target near
[ -d "$OUT/dagger_near_bags" ] || $V/vla-jepa eval "$OUT/bundle14_jepa" --episodes-per-family 20 --seed 9100 --target near \
    --task-timeout-s 25 --out-dir "$OUT/dagger_near_rollouts" --record "$OUT/dagger_near_bags"
[ -f "$OUT/cf16/meta.json" ] || $V/vla-jepa bags-to-dataset "${bags[@]:0:2}" "$OUT/dart_bags" "$OUT/dagger15_bags" \
    "$OUT/near_bags" "$OUT/dagger_near_bags" "$OUT/cf16" --image-size-px 128 --no-lerobot --relabel-expert \
    --counterfactual-colours
pair 16 "$OUT/cf16" 10 "$OUT/round14_{v}/step_002000"
# export_eval ROUND STEP MODEL_ID: both variants' ONNX-only bundles, evaluated on 2000.. and the near-cube layouts 9200..
export_eval() {
  local round=$1 step=$2 id=$3 variant
  for variant in jepa no_wm; do
    $V/vla-jepa export "$OUT/round${round}_$variant/$step" "$OUT/bundle${round}_$variant" --model-id "$id-$variant" \
        --no-torch-weights
    $V/vla-jepa eval "$OUT/bundle${round}_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 2000 --task-timeout-s 30 \
        --out-dir "$OUT/eval${round}_$variant"
    $V/vla-jepa eval "$OUT/bundle${round}_$variant" --episodes-per-family "$EVAL_EPISODES" --seed 9200 --target near \
        --task-timeout-s 30 --out-dir "$OUT/evalnear${round}_$variant"
  done
}
export_eval 16 step_002000 tiny-sim-near
# ---- round 17 (session 13): the object head also finds the cube the instruction names, and the action head reads ----
# its offset from the gripper (bags-to-dataset --named-object; the round-16 checkpoints grow a fifth object slot)
[ -f "$OUT/cf17/meta.json" ] || $V/vla-jepa bags-to-dataset "${bags[@]:0:2}" "$OUT/dart_bags" "$OUT/dagger15_bags" \
    "$OUT/near_bags" "$OUT/dagger_near_bags" "$OUT/cf17" --image-size-px 128 --no-lerobot --relabel-expert \
    --counterfactual-colours --named-object
ROUND_STEPS=3000 pair 17 "$OUT/cf17" 11 "$OUT/round16_{v}/step_002000"
export_eval 17 step_003000 tiny-sim-named
