"""The MoSo first-order estimator (Tan et al., NeurIPS 2023, "Data Pruning via
Moving-one-Sample-out").

MoSo(z) is the change of the optimal empirical risk when z is moved out of the training set S.
Its first-order estimate follows the surrogate's SGD trajectory: at each checkpoint w_t with
learning rate eta_t, removing z changes the update by the gradient of z, and the risk on the
rest S\\z changes by eta_t * <grad L(S\\z, w_t), grad l(z, w_t)>. Samples whose gradient keeps
agreeing with everybody else's are informative (high score); noisy or off-distribution samples
(gradients against the rest) and samples nobody needs (tiny gradients) score low and are pruned.

With g = grad l(z, w_t), m = mean gradient over all n samples (so grad L(S\\z) = (n m - g)/(n-1)):
  first_order: <m - g/n, g>   (= (n-1)/n * <grad L(S\\z), g>; the estimator without corrections)
  exact:       (2n-3)/(n-1)^2 |m|^2 - |g|^2/(n-1)^2 + (2n-4)/(n-1)^2 <m - g/n, g>
The exact form is the reference implementation's (hrtan/MoSo, `MoSo_scoring_exact`); its
correction terms penalise a large own-gradient norm and add the checkpoint's |m|^2 level, which
matters when scores from different partitions (different surrogates) are compared.
Scores are weighted by eta_t and summed over a random sample of checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generation.filtering.moso_grads import gradient_chunks

MAX_CACHED_ELEMENTS = 128_000_000  # keep gradients between the two passes up to ~512 MB


def moso_terms(grads: torch.Tensor, mean_grad: torch.Tensor, n: int, form: str) -> torch.Tensor:
    """MoSo of each row of `grads` (B, P) at one checkpoint, given the mean over all n samples."""
    if n < 2:
        raise ValueError("MoSo needs at least two samples (the rest of the set must be non-empty)")
    grads = grads.double()
    mean_grad = mean_grad.double()
    first_order = ((mean_grad.unsqueeze(0) - grads / n) * grads).sum(dim=1)
    if form == "first_order":
        return first_order
    if form != "exact":
        raise ValueError(f"unknown MoSo form {form!r}")
    scale = float((n - 1) ** 2)
    return (
        (2 * n - 3) / scale * mean_grad.dot(mean_grad)
        - (grads * grads).sum(dim=1) / scale
        + (2 * n - 4) / scale * first_order
    )


def mean_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    chunk_size: int,
) -> torch.Tensor:
    """Mean per-sample gradient over all samples from batched backward passes: in eval mode
    (BatchNorm on running statistics) the gradient of a batch's summed loss is the sum of its
    samples' gradients, so no per-sample gradient is needed for the mean."""
    model.eval()
    params = dict(model.named_parameters())
    selected = [params[name] for name in names]
    device = selected[0].device
    total = torch.zeros(sum(p.numel() for p in selected), dtype=torch.float64, device=device)
    for start in range(0, images.shape[0], chunk_size):
        logits = model(images[start : start + chunk_size].to(device))
        target = labels[start : start + chunk_size].to(device)
        loss = F.cross_entropy(logits, target, reduction="sum")
        grads = torch.autograd.grad(loss, selected)
        total += torch.cat([g.reshape(-1) for g in grads]).double()
    return total / images.shape[0]


def checkpoint_scores(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    form: str,
    method: str = "vmap",
    chunk_size: int = 64,
    scored: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unweighted MoSo at one checkpoint of every sample, or of the samples at `scored` only.

    Every sample counts in the mean gradient (the rest of the set); only the scored ones need
    their own gradient, which is the expensive part. Scoring everything: pass 1 the mean from
    the per-sample gradients, pass 2 the scores (gradients cached between the passes)."""
    n = images.shape[0]
    if scored is not None:
        if len(scored) == 0:
            return torch.zeros(0, dtype=torch.float64)
        mean_grad = mean_gradient(model, images, labels, names, chunk_size)
        blocks = gradient_chunks(model, images[scored], labels[scored], names, method, chunk_size)
        return torch.cat([moso_terms(b, mean_grad, n, form) for b in blocks]).cpu()
    total: torch.Tensor | None = None
    cached: list[torch.Tensor] = []
    for block in gradient_chunks(model, images, labels, names, method, chunk_size):
        block = block.double()
        total = block.sum(dim=0) if total is None else total + block.sum(dim=0)
        if n * block.shape[1] <= MAX_CACHED_ELEMENTS:
            cached.append(block)
    assert total is not None, "no samples"
    mean_grad = total / n
    blocks = cached or gradient_chunks(model, images, labels, names, method, chunk_size)
    return torch.cat([moso_terms(b, mean_grad, n, form) for b in blocks]).cpu()
