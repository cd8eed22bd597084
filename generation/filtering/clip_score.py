"""Per-image CLIP score: 100 * max(cos(image, text), 0), one number per image.

torchmetrics' CLIPScore clamps the *mean* over a batch; filtering needs each image's own score,
so the clamp is applied per image here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from generation.filtering.images import open_rgb


def clip_score_from_features(image_features: torch.Tensor, text_features: torch.Tensor):
    """Row-wise 100 * max(cos, 0) of paired (N, D) feature matrices."""
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    return 100.0 * (image_features * text_features).sum(dim=-1).clamp(min=0.0)


@torch.no_grad()
def encode_pixels(model, pixels: list[torch.Tensor]) -> torch.Tensor:
    """Image features of preprocessed batches (one tensor per batch), on the CPU."""
    device = next(model.parameters()).device
    features = [model.encode_image(batch.to(device)).float().cpu() for batch in pixels]
    return torch.cat(features) if features else torch.zeros(0, model.text_projection.shape[1])


def preprocessed_batches(preprocess, paths: list[Path], batch_size: int = 64):
    """Decode and preprocess `paths` a batch at a time (one batch in memory)."""
    for start in range(0, len(paths), batch_size):
        yield torch.stack([preprocess(open_rgb(p)) for p in paths[start : start + batch_size]])


def encode_images(model, preprocess, paths: list[Path], batch_size: int = 64) -> torch.Tensor:
    return encode_pixels(model, preprocessed_batches(preprocess, paths, batch_size))


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    device = next(model.parameters()).device
    features = [
        model.encode_text(tokenizer(texts[start : start + batch_size]).to(device)).float().cpu()
        for start in range(0, len(texts), batch_size)
    ]
    return torch.cat(features)


def clip_scores(model, preprocess, tokenizer, paths: list[Path], texts: list[str]) -> np.ndarray:
    """Score each image against its own text."""
    if len(paths) != len(texts):
        raise ValueError("one text per image is required")
    image_features = encode_images(model, preprocess, paths)
    text_features = encode_texts(model, tokenizer, texts)
    return clip_score_from_features(image_features, text_features).numpy()


def mismatched_texts(texts: list[str], seed: int = 0) -> list[str]:
    """For each image, a text drawn from another image whose text differs (the control)."""
    rng = np.random.default_rng(seed)
    unique = sorted(set(texts))
    if len(unique) < 2:
        raise ValueError("mismatched pairs need at least two distinct texts")
    picks = []
    for text in texts:
        others = [candidate for candidate in unique if candidate != text]
        picks.append(others[int(rng.integers(len(others)))])
    return picks
