"""Per-sample gradients of the surrogate's loss, three ways.

`loop_gradients` is the reference code's method (one forward/backward per sample); the batched
`vmap_gradients` computes the same vectors with torch.func (vmap over grad); `hook_gradients`
computes them from one batched forward and backward: each layer's per-sample weight gradient
is the product of its input and its output gradient (the method opacus uses; opacus itself has
no BatchNorm rule, which the surrogate needs, so the four layer rules are written out here).
All run the model in eval mode, as the reference does, so BatchNorm uses running statistics and
every sample's gradient is independent of its batch: that is what makes the batched output
gradient of the summed loss equal each sample's own.
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


def layer_gradients(module: nn.Module, inputs: torch.Tensor, grad_out: torch.Tensor) -> dict:
    """Per-sample gradients of one layer's parameters, {name: (B, *param.shape)}."""
    if isinstance(module, nn.Linear):
        grads = {"weight": torch.einsum("bo,bi->boi", grad_out, inputs)}
        return grads | ({"bias": grad_out} if module.bias is not None else {})
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        columns = F.unfold(
            inputs, module.kernel_size, module.dilation, module.padding, module.stride
        )
        outputs = grad_out.flatten(2)
        weight = torch.einsum("bot,bct->boc", outputs, columns)
        grads = {"weight": weight.reshape(-1, *module.weight.shape)}
        return grads | ({"bias": outputs.sum(2)} if module.bias is not None else {})
    if isinstance(module, nn.BatchNorm2d) and not module.training:
        scale = (module.running_var + module.eps).rsqrt()
        normalised = (inputs - module.running_mean[:, None, None]) * scale[:, None, None]
        return {"weight": (grad_out * normalised).sum((2, 3)), "bias": grad_out.sum((2, 3))}
    raise NotImplementedError(f"no per-sample gradient rule for {type(module).__name__}")


def hook_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str]
) -> torch.Tensor:
    """(N, P) gradients from one batched forward/backward (layer rules in `layer_gradients`)."""
    model.eval()
    modules = dict(model.named_modules())
    owners = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in names))
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        modules[owner].register_forward_hook(
            lambda _, args, out, owner=owner: seen.__setitem__(owner, (args[0].detach(), out))
        )
        for owner in owners
    ]
    try:
        loss = F.cross_entropy(model(images), labels, reduction="sum")
    finally:
        for handle in handles:
            handle.remove()
    outputs = torch.autograd.grad(loss, [seen[owner][1] for owner in owners])
    per_layer = {
        owner: layer_gradients(modules[owner], seen[owner][0], grad_out.detach())
        for owner, grad_out in zip(owners, outputs, strict=True)
    }
    columns = []
    for name in names:
        owner, leaf = name.rsplit(".", 1)
        columns.append(per_layer[owner][leaf].reshape(images.shape[0], -1))
    return torch.cat(columns, dim=1)


METHODS = {"loop": loop_gradients, "vmap": vmap_gradients, "hooks": hook_gradients}


def gradient_chunks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    method: str,
    chunk_size: int,
) -> Iterator[torch.Tensor]:
    """Yield (chunk, P) gradient blocks in sample order, so memory stays O(chunk * P)."""
    compute = METHODS[method]
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], chunk_size):
        block_images = images[start : start + chunk_size].to(device)
        block_labels = labels[start : start + chunk_size].to(device)
        yield compute(model, block_images, block_labels, names)
