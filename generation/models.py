"""Stable Diffusion components: a local diffusers folder, or a tiny one built from config.

The interface between the coarse, fine and inference stages is a diffusers Stable Diffusion
folder. `load_pipeline_components` reads one (SD 1.x/2.x, epsilon or v-prediction as its
scheduler config says) strictly from disk, or builds the tiny default with no weights anywhere:
a 4x-downsampling AutoencoderKL (128 px -> 32x32 latents keeps speckle far better than 8x), a
small UNet2DConditionModel with cross-attention at two levels, a small CLIPTextModel and the
offline CLIP tokenizer (`generation.tokenizer`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from generation.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer

PREDICTION_TYPES = ("epsilon", "v_prediction")
COMPONENT_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class PipelineFolderError(ValueError):
    """A Stable Diffusion folder that is missing or incomplete; names the folder and the gap."""

    def __init__(self, folder: str | os.PathLike, problem: str):
        super().__init__(f"{folder}: {problem}")
        self.folder = str(folder)
        self.problem = problem


def vae_downsampling(vae: AutoencoderKL) -> int:
    """The autoencoder's pixel-to-latent factor (diffusers: one halving per block but the last)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def halvings(downsampling: int) -> int:
    """How many stride-2 stages make `downsampling` (a power of two >= 1), else ValueError."""
    steps = max(int(downsampling).bit_length() - 1, 0)
    if 2**steps != downsampling:
        raise ValueError(f"downsampling factor {downsampling} is not a power of two")
    return steps


def vae_channels_for(downsampling: int) -> tuple[int, ...]:
    """Tiny autoencoder widths with the given downsampling (4x: the default (32, 64, 64))."""
    if downsampling < 2:
        raise ValueError(f"autoencoder downsampling must be >= 2, got {downsampling}")
    return (32,) + (64,) * halvings(downsampling)


@dataclass
class TinyModelConfig:
    """The built-in small Stable Diffusion (no weights anywhere); sizes tuned for 2 CPU cores."""

    resolution: int = 128
    image_channels: int = 3
    # Autoencoder: len(vae_block_out_channels) - 1 downsamplings (3 blocks = 4x).
    vae_block_out_channels: tuple[int, ...] = (32, 64, 64)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 16
    latent_channels: int = 4
    vae_scaling_factor: float = 1.0
    # Denoiser: plain ResNet blocks at full latent size, cross-attention at the two coarser ones.
    unet_block_out_channels: tuple[int, ...] = (64, 128, 192)
    unet_down_block_types: tuple[str, ...] = (
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    )
    unet_up_block_types: tuple[str, ...] = (
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "UpBlock2D",
    )
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 32
    unet_norm_num_groups: int = 32
    # Text encoder: CLIP vocabulary, small transformer; its width is the cross-attention width.
    text_hidden_size: int = 256
    text_num_layers: int = 3
    text_num_heads: int = 4
    text_intermediate_size: int = 1024
    # Also feed an attention-pooled summary of the prompt into the time embedding (diffusers'
    # addition_embed_type="text"), so the words reach every ResNet block, not only the
    # cross-attention layers of the two coarse levels.
    unet_text_time_embedding: bool = False
    # Noise schedule (SD's scaled-linear betas) and target.
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vae_block_out_channels", "unet_block_out_channels"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.unet_down_block_types = tuple(self.unet_down_block_types)
        self.unet_up_block_types = tuple(self.unet_up_block_types)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type {self.prediction_type!r} must be one of {PREDICTION_TYPES}"
            )
        if len(self.unet_down_block_types) != len(self.unet_block_out_channels):
            raise ValueError("unet_down_block_types and unet_block_out_channels differ in length")
        if len(self.unet_up_block_types) != len(self.unet_block_out_channels):
            raise ValueError("unet_up_block_types and unet_block_out_channels differ in length")
        if self.resolution % self.vae_downsampling:
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of the autoencoder's "
                f"downsampling factor {self.vae_downsampling}"
            )

    @property
    def vae_downsampling(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_downsampling

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> TinyModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TinyModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)


# The smallest tiny model that still has every part (TinyModelConfig overrides): for smoke runs
# of the training loops (tests, the multi-process resume benchmark), where only behaviour counts.
SMOKE_TINY_OVERRIDES: dict = {
    "vae_block_out_channels": [16, 16],
    "vae_norm_num_groups": 8,
    "unet_block_out_channels": [16, 32, 32],
    "unet_attention_head_dim": 8,
    "unet_norm_num_groups": 8,
    "text_hidden_size": 32,
    "text_num_layers": 1,
    "text_intermediate_size": 64,
}


@dataclass
class PipelineComponents:
    """The five parts of a Stable Diffusion pipeline, plus where they came from."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: SchedulerMixin
    source: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.source is None

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    def noise_scheduler(self) -> DDPMScheduler:
        """The training-time forward process, with the same betas and target as `scheduler`."""
        return DDPMScheduler.from_config(self.scheduler.config)

    def to_pipeline(self) -> StableDiffusionPipeline:
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def build_tiny_vae(config: TinyModelConfig) -> AutoencoderKL:
    blocks = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=config.image_channels,
        out_channels=config.image_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_block_out_channels,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.vae_norm_num_groups,
        sample_size=config.resolution,
        scaling_factor=config.vae_scaling_factor,
        # Fully convolutional, so stage 0 can fit it on random crops.
        mid_block_add_attention=False,
    )


def build_tiny_unet(config: TinyModelConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=config.unet_down_block_types,
        up_block_types=config.unet_up_block_types,
        block_out_channels=config.unet_block_out_channels,
        layers_per_block=config.unet_layers_per_block,
        attention_head_dim=config.unet_attention_head_dim,
        norm_num_groups=config.unet_norm_num_groups,
        cross_attention_dim=config.text_hidden_size,
        addition_embed_type="text" if config.unet_text_time_embedding else None,
        addition_embed_type_num_heads=config.text_num_heads,
    )


def build_tiny_text_encoder(config: TinyModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden_size,
        intermediate_size=config.text_intermediate_size,
        num_hidden_layers=config.text_num_layers,
        num_attention_heads=config.text_num_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=config.text_hidden_size,
    )
    return CLIPTextModel(text_config)


def build_tiny_scheduler(config: TinyModelConfig) -> DDIMScheduler:
    """DDIM for sampling; its config is also a valid DDPM config for training."""
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )


def build_tiny_components(config: TinyModelConfig | None = None) -> PipelineComponents:
    """Randomly initialised tiny components (seed torch first for reproducible weights)."""
    config = config or TinyModelConfig()
    tokenizer = build_clip_tokenizer()
    return PipelineComponents(
        tokenizer=tokenizer,
        text_encoder=build_tiny_text_encoder(config, tokenizer),
        vae=build_tiny_vae(config),
        unet=build_tiny_unet(config),
        scheduler=build_tiny_scheduler(config),
        source=None,
    )


def build_tiny_pipeline(config: TinyModelConfig | None = None) -> StableDiffusionPipeline:
    """The tiny default as a StableDiffusionPipeline (random weights; safety checker off)."""
    return build_tiny_components(config).to_pipeline()


def has_weights(folder: Path) -> bool:
    return any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir())


def validate_pipeline_folder(folder: str | os.PathLike) -> Path:
    """Check a diffusers SD folder before loading; raise PipelineFolderError naming the gap."""
    path = Path(folder)
    if not path.exists():
        raise PipelineFolderError(path, "no such folder (expected a diffusers SD pipeline folder)")
    if not path.is_dir():
        raise PipelineFolderError(path, "not a folder (expected a diffusers SD pipeline folder)")
    if not (path / "model_index.json").is_file():
        raise PipelineFolderError(path, "model_index.json missing: not a diffusers pipeline folder")
    problems = []
    for name in COMPONENT_FOLDERS:
        sub = path / name
        if not sub.is_dir():
            problems.append(f"{name}/ missing")
            continue
        if name == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                problems.append("scheduler/scheduler_config.json missing")
        elif name == "tokenizer":
            has_bpe = (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()
            if not has_bpe and not (sub / "tokenizer.json").is_file():
                problems.append("tokenizer/ has neither vocab.json+merges.txt nor tokenizer.json")
        else:
            if not (sub / "config.json").is_file():
                problems.append(f"{name}/config.json missing")
            elif not has_weights(sub):
                problems.append(f"{name}/ has no weights (*.safetensors or *.bin)")
    if problems:
        detail = "; ".join(problems)
        raise PipelineFolderError(path, f"incomplete Stable Diffusion folder: {detail}")
    return path


def load_scheduler(folder: Path) -> SchedulerMixin:
    """The scheduler class named in model_index.json (falls back to DDIM for unknown names)."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text("utf-8"))
    entry = index.get("scheduler") or [None, "DDIMScheduler"]
    scheduler_class = getattr(diffusers, str(entry[-1]), None) or DDIMScheduler
    scheduler = scheduler_class.from_pretrained(
        folder, subfolder="scheduler", local_files_only=True
    )
    prediction = scheduler.config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise PipelineFolderError(
            folder / "scheduler", f"prediction_type {prediction!r} is not one of {PREDICTION_TYPES}"
        )
    return scheduler


def load_pipeline_components(
    folder: str | os.PathLike | None,
    tiny_config: TinyModelConfig | None = None,
    *,
    torch_dtype: torch.dtype | None = None,
    variant: str | None = None,
) -> PipelineComponents:
    """Load a local diffusers SD folder (never the hub), or build the tiny default when None.

    `torch_dtype` applies to the loaded weights (keep float32 for the parts you train);
    `variant` selects e.g. "fp16" weight files when a folder ships them.
    """
    if folder is None:
        return build_tiny_components(tiny_config)
    path = validate_pipeline_folder(folder)
    options = {"local_files_only": True}
    weight_options = dict(options, variant=variant)
    if torch_dtype is not None:
        weight_options["torch_dtype"] = torch_dtype
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **options)
        text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", **weight_options
        )
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **weight_options)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **weight_options)
    except (OSError, ValueError, KeyError) as error:
        raise PipelineFolderError(path, f"could not load components: {error}") from error
    return PipelineComponents(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        scheduler=load_scheduler(path),
        source=str(path.resolve()),
    )


def load_pipeline(
    folder: str | os.PathLike, torch_dtype: torch.dtype | None = None
) -> StableDiffusionPipeline:
    """A saved Tiger/diffusers SD folder as a pipeline, checked first, strictly offline."""
    return load_pipeline_components(folder, torch_dtype=torch_dtype).to_pipeline()
