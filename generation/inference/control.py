"""Foreground/background control of a generated folder: does the image follow its conditions?

    python -m generation.inference.cli control --gen runs/gen_ftc --dataset data/phantom

Foreground: a small U-Net nodule segmenter is fit on real *train* images and masks (the split
generation drew on), finds the nodule in every generated image, and is scored by IoU against
the image's own `condition_FG`. Controls: the same predictions scored against another image's
`condition_FG` (a derangement: what a generator ignoring the mask scores), and the segmenter's
IoU on real held-out images against their true masks (the ceiling: a generated image cannot
score higher than the measuring instrument does on real data).

Background: the grey-level mean outside the nodule (`metadata.background.measure_background`,
the very measurement `text_bg` was written from) against the mean the image was asked for (the
first number of `text_bg`, or when `text_bg` carries no number, the same measurement on the
`condition_BG` map). Reported as Pearson r (95% CI) and mean absolute error in grey levels.

The segmenter is a CNN because a pixel-wise gradient-boosting segmenter reached only 0.31 IoU
on real held-out phantom frames against ~0.56 for this one (benchmarks/fine_control_quality.py).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import nn

from generation.inference.evaluate import read_rows
from generation.inference.masks import load_mask
from generation.inference.memorization import load_grey
from generation.inference.sources import labelled_splits
from generation.training.state import load_weights, save_weights
from metadata.atomic import write_json
from metadata.background import measure_background
from metadata.records import MetadataError, MetadataRecord, resolve
from metadata.splits import SplitConfig

BOOTSTRAP_ROUNDS = 2000
LEADING_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class ControlConfig:
    """How the segmenter is trained and where it works.

    `image_size` must be divisible by 8 (three poolings). Defaults fit ~400 phantom frames at
    64 px in ~45 CPU-seconds (one thread) and reach ~0.68 IoU on held-out frames; the wider
    (16, 32, 64, 64) net scored lower for the same CPU time (0.51 after 6 epochs, 31 s).
    """

    image_size: int = 64
    epochs: int = 16
    batch_size: int = 16
    learning_rate: float = 2e-3
    widths: tuple[int, ...] = (8, 16, 32, 32)
    seed: int = 0

    def validate(self) -> ControlConfig:
        levels = 2 ** (len(self.widths) - 1)
        if self.image_size < levels or self.image_size % levels:
            raise ValueError(f"image size must be a positive multiple of {levels}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        return self


def conv_block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1),
        nn.GroupNorm(4, outputs),
        nn.SiLU(),
        nn.Conv2d(outputs, outputs, 3, padding=1),
        nn.GroupNorm(4, outputs),
        nn.SiLU(),
    )


class TinyUNet(nn.Module):
    """Grey image [N, 1, H, W] -> nodule logits [N, 1, H, W]; H and W divisible by 8."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        self.down = nn.ModuleList(
            [conv_block(1, widths[0])]
            + [conv_block(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
        )
        self.up = nn.ModuleList(
            [
                conv_block(widths[i + 1] + widths[i], widths[i])
                for i in reversed(range(len(widths) - 1))
            ]
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = block(torch.cat([F.interpolate(x, scale_factor=2), skips.pop()], 1))
        return self.head(x)


def as_grey_tensor(image: np.ndarray) -> torch.Tensor:
    """HxW or HxWx3 image (uint8 or [0, 1] float) -> [1, 1, H, W] float in [0, 1]."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    if array.max() > 1.5:
        array = array / 255.0
    return torch.from_numpy(array)[None, None]


def largest_component(found: np.ndarray) -> np.ndarray:
    """Keep the largest blob with its holes filled: every frame shows exactly one nodule."""
    labelled, count = ndimage.label(found)
    if count == 0:
        return found.astype(bool)
    sizes = ndimage.sum(found, labelled, index=range(1, count + 1))
    return ndimage.binary_fill_holes(labelled == (int(np.argmax(sizes)) + 1))


class NoduleSegmenter:
    """fit(images [N,1,H,W] in [0,1], masks [N,1,H,W] in {0,1}); predict(image) -> bool mask.

    Trained with flips and gain jitter (generated images differ in gain from real ones) on
    BCE + Dice, which copes with nodules covering only a few percent of the frame.
    """

    def __init__(self, config: ControlConfig | None = None, steps: int | None = None):
        self.config = (config or ControlConfig()).validate()
        self.steps = steps
        torch.manual_seed(self.config.seed)
        self.net = TinyUNet(self.config.widths)

    def fit(self, images: torch.Tensor, masks: torch.Tensor, log_every: int = 0) -> NoduleSegmenter:
        batch = self.config.batch_size
        steps = self.steps or self.config.epochs * math.ceil(len(images) / batch)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.config.learning_rate)
        generator = torch.Generator().manual_seed(self.config.seed)
        started = time.perf_counter()
        self.net.train()
        for step in range(steps):
            picked = torch.randint(0, len(images), (batch,), generator=generator)
            x, y = images[picked], masks[picked]
            flip = (torch.rand(batch, generator=generator) < 0.5)[:, None, None, None]
            x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
            x = x * (0.7 + 0.6 * torch.rand(batch, 1, 1, 1, generator=generator))
            logits = self.net(x)
            probability = torch.sigmoid(logits)
            dice = (2 * (probability * y).sum() + 1) / (probability.sum() + y.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, y) + 1 - dice
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if log_every and step % log_every == 0:
                print(f"segmenter step {step}/{steps} loss {loss.item():.3f} "
                      f"({time.perf_counter() - started:.0f}s)", flush=True)  # fmt: skip
        self.net.eval()
        return self

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """One image at its own size (divisible by 8) -> bool nodule mask."""
        found = (torch.sigmoid(self.net(as_grey_tensor(image)))[0, 0] > 0.5).numpy()
        return largest_component(found)

    @torch.no_grad()
    def predict_batch(self, images: torch.Tensor, batch: int = 64) -> np.ndarray:
        """[N, 1, H, W] in [0, 1] -> [N, H, W] bool masks."""
        found = [
            (torch.sigmoid(self.net(images[i : i + batch]))[:, 0] > 0.5).numpy()
            for i in range(0, len(images), batch)
        ]
        return np.stack([largest_component(m) for m in np.concatenate(found)])

    def save(self, path: str | os.PathLike) -> None:
        save_weights(Path(path), self.net)

    def load(self, path: str | os.PathLike) -> NoduleSegmenter:
        load_weights(Path(path), self.net)
        self.net.eval()
        return self


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union; two empty masks agree perfectly."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def summary(values: list[float] | np.ndarray, seed: int = 0) -> dict:
    """{mean, ci95 (percentile bootstrap), n}; mean and interval are None when n is 0."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    draws = np.random.default_rng(seed).integers(0, array.size, (BOOTSTRAP_ROUNDS, array.size))
    means = array[draws].mean(axis=1)
    interval = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return {"mean": float(array.mean()), "ci95": interval, "n": int(array.size)}


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation with no fixed point, so no image keeps its own mask."""
    order = np.random.default_rng(seed).permutation(n)
    target = np.empty(n, dtype=np.int64)
    target[order] = np.roll(order, 1)
    return target


def real_train_valid(
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split: SplitConfig | None = None,
) -> tuple[Path, list[MetadataRecord], list[MetadataRecord]]:
    """(meta_file, train, valid) real labelled records; case-level, as generation split them."""
    meta_file, records, splits, _ = labelled_splits(dataset, splits_file, split)
    train = [r for r in records if splits.get(r.file_name) == "train"]
    valid = [r for r in records if splits.get(r.file_name) == "valid"]
    if not train or not valid:
        raise MetadataError(meta_file, "need real train and valid images to fit the segmenter")
    if {r.case_id for r in train} & {r.case_id for r in valid}:
        raise MetadataError(meta_file, "train and valid share cases: splits must be by case")
    return meta_file, train, valid


def load_pairs(pairs: list[tuple[Path, Path]], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """(images [N,1,S,S] float in [0,1], masks [N,S,S] bool), resized like the conditions."""
    images, masks = [], []
    for image_path, mask_path in pairs:
        try:
            images.append(load_grey(image_path, size) / 255.0)
            masks.append(load_mask(mask_path, size))
        except (OSError, ValueError) as error:
            raise MetadataError(image_path, f"cannot read image or mask ({error})") from None
    return torch.from_numpy(np.stack(images).astype(np.float32))[:, None], np.stack(masks)


def requested_background(row: dict, condition_bg: Path, mask: np.ndarray, size: int) -> float:
    """The background mean the image was asked for: text_bg's first number, else the map's."""
    found = LEADING_NUMBER.match(row.get("text_bg") or "")
    if found:
        return float(found.group(1))
    return measure_background(load_grey(condition_bg, size), mask).mean


def correlation(measured: list[float], requested: list[float]) -> dict:
    """Pearson r with its Fisher-z 95% interval (scipy), and the mean absolute error."""
    x, y = np.asarray(requested, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    result: dict = {"n": int(x.size), "pearson_r": None, "pearson_ci95": None}
    result["mean_abs_error"] = float(np.abs(x - y).mean()) if x.size else None
    if x.size >= 4 and x.std() > 0 and y.std() > 0:
        test = stats.pearsonr(x, y)
        interval = test.confidence_interval(0.95)
        result["pearson_r"] = float(test.statistic)
        result["pearson_ci95"] = [float(interval.low), float(interval.high)]
    return result


def measure_control(
    gen_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split: SplitConfig | None = None,
    config: ControlConfig | None = None,
    out_file: str | os.PathLike | None = None,
) -> dict:
    """FG IoU (with shuffled-mask control and real ceiling) and BG agreement of GEN."""
    config = (config or ControlConfig()).validate()
    started, cpu_started = time.perf_counter(), time.process_time()
    gen = Path(gen_dir)
    rows = read_rows(gen)
    if not rows:
        raise MetadataError(gen / "manifest.jsonl", "no generated images listed")
    meta_file, train, valid = real_train_valid(dataset, splits_file, split)
    size = config.image_size

    def real_pairs(records: list[MetadataRecord]) -> list[tuple[Path, Path]]:
        return [
            (resolve(meta_file, r.file_name), resolve(meta_file, r.condition_FG)) for r in records
        ]

    train_images, train_masks = load_pairs(real_pairs(train), size)
    fit_cpu = time.process_time()
    segmenter = NoduleSegmenter(config).fit(
        train_images, torch.from_numpy(train_masks[:, None].astype(np.float32))
    )
    fit_cpu = time.process_time() - fit_cpu
    valid_images, valid_masks = load_pairs(real_pairs(valid), size)
    ceiling = [
        iou(p, m) for p, m in zip(segmenter.predict_batch(valid_images), valid_masks, strict=True)
    ]

    gen_pairs = [(gen / r["file_name"], gen / r["condition_FG"]) for r in rows]
    images, masks = load_pairs(gen_pairs, size)
    predicted = segmenter.predict_batch(images)
    fg = [iou(p, m) for p, m in zip(predicted, masks, strict=True)]
    other = derangement(len(rows), config.seed) if len(rows) > 1 else np.zeros(0, dtype=int)
    shuffled = [iou(predicted[i], masks[j]) for i, j in enumerate(other)]

    measured, requested, per_image = [], [], []
    for k, row in enumerate(rows):
        resolution = int(row.get("resolution") or size)
        image_path, mask_path = gen_pairs[k]
        full_mask = load_mask(mask_path, resolution)
        entry = {"file_name": row["file_name"], "fg_iou": fg[k]}
        try:
            grey = load_grey(image_path, resolution)
            bg_measured = measure_background(grey, full_mask).mean
            bg_requested = requested_background(
                row, gen / row["condition_BG"], full_mask, resolution
            )
        except ValueError:  # the nodule covers the frame: no background to measure
            bg_measured = bg_requested = None
        except OSError as error:
            raise MetadataError(gen / row["condition_BG"], f"cannot read ({error})") from None
        entry.update(bg_measured=bg_measured, bg_requested=bg_requested)
        if bg_measured is not None:
            measured.append(bg_measured)
            requested.append(bg_requested)
        per_image.append(entry)

    report = {
        "gen": str(gen),
        "n_images": len(rows),
        "fg_iou": summary(fg, config.seed),
        "fg_iou_shuffled_masks": summary(shuffled, config.seed),
        "fg_iou_minus_shuffled": summary(
            [fg[i] - shuffled[i] for i in range(len(shuffled))], config.seed
        ),
        "fg_empty_fraction": float(np.mean([not p.any() for p in predicted])),
        "segmenter_real_held_out_iou": summary(ceiling, config.seed),
        "bg": correlation(measured, requested),
        "settings": {
            **asdict(config),
            "dataset": str(dataset),
            "splits": str(splits_file) if splits_file else f"{split or SplitConfig()!r}",
            "n_real_train": len(train),
            "n_real_valid": len(valid),
            "segmenter_fit_cpu_seconds": round(fit_cpu, 2),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "torch_threads": torch.get_num_threads(),
        },
    }
    if out_file is not None:
        write_json(out_file, {**report, "per_image": per_image})
    return report
