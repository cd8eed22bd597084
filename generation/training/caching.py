"""Run the frozen VAE and text encoder once per image / prompt instead of once per step.

Latents: the VAE posterior's mean and std are cached for each image and, when flips are on, for
its mirror image too (a conv encoder is not exactly flip-equivariant, so flipping cached
latents would be wrong); each step samples `mean + std * noise` exactly as encoding afresh would.
Text: a frozen encoder's embeddings are cached per unique prompt; a trained one gets token ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metadata.atomic import atomic_open


@dataclass
class LatentCache:
    """Posterior mean/std per image: shape [N, F, C, h, w], F = 2 when mirrored copies exist."""

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def has_flips(self) -> bool:
        return self.mean.shape[1] == 2

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(
        self, indices: torch.Tensor, flips: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Unscaled latents for `indices`, mirrored where `flips` is True."""
        variant = flips.long() if self.has_flips else torch.zeros_like(indices)
        mean = self.mean[indices, variant]
        std = self.std[indices, variant]
        noise = torch.randn(mean.shape, generator=generator, device=generator.device)
        return mean + std * noise.to(mean.device, mean.dtype)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_open(path, "wb") as handle:
            handle.write(_serialise({"mean": self.mean.contiguous(), "std": self.std.contiguous()}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentCache:
        tensors = load_file(str(path))
        return cls(mean=tensors["mean"], std=tensors["std"])


def _serialise(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


@torch.no_grad()
def encode_latent_cache(
    vae,
    load_images: Callable[[list[int]], torch.Tensor],
    num_images: int,
    with_flips: bool,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LatentCache:
    """Encode every image (and its mirror) once; `load_images(indices)` gives [-1, 1] tensors."""
    means, stds = [], []
    for start in range(0, num_images, batch_size):
        indices = list(range(start, min(start + batch_size, num_images)))
        pixels = load_images(indices).to(device, dtype)
        variants = [pixels, torch.flip(pixels, dims=[-1])] if with_flips else [pixels]
        batch_mean, batch_std = [], []
        for images in variants:
            posterior = vae.encode(images).latent_dist
            batch_mean.append(posterior.mean.float().cpu())
            batch_std.append(posterior.std.float().cpu())
        means.append(torch.stack(batch_mean, dim=1))
        stds.append(torch.stack(batch_std, dim=1))
    return LatentCache(mean=torch.cat(means), std=torch.cat(stds))


def fingerprint(*parts: object) -> str:
    """Short stable hash of JSON-able parts (config, file list) for cache file names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a module's weights: config plus sums of every tensor. Private config
    keys (`_name_or_path`, versions) are left out: the same weights loaded from another folder
    (the coarse output instead of the pretrained one) are the same module."""
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(getattr(module, "config", None) or {}).items() if k[:1] != "_"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(f"{tensor.double().sum().item():.10e}".encode())
    return digest.hexdigest()[:16]


def cached_latents(
    cache_file: Path, build: Callable[[], LatentCache], is_main_process: bool = True
) -> LatentCache:
    """Load `cache_file` when present, else build and (main process) save it atomically."""
    if cache_file.is_file():
        return LatentCache.load(cache_file)
    cache = build()
    if is_main_process:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache.save(cache_file)
    return cache


def tokenize_prompts(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_prompts(
    text_encoder, input_ids: torch.Tensor, batch_size: int = 64, device="cpu", dtype=None
) -> torch.Tensor:
    """Last hidden states, as StableDiffusionPipeline conditions the UNet."""
    chunks = []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start : start + batch_size].to(device)
        hidden = text_encoder(ids, return_dict=False)[0]
        chunks.append(hidden.to(dtype) if dtype is not None else hidden)
    return torch.cat(chunks)


__all__ = [
    "LatentCache",
    "cached_latents",
    "encode_latent_cache",
    "encode_prompts",
    "fingerprint",
    "module_fingerprint",
    "save_file",
    "tokenize_prompts",
]
