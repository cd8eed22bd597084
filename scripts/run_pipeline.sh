#!/usr/bin/env bash
# The end-to-end runner: data -> coarse -> fine -> generation -> CLIP/MoSo filter -> classifier
# arms -> report, from one config. Same as the `tiger run` console command.
#
#   scripts/run_pipeline.sh                         # quick profile, phantom, tiny models, CPU
#   scripts/run_pipeline.sh --data ddti             # DDTI (../shared/data/ddti)
#   scripts/run_pipeline.sh --profile gpu --pretrained /models/stable-diffusion-2-1 --data DATASET
#   scripts/run_pipeline.sh --config my_run.yaml    # see `tiger config --profile long`
#
# Re-running the same command skips every finished stage whose inputs and config are unchanged
# and resumes a stage that was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m scripts.cli run "$@"
