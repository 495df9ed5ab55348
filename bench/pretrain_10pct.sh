#!/usr/bin/env bash
# Does pre-training on the built-in captions help VQA when only 10% of the labels are used?
# One pre-training run on the 3,600 captioned training images of data/shapes4k (captions only),
# then for each seed two fine-tunes on the same 10% of the training images (360 images, 7,200
# questions; the draw follows the seed): from scratch, and from the pre-trained encoders + fusion
# (--init). Same config, same number of epochs and steps; each is evaluated on the 4,000 test
# questions. Writes OUT/results.md (per seed and mean, overall and per group).
#
#   vlfuse data shapes data/shapes4k --images 4000      # if not there yet
#   bash bench/pretrain_10pct.sh [SEEDS] [OUT] [PRETRAIN_EPOCHS] [FINETUNE_EPOCHS]
#   defaults: "0 1", runs/pretrain_10pct, 2 (226 steps), 12 (144 steps)
# Finished runs are kept: rerun with more seeds to add them.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-"0 1"}
OUT=${2:-runs/pretrain_10pct}
PRETRAIN_EPOCHS=${3:-2}
FINETUNE_EPOCHS=${4:-12}
NICE="nice -n 5"
# One torch thread per run: on a shared 2-core machine two OpenMP threads fighting for one free core
# make every step many times slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$OUT"
start=$(date +%s)
# The budget is the epochs; the time cap is only a safety net, several times the <= 5 minutes an epoch
# (113 steps) took on 2 shared cores, so a busy machine finishes the same pre-training later.
if [ ! -f "$OUT/pretrain/model/model.safetensors" ]; then
  resume=(); [ -f "$OUT/pretrain/checkpoints/last.ckpt" ] && resume=(--resume)
  $NICE vlfuse pretrain bench/pretrain_10pct/pretrain.yaml --set out_dir="$OUT/pretrain" \
    --set train.epochs="$PRETRAIN_EPOCHS" --set train.max_minutes=$((30 * PRETRAIN_EPOCHS)) \
    --set train.progress_bar=false "${resume[@]}"
fi
for seed in $SEEDS; do
  for variant in scratch pretrained; do
    dir="$OUT/seed$seed/$variant"
    [ -f "$dir/eval.json" ] && continue
    init=(); [ "$variant" = pretrained ] && init=(--init "$OUT/pretrain/model")
    resume=(); [ -f "$dir/checkpoints/last.ckpt" ] && resume=(--resume)
    $NICE vlfuse train bench/pretrain_10pct/vqa.yaml --set seed="$seed" --set out_dir="$dir" \
      --set train.epochs="$FINETUNE_EPOCHS" --set train.progress_bar=false "${init[@]}" "${resume[@]}"
  done
done
python bench/pretrain_10pct/summarize.py "$OUT" > "$OUT/results.md"
cat "$OUT/results.md"
echo "wall: $(( $(date +%s) - start )) s"
