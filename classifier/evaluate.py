"""Score a trained model: threshold chosen on validation, every test metric at that threshold,
AUC with a bootstrap CI, confusion matrix and ROC plot, all written to the run folder."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from classifier.config import DataConfig, EvalConfig, TrainConfig
from classifier.data import CachedImages, ImageCache
from classifier.layout import ImageItem, assert_real_only
from classifier.metrics import auc_ci, binary_metrics, choose_threshold
from classifier.models import from_pretrained
from classifier.train import make_accelerator, predict
from metadata.atomic import write_json

PREDICTIONS_FILE = "predictions.json"
METRICS_FILE = "metrics.json"
EXTERNAL_SPLIT = "external"  # predictions/metrics key of the independent test set


def score_split(
    model, items: list[ImageItem], cache: ImageCache, accelerator, batch_size: int
) -> dict:
    """Paths, labels, case ids and probabilities of one split (kept for paired comparisons)."""
    channels_last = accelerator.device.type == "cuda"
    scores = predict(model, CachedImages(items, cache), accelerator, batch_size, channels_last)
    return {
        "paths": [str(item.path) for item in items],
        "case_ids": [item.case_id for item in items],
        "labels": [item.label for item in items],
        "scores": [float(s) for s in scores],
    }


def evaluate_predictions(predictions: dict, config: EvalConfig) -> dict:
    """Threshold from validation only, then test metrics and AUC CI (by case)."""
    valid, test = predictions["valid"], predictions["test"]
    threshold = choose_threshold(
        np.array(valid["labels"]),
        np.array(valid["scores"]),
        config.threshold,
        config.target_sensitivity,
    )
    labels, scores = np.array(test["labels"]), np.array(test["scores"])
    estimate = auc_ci(
        labels, scores, config.n_bootstrap, config.ci, config.seed, np.array(test["case_ids"])
    )
    return {
        "auc": estimate.value,
        "auc_low": estimate.low,
        "auc_high": estimate.high,
        "threshold_method": config.threshold,
        **binary_metrics(labels, scores, threshold),
        "n_test": len(labels),
        "n_test_positive": int(labels.sum()),
    }


def external_metrics(predictions: dict, config: EvalConfig, threshold: float) -> dict:
    """AUC (CI by case) and the validation threshold's metrics on the independent test set."""
    external = predictions[EXTERNAL_SPLIT]
    labels, scores = np.array(external["labels"]), np.array(external["scores"])
    estimate = auc_ci(
        labels, scores, config.n_bootstrap, config.ci, config.seed, np.array(external["case_ids"])
    )
    return {
        "auc": estimate.value,
        "auc_low": estimate.low,
        "auc_high": estimate.high,
        **binary_metrics(labels, scores, threshold),
        "n_test": len(labels),
        "n_test_positive": int(labels.sum()),
    }


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One ROC curve per name on the same axes, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, lw=1.4, label=name)
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    axes.set(
        xlabel="1 − specificity",
        ylabel="sensitivity",
        title=title,
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)


def load_for_scoring(model_dir: str | Path, accelerator):
    """A saved model folder, placed on the accelerator's device for `score_split`."""
    model, _ = from_pretrained(model_dir)
    if accelerator.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return accelerator.prepare(model)


def evaluate_run(
    model_dir: str | Path,
    valid_items: list[ImageItem],
    test_items: list[ImageItem],
    out_dir: str | Path,
    eval_config: EvalConfig,
    data_config: DataConfig,
    cache: ImageCache | None = None,
    accelerator=None,
    batch_size: int = 64,
    external_items: list[ImageItem] | None = None,
) -> dict:
    """Evaluate the model folder on real valid (threshold) and real test images, and on the
    independent test set when one is given (metrics["external"])."""
    assert_real_only(valid_items, "valid")
    assert_real_only(test_items, "test")
    assert_real_only(external_items or [], "test")
    out_dir = Path(out_dir)
    accelerator = accelerator or make_accelerator(TrainConfig())
    model = load_for_scoring(model_dir, accelerator)
    cache = cache or ImageCache(data_config.image_size)
    splits = [("valid", valid_items), ("test", test_items)]
    if external_items:
        splits.append((EXTERNAL_SPLIT, external_items))
    predictions = {
        split: score_split(model, items, cache, accelerator, batch_size) for split, items in splits
    }
    metrics = evaluate_predictions(predictions, eval_config)
    if external_items:
        metrics[EXTERNAL_SPLIT] = external_metrics(predictions, eval_config, metrics["threshold"])
    metrics["eval_config"] = asdict(eval_config)
    if accelerator.is_main_process:
        write_json(out_dir / PREDICTIONS_FILE, predictions)
        write_json(out_dir / METRICS_FILE, metrics)
        test = predictions["test"]
        plot_roc(
            {f"AUC {metrics['auc']:.3f}": (np.array(test["labels"]), np.array(test["scores"]))},
            out_dir / "roc.png",
            f"{data_config.subtype} test ROC",
        )
    return metrics
