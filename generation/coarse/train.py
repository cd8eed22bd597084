"""Coarse-stage training loop: accelerate, cached latents/embeddings, EMA, min-SNR, exact resume.

Output: `output_dir` becomes a complete diffusers Stable Diffusion folder (LoRA merged, EMA
weights) beside its checkpoint-*/, logs/, validation/ and (tiny default) autoencoder/ folders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from generation.autoencoder.train import AutoencoderFitConfig, fit_and_save
from generation.coarse.config import CoarseConfig
from generation.coarse.data import CoarseDataset, load_coarse_dataset
from generation.coarse.lora import (
    TEXT_ENCODER_TARGET_MODULES,
    UNET_TARGET_MODULES,
    add_lora,
    merge_lora,
)
from generation.coarse.prompts import combine_prompt, drop_phrases, token_count
from generation.models import (
    PipelineComponents,
    TinyModelConfig,
    load_pipeline_components,
    vae_channels_for,
    vae_downsampling,
)
from generation.offline import enforce_offline
from generation.training import checkpoint as ckpt
from generation.training.caching import (
    LatentCache,
    cached_latents,
    encode_latent_cache,
    encode_prompts,
    fingerprint,
    module_fingerprint,
    tokenize_prompts,
)
from generation.training.guard import check_finite_loss
from generation.training.loss import (
    diffusion_loss,
    sample_noise,
    sample_timesteps,
    training_target,
)
from generation.training.memory import check_plan, training_plan
from generation.training.optim import build_adamw
from generation.training.precision import (
    build_accelerator,
    configure_attention,
    configure_tf32,
    weight_dtype,
)
from generation.training.progress import TIMING_FILE, Progress
from generation.training.randomness import batch_indices, random_crops, step_generator
from generation.training.state import TrainingState
from generation.training.validation import generate_images, image_grid
from metadata.atomic import save_png, write_json
from metadata.validate import SKIPPED_FILE

LOGGER = logging.getLogger(__name__)
AUTOENCODER_DIR = "autoencoder"
RUN_FILE = "tiger_coarse.json"
MAX_PHRASES = 32  # word dropout draws this many keep flags per prompt (more phrases: kept)
COLLAPSE_WARNING = 0.03  # prompt separation below this: the prompts look alike to the UNet
# Options that must not change across a resume, or the resumed run is a different run.
RESUME_INVARIANTS = (
    "seed",
    "train_batch_size",
    "gradient_accumulation_steps",
    "resolution",
    "random_flip",
    "center_crop",
    "caption_dropout",
    "word_dropout",
    "prompt_background",
    "use_lora",
    "lora_rank",
    "nodule_loss_weight",
    "autoencoder_downsampling",
)


@dataclass
class Batch:
    """What one micro-step draws; a pure function of (seed, micro_step, process)."""

    indices: torch.Tensor
    flips: torch.Tensor
    dropped: torch.Tensor
    generator: torch.Generator
    # word dropout: (B, MAX_PHRASES) which nodule phrases each prompt keeps; None when off
    phrase_keep: torch.Tensor | None = None


def load_tiny_config(config: CoarseConfig) -> TinyModelConfig:
    data: dict = {"resolution": config.resolution}
    if config.autoencoder_downsampling is not None:
        data["vae_block_out_channels"] = vae_channels_for(config.autoencoder_downsampling)
    if config.tiny_config_file:
        data.update(json.loads(Path(config.tiny_config_file).read_text("utf-8")))
    return TinyModelConfig.from_dict(data)


def prepare_autoencoder(
    config: CoarseConfig, components: PipelineComponents, dataset: CoarseDataset, accelerator
) -> AutoencoderKL:
    """Pretrained VAE when given; else reuse or fit the stage-0 autoencoder (main process)."""
    if config.pretrained_vae_path:
        return AutoencoderKL.from_pretrained(config.pretrained_vae_path, local_files_only=True)
    if not components.is_tiny:
        return components.vae
    folder = Path(config.output_dir) / AUTOENCODER_DIR
    if not (folder / "config.json").is_file() and accelerator.is_main_process:
        images = dataset.load_pixels(list(range(len(dataset))))
        fit = AutoencoderFitConfig(
            steps=config.autoencoder_steps,
            crop_size=config.autoencoder_crop_size,
            batch_size=config.autoencoder_batch_size,
            learning_rate=config.autoencoder_learning_rate,
            texture_weight=config.autoencoder_texture_weight,
            seed=config.seed,
        )
        fit_and_save(components.vae, images, fit, folder)
    accelerator.wait_for_everyone()
    return AutoencoderKL.from_pretrained(folder, local_files_only=True)


def draw_batch(config: CoarseConfig, num_items: int, micro_step: int, accelerator) -> Batch:
    global_batch = config.train_batch_size * accelerator.num_processes
    indices = batch_indices(
        num_items,
        global_batch,
        micro_step,
        config.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )
    generator = step_generator(config.seed, micro_step, accelerator.process_index)
    size = indices.shape[0]
    flips = torch.rand(size, generator=generator) < 0.5
    if not config.random_flip:
        flips = torch.zeros_like(flips)
    dropped = torch.rand(size, generator=generator) < config.caption_dropout
    keep = None
    if config.word_dropout > 0:  # drawn only when on, so runs without it keep their draws
        keep = torch.rand(size, MAX_PHRASES, generator=generator) >= config.word_dropout
    return Batch(indices, flips, dropped, generator, keep)


def word_dropout_prompts(config: CoarseConfig, dataset: CoarseDataset, batch: Batch) -> list[str]:
    """This step's prompts with word dropout: each nodule phrase kept or left out as drawn, the
    caption-dropped items empty."""
    assert batch.phrase_keep is not None
    prompts = []
    for row, index in enumerate(batch.indices.tolist()):
        if bool(batch.dropped[row]):
            prompts.append("")
            continue
        record = dataset.records[index]
        nodule = drop_phrases(record.text_nd, batch.phrase_keep[row].tolist())
        prompts.append(combine_prompt(nodule, record.text_bg, config.prompt_background))
    return prompts


def draw_crops(
    config: CoarseConfig, dataset: CoarseDataset, batch: Batch
) -> list[tuple[int, int]] | None:
    """Random (top, left) crops for the uncached path; None means centre crops."""
    if config.center_crop:
        return None
    return random_crops(dataset.crop_range, batch.indices.tolist(), batch.generator)


def encode_batch_pixels(
    dataset: CoarseDataset, vae, batch: Batch, crops: list[tuple[int, int]] | None, device, dtype
) -> torch.Tensor:
    """The uncached path: load, crop, flip and encode the batch now (as diffusers' example)."""
    pixels = dataset.load_pixels(batch.indices.tolist(), crops)
    pixels = torch.where(batch.flips[:, None, None, None], torch.flip(pixels, dims=[-1]), pixels)
    with torch.no_grad():
        posterior = vae.encode(pixels.to(device, dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=batch.generator)
        return posterior.mean.float() + posterior.std.float() * noise.to(device)


def nodule_weight_maps(masks: torch.Tensor, latent_size: tuple[int, int], weight: float):
    """Per-latent-position loss weights: 1 in tissue, `weight` inside the nodule; a latent cell
    the mask covers partly gets the covered fraction of the extra weight."""
    covered = torch.nn.functional.adaptive_avg_pool2d(masks.float(), latent_size)
    return 1.0 + (weight - 1.0) * covered


def batch_nodule_weights(
    config: CoarseConfig,
    dataset: CoarseDataset,
    batch: Batch,
    crops: list[tuple[int, int]] | None,
    centre_weights: torch.Tensor | None,
    latent_size: tuple[int, int],
) -> torch.Tensor | None:
    """The batch's weight maps (mirrored with their images), or None for the plain loss."""
    if config.nodule_loss_weight == 1.0:
        return None
    if centre_weights is not None and crops is None:
        weights = centre_weights[batch.indices]
    else:
        masks = dataset.load_masks(batch.indices.tolist(), crops)
        weights = nodule_weight_maps(masks, latent_size, config.nodule_loss_weight)
    flips = batch.flips.to(weights.device)[:, None, None, None]
    return torch.where(flips, torch.flip(weights, dims=[-1]), weights)


def trainable_models(config: CoarseConfig, components: PipelineComponents):
    """Set requires_grad, attach LoRA; returns parameter groups' params (unet, text or [])."""
    unet, text_encoder = components.unet, components.text_encoder
    if config.use_lora:
        unet_params = add_lora(unet, config.lora_rank, config.lora_alpha, UNET_TARGET_MODULES)
    else:
        unet.requires_grad_(True)
        unet_params = list(unet.parameters())
    text_params: list[torch.nn.Parameter] = []
    if config.trains_text_encoder:
        if config.use_lora:
            text_params = add_lora(
                text_encoder, config.lora_rank, config.lora_alpha, TEXT_ENCODER_TARGET_MODULES
            )
        else:
            text_encoder.requires_grad_(True)
            text_params = list(text_encoder.parameters())
    else:
        text_encoder.requires_grad_(False)
    return unet_params, text_params


def is_no_decay(name: str) -> bool:
    """Embeddings, norms and biases: weight decay only shrinks them (the token embeddings of rare
    clinical words most, as they get few gradient steps to push back)."""
    return "embedding" in name or "norm" in name or name.endswith(".bias")


def text_param_groups(
    text_encoder, text_params: list[torch.nn.Parameter], learning_rate: float
) -> list[dict]:
    """The text encoder's optimizer groups: its own (lower) rate, no decay on embeddings/norms."""
    if not text_params:
        return []
    trainable = {id(p) for p in text_params}
    decay, no_decay = [], []
    for name, param in text_encoder.named_parameters():
        if id(param) in trainable:
            (no_decay if is_no_decay(name) else decay).append(param)
    groups = [{"params": decay, "lr": learning_rate}]
    if no_decay:
        groups.append({"params": no_decay, "lr": learning_rate, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def check_resume_compatible(state: dict, config: CoarseConfig, path: Path) -> None:
    saved = state.get("config", {})
    changed = [k for k in RESUME_INVARIANTS if k in saved and saved[k] != getattr(config, k)]
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise ValueError(f"{path}: cannot resume exactly, options changed ({details})")


def build_pipeline(components, unet, text_encoder, vae) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=components.tokenizer,
        unet=unet,
        scheduler=components.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline_folder(pipeline: StableDiffusionPipeline, output_dir: Path) -> None:
    """Save into a staging folder, then move components in; model_index.json goes last, so a
    half-saved folder is never loadable as a pipeline."""
    staging = output_dir / ".pipeline.staging"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    (output_dir / "model_index.json").unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == "model_index.json"):
        target = output_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(staging, ignore_errors=True)


def train_coarse(config: CoarseConfig, step_callback: Callable[[int], None] | None = None) -> Path:
    """Run the coarse stage; returns the output folder (a diffusers SD pipeline)."""
    config.validate()
    output = Path(config.output_dir)
    enforce_offline(output)
    log_with = None if config.report_to in ("", "none") else config.report_to
    accelerator = build_accelerator(
        output, config.mixed_precision, config.gradient_accumulation_steps, log_with
    )
    configure_tf32(config.allow_tf32)
    device, dtype = accelerator.device, weight_dtype(accelerator)
    if config.cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(config.cpu_threads)  # idle-spinning threads cost a shared CPU dearly
    dataset = load_coarse_dataset(
        config.train_data_dir,
        config.resolution,
        config.prompt_background,
        config.splits_file,
        config.all_cases,
        config.skip_bad,
        output / SKIPPED_FILE if config.skip_bad else None,
    )

    tiny = load_tiny_config(config) if config.pretrained_model_name_or_path is None else None
    torch.manual_seed(config.seed)  # tiny default's initial weights
    components = load_pipeline_components(config.pretrained_model_name_or_path, tiny)
    vae = prepare_autoencoder(config, components, dataset, accelerator)
    components.vae = vae
    vae.requires_grad_(False)
    vae.to(device, dtype)
    noise_scheduler = components.noise_scheduler()
    unet, text_encoder = components.unet, components.text_encoder

    unet_params, text_params = trainable_models(config, components)
    if config.use_lora and dtype != torch.float32:
        # Frozen base in half precision; adapters stay float32 (as diffusers' LoRA examples).
        unet.to(dtype=dtype)
        for param in unet_params + text_params:
            param.data = param.data.float()
    if not config.trains_text_encoder:
        text_encoder.to(device, dtype)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.trains_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    attention = configure_attention([unet], config.enable_xformers_memory_efficient_attention)
    check_memory(config, accelerator, unet, text_encoder, vae, unet_params + text_params)

    learning_rate = config.learning_rate
    if config.scale_lr:
        learning_rate *= (
            config.train_batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        )
    groups = [{"params": unet_params, "lr": learning_rate}]
    groups += text_param_groups(
        text_encoder, text_params, config.effective_text_encoder_learning_rate
    )
    optimizer = build_adamw(
        groups,
        config.optimizer,
        (config.adam_beta1, config.adam_beta2),
        config.adam_weight_decay,
        config.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    if config.trains_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, lr_scheduler
        )
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    trained_params = unet_params + text_params
    ema = None
    if config.use_ema:
        ema = EMAModel(trained_params, decay=config.ema_decay)
        ema.to(device)
    trained_models = {"unet": accelerator.unwrap_model(unet)}
    if config.trains_text_encoder:
        trained_models["text_encoder"] = accelerator.unwrap_model(text_encoder)
    training_state = TrainingState(trained_models, optimizer, lr_scheduler, ema, accelerator.scaler)

    # Prompts: index 0 is the empty prompt used by caption dropout.
    unique_prompts = ["", *sorted(set(dataset.prompts))]
    prompt_ids = tokenize_prompts(components.tokenizer, unique_prompts)
    position = {prompt: index for index, prompt in enumerate(unique_prompts)}
    prompt_index = torch.tensor([position[p] for p in dataset.prompts])
    longest = max(token_count(components.tokenizer, p) for p in unique_prompts)
    if longest > components.tokenizer.model_max_length:
        LOGGER.warning(
            "longest prompt has %d tokens; CLIP keeps %d (text_bg's tail is cut first)",
            longest,
            components.tokenizer.model_max_length,
        )
    cached_text = None
    if not config.trains_text_encoder:
        cached_text = encode_prompts(text_encoder, prompt_ids, device=device, dtype=dtype)

    latent_cache: LatentCache | None = None
    if config.cache_latents and config.center_crop:
        key = fingerprint(
            [str(p) for p in dataset.image_paths],
            config.resolution,
            config.random_flip,
            module_fingerprint(vae),
        )
        latent_cache = cached_latents(
            output / "cache" / f"latents-{key}.safetensors",
            lambda: encode_latent_cache(
                vae,
                dataset.load_pixels,
                len(dataset),
                config.random_flip,
                device=device,
                dtype=dtype,
            ),
            accelerator.is_main_process,
        )
        latent_cache.mean, latent_cache.std = (
            latent_cache.mean.to(device),
            latent_cache.std.to(device),
        )

    centre_weights = None
    if config.nodule_loss_weight != 1.0 and config.center_crop:
        latent_size = (config.resolution // vae_downsampling(vae),) * 2
        centre_weights = nodule_weight_maps(
            dataset.load_masks(list(range(len(dataset)))), latent_size, config.nodule_loss_weight
        )

    global_step = 0
    resume_path = ckpt.resolve_resume(output, config.resume_from_checkpoint)
    if resume_path is not None:
        state = json.loads((resume_path / ckpt.STATE_FILE).read_text("utf-8"))
        check_resume_compatible(state, config, resume_path)
        state = ckpt.load_checkpoint(resume_path, training_state)
        global_step = int(state["global_step"])
        LOGGER.info("resumed from %s at step %d", resume_path, global_step)
    last_checkpoint = resume_path

    if accelerator.is_main_process:
        tracker_config = {
            k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))
        }
        if log_with:
            accelerator.init_trackers("coarse", tracker_config)
        write_json(
            output / RUN_FILE,
            {
                "config": config.to_dict(),
                "tiny_config": tiny.to_dict() if tiny else None,
                "attention": attention,
                "prediction_type": components.prediction_type,
                "num_processes": accelerator.num_processes,
                "num_images": len(dataset),
                "num_unique_prompts": len(unique_prompts) - 1,
                "longest_prompt_tokens": longest,
            },
        )
    progress = Progress(accelerator, config.max_train_steps, global_step, "coarse")
    scaling = vae.config.scaling_factor
    shift = vae.config.get("shift_factor") or 0.0
    unet.train()
    if config.trains_text_encoder:
        text_encoder.train()
    accumulation = config.gradient_accumulation_steps

    while global_step < config.max_train_steps:
        loss_sum = 0.0
        for micro in range(accumulation):
            micro_step = global_step * accumulation + micro
            batch = draw_batch(config, len(dataset), micro_step, accelerator)
            with accelerator.accumulate(unet):
                crops = draw_crops(config, dataset, batch) if latent_cache is None else None
                if latent_cache is not None:
                    latents = latent_cache.sample(
                        batch.indices.to(device), batch.flips.to(device), batch.generator
                    )
                else:
                    latents = encode_batch_pixels(dataset, vae, batch, crops, device, dtype)
                pixel_weights = batch_nodule_weights(
                    config, dataset, batch, crops, centre_weights, latents.shape[-2:]
                )
                latents = ((latents - shift) * scaling).float()
                noise = sample_noise(latents, batch.generator, config.noise_offset)
                timesteps = sample_timesteps(
                    latents.shape[0], noise_scheduler, batch.generator, device
                )
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                chosen = torch.where(batch.dropped, 0, prompt_index[batch.indices])
                if batch.phrase_keep is not None:
                    ids = tokenize_prompts(
                        components.tokenizer, word_dropout_prompts(config, dataset, batch)
                    ).to(device)
                    with torch.set_grad_enabled(config.trains_text_encoder):
                        hidden = text_encoder(ids, return_dict=False)[0]
                    if not config.trains_text_encoder:
                        hidden = hidden.to(dtype)
                elif cached_text is not None:
                    hidden = cached_text[chosen.to(device)]
                else:
                    hidden = text_encoder(prompt_ids[chosen].to(device), return_dict=False)[0]
                prediction = unet(noisy.to(unet_dtype(unet)), timesteps, hidden).sample
                target = training_target(noise_scheduler, latents, noise, timesteps)
                loss = diffusion_loss(
                    prediction,
                    target,
                    timesteps,
                    noise_scheduler,
                    config.snr_gamma,
                    None if pixel_weights is None else pixel_weights.to(device),
                )
                mean_loss = accelerator.reduce(loss.detach(), "mean").item()
                check_finite_loss(mean_loss, global_step + 1, last_checkpoint)
                loss_sum += mean_loss / accumulation
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trained_params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        global_step += 1
        if ema is not None:
            ema.step(trained_params)
        progress.step(
            global_step,
            loss_sum,
            lr_scheduler.get_last_lr()[0],
            config.train_batch_size * accumulation * accelerator.num_processes,
        )
        if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
            state = {"config": config.to_dict(), "loss": loss_sum}
            last_checkpoint = ckpt.save_checkpoint(
                accelerator,
                output,
                global_step,
                state,
                training_state,
                config.checkpoints_total_limit,
            )
        if config.validation_prompts and (
            global_step % config.validation_steps == 0 or global_step == config.max_train_steps
        ):
            run_validation(
                config, accelerator, components, unet, text_encoder, vae, ema, trained_params,
                progress, global_step,
            )  # fmt: skip
        if step_callback is not None:
            step_callback(global_step)

    progress.close()
    if accelerator.is_main_process:
        write_json(output / TIMING_FILE, progress.timing())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(trained_params)
        final_unet = merge_lora(accelerator.unwrap_model(unet)).float()
        final_text = merge_lora(accelerator.unwrap_model(text_encoder)).float()
        pipeline = build_pipeline(components, final_unet, final_text, vae.float())
        save_pipeline_folder(pipeline, output)
    accelerator.end_training()
    return output


def check_memory(config: CoarseConfig, accelerator, unet, text_encoder, vae, trained) -> None:
    """Say what this run will hold in memory; refuse before training when it cannot fit."""
    trained_count = sum(p.numel() for p in trained)
    total = sum(p.numel() for m in (unet, text_encoder, vae) for p in m.parameters())
    half = accelerator.mixed_precision in ("fp16", "bf16")
    plan = training_plan(
        "coarse",
        trained_count,
        total - trained_count,
        2 if half else 4,
        config.optimizer,
        config.use_ema,
        config.train_batch_size,
        list(unet.config.block_out_channels),
        config.resolution // vae_downsampling(vae),
        config.gradient_checkpointing,
        2 if half else 4,
        layers_per_block=int(unet.config.layers_per_block),
    )
    check_plan(plan, accelerator.device, config.allow_memory_over, accelerator.num_processes)


def unet_dtype(unet) -> torch.dtype:
    return next(p for p in unet.parameters()).dtype


@torch.no_grad()
def run_validation(
    config, accelerator, components, unet, text_encoder, vae, ema, trained_params, progress, step
) -> None:
    """Grid of fixed prompts x seeds with the EMA weights; PNG + tensorboard; main process."""
    if not accelerator.is_main_process:
        return
    if ema is not None:
        ema.store(trained_params)
        ema.copy_to(trained_params)
    try:
        pipeline = build_pipeline(
            components,
            accelerator.unwrap_model(unet),
            accelerator.unwrap_model(text_encoder),
            vae,
        )
        with accelerator.autocast():  # frozen parts may be half precision, trained fp32
            images = generate_images(
                pipeline,
                config.validation_prompts,
                config.validation_seeds,
                config.validation_inference_steps,
                config.validation_guidance_scale,
                accelerator.device,
            )
    finally:
        if ema is not None:
            ema.restore(trained_params)
        unet.train()
        if config.trains_text_encoder:
            text_encoder.train()
    grid = image_grid(images)
    save_png(Path(config.output_dir) / "validation" / f"step-{step:06d}.png", grid)
    progress.log_images("validation", np.ascontiguousarray(grid), step)
    if len(config.validation_prompts) > 1:
        separation = prompt_separation(
            accelerator.unwrap_model(text_encoder),
            components.tokenizer,
            config.validation_prompts,
            accelerator.device,
        )
        accelerator.log({"text/prompt_separation": separation}, step=step)
        if separation < COLLAPSE_WARNING:
            LOGGER.warning(
                "validation prompts' text embeddings differ by only %.3f (relative): the text "
                "encoder is collapsing; lower --text_encoder_learning_rate",
                separation,
            )


@torch.no_grad()
def prompt_separation(text_encoder, tokenizer, prompts: list[str], device) -> float:
    """Mean pairwise relative L2 distance between prompts' hidden states: the signal the UNet
    gets to tell prompts apart (a text encoder trained too fast drives it towards 0)."""
    ids = tokenize_prompts(tokenizer, prompts).to(device)
    was_training = text_encoder.training
    text_encoder.eval()
    hidden = text_encoder(ids, return_dict=False)[0].float().flatten(1)
    text_encoder.train(was_training)
    distances = [
        ((hidden[i] - hidden[j]).norm() / hidden[i].norm()).item()
        for i in range(len(prompts))
        for j in range(i + 1, len(prompts))
    ]
    return float(np.mean(distances))
