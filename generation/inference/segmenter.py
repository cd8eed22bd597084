"""The nodule segmenter that measures FG control, and a cache so one run fits it once.

Every generated folder of a run is measured against the same real train split, so the same
segmenter (same frames, masks, config and seed) used to be fit again for every folder: six
times in the quick run, ~50 s each. It is now keyed by its config and the bytes of every
train image and mask, saved as safetensors + JSON, and loaded when the key matches; a
loaded segmenter gives the same predictions as a fresh fit (the weights round-trip exactly).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from generation.training.state import load_weights, save_weights
from metadata.atomic import write_json

WEIGHTS_FILE = "segmenter.safetensors"
INFO_FILE = "segmenter.json"


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


def segmenter_key(config: ControlConfig, pairs: list[tuple[Path, Path]]) -> str:
    """sha256 of the config and of every train image's and mask's bytes, in order."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for image_path, mask_path in pairs:
        for path in (image_path, mask_path):
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def fitted_segmenter(
    config: ControlConfig,
    pairs: list[tuple[Path, Path]],
    images: torch.Tensor,
    masks: torch.Tensor,
    cache_dir: Path | None = None,
) -> tuple[NoduleSegmenter, bool]:
    """(segmenter fit on images/masks, whether it came from cache_dir). The cache entry is a
    folder named by `segmenter_key`, written beside itself and renamed in whole, so a crash or
    a second process never leaves half an entry (two processes at once both fit; one wins)."""
    if cache_dir is None:
        return NoduleSegmenter(config).fit(images, masks), False
    key = segmenter_key(config, pairs)
    entry = Path(cache_dir) / key
    if (entry / INFO_FILE).is_file() and (entry / WEIGHTS_FILE).is_file():
        return NoduleSegmenter(config).load(entry / WEIGHTS_FILE), True
    segmenter = NoduleSegmenter(config).fit(images, masks)
    staging = Path(cache_dir) / f".{key}.{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    segmenter.save(staging / WEIGHTS_FILE)
    write_json(staging / INFO_FILE, {"key": key, "config": asdict(config), "n_train": len(pairs)})
    try:
        os.replace(staging, entry)
    except OSError:  # another process renamed its entry first: same key, same weights
        shutil.rmtree(staging, ignore_errors=True)
    return segmenter, False
