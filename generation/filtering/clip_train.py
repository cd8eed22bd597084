"""Contrastive training of the domain CLIP with open_clip's ClipLoss.

Mirrors open_clip's trainer habits: AdamW without weight decay on gains/biases/logit_scale,
cosine schedule with warmup, logit_scale clamped to 100, autocast for mixed precision. Each
epoch leaves a full resumable state; the epoch's data order and augmentation draws are a pure
function of (seed, epoch), so a resumed run continues exactly. With `select_best`, the saved
model is the epoch with the best held-out retrieval AUC (clip_select), not simply the last.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import open_clip
import torch
from torch.utils.data import DataLoader

from generation.filtering.clip_data import PairDataset, record_pairs
from generation.filtering.clip_model import (
    build_model,
    read_model_cfg,
    save_model,
    tokenizer_for,
)
from generation.filtering.clip_params import ClipConfig
from generation.filtering.clip_select import HeldOutScorer
from generation.filtering.splits import split_by_case
from generation.training.state import (
    STATE_JSON,
    TrainingState,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from metadata.atomic import staging_dir, write_json
from metadata.validate import read_dataset

STATE_DIR = "train_state"  # safetensors + JSON (generation.training.state); nothing pickled
BEST_FILE = "best_weights.safetensors"
SELECTION_FILE = "selection.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast on GPUs that support it, fp16 when asked, fp32 otherwise."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "amp_bf16" if cuda_bf16 else "fp32"
    if precision == "amp_bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "amp_fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay only matrices (open_clip's rule): gains, biases, embeddings' scale stay free."""
    decay, free = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "logit_scale" in name
        (free if exclude else decay).append(param)
    return [{"params": free, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * progress))


def train_clip(dataset: str | Path, out_dir: str | Path, config: ClipConfig) -> Path:
    """Train on the real train split of `dataset`; returns the saved open_clip folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    meta_file, checked = read_dataset(dataset)
    records = [r for r in checked if not r.synthetic]
    train, held = split_by_case(records, config.holdout_fraction, config.seed)
    if len(train) < 2:
        raise ValueError(f"{meta_file}: need at least 2 real training images, found {len(train)}")
    write_json(
        out / "split.json",
        {
            "dataset": str(meta_file),
            "seed": config.seed,
            "holdout_fraction": config.holdout_fraction,
            "train": sorted(r.file_name for r in train),
            "held_out": sorted(r.file_name for r in held),
        },
    )
    torch.manual_seed(config.seed)
    model_cfg = config.model_cfg()
    model = build_model(model_cfg, out, config.pretrained).to(device)
    if config.pretrained and Path(config.pretrained).is_dir():
        model_cfg = read_model_cfg(config.pretrained)
    tokenizer = tokenizer_for(model)
    transform = open_clip.image_transform(model.visual.image_size, is_train=True)
    data = PairDataset(*record_pairs(train, meta_file), transform, tokenizer)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scaler = torch.amp.GradScaler(enabled=config.precision == "amp_fp16")
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    training = TrainingState({"model": model}, optimizer, scaler=scaler)
    start_epoch, best = resume(out / STATE_DIR, training)
    held_scorer = HeldOutScorer(*record_pairs(held, meta_file), model.visual.image_size, tokenizer)
    select = config.select_best and held_scorer.usable
    log_path = out / "train_log.jsonl"
    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.Generator().manual_seed(config.seed + epoch)
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=order)
        model.train()
        losses, started = [], time.time()
        for step_in_epoch, (images, tokens) in enumerate(loader):
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, config.lr, config.warmup_steps)
            with autocast_for(config.precision, device):
                image_features, text_features, logit_scale = model(
                    images.to(device), tokens.to(device)
                )
                loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        entry = {
            "epoch": epoch,
            "loss": sum(losses) / len(losses),
            "seconds": time.time() - started,
        }
        if select:
            entry["held_out_retrieval_auc"] = held_scorer(model)
            if best is None or entry["held_out_retrieval_auc"] > best["held_out_retrieval_auc"]:
                best = {"epoch": epoch, "held_out_retrieval_auc": entry["held_out_retrieval_auc"]}
                save_weights(out / BEST_FILE, model)
        training.extra = {"epoch": epoch, "best": best}
        with staging_dir(out / STATE_DIR) as staging:
            save_training_state(staging, training)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    if select and best is not None:
        load_weights(out / BEST_FILE, model)
    write_json(
        out / SELECTION_FILE,
        {
            "rule": "best held-out retrieval AUC" if select else "last epoch",
            "held_out_images": len(held),
            "held_out_distinct_texts": len(held_scorer.distinct),
            "selected_epoch": best["epoch"] if select and best else config.epochs - 1,
            "held_out_retrieval_auc": best["held_out_retrieval_auc"] if select and best else None,
        },
    )
    return save_model(model, model_cfg, out / "model")


def resume(state_dir: Path, training: TrainingState) -> tuple[int, dict | None]:
    """(next epoch, best-so-far selection record) from a saved state, or a fresh start."""
    if not (state_dir / STATE_JSON).is_file():
        return 0, None
    state = load_training_state(state_dir, training)
    return int(state["epoch"]) + 1, state.get("best")
