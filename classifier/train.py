"""Training loop: accelerate (multi-GPU, mixed precision), batched on-device augmentation,
class-imbalance handling, cosine schedule, validation-AUC model selection and early stopping,
resumable epoch checkpoints.

The loop only ever sees train and valid images: `train_classifier` takes no test data, so model
selection cannot read test labels. Sampler order and augmentation draws are functions of
(seed, epoch, step), so a run resumed from a checkpoint continues exactly as if uninterrupted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from classifier.augment import augment
from classifier.config import DataConfig, ModelConfig, TrainConfig
from classifier.data import (
    CachedImages,
    EpochSampler,
    ImageCache,
    balanced_weights,
    normalize,
    positive_weight,
    to_float,
)
from classifier.layout import ImageItem, SyntheticLeakError, assert_real_only
from classifier.losses import make_loss
from classifier.metrics import auc
from classifier.models import build_model, save_pretrained
from classifier.precision import (
    accelerate_precision,
    resolve_channels_last,
    resolve_mixed_precision,
    seed_everything,
    training_autocast,
)
from generation.training.state import TrainingState, load_training_state, save_training_state
from metadata.atomic import write_json

STATE_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best_epoch: int = -1
    best_val_auc: float = -math.inf
    epochs_without_improvement: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    # the precision the epochs so far ran in ("" in states written before it was recorded):
    # an "auto" run resumed on another machine must not switch precision halfway
    mixed_precision: str = ""


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=True, foreach=True
        )
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def make_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up then cosine decay to zero, per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:  # warmup_steps == 0: cosine from the first step
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_accelerator(config: TrainConfig) -> Accelerator:
    precision = resolve_mixed_precision(config.mixed_precision)
    return Accelerator(mixed_precision=accelerate_precision(precision, torch.cuda.is_available()))


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: CachedImages,
    accelerator: Accelerator,
    batch_size: int,
    channels_last: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities in dataset order (gathered across processes)."""
    model.eval()
    loader = accelerator.prepare(DataLoader(dataset, batch_size=batch_size, shuffle=False))
    outputs = []
    for images, _ in loader:
        batch = normalize(to_float(images))
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():  # on a CPU: fp32 (CPU bf16 is for training speed only)
            logits = model(batch).float().squeeze(1)
        outputs.append(accelerator.gather_for_metrics(torch.sigmoid(logits)).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros(0)


def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + step)


def training_state(parts: TrainingParts) -> TrainingState:
    """What a checkpoint holds (safetensors + JSON; no RNG: draws are functions of seed, epoch
    and step)."""
    model = parts.accelerator.unwrap_model(parts.model)
    return TrainingState(
        {"model": model}, parts.optimizer, parts.scheduler, None, parts.accelerator.scaler
    )


def _save_state(parts: TrainingParts, run_dir: Path, state: TrainState) -> None:
    """Model, optimizer, scheduler and scaler plus our counters, nothing pickled.

    The main process writes a staging folder and swaps it in whole, so a crash never leaves a
    half checkpoint; every rank waits for the swap. A finished run keeps its counters and
    history only: nothing resumes from its weights (the selected model is in best/), and they
    are 3x the model's size per arm and seed (a ResNet50 with AdamW: ~300 MB each)."""
    accelerator = parts.accelerator
    final = run_dir / STATE_DIR
    staging = run_dir / f".{STATE_DIR}.staging"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if not state.finished:
            save_training_state(staging, training_state(parts))
        write_json(staging / STATE_FILE, asdict(state))
        backup = run_dir / f".{STATE_DIR}.old"
        shutil.rmtree(backup, ignore_errors=True)
        if final.exists():
            os.replace(final, backup)
        os.replace(staging, final)
        shutil.rmtree(backup, ignore_errors=True)
    accelerator.wait_for_everyone()


@dataclass
class TrainingParts:
    """Everything one training run steps through, already prepared by accelerate."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    loss_fn: torch.nn.Module
    channels_last: bool
    precision: str  # resolved: "no", "fp16" or "bf16" (CPU bf16 is our autocast, not accelerate's)


def build_training(
    train_set: CachedImages,
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    accelerator: Accelerator,
) -> TrainingParts:
    """Model, imbalance handling, optimizer, cosine schedule and loader for one run."""
    model = build_model(model_config.arch, model_config.weights)
    precision = resolve_mixed_precision(train_config.mixed_precision)
    if accelerator.mixed_precision != "no":
        precision = accelerator.mixed_precision
    channels_last = resolve_channels_last(
        data_config.channels_last, accelerator.device.type, precision
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    matched = train_config.synthetic_share == "matched"
    if matched and train_config.imbalance != "weighted_sampler":
        raise ValueError(
            f"train.synthetic_share 'matched' acts through the sampler: set train.imbalance to "
            f"'weighted_sampler' (it is {train_config.imbalance!r})"
        )
    weights = balanced_weights(train_set.labels, train_set.synthetic if matched else None)
    use_sampler_weights = train_config.imbalance == "weighted_sampler"
    sampler = EpochSampler(
        len(train_set), train_config.seed, weights if use_sampler_weights else None
    )
    loader = DataLoader(
        train_set,
        batch_size=train_config.batch_size,
        sampler=sampler,
        pin_memory=accelerator.device.type == "cuda",
    )
    loss_fn = make_loss(
        train_config.imbalance, positive_weight(train_set.labels), train_config.focal_gamma
    )
    optimizer = make_optimizer(model, train_config)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = train_config.epochs * len(loader)
    scheduler = make_scheduler(optimizer, total_steps, train_config.warmup_epochs * len(loader))
    return TrainingParts(
        accelerator,
        model,
        optimizer,
        scheduler,
        loader,
        loss_fn.to(accelerator.device),
        channels_last,
        precision,
    )


def mixup(
    batch: torch.Tensor,
    targets: torch.Tensor,
    config: TrainConfig,
    epoch: int,
    step: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Each image blended with another of the batch (Zhang et al. 2018): (mixed batch, the
    partners' targets, the share of the original). Reproducible per (seed, epoch, step)."""
    share = float(np.random.default_rng([config.seed, epoch, step, 17]).beta(
        config.mixup_alpha, config.mixup_alpha
    ))  # fmt: skip
    order = torch.randperm(len(batch), generator=generator, device=generator.device)
    order = order.to(batch.device)
    return share * batch + (1 - share) * batch[order], targets[order.to(targets.device)], share


def train_epoch(
    parts: TrainingParts, config: TrainConfig, epoch: int, max_steps: int | None = None
) -> tuple[float, int]:
    """One pass over the loader: (summed loss, images seen). Augmentation runs batched on the
    training device with a generator seeded by (seed, epoch, step)."""
    accelerator, model = parts.accelerator, parts.model
    model.train()
    parts.loader.set_epoch(epoch)
    running, seen = 0.0, 0
    bar = tqdm(
        parts.loader,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=not (config.progress and accelerator.is_local_main_process),
        leave=False,
    )
    for step, (images, labels) in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        generator = _step_generator(config.seed, epoch, step)
        batch = normalize(augment(to_float(images), config.augmentation, generator))
        if parts.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        targets = labels.float()
        if config.mixup_alpha > 0:
            batch, mixed_targets, share = mixup(batch, targets, config, epoch, step, generator)
        with training_autocast(accelerator, parts.precision):
            logits = model(batch).float().squeeze(1)
        loss = parts.loss_fn(logits, targets)
        if config.mixup_alpha > 0:  # mixup's loss: the two labels' losses, weighted
            loss = share * loss + (1 - share) * parts.loss_fn(logits, mixed_targets)
        accelerator.backward(loss)
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        running += loss.item() * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    return running, seen


def train_classifier(
    train_items: list[ImageItem],
    valid_items: list[ImageItem],
    run_dir: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    cache: ImageCache | None = None,
    accelerator: Accelerator | None = None,
) -> TrainState:
    """Train; best-validation-AUC model (from epoch `min_epochs` on) goes to run_dir/best/,
    resumes from run_dir/checkpoint/."""
    run_dir = Path(run_dir)
    for item in train_items:
        if item.split != "train":
            raise SyntheticLeakError(item.path, f"{item.split}/ image passed as training data")
    assert_real_only(valid_items, "valid")
    if not {0, 1} <= {item.label for item in valid_items}:
        raise ValueError(f"{run_dir}: validation set needs both classes to compute AUC")
    seed_everything(train_config.seed)
    accelerator = accelerator or make_accelerator(train_config)
    cache = cache or ImageCache(data_config.image_size)
    train_set = CachedImages(train_items, cache)
    valid_set = CachedImages(valid_items, cache)
    parts = build_training(train_set, model_config, train_config, data_config, accelerator)
    model, scheduler = parts.model, parts.scheduler

    state = TrainState()
    state_dir = run_dir / STATE_DIR
    if not (state_dir / STATE_FILE).is_file():  # crash between the two renames of _save_state
        state_dir = run_dir / f".{STATE_DIR}.old"
    if (state_dir / STATE_FILE).is_file():
        state = TrainState(**json.loads((state_dir / STATE_FILE).read_text()))
        if state.mixed_precision not in ("", parts.precision):
            raise ValueError(
                f"{state_dir / STATE_FILE}: trained so far in mixed precision "
                f"{state.mixed_precision!r}, resumed in {parts.precision!r}; "
                f"set train.mixed_precision to {state.mixed_precision!r}, or use a new run folder"
            )
        if not state.finished:  # a finished run's checkpoint holds no weights (_save_state)
            load_training_state(state_dir, training_state(parts))
    state.mixed_precision = parts.precision
    writer = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    while not state.finished and state.epoch < train_config.epochs:
        epoch = state.epoch
        running, seen = train_epoch(parts, train_config, epoch)
        scores = predict(
            model, valid_set, accelerator, train_config.eval_batch_size, parts.channels_last
        )
        val_auc = auc(valid_set.labels.numpy(), scores)
        record = {
            "epoch": epoch + 1,
            "train_loss": running / max(seen, 1),
            "val_auc": val_auc,
            "lr": scheduler.get_last_lr()[0],
        }
        state.history.append(record)
        state.epoch = epoch + 1
        eligible = epoch + 1 >= min(train_config.min_epochs, train_config.epochs)
        if eligible and val_auc > state.best_val_auc:
            state.best_val_auc, state.best_epoch = val_auc, epoch + 1
            state.epochs_without_improvement = 0
            if accelerator.is_main_process:
                save_pretrained(
                    accelerator.unwrap_model(model),
                    run_dir / BEST_DIR,
                    model_config.arch,
                    {"epoch": epoch + 1, "val_auc": val_auc, "image_size": data_config.image_size},
                )
        elif eligible:
            state.epochs_without_improvement += 1
        stop = state.epochs_without_improvement >= train_config.patience
        state.finished = stop or state.epoch >= train_config.epochs
        if writer is not None:
            for key in ("train_loss", "val_auc", "lr"):
                writer.add_scalar(key, record[key], epoch + 1)
        _save_state(parts, run_dir, state)
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return state
