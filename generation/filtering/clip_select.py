"""Model selection for the domain CLIP on held-out real pairs (validation cases, never test).

The CLIP score is used to rank a synthetic image's own prompt above other prompts, so the
selection metric is exactly that: for each held-out image, the fraction of the other distinct
held-out descriptions that score below its own (a per-image retrieval AUC), averaged.
"""

from __future__ import annotations

import math
from pathlib import Path

import open_clip
import torch

from generation.filtering.clip_score import encode_pixels, encode_texts, preprocessed_batches


def retrieval_auc(image_features: torch.Tensor, text_features: torch.Tensor, own: list[int]):
    """Mean over images of P(own text scores above another distinct text); ties count half.

    `text_features` holds one row per distinct text; `own[i]` is image i's row. NaN when there
    are fewer than two distinct texts (nothing to rank against).
    """
    if text_features.shape[0] < 2 or image_features.shape[0] == 0:
        return math.nan
    images = torch.nn.functional.normalize(image_features.float(), dim=-1)
    texts = torch.nn.functional.normalize(text_features.float(), dim=-1)
    cosine = images @ texts.T
    index = torch.as_tensor(own)
    own_score = cosine[torch.arange(len(own)), index].unsqueeze(1)
    others = torch.ones_like(cosine, dtype=torch.bool)
    others[torch.arange(len(own)), index] = False
    wins = (own_score > cosine).float() + 0.5 * (own_score == cosine).float()
    per_image = (wins * others).sum(dim=1) / others.sum(dim=1)
    return float(per_image.mean())


class HeldOutScorer:
    """Decodes the held-out pairs once; scores a model's retrieval AUC on them each epoch."""

    def __init__(self, paths: list[Path], texts: list[str], image_size: int, tokenizer):
        self.distinct = sorted(set(texts))
        self.own = [self.distinct.index(text) for text in texts]
        preprocess = open_clip.image_transform(image_size, is_train=False)
        self.pixels = list(preprocessed_batches(preprocess, paths))  # decoded once, not per epoch
        self.tokenizer = tokenizer

    @property
    def usable(self) -> bool:
        return len(self.own) > 0 and len(self.distinct) >= 2

    @torch.no_grad()
    def __call__(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            images = encode_pixels(model, self.pixels)
            texts = encode_texts(model, self.tokenizer, self.distinct)
        finally:
            model.train(was_training)
        return retrieval_auc(images, texts, self.own)
