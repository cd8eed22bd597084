"""Surrogate training that keeps every epoch's checkpoint and learning rate (MoSo needs both).

Runs resume exactly: each epoch leaves the full training state (model, optimizer, scheduler)
and the data order is a pure function of (seed, epoch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_surrogate import SurrogateCNN
from generation.training.state import (
    STATE_JSON,
    TrainingState,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from metadata.atomic import staging_dir, write_json

STATE_DIR = "train_state"  # safetensors + JSON (generation.training.state); nothing pickled
INDEX_FILE = "checkpoints.json"


@dataclass
class SurrogateCheckpoint:
    path: Path
    epoch: int
    lr: float


def build_surrogate(num_classes: int, config: MosoConfig) -> SurrogateCNN:
    return SurrogateCNN(num_classes=num_classes, width=config.width)


def load_surrogate(checkpoint: SurrogateCheckpoint, num_classes: int, config: MosoConfig):
    model = build_surrogate(num_classes, config)
    load_weights(checkpoint.path, model)
    return model.to(config.device).eval()


def train_surrogate(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: MosoConfig,
    out_dir: Path,
    seed: int,
) -> list[SurrogateCheckpoint]:
    """Train one surrogate on (images, labels); returns one checkpoint per epoch."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_surrogate(num_classes, config).to(config.device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs, eta_min=config.min_lr
    )
    checkpoints: list[SurrogateCheckpoint] = []
    start = 0
    state_dir = out_dir / STATE_DIR
    training = TrainingState({"model": model}, optimizer, scheduler)
    if (state_dir / STATE_JSON).is_file():
        state = load_training_state(state_dir, training)
        start = state["epoch"] + 1
        checkpoints = [
            SurrogateCheckpoint(out_dir / c["file"], c["epoch"], c["lr"]) for c in state["index"]
        ]
    for epoch in range(start, config.epochs):
        lr = optimizer.param_groups[0]["lr"]
        run_epoch(model, optimizer, images, labels, config, seed * 100_003 + epoch)
        file = f"epoch_{epoch:03d}.safetensors"
        save_weights(out_dir / file, model)
        checkpoints.append(SurrogateCheckpoint(out_dir / file, epoch, lr))
        scheduler.step()
        index = [{"file": c.path.name, "epoch": c.epoch, "lr": c.lr} for c in checkpoints]
        training.extra = {"epoch": epoch, "index": index}
        with staging_dir(state_dir) as staging:
            save_training_state(staging, training)
        write_json(out_dir / INDEX_FILE, index)
    return checkpoints


def run_epoch(model, optimizer, images, labels, config: MosoConfig, epoch_seed: int) -> float:
    """One pass in a seeded order with random horizontal flips; returns the mean loss.

    With `config.balanced`, the epoch draws N samples with class-balanced probabilities: with
    a 17:1 benign majority a small surrogate otherwise collapses to the majority class, and its
    gradients then say nothing about the images.
    """
    generator = torch.Generator().manual_seed(epoch_seed)
    if config.balanced:
        counts = torch.bincount(labels)
        weights = 1.0 / counts[labels].double()
        order = torch.multinomial(weights, images.shape[0], replacement=True, generator=generator)
    else:
        order = torch.randperm(images.shape[0], generator=generator)
    flips = torch.rand(images.shape[0], generator=generator) < 0.5
    model.train()
    losses = []
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        if len(index) < 2:  # BatchNorm needs two samples in train mode
            continue
        batch = images[index].clone()
        batch[flips[index]] = batch[flips[index]].flip(-1)
        batch, target = batch.to(config.device), labels[index].to(config.device)
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / max(len(losses), 1)


def read_index(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / INDEX_FILE).read_text())
