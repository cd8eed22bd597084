"""FID and KID with Inception features, when the user points to a local Inception weights file.

The standard FID network (torch-fidelity's InceptionV3, what torchmetrics uses) is never
downloaded: the user gives its weights (`pt_inception-2015-12-05-6726825d.pth`, or a
.safetensors of the same tensors). torch-fidelity unpickles its weights file with
`weights_only=False`, which would run any code inside a user's file, so the file is first read
safely here (safetensors, or `torch.load(weights_only=True)`), checked to hold tensors only,
and re-saved as a plain tensor dict in the run's cache; torch-fidelity reads only that copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

INCEPTION_SIZE = 299


def safe_tensor_copy(weights: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The user's weights as a tensors-only file in `cache_dir` (read without running code)."""
    source = Path(weights)
    if not source.is_file():
        raise ValueError(f"{source}: Inception weights file not found")
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source))
    else:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # the unpickler refuses anything but tensors and containers
            raise ValueError(f"{source}: not a plain weights file ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a dict of tensors (an InceptionV3 state dict)")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = Path(cache_dir) / f"inception-{digest}.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".tmp")
        torch.save({k: v.contiguous() for k, v in state.items()}, temporary)
        os.replace(temporary, target)
    return target


def uint8_batch(paths: list[Path], size: int = INCEPTION_SIZE) -> torch.Tensor:
    """RGB uint8 [N, 3, size, size], as torchmetrics' Inception metrics expect."""
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(rgb).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


def inception_network(weights_copy: Path) -> torch.nn.Module:
    """torchmetrics' FID InceptionV3 (torch-fidelity's), from the tensors-only copy."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(weights_copy),
    )


@torch.no_grad()
def inception_features(network: torch.nn.Module, paths: list[Path], batch: int = 32):
    """2048-d pool features, [N, 2048] float64; the FID and KID of quality.py then apply."""
    chunks = [network(uint8_batch(paths[i : i + batch])) for i in range(0, len(paths), batch)]
    return torch.cat(chunks).double() if chunks else torch.zeros(0, 2048, dtype=torch.float64)
