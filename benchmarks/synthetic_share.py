"""Generated images in the rare class only, or in both classes at a matched share: paired ΔAUC.

`benchmarks/synthetic_shortcut.py` shows a ResNet tells the quick generator's images from real
frames of the same subtypes (out-of-fold AUC ~0.97). Added to the rare class only, they let the
task classifier learn "looks generated, so positive". With `train.synthetic_share: matched` and
the same number of generated images of the negative class (filtered the same way), generated
images are drawn equally often within each class, so their look carries no label.

This reads two finished classifier experiments on the same splits and seeds (natural: the
pipeline's arms; matched: `mix.classes [0, 1]`, `mix.per_class_count` = the natural run's count,
`train.synthetic_share matched`) and scores every arm on the independent test set, paired on the
same frames (bootstrap over cases and seeds, seed-mean AUC): each run's synthetic arm against its
own duplicated-real control, and the matched synthetic arm against the natural one.

    python -m benchmarks.synthetic_share --natural runs/quick2_seeds/classifier \
        --matched runs/balanced/classifier --out benchmarks/results/synthetic_share_quick.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.anchors import write_result
from classifier.evaluate import EXTERNAL_SPLIT, PREDICTIONS_FILE
from classifier.metrics import auc_ci, paired_difference

ARMS = ("real", "dup_real", "synthetic_filtered")


def seed_scores(arm_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(labels, scores [seeds, n], paths, case ids) of one arm, every seed, one split."""
    rows = [
        json.loads((seed / PREDICTIONS_FILE).read_text())[split]
        for seed in sorted(arm_dir.glob("seed_*"))
    ]
    if not rows:
        raise SystemExit(f"{arm_dir}: no seed_*/{PREDICTIONS_FILE}")
    # File names, not paths: two run folders (copies of one run) score the same frames.
    paths = [Path(path).name for path in rows[0]["paths"]]
    if any([Path(path).name for path in row["paths"]] != paths for row in rows):
        raise SystemExit(f"{arm_dir}: seeds scored different {split} frames")
    scores = np.array([row["scores"] for row in rows])
    return np.array(rows[0]["labels"]), scores, paths, np.array(rows[0]["case_ids"])


def estimate(value) -> dict:
    return {
        "value": round(value.value, 4),
        "ci95": [round(value.low, 4), round(value.high, 4)],
        **({"p": round(value.p_value, 4)} if np.isfinite(value.p_value) else {}),
    }


def compare_runs(natural: Path, matched: Path, label: str, split: str) -> dict:
    scores, reference = {}, None
    for name, root in (("natural", natural), ("matched", matched)):
        for arm in ARMS:
            labels, arm_scores, paths, groups = seed_scores(root / label / arm, split)
            if reference is None:
                reference = (labels, paths, groups)
            elif paths != reference[1]:
                raise SystemExit(f"{root / label / arm}: scored other {split} frames")
            scores[f"{name}/{arm}"] = arm_scores
    labels, _, groups = reference

    def delta(a: str, b: str) -> dict:
        return estimate(
            paired_difference(labels, scores[a], scores[b], groups=groups, resample_seeds=True)
        )

    return {
        "frames": len(labels),
        "positives": int(labels.sum()),
        "seeds": int(scores["natural/real"].shape[0]),
        "auc": {
            k: estimate(auc_ci(labels, v, groups=groups, resample_seeds=True))
            for k, v in scores.items()
        },
        "natural_synthetic_vs_dup_real": delta("natural/synthetic_filtered", "natural/dup_real"),
        "matched_synthetic_vs_dup_real": delta("matched/synthetic_filtered", "matched/dup_real"),
        "matched_synthetic_vs_natural_dup_real": delta(
            "matched/synthetic_filtered", "natural/dup_real"
        ),
        "matched_vs_natural_synthetic": delta(
            "matched/synthetic_filtered", "natural/synthetic_filtered"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--natural", required=True, help="classifier run folder (CLASSIFIER/)")
    parser.add_argument("--matched", required=True, help="the matched-share experiment's folder")
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--split", default=EXTERNAL_SPLIT, help="external | test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {
        "natural": args.natural,
        "matched": args.matched,
        "split": args.split,
        **{
            label: compare_runs(Path(args.natural), Path(args.matched), label, args.split)
            for label in args.labels
        },
    }
    write_result(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
