#!/usr/bin/env bash
# Fine stage: train the foreground/background ControlNet branches on the coarse stage's output.
#
#   scripts/Tiger-Fine.sh DATASET_ROOT COARSE_FOLDER OUTPUT_DIR [extra flags for generation.fine.cli]
#
# COARSE_FOLDER is the diffusers Stable Diffusion folder written by scripts/Tiger-Coarse.sh.
# With a GPU (DEVICE=gpu, or auto-detected) the fine stage's "gpu" profile is used, the same recipe
# as `tiger run --profile gpu`, under `accelerate launch` (ACCELERATE_ARGS="--num_processes 4");
# without one the CPU profile PROFILE (default quick). Any extra flag overrides a profile value.
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

DEVICE="${DEVICE:-auto}"
if [[ "$DEVICE" == "auto" ]]; then
    DEVICE=$(python -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")
fi
if [[ "$DEVICE" == "gpu" ]]; then
    # The fine stage's "gpu" profile (generation/fine/config.py), as `tiger run --profile gpu`.
    DEFAULTS=(--profile gpu ${RESOLUTION:+--resolution "$RESOLUTION"} ${BATCH_SIZE:+--train_batch_size "$BATCH_SIZE"})
    LAUNCH=(accelerate launch ${ACCELERATE_ARGS:-})
else
    DEFAULTS=(--profile "${PROFILE:-quick}" --cpu_threads "${CPU_THREADS:-1}")
    LAUNCH=(python)
fi

COMMAND=("${LAUNCH[@]}" -m generation.fine.cli \
    --train_data_dir "$DATA" \
    --coarse_model_path "$COARSE" \
    --output_dir "$OUTPUT" \
    ${SPLITS:+--splits_file "$SPLITS"} \
    --resume_from_checkpoint latest \
    "${DEFAULTS[@]}" "$@")
# TIGER_PRINT_COMMAND=1 prints the command instead of running it (tests compare the recipes).
if [[ -n "${TIGER_PRINT_COMMAND:-}" ]]; then printf '%s\n' "${COMMAND[@]}"; else exec "${COMMAND[@]}"; fi
