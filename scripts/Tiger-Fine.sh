#!/usr/bin/env bash
# Fine stage: train the foreground/background ControlNet branches on the coarse stage's output.
#
#   scripts/Tiger-Fine.sh DATASET_ROOT COARSE_FOLDER OUTPUT_DIR [extra flags for generation.fine.cli]
#
# COARSE_FOLDER is the diffusers Stable Diffusion folder written by scripts/Tiger-Coarse.sh.
# Without a GPU the CPU "quick" profile is used (override with e.g. --profile long or any flag);
# with several GPUs it runs under `accelerate launch` (set ACCELERATE_ARGS, e.g. "--num_processes 4").
# Cases: SPLITS=CROOT/splits.json trains on its train cases (validation grids from its valid
# cases); without it DATASET_ROOT must be a train-only subset (`metadata.cli subset`), or pass
# --all_cases true.
# Re-running the same command resumes from the newest checkpoint in OUTPUT_DIR.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
DATA="$1"
COARSE="$2"
OUTPUT="$3"
shift 3

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEFAULTS=(--mixed_precision bf16 --allow_tf32 true --train_batch_size 16)
    LAUNCH=(accelerate launch ${ACCELERATE_ARGS:-})
else
    DEFAULTS=(--profile quick --cpu_threads "${CPU_THREADS:-1}")
    LAUNCH=(python)
fi

exec "${LAUNCH[@]}" -m generation.fine.cli \
    --train_data_dir "$DATA" \
    --coarse_model_path "$COARSE" \
    --output_dir "$OUTPUT" \
    ${SPLITS:+--splits_file "$SPLITS"} \
    --resume_from_checkpoint latest \
    "${DEFAULTS[@]}" "$@"
