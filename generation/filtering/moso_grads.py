"""Per-sample gradients of the surrogate's loss, two ways.

`loop_gradients` is the reference code's method (one forward/backward per sample); the batched
`vmap_gradients` computes the same vectors with torch.func (vmap over grad). Both run the model
in eval mode, as the reference does, so BatchNorm uses running statistics and every sample's
gradient is independent of its batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def loop_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str]
) -> torch.Tensor:
    """(N, P) gradients, one sample at a time (the baseline)."""
    model.eval()
    params = dict(model.named_parameters())
    selected = [params[name] for name in names]
    rows = []
    for index in range(images.shape[0]):
        loss = F.cross_entropy(model(images[index : index + 1]), labels[index : index + 1])
        grads = torch.autograd.grad(loss, selected)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).detach())
    return torch.stack(rows)


def vmap_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str]
) -> torch.Tensor:
    """(N, P) gradients in one vectorised call (torch.func.vmap over torch.func.grad)."""
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    trainable = {name: params[name] for name in names}
    frozen = {name: p for name, p in params.items() if name not in trainable}
    frozen.update(dict(model.named_buffers()))

    def sample_loss(weights: dict, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**weights, **frozen}, (image.unsqueeze(0),))
        return F.cross_entropy(logits, label.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(trainable, images, labels)
    return torch.cat([per_sample[name].reshape(images.shape[0], -1) for name in names], dim=1)


def gradient_chunks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    method: str,
    chunk_size: int,
) -> Iterator[torch.Tensor]:
    """Yield (chunk, P) gradient blocks in sample order, so memory stays O(chunk * P)."""
    compute = vmap_gradients if method == "vmap" else loop_gradients
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], chunk_size):
        block_images = images[start : start + chunk_size].to(device)
        block_labels = labels[start : start + chunk_size].to(device)
        yield compute(model, block_images, block_labels, names)
