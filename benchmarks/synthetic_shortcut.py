"""Can a classifier tell a run's generated images from real images of the same classes?

If it can, adding generated images to the rare class only hands the task classifier a shortcut:
"looks generated, so positive". The synthetic arm then teaches the generator's look instead of
the subtype, which real test positives do not have. This trains the task classifier's network
(resnet18, the run's image size, the classifier's own image cache) to separate the real
rare-subtype frames (every split) from the run's generated images of those subtypes, with
stratified 5-fold cross-validation, and reports the out-of-fold AUC (0.5: indistinguishable),
beside a one-number texture cue (mean local standard deviation in 5x5 windows: generated
speckle is smoother, the stage-0 autoencoder's local-std ratio is ~0.75).

    python -m benchmarks.synthetic_shortcut --run runs/quick2 \
        --out benchmarks/results/synthetic_shortcut_quick.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from benchmarks.anchors import environment_note, write_result
from classifier.data import ImageCache, normalize, to_float
from classifier.layout import ImageItem
from classifier.models import build_model

SPLITS = ("train", "valid", "test")


def items(run: Path, labels: list[str], modes: list[str]) -> list[ImageItem]:
    """Real positives of each task (every split) as class 0, generated images as class 1."""
    found = []
    for label in labels:
        for split in SPLITS:
            folder = run / "data" / "classifier" / label / split / "1"
            found += [ImageItem(p, 0, "train") for p in sorted(folder.glob("*.png"))]
        for mode in modes:
            folder = run / "generate" / label / mode / "images"
            found += [ImageItem(p, 1, "train", "synthetic") for p in sorted(folder.glob("*.png"))]
    return found


def local_std(image: np.ndarray) -> float:
    gray = image.mean(axis=0) / 255.0
    mean = ndimage.uniform_filter(gray, 5)
    variance = ndimage.uniform_filter(gray * gray, 5) - mean * mean
    return float(np.sqrt(np.clip(variance, 0, None)).mean())


def out_of_fold_scores(
    images: torch.Tensor, labels: np.ndarray, epochs: int, folds: int, seed: int
) -> np.ndarray:
    scores = np.zeros(len(labels))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        torch.manual_seed(seed * 100 + fold)
        model = build_model("resnet18")
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        train_images = images[train]  # one copy per fold, not one per batch
        targets = torch.tensor(labels[train], dtype=torch.float32)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(train))
            for start in range(0, len(train), 32):
                batch = order[start : start + 32]
                x = normalize(to_float(train_images[batch]))
                if torch.rand(1).item() < 0.5:
                    x = x.flip(-1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(x).squeeze(1), targets[batch]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(normalize(to_float(images[test]))).squeeze(1)
        scores[test] = torch.sigmoid(logits).numpy()
        print(f"fold {fold}: AUC {roc_auc_score(labels[test], scores[test]):.3f}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--modes", nargs="+", default=["diversify", "reference"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    found = items(Path(args.run), args.labels, args.modes)
    labels = np.array([item.label for item in found])
    if len(set(labels)) < 2:
        raise SystemExit(f"{args.run}: need real positives and generated images of {args.labels}")
    images = ImageCache(args.image_size).stack(found)
    scores = out_of_fold_scores(images, labels, args.epochs, args.folds, args.seed)
    texture = np.array([local_std(image.numpy()) for image in images])
    result = {
        "run": args.run,
        "labels": args.labels,
        "modes": args.modes,
        "real_images": int((labels == 0).sum()),
        "generated_images": int((labels == 1).sum()),
        "resnet18_out_of_fold_auc": round(float(roc_auc_score(labels, scores)), 4),
        "local_std_auc_generated_smoother": round(float(roc_auc_score(labels, -texture)), 4),
        "local_std_median": {
            "real": round(float(np.median(texture[labels == 0])), 5),
            "generated": round(float(np.median(texture[labels == 1])), 5),
        },
        "setup": {k: getattr(args, k) for k in ("image_size", "epochs", "folds", "seed")},
        "environment": environment_note(),
    }
    write_result(Path(args.out), result)
    print(result)


if __name__ == "__main__":
    main()
