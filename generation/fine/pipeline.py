"""Inference with the coarse model plus the FG/BG ControlNet branches, exactly as trained.

diffusers' multi-ControlNet pipelines give every ControlNet the same prompt embeddings; here the
FG branch reads `text_nd`, the BG branch `text_bg` and the UNet the combined coarse prompt, so the
pipeline is a small `DiffusionPipeline` of its own that calls `model.predict_noise` (the training
forward) at every step. It offers text-to-image and img2img (`image` + `strength`), per-branch
conditioning scales and guidance start/end, one generator per image, any diffusers scheduler.

    pipe = TigerFinePipeline.from_pretrained("runs/fine")         # folder from the fine stage
    pipe.use_scheduler("dpm++")                                   # or assign pipe.scheduler
    out = pipe(text_nd=[...], text_bg=[...], condition_FG=[mask, ...], condition_BG=[map, ...],
               conditioning_scale=(1.0, 0.8), num_inference_steps=30, guidance_scale=4.0,
               generator=[torch.Generator().manual_seed(s) for s in seeds])
    out.images  # PIL images (output_type="np" -> float array in [0, 1])
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from generation.coarse.prompts import combine_prompt
from generation.fine.conditions import condition_batch
from generation.fine.model import (
    BranchInputs,
    DualControlNetModel,
    FineModelError,
    predict_noise,
    read_model_info,
    validate_fine_folder,
)
from generation.models import PipelineComponents, load_pipeline_components, vae_downsampling
from metadata.atomic import staging_dir

COARSE_FOLDER = "coarse"
COARSE_RUN_FILE = "tiger_coarse.json"
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}


def pair(value: float | tuple[float, float] | list[float], name: str) -> tuple[float, float]:
    """A float for both branches, or (fg, bg)."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise ValueError(f"{name} must be a float or (fg, bg), got {value!r}")
    return float(value[0]), float(value[1])


def as_list(value, size: int, name: str) -> list:
    """Broadcast a single item to `size`; a list must already have `size` items."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * size
        if len(value) != size:
            raise ValueError(f"{name} has {len(value)} items, expected {size}")
        return list(value)
    return [value] * size


def batch_length(value) -> int:
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return value.shape[0]
    return 1


class TigerFinePipeline(DiffusionPipeline):
    """Coarse Stable Diffusion + `DualControlNetModel` (FG mask/text_nd, BG map/text_bg)."""

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"
    _optional_components: ClassVar[list[str]] = []

    def __init__(
        self, vae, text_encoder, tokenizer, unet, controlnet: DualControlNetModel, scheduler,
        prompt_background: str = "full",
    ):  # fmt: skip
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
        )
        self.register_to_config(prompt_background=prompt_background)
        self.vae_scale_factor = vae_downsampling(vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # Building and persistence -------------------------------------------------------------

    @classmethod
    def from_components(
        cls,
        components: PipelineComponents,
        controlnet: DualControlNetModel,
        prompt_background: str = "full",
    ) -> TigerFinePipeline:
        return cls(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            controlnet=controlnet,
            scheduler=components.scheduler,
            prompt_background=prompt_background,
        )

    @classmethod
    def from_coarse(
        cls,
        coarse: str | os.PathLike | PipelineComponents,
        fusion: str = "gate",
        prompt_background: str | None = None,
    ) -> TigerFinePipeline:
        """Fresh branches on a coarse SD folder (equal to the coarse model until trained)."""
        components = coarse if isinstance(coarse, PipelineComponents) else None
        if components is None:
            components = load_pipeline_components(coarse)
        controlnet = DualControlNetModel.from_unet(
            components.unet, vae_downsampling(components.vae), fusion
        )
        if prompt_background is None:
            prompt_background = coarse_prompt_background(components.source)
        return cls.from_components(components, controlnet, prompt_background)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        local_files_only: bool = True,
        **_ignored,
    ) -> TigerFinePipeline:
        """Load a fine-stage folder: branches + fusion, and the coarse SD folder it points to.
        Always from disk: `local_files_only=False` is refused (no hub at run time)."""
        if not local_files_only:
            raise ValueError("TigerFinePipeline loads local folders only (no hub at run time)")
        path = validate_fine_folder(folder)
        info = read_model_info(path)
        coarse = coarse_folder(path, info)
        components = load_pipeline_components(coarse, torch_dtype=torch_dtype)
        controlnet = DualControlNetModel.from_pretrained(path, torch_dtype=torch_dtype)
        return cls.from_components(
            components, controlnet, str(info.get("prompt_background", "full"))
        )

    def save_pretrained(self, folder: str | os.PathLike, **_ignored) -> Path:
        """Atomically write a self-contained folder: branches, fusion and coarse/ (a full SD)."""
        final = Path(folder)
        with staging_dir(final) as staging:
            StableDiffusionPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                unet=self.unet,
                scheduler=self.scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            ).save_pretrained(staging / COARSE_FOLDER, safe_serialization=True)
            self.controlnet.save_pretrained(
                staging,
                prompt_background=self.config.prompt_background,
                coarse_pipeline=COARSE_FOLDER,
            )
        return final

    def use_scheduler(self, name: str) -> TigerFinePipeline:
        """Swap the sampler by short name (`SCHEDULERS`), keeping the trained noise schedule."""
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler {name!r} must be one of {sorted(SCHEDULERS)}")
        self.scheduler = SCHEDULERS[name].from_config(self.scheduler.config)
        return self

    # Pieces of a call ---------------------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Last hidden states of the frozen text encoder, as in training."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self._execution_device)
        return self.text_encoder(ids, return_dict=False)[0].to(self.unet.dtype)

    def default_resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def initial_latents(self, batch, resolution, generators, image, strength, timesteps):
        """Pure noise (text-to-image) or the encoded `image` noised to the first timestep."""
        device, dtype = self._execution_device, self.unet.dtype
        size = resolution // self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, size, size)
        noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        if image is None:
            return noise * self.scheduler.init_noise_sigma
        pixels = self.image_processor.preprocess(image, height=resolution, width=resolution)
        if pixels.shape[0] == 1 and batch > 1:
            pixels = pixels.expand(batch, -1, -1, -1)
        if pixels.shape[0] != batch:
            raise ValueError(f"image has {pixels.shape[0]} items, expected {batch}")
        pixels = pixels.to(device, self.vae.dtype)
        latents = []
        for index in range(batch):
            posterior = self.vae.encode(pixels[index : index + 1]).latent_dist
            generator = generators[index] if isinstance(generators, list) else generators
            latents.append(posterior.sample(generator))
        latents = torch.cat(latents).to(dtype)
        shift = self.vae.config.get("shift_factor") or 0.0
        latents = (latents - shift) * self.vae.config.scaling_factor
        first = timesteps[:1].repeat(batch)
        return self.scheduler.add_noise(latents, noise, first)

    def step_kwargs(self, generator, eta: float) -> dict:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    # The call -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        text_nd: str | list[str],
        text_bg: str | list[str],
        condition_FG,
        condition_BG,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_text_nd: str | list[str] | None = None,
        image=None,
        strength: float = 0.8,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        conditioning_scale: float | tuple[float, float] = 1.0,
        control_guidance_start: float | tuple[float, float] = 0.0,
        control_guidance_end: float | tuple[float, float] = 1.0,
        background_outside_nodule: bool = False,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        resolution: int | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate one image per (text_nd, text_bg, condition_FG, condition_BG) item.

        `prompt` is the UNet's prompt (default: text_nd and text_bg combined as the coarse stage
        trained). Conditions: paths, PIL images, uint8 arrays, or [0, 1] tensors; each sample
        keeps its own. `conditioning_scale`, `control_guidance_start/end`: a float or (fg, bg);
        a zero scale switches a branch off (0, 0 is the coarse model alone). `image` + `strength`
        turn on img2img. `generator`: one per output image for per-image reproducibility.
        `negative_text_nd` (instead of `negative_prompt`): guidance contrasts each item with the
        same item described by other nodule words (the UNet and the FG branch read them, the BG
        branch its own `text_bg`), so the guided direction is what the nodule words change.
        `background_outside_nodule`: the BG branch acts outside the FG mask only (while the FG
        branch is on), so the nodule's brightness comes from the FG branch and the text
        (`model.outside_nodule`).
        """
        scales = pair(conditioning_scale, "conditioning_scale")
        starts = pair(control_guidance_start, "control_guidance_start")
        ends = pair(control_guidance_end, "control_guidance_end")
        for start, end in zip(starts, ends, strict=True):
            if not 0.0 <= start < end <= 1.0:
                raise ValueError(
                    f"control guidance window ({start}, {end}) must be 0<=start<end<=1"
                )
        if image is not None and not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        items = max(map(batch_length, (text_nd, text_bg, condition_FG, condition_BG)))
        nodule = as_list(text_nd, items, "text_nd")
        tissue = as_list(text_bg, items, "text_bg")
        if prompt is None:
            mode = self.config.prompt_background
            prompt = [combine_prompt(nd, bg, mode) for nd, bg in zip(nodule, tissue, strict=True)]
        prompts = as_list(prompt, items, "prompt")
        negative = as_list(negative_prompt or "", items, "negative_prompt")
        resolution = resolution or self.default_resolution()
        if resolution % self.vae_scale_factor:
            raise ValueError(
                f"resolution {resolution} is not a multiple of {self.vae_scale_factor}"
            )
        fg_images = condition_batch(condition_FG, resolution)
        bg_images = condition_batch(condition_BG, resolution)
        fg_images = fg_images.expand(items, -1, -1, -1) if len(fg_images) == 1 else fg_images
        bg_images = bg_images.expand(items, -1, -1, -1) if len(bg_images) == 1 else bg_images
        if len(fg_images) != items or len(bg_images) != items:
            raise ValueError(f"condition_FG/condition_BG must have 1 or {items} items")

        repeat = num_images_per_prompt
        batch = items * repeat
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images")
        device, dtype = self._execution_device, self.unet.dtype
        guided = guidance_scale > 1.0

        def expand(tensor: torch.Tensor, uncond: torch.Tensor | None = None) -> torch.Tensor:
            tensor = tensor.repeat_interleave(repeat, dim=0)
            if not guided:
                return tensor
            other = tensor if uncond is None else uncond.repeat_interleave(repeat, dim=0)
            return torch.cat([other, tensor])

        if negative_text_nd is not None and negative_prompt:
            raise ValueError("give negative_prompt or negative_text_nd, not both")
        tissue_text = self.encode_text(tissue)
        unet_uncond = fg_uncond = bg_uncond = None
        if guided and negative_text_nd is not None:
            contrast = as_list(negative_text_nd, items, "negative_text_nd")
            mode = self.config.prompt_background
            unet_uncond = self.encode_text(
                [combine_prompt(nd, bg, mode) for nd, bg in zip(contrast, tissue, strict=True)]
            )
            fg_uncond = self.encode_text(contrast)
            bg_uncond = tissue_text  # the BG branch reads the same words in both passes
        elif guided:
            unet_uncond = fg_uncond = bg_uncond = self.encode_text(negative)
        unet_text = expand(self.encode_text(prompts), unet_uncond)
        fg_text = expand(self.encode_text(nodule), fg_uncond)
        bg_text = expand(tissue_text, bg_uncond)
        fg_cond = expand(fg_images).to(device, dtype)
        bg_cond = expand(bg_images).to(device, dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if image is not None:
            keep = min(int(num_inference_steps * strength), num_inference_steps)
            start_index = max(num_inference_steps - keep, 0) * self.scheduler.order
            timesteps = timesteps[start_index:]
            if hasattr(self.scheduler, "set_begin_index"):
                self.scheduler.set_begin_index(start_index)
            if len(timesteps) == 0:
                raise ValueError(f"strength {strength} leaves no denoising step")
        latents = self.initial_latents(batch, resolution, generator, image, strength, timesteps)
        extra = self.step_kwargs(generator, eta)

        total = len(timesteps)
        with self.progress_bar(total=total) as bar:
            for index, timestep in enumerate(timesteps):
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, timestep)
                active = [
                    scale != 0.0 and not (index / total < start or (index + 1) / total > end)
                    for scale, start, end in zip(scales, starts, ends, strict=True)
                ]
                fg = BranchInputs(fg_text, fg_cond, scales[0]) if active[0] else None
                bg = BranchInputs(bg_text, bg_cond, scales[1]) if active[1] else None
                step_t = timestep.expand(model_input.shape[0]).to(device)
                prediction = predict_noise(
                    self.unet, self.controlnet, model_input, step_t, unet_text, fg, bg,
                    background_outside_nodule,
                )  # fmt: skip
                if guided:
                    uncond, cond = prediction.chunk(2)
                    prediction = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(
                    prediction, timestep, latents, **extra, return_dict=False
                )[0]
                bar.update()

        if output_type == "latent":
            images = latents
        else:
            shift = self.vae.config.get("shift_factor") or 0.0
            scaled = latents / self.vae.config.scaling_factor + shift
            decoded = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, None)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)


def coarse_prompt_background(folder: str | os.PathLike | None) -> str:
    """How the coarse stage joined text_nd and text_bg (its tiger_coarse.json), else "full"."""
    if folder is None:
        return "full"
    run_file = Path(folder) / COARSE_RUN_FILE
    try:
        return str(json.loads(run_file.read_text("utf-8"))["config"]["prompt_background"])
    except (OSError, ValueError, KeyError, TypeError):
        return "full"


def coarse_folder(path: Path, info: dict) -> Path:
    """The coarse SD folder a fine folder uses: its own coarse/ copy, else the recorded pointer."""
    pointer = info.get("coarse_pipeline")
    if not pointer:
        raise FineModelError(path, "fine_model.json names no coarse_pipeline")
    target = Path(pointer)
    if not target.is_absolute():
        target = path / target
    if not target.is_dir():
        raise FineModelError(path, f"coarse pipeline folder {target} does not exist")
    return target


def load_fine_pipeline(
    folder: str | os.PathLike, torch_dtype: torch.dtype | None = None
) -> TigerFinePipeline:
    """`TigerFinePipeline.from_pretrained(folder)`, named like `generation.models.load_pipeline`."""
    return TigerFinePipeline.from_pretrained(folder, torch_dtype=torch_dtype)
