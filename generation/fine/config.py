"""Every option of the fine stage in one dataclass; CLI flags are generated from its fields.

Names follow diffusers' train_controlnet.py where they overlap, and the coarse stage elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from generation.coarse.config import LR_SCHEDULERS
from generation.coarse.prompts import BACKGROUND_MODES
from generation.fine.model import FUSION_MODES
from generation.training.optim import OPTIMIZERS
from generation.training.options import read_config_file
from generation.training.precision import MIXED_PRECISION


class FineConfigError(ValueError):
    """An invalid fine-stage option; names the option (and the config file when given)."""


@dataclass
class FineConfig:
    """Fine-stage options: two ControlNet branches trained on the frozen coarse model."""

    train_data_dir: str = ""
    output_dir: str = ""
    # The coarse stage's output (a diffusers SD folder); UNet, VAE and text encoder stay frozen.
    coarse_model_path: str = ""
    fusion: str = "gate"
    # How the UNet's prompt joins text_nd and text_bg; None: as the coarse run recorded it.
    prompt_background: str | None = None
    # Which cases the branches learn from: the classifier's splits.json (train cases only;
    # validation grids from its valid cases); without it the dataset must be a train-only subset
    # (`metadata.cli subset`) or all_cases on. Records failing the checks stop the run before
    # training, or are left out and listed (OUTPUT/skipped_records.json) with skip_bad.
    splits_file: str | None = None
    all_cases: bool = False
    skip_bad: bool = False
    # Data.
    resolution: int = 128
    center_crop: bool = True
    random_flip: bool = True
    caption_dropout: float = 0.1
    cache_latents: bool = True
    # Optimisation: one AdamW and one lr schedule over both branches (+ gate logits).
    seed: int = 0
    train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    learning_rate: float = 1e-4
    gate_learning_rate: float | None = 1e-2
    scale_lr: bool = False
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 50
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # "adamw8bit": bitsandbytes' 8-bit AdamW (2 instead of 8 bytes of state per parameter).
    optimizer: str = "adamw"
    # Run even when the memory plan (generation.training.memory) exceeds the device's memory.
    allow_memory_over: bool = False
    max_grad_norm: float = 1.0
    snr_gamma: float | None = 5.0
    noise_offset: float = 0.0
    # Hardware.
    mixed_precision: str = "no"
    allow_tf32: bool = False
    enable_xformers_memory_efficient_attention: bool = False
    gradient_checkpointing: bool = False
    cpu_threads: int | None = None  # CPU only; 1 is much faster on a CPU shared with other jobs
    # Checkpoints, validation, logging.
    checkpointing_steps: int = 250
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    validation_steps: int = 250
    num_validation_items: int = 4
    validation_seeds: list[int] = field(default_factory=lambda: [0, 1])
    validation_inference_steps: int = 20
    validation_guidance_scale: float = 4.0
    report_to: str = "tensorboard"

    def __post_init__(self) -> None:
        self.validation_seeds = [int(seed) for seed in self.validation_seeds]

    def validate(self, source: str | None = None) -> FineConfig:
        """Raise FineConfigError on the first bad option, naming it (and `source`)."""

        def fail(option: str, problem: str) -> None:
            where = f"{source}: " if source else ""
            raise FineConfigError(f"{where}--{option}: {problem}")

        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"{self.optimizer!r} is not one of {OPTIMIZERS}")

        for name in ("train_data_dir", "output_dir", "coarse_model_path"):
            if not getattr(self, name):
                fail(name, "required")
        if self.fusion not in FUSION_MODES:
            fail("fusion", f"{self.fusion!r} is not one of {FUSION_MODES}")
        if self.prompt_background is not None and self.prompt_background not in BACKGROUND_MODES:
            fail("prompt_background", f"{self.prompt_background!r} not in {BACKGROUND_MODES}")
        for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.resolution < 8 or self.resolution % 8:
            fail("resolution", f"must be a positive multiple of 8, got {self.resolution}")
        if not 0.0 <= self.caption_dropout < 1.0:
            fail("caption_dropout", f"must be in [0, 1), got {self.caption_dropout}")
        if self.learning_rate <= 0:
            fail("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.gate_learning_rate is not None and self.gate_learning_rate <= 0:
            fail(
                "gate_learning_rate", f"must be positive (or unset), got {self.gate_learning_rate}"
            )
        if self.lr_scheduler not in LR_SCHEDULERS:
            fail("lr_scheduler", f"{self.lr_scheduler!r} is not one of {LR_SCHEDULERS}")
        if self.mixed_precision not in MIXED_PRECISION:
            fail("mixed_precision", f"{self.mixed_precision!r} is not one of {MIXED_PRECISION}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            fail("snr_gamma", f"must be positive (or unset), got {self.snr_gamma}")
        if self.noise_offset < 0:
            fail("noise_offset", f"must be >= 0, got {self.noise_offset}")
        if self.checkpointing_steps < 1 or self.validation_steps < 1:
            fail("checkpointing_steps", "checkpointing_steps and validation_steps must be >= 1")
        if self.num_validation_items > 0 and not self.validation_seeds:
            fail("validation_seeds", "at least one seed is needed for validation")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            fail("cpu_threads", f"must be >= 1 (or unset), got {self.cpu_threads}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> FineConfig:
        """JSON config file (keys = option names); `overrides` win. Errors name the file."""
        data = read_config_file(cls, path, FineConfigError, overrides)
        return cls(**data).validate(str(path))


# CPU profiles for the tiny default on the phantom (128 px); quick: ~15 min on one free core.
PROFILES: dict[str, dict] = {
    "quick": {
        "cpu_threads": 1,
        "max_train_steps": 240,
        "train_batch_size": 8,
        "learning_rate": 5e-4,
        "lr_warmup_steps": 20,
        "checkpointing_steps": 80,
        "validation_steps": 240,
        "validation_inference_steps": 20,
    },
    "long": {
        "cpu_threads": 1,
        "max_train_steps": 3000,
        "train_batch_size": 16,
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 100,
        "checkpointing_steps": 250,
        "validation_steps": 500,
    },
    # Real scale on GPUs: the one recipe behind scripts/Tiger-Fine.sh and `tiger run --profile gpu`,
    # lean enough for a 24 GB GPU at 512 px (~14 GiB planned): 8-bit AdamW, gradient
    # checkpointing, 2 images x 4 accumulation steps (an effective batch of 8).
    "gpu": {
        "resolution": 512,
        "train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "optimizer": "adamw8bit",
        "gradient_checkpointing": True,
        "max_train_steps": 10000,
        "learning_rate": 1e-5,
        "mixed_precision": "bf16",
        "allow_tf32": True,
        "checkpointing_steps": 1000,
        "checkpoints_total_limit": 3,
        "validation_steps": 1000,
    },
}
