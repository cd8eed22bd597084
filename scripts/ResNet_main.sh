#!/usr/bin/env bash
# Five-arm ResNet50 experiment per rare subtype (real / classic augmentation / duplicated real /
# synthetic / filtered synthetic), same splits, several seeds; report.md + report.html per subtype.
#
#   CROOT=data/classifier RUN_DIR=runs/classifier \
#   GEN_FTC=outputs/gen_FTC FILTERED_FTC=outputs/filtered_FTC \
#   GEN_MTC=outputs/gen_MTC FILTERED_MTC=outputs/filtered_MTC \
#   WEIGHTS=weights/resnet50.safetensors bash scripts/ResNet_main.sh
#
# CROOT comes from `python -m metadata.cli export-classifier DATASET --out CROOT`.
# GEN_*/FILTERED_* are folders holding manifest.jsonl (generation / filtering outputs).
# Without them, only the arms that need no synthetic images run (real, classic_aug).
# Multi-GPU: LAUNCH="accelerate launch --multi_gpu --num_processes 4 -m" bash scripts/ResNet_main.sh
set -euo pipefail

CROOT=${CROOT:?set CROOT to the classifier layout root}
RUN_DIR=${RUN_DIR:-runs/classifier}
SUBTYPES=${SUBTYPES:-"FTC MTC"}
ARCH=${ARCH:-resnet50}
IMAGE_SIZE=${IMAGE_SIZE:-224}
EPOCHS=${EPOCHS:-30}
BATCH_SIZE=${BATCH_SIZE:-32}
LR=${LR:-3e-4}
SEEDS=${SEEDS:-"0 1 2"}
RATIO=${RATIO:-1.0}
WEIGHTS=${WEIGHTS:-}
LAUNCH=${LAUNCH:-"python -m"}

for SUBTYPE in ${SUBTYPES}; do
  gen_var="GEN_${SUBTYPE}"
  filtered_var="FILTERED_${SUBTYPE}"
  GEN=${!gen_var:-}
  FILTERED=${!filtered_var:-}
  ARMS="real classic_aug"
  MANIFESTS=()
  if [[ -n "${GEN}" ]]; then
    ARMS="${ARMS} dup_real synthetic"
    MANIFESTS+=(--unfiltered-manifest "${GEN}")
  fi
  if [[ -n "${FILTERED}" ]]; then
    [[ -z "${GEN}" ]] && ARMS="${ARMS} dup_real"
    ARMS="${ARMS} synthetic_filtered"
    MANIFESTS+=(--filtered-manifest "${FILTERED}")
  fi
  # shellcheck disable=SC2086
  ${LAUNCH} classifier.cli experiment \
    --croot "${CROOT}" --subtype "${SUBTYPE}" --run-dir "${RUN_DIR}" \
    --arch "${ARCH}" ${WEIGHTS:+--weights "${WEIGHTS}"} \
    --image-size "${IMAGE_SIZE}" --epochs "${EPOCHS}" --batch-size "${BATCH_SIZE}" --lr "${LR}" \
    --seeds ${SEEDS} --arms ${ARMS} --synthetic-ratio "${RATIO}" "${MANIFESTS[@]}"
done
