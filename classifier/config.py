"""Dataclass configs for data, model, training, evaluation and the multi-arm experiment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal


@dataclass
class DataConfig:
    """Where the images come from and how they are cached."""

    croot: str = ""  # classifier layout root: CROOT/<SUBTYPE>/{train,valid,test}/{0,1}/*.png
    subtype: str = "FTC"
    image_size: int = 224
    channels_last: bool | None = None  # None: on CUDA and under CPU bf16 (precision.py)
    # A second, independent test-only layout (EXT/<SUBTYPE>/test/{0,1}/*.png, e.g. a large
    # phantom from another seed: metadata/external_test.py); every arm is scored on it too.
    external_croot: str = ""


@dataclass
class ModelConfig:
    arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    weights: str = ""  # local .safetensors / .pt / .pth state dict (torchvision or timm names)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 1
    imbalance: Literal["weighted_loss", "weighted_sampler", "focal", "none"] = "weighted_loss"
    focal_gamma: float = 2.0
    augmentation: Literal["none", "standard", "strong"] = "standard"
    patience: int = 8  # epochs without a better validation AUC before stopping
    # Model selection and early stopping start at this epoch (capped at `epochs`): on a small
    # validation set an undertrained early model can win by chance (README, model selection).
    min_epochs: int = 1
    seed: int = 0
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    eval_batch_size: int = 64
    progress: bool = True
    mixup_alpha: float = 0.0  # > 0: mix each batch with a shuffled copy (the mixup arm sets it)
    # With the weighted sampler: "matched" gives generated images the same share of every class
    # that has them (data.balanced_weights), so their look carries no label; "natural": none.
    synthetic_share: Literal["natural", "matched"] = "natural"


@dataclass
class EvalConfig:
    threshold: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.9
    n_bootstrap: int = 2000
    ci: float = 0.95
    seed: int = 0


@dataclass
class MixConfig:
    """How many synthetic images join train/ (per class), from which manifests."""

    # Each: one manifest, or a list whose rows are pooled (the task's generated class and, with
    # the pipeline's generation.other_class, the other class's images).
    unfiltered_manifest: str | list[str] = ""
    filtered_manifest: str | list[str] = ""  # CLIP + MoSo (synthetic_filtered, synthetic_pretrain)
    clip_only_manifest: str | list[str] = ""  # the same filter with MoSo off (filter_clip_only)
    coarse_only_manifest: str | list[str] = ""  # coarse model alone, filtered the same way
    mixup_alpha: float = 0.4  # the mixup arm's Beta(alpha, alpha) (Zhang et al. 2018)
    ratio: float = 1.0  # synthetic-to-real ratio per class (used when per_class_count < 0)
    per_class_count: int = -1  # absolute count per class; -1 = use ratio
    classes: tuple[int, ...] = (1,)  # which classes receive synthetic images


ARMS = ("real", "classic_aug", "dup_real", "synthetic", "synthetic_filtered")
# Arms that isolate each part of the method (issue 22): the paper's "mixing images" baseline,
# MoSo's own contribution, the paper's plain Stable Diffusion baseline, and RoentGen-v2's
# pretrain-on-synthetic-then-fine-tune-on-real recipe.
EXTRA_ARMS = ("mixup", "filter_clip_only", "coarse_only", "synthetic_pretrain")
ALL_ARMS = ARMS + EXTRA_ARMS


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    # Synthetic-to-real ratios of the ratio curve (e.g. 0.25 ... 10): dup_real and
    # synthetic_filtered again at each, paired against real only. Empty: no curve.
    ratios: tuple[float, ...] = ()
    run_dir: str = "runs/classifier"


def _build(cls: type, values: dict) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name) if name in known else None
        if hasattr(default, "__dataclass_fields__"):
            kwargs[name] = _build(type(default), value)
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def experiment_from_dict(values: dict) -> ExperimentConfig:
    return _build(ExperimentConfig, values)


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read a JSON config; unknown keys are an error naming the file."""
    try:
        return experiment_from_dict(json.loads(Path(path).read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None
