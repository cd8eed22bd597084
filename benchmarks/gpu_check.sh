#!/usr/bin/env bash
# The GPU check: every stage on a Stable-Diffusion-sized model, at 512 px in bf16, in one call.
#
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/real_scale_gpu.json
#
# On a CUDA machine it builds the SD 2.1-base twin (random weights, published architecture) and
# runs `tiger run --profile gpu` on it with a few dozen training steps per stage, recording per
# stage peak GPU memory, peak RSS and seconds per step or per image (benchmarks/real_scale.py).
# Without CUDA it falls back to the same route on a width/8 twin at 64 px on the CPU (a couple
# of minutes; what CI runs), written to $WORK/cpu_fallback.json.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-runs/gpu_check}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  exec python -m benchmarks.real_scale --device cuda --arch sd21base --resolution 512 \
    --steps "${STEPS:-24}" --images 64 --generated 16 --work "$WORK" \
    --out benchmarks/results/real_scale_gpu.json
fi
echo "gpu_check: no CUDA device; CPU fallback on a width/8 twin at 64 px" >&2
exec python -m benchmarks.real_scale --device cpu --arch sd21base --width-divisor 8 \
  --resolution 64 --steps 2 --images 24 --generated 2 --work "$WORK" \
  --out "$WORK/cpu_fallback.json"
