"""Every option of the coarse stage in one dataclass; CLI flags are generated from its fields."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from generation.coarse.prompts import BACKGROUND_MODES
from generation.training.optim import OPTIMIZERS
from generation.training.options import read_config_file
from generation.training.precision import MIXED_PRECISION

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
DEFAULT_VALIDATION_PROMPTS = (
    "benign, solid, hypoechoic, taller-than-wide, well-defined margins, no calcifications, medium",
    "benign, solid, hypoechoic, wider-than-tall, well-defined margins, no calcifications, medium",
    "malignant, follicular, solid, hypoechoic, wider-than-tall, ill-defined margins, "
    "no calcifications, large",
    "malignant, medullary, solid, markedly hypoechoic, taller-than-wide, microlobulated margins, "
    "microcalcifications, medium",
)


class CoarseConfigError(ValueError):
    """An invalid coarse-stage option; names the option (and the config file when given)."""


@dataclass
class CoarseConfig:
    """Coarse-stage options; names follow diffusers' train_text_to_image.py where they overlap."""

    train_data_dir: str = ""
    output_dir: str = ""
    # Which cases the generator learns from: the classifier's splits.json (train cases only);
    # without it the dataset must be a train-only subset (`metadata.cli subset`) or all_cases on.
    splits_file: str | None = None
    all_cases: bool = False
    # Leave out records that fail the dataset checks (listed in OUTPUT/skipped_records.json)
    # instead of stopping before training.
    skip_bad: bool = False
    # Models: a local diffusers SD folder, or None for the tiny default (+ stage-0 autoencoder).
    pretrained_model_name_or_path: str | None = None
    pretrained_vae_path: str | None = None
    tiny_config_file: str | None = None
    train_text_encoder: bool | None = None  # None: True for the tiny default, False otherwise
    # LoRA (peft) instead of full fine-tuning; merged into the saved pipeline.
    use_lora: bool = False
    lora_rank: int = 8
    lora_alpha: float | None = None
    # Data and prompts.
    resolution: int = 128
    center_crop: bool = True
    random_flip: bool = True
    prompt_background: str = "full"
    caption_dropout: float = 0.1
    # Probability of leaving out each phrase of a training prompt's nodule description (label
    # words included), drawn anew every step: the label alone no longer stands for its findings,
    # so each finding's word has to show in the image. 0: off (generation/coarse/prompts.py).
    word_dropout: float = 0.0
    cache_latents: bool = True
    # Optimisation.
    seed: int = 0
    train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    learning_rate: float = 1e-4
    # None: learning_rate / 10. A text encoder trained from scratch at the UNet's rate collapses
    # (all prompts -> one embedding) before the UNet learns to read it; see train.text_param_groups.
    text_encoder_learning_rate: float | None = None
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
    # Loss weight of latent positions inside the nodule mask (condition_FG), relative to tissue.
    # The nodule is ~4% of a frame and the only part its words describe; with 1 (plain MSE) the
    # speckle the text cannot predict dominates the loss and the tiny UNet ignores the prompt.
    nodule_loss_weight: float = 1.0
    noise_offset: float = 0.0
    use_ema: bool = True
    ema_decay: float = 0.999
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
    validation_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_VALIDATION_PROMPTS))
    validation_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    validation_inference_steps: int = 25
    validation_guidance_scale: float = 4.0
    report_to: str = "tensorboard"
    # Stage 0 (tiny default without a pretrained VAE): autoencoder fit on random crops.
    autoencoder_steps: int = 600
    autoencoder_crop_size: int = 64
    autoencoder_batch_size: int = 16
    autoencoder_learning_rate: float = 1e-3
    autoencoder_texture_weight: float = 1.0
    # Tiny default only: the autoencoder's downsampling factor (None: the tiny config's, 4x).
    # The denoiser's cost and what it must learn scale with the latent grid, so 8x at 128 px
    # keeps the 16x16 latent on which the shape words take hold within the CPU budget (at 4x,
    # a 32x32 latent, 1500 steps gave no shape control; benchmarks/coarse_prompt_shape.py).
    # A tiny_config_file that sets vae_block_out_channels wins.
    autoencoder_downsampling: int | None = None

    def __post_init__(self) -> None:
        self.validation_prompts = list(self.validation_prompts)
        self.validation_seeds = [int(seed) for seed in self.validation_seeds]

    @property
    def effective_text_encoder_learning_rate(self) -> float:
        if self.text_encoder_learning_rate is not None:
            return self.text_encoder_learning_rate
        return self.learning_rate / 10

    @property
    def trains_text_encoder(self) -> bool:
        if self.train_text_encoder is None:
            return self.pretrained_model_name_or_path is None
        return self.train_text_encoder

    def validate(self, source: str | None = None) -> CoarseConfig:
        """Raise CoarseConfigError on the first bad option, naming it (and `source`)."""

        def fail(option: str, problem: str) -> None:
            where = f"{source}: " if source else ""
            raise CoarseConfigError(f"{where}--{option}: {problem}")

        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"{self.optimizer!r} is not one of {OPTIMIZERS}")

        if not self.train_data_dir:
            fail("train_data_dir", "required (a Tiger dataset folder)")
        if not self.output_dir:
            fail("output_dir", "required")
        for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.resolution < 8 or self.resolution % 8:
            fail("resolution", f"must be a positive multiple of 8, got {self.resolution}")
        if not 0.0 <= self.caption_dropout < 1.0:
            fail("caption_dropout", f"must be in [0, 1), got {self.caption_dropout}")
        if not 0.0 <= self.word_dropout < 1.0:
            fail("word_dropout", f"must be in [0, 1), got {self.word_dropout}")
        if self.learning_rate <= 0:
            fail("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.text_encoder_learning_rate is not None and self.text_encoder_learning_rate <= 0:
            fail("text_encoder_learning_rate", "must be positive (or unset)")
        if self.lr_scheduler not in LR_SCHEDULERS:
            fail("lr_scheduler", f"{self.lr_scheduler!r} is not one of {LR_SCHEDULERS}")
        if self.mixed_precision not in MIXED_PRECISION:
            fail("mixed_precision", f"{self.mixed_precision!r} is not one of {MIXED_PRECISION}")
        if self.prompt_background not in BACKGROUND_MODES:
            fail("prompt_background", f"{self.prompt_background!r} not in {BACKGROUND_MODES}")
        if self.use_lora and self.lora_rank < 1:
            fail("lora_rank", f"must be >= 1, got {self.lora_rank}")
        if self.use_lora and self.pretrained_model_name_or_path is None:
            fail("use_lora", "LoRA adapts pretrained weights; the tiny default has none to adapt")
        if not 0.0 < self.ema_decay < 1.0:
            fail("ema_decay", f"must be in (0, 1), got {self.ema_decay}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            fail("snr_gamma", f"must be positive (or unset), got {self.snr_gamma}")
        if self.nodule_loss_weight < 1:
            fail(
                "nodule_loss_weight", f"must be >= 1 (1: plain loss), got {self.nodule_loss_weight}"
            )
        if self.noise_offset < 0:
            fail("noise_offset", f"must be >= 0, got {self.noise_offset}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            fail("cpu_threads", f"must be >= 1 (or unset), got {self.cpu_threads}")
        if self.checkpointing_steps < 1 or self.validation_steps < 1:
            fail("checkpointing_steps", "checkpointing_steps and validation_steps must be >= 1")
        if self.autoencoder_crop_size % 8 or self.autoencoder_crop_size > self.resolution:
            fail("autoencoder_crop_size", "must be a multiple of 8 and <= resolution")
        factor = self.autoencoder_downsampling
        if factor is not None and (factor < 2 or factor & (factor - 1)):
            fail("autoencoder_downsampling", f"must be a power of two >= 2, got {factor}")
        if factor is not None and (self.resolution % factor or self.autoencoder_crop_size % factor):
            fail(
                "autoencoder_downsampling",
                f"{factor} must divide resolution {self.resolution} and autoencoder_crop_size "
                f"{self.autoencoder_crop_size}",
            )
        if self.validation_prompts and not self.validation_seeds:
            fail("validation_seeds", "at least one seed is needed for validation")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> CoarseConfig:
        """JSON config file (keys = option names); `overrides` win. Errors name the file."""
        data = read_config_file(cls, path, CoarseConfigError, overrides)
        return cls(**data).validate(str(path))


# CPU profiles of the tiny default on the phantom. Quick: the whole stage (autoencoder, training,
# one validation grid) in 14-20 minutes on 2 cores, so it trains at 64 px (a 128 px phantom is
# resized; 128 px costs ~4x per step at the same autoencoder). Long: 128 px with an 8x
# autoencoder, ~45 minutes on 2 cores. Toy: CI end-to-end smoke.
PROFILES: dict[str, dict] = {
    "quick": {
        "prompt_background": "words",
        "resolution": 64,
        # The prompt acts at 1500 steps, not yet at 1000 (benchmarks/coarse_prompt_shape.py).
        "max_train_steps": 1500,
        "nodule_loss_weight": 10.0,
        "autoencoder_steps": 400,
        "autoencoder_crop_size": 32,
        "train_batch_size": 16,
        "learning_rate": 4e-4,
        "text_encoder_learning_rate": 4e-5,
        "lr_warmup_steps": 30,
        "checkpointing_steps": 500,
        "validation_steps": 1500,
        "validation_inference_steps": 20,
    },
    "long": {
        # The quick recipe at 128 px; an 8x autoencoder keeps the denoiser on the same 16x16
        # latent grid as the quick profile (~45 min on 2 cores: 14 autoencoder + 30 training).
        "prompt_background": "words",
        "resolution": 128,
        "autoencoder_downsampling": 8,
        "max_train_steps": 2400,
        "nodule_loss_weight": 10.0,
        "autoencoder_steps": 1500,
        "autoencoder_crop_size": 64,
        "train_batch_size": 16,
        "learning_rate": 4e-4,
        "text_encoder_learning_rate": 4e-5,
        "lr_warmup_steps": 30,
        "checkpointing_steps": 300,
        "validation_steps": 1200,
    },
    "toy": {
        "prompt_background": "words",
        "resolution": 64,
        "max_train_steps": 20,
        "autoencoder_steps": 30,
        "autoencoder_crop_size": 32,
        "autoencoder_batch_size": 8,
        "train_batch_size": 8,
        "learning_rate": 4e-4,
        "lr_warmup_steps": 5,
        "checkpointing_steps": 20,
        "validation_steps": 20,
        "validation_seeds": [0],
        "validation_inference_steps": 4,
    },
    # Real scale on GPUs from a local SD folder: the one recipe behind scripts/Tiger-Coarse.sh
    # and `tiger run --profile gpu` (diffusers' train_text_to_image settings where they overlap).
    # Lean enough for a 24 GB GPU at 512 px (benchmarks/memory_plan.py: ~15 GiB): 8-bit AdamW,
    # gradient checkpointing, 2 images x 8 accumulation steps (an effective batch of 16).
    "gpu": {
        "resolution": 512,
        "center_crop": True,
        "random_flip": True,
        "prompt_background": "full",
        "caption_dropout": 0.1,
        "train_batch_size": 2,
        "gradient_accumulation_steps": 8,
        "optimizer": "adamw8bit",
        "gradient_checkpointing": True,
        "max_train_steps": 15000,
        "learning_rate": 1e-5,
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 500,
        "snr_gamma": 5.0,
        "noise_offset": 0.05,
        "use_ema": True,
        "ema_decay": 0.9999,
        "mixed_precision": "bf16",
        "allow_tf32": True,
        "checkpointing_steps": 1000,
        "checkpoints_total_limit": 3,
        "validation_steps": 1000,
        "validation_inference_steps": 30,
        "validation_guidance_scale": 7.5,
        "report_to": "tensorboard",
    },
}
