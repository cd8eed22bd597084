#!/usr/bin/env bash
# Coarse stage: fine-tune Stable Diffusion on ultrasound frames + their descriptions.
#
# GPU (default): a local diffusers SD folder (SD 1.x/2.x; epsilon or v-prediction) with the coarse
# stage's "gpu" profile (512 px, bf16, TF32, EMA, min-SNR, gradient checkpointing; the same recipe
# as `tiger run --profile gpu`); runs under `accelerate launch` (one or many GPUs, as configured
# with `accelerate config`, or ACCELERATE_ARGS="--num_processes 4").
#   scripts/Tiger-Coarse.sh DATASET_ROOT OUTPUT_DIR /path/to/stable-diffusion-2-1-base [extra flags]
#
# CPU small configuration: the tiny built-in model (no weights anywhere), stage-0 autoencoder fit,
# text encoder trained with the UNet (at 1/10 of its learning rate). PROFILE=quick trains at 64 px
# (~700 CPU-seconds in all: a few minutes on 2 free cores), PROFILE=long at 128 px (an hour or
# two), PROFILE=toy is a seconds-long smoke run. RESOLUTION=N overrides the profile's resolution.
#   DEVICE=cpu PROFILE=quick scripts/Tiger-Coarse.sh DATASET_ROOT OUTPUT_DIR [extra flags]
#
# Cases: SPLITS=CROOT/splits.json (from `metadata.cli export-classifier`) trains on its train
# cases only; without it DATASET_ROOT must be a train-only subset (`metadata.cli subset`), or
# pass --all_cases true to train on every case (valid/test patients then reach the generator).
# Re-running the same command resumes from the newest checkpoint in OUTPUT_DIR.
# Output: OUTPUT_DIR is a diffusers pipeline folder (StableDiffusionPipeline.from_pretrained).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
DATA="$1"
OUT="$2"
shift 2
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1

# TIGER_PRINT_COMMAND=1 prints the command instead of running it (tests compare the recipes).
run() {
  if [[ -n "${TIGER_PRINT_COMMAND:-}" ]]; then printf '%s\n' "$@"; else exec "$@"; fi
}

if [[ "${DEVICE:-gpu}" == "cpu" ]]; then
  run python -m generation.coarse.cli \
    --profile "${PROFILE:-quick}" \
    --train_data_dir "$DATA" \
    --output_dir "$OUT" \
    ${SPLITS:+--splits_file "$SPLITS"} \
    ${RESOLUTION:+--resolution "$RESOLUTION"} \
    --cpu_threads "${CPU_THREADS:-1}" \
    --resume_from_checkpoint latest \
    "$@"
fi

if [[ $# -lt 1 || "$1" == --* ]]; then
  echo "GPU mode needs a pretrained SD folder as the third argument (or set DEVICE=cpu)" >&2
  exit 2
fi
MODEL="$1"
shift
# The recipe is the coarse stage's "gpu" profile (generation/coarse/config.py), the same one
# `tiger run --profile gpu` uses; the variables below override single values when set.
run accelerate launch ${ACCELERATE_ARGS:-} -m generation.coarse.cli \
  --profile gpu \
  --pretrained_model_name_or_path "$MODEL" \
  --train_data_dir "$DATA" \
  --output_dir "$OUT" \
  ${SPLITS:+--splits_file "$SPLITS"} \
  ${RESOLUTION:+--resolution "$RESOLUTION"} \
  ${BATCH_SIZE:+--train_batch_size "$BATCH_SIZE"} \
  ${GRAD_ACCUM:+--gradient_accumulation_steps "$GRAD_ACCUM"} \
  ${MAX_STEPS:+--max_train_steps "$MAX_STEPS"} \
  ${LR:+--learning_rate "$LR"} \
  ${MIXED_PRECISION:+--mixed_precision "$MIXED_PRECISION"} \
  ${XFORMERS:+--enable_xformers_memory_efficient_attention "$XFORMERS"} \
  --resume_from_checkpoint latest \
  "$@"
