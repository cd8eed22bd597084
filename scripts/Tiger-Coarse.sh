#!/usr/bin/env bash
# Coarse stage: fine-tune Stable Diffusion on ultrasound frames + their descriptions.
#
# GPU (default): a local diffusers SD folder (SD 1.x/2.x; epsilon or v-prediction), bf16, TF32,
# EMA, min-SNR, gradient checkpointing; runs under `accelerate launch` (one or many GPUs, as
# configured with `accelerate config`).
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
  sed -n '2,19p' "$0" >&2
  exit 2
fi
DATA="$1"
OUT="$2"
shift 2
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1

if [[ "${DEVICE:-gpu}" == "cpu" ]]; then
  exec python -m generation.coarse.cli \
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
exec accelerate launch -m generation.coarse.cli \
  --pretrained_model_name_or_path "$MODEL" \
  --train_data_dir "$DATA" \
  --output_dir "$OUT" \
  ${SPLITS:+--splits_file "$SPLITS"} \
  --resolution "${RESOLUTION:-512}" \
  --center_crop true \
  --random_flip true \
  --prompt_background full \
  --caption_dropout 0.1 \
  --train_batch_size "${BATCH_SIZE:-8}" \
  --gradient_accumulation_steps "${GRAD_ACCUM:-2}" \
  --gradient_checkpointing true \
  --max_train_steps "${MAX_STEPS:-15000}" \
  --learning_rate "${LR:-1e-5}" \
  --lr_scheduler constant_with_warmup \
  --lr_warmup_steps 500 \
  --snr_gamma 5.0 \
  --noise_offset 0.05 \
  --use_ema true \
  --ema_decay 0.9999 \
  --mixed_precision "${MIXED_PRECISION:-bf16}" \
  --allow_tf32 true \
  --enable_xformers_memory_efficient_attention "${XFORMERS:-false}" \
  --checkpointing_steps 1000 \
  --checkpoints_total_limit 3 \
  --validation_steps 1000 \
  --validation_inference_steps 30 \
  --validation_guidance_scale 7.5 \
  --report_to tensorboard \
  --resume_from_checkpoint latest \
  "$@"
