"""Fine-stage training loop: FG/BG ControlNet branches on the frozen coarse model.

Reuses the coarse stage's infrastructure (`generation.training`): accelerate, exact resume
(data order and noise are pure functions of seed and step), atomic checkpoints, cached VAE
latents and text embeddings, min-SNR loss, NaN guard, tensorboard + progress bar.
Output: `output_dir` becomes a fine-stage folder (see `generation.fine.model`) next to its
checkpoint-*/, logs/, validation/ and cache/ folders.
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
from diffusers.optimization import get_scheduler

from generation.fine.config import FineConfig
from generation.fine.data import ConditionCache, FineDataset, fine_dataset, flip_where
from generation.fine.model import (
    BG_FOLDER,
    FG_FOLDER,
    FUSION_FOLDER,
    MODEL_FILE,
    BranchInputs,
    DualControlNetModel,
    link_or_copy_tree,
    predict_noise,
)
from generation.fine.pipeline import COARSE_FOLDER, TigerFinePipeline, coarse_prompt_background
from generation.fine.validation import validation_grid
from generation.models import (
    COMPONENT_FOLDERS,
    PipelineComponents,
    load_pipeline_components,
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
from metadata.atomic import save_png, write_json
from metadata.records import MetadataRecord
from metadata.subset import records_in_splits, training_records
from metadata.validate import SKIPPED_FILE, read_dataset

LOGGER = logging.getLogger(__name__)
RUN_FILE = "tiger_fine.json"
# Options that must not change across a resume, or the resumed run is a different run.
RESUME_INVARIANTS = (
    "seed",
    "train_batch_size",
    "gradient_accumulation_steps",
    "resolution",
    "random_flip",
    "center_crop",
    "caption_dropout",
    "fusion",
    "coarse_model_path",
)


@dataclass
class Batch:
    """What one micro-step draws; a pure function of (seed, micro_step, process)."""

    indices: torch.Tensor
    flips: torch.Tensor
    dropped: torch.Tensor
    generator: torch.Generator


@dataclass
class TextTable:
    """Every unique string (index 0 = "", the dropped caption) and each item's three indices."""

    hidden: torch.Tensor
    prompt: torch.Tensor
    nodule: torch.Tensor
    tissue: torch.Tensor

    @classmethod
    def build(cls, dataset: FineDataset, components: PipelineComponents, device, dtype):
        strings = ["", *sorted(set(dataset.prompts + dataset.texts_nd + dataset.texts_bg))]
        where = {text: index for index, text in enumerate(strings)}
        ids = tokenize_prompts(components.tokenizer, strings)
        hidden = encode_prompts(components.text_encoder, ids, device=device, dtype=dtype)

        def lookup(texts: list[str]) -> torch.Tensor:
            return torch.tensor([where[text] for text in texts])

        return cls(
            hidden, lookup(dataset.prompts), lookup(dataset.texts_nd), lookup(dataset.texts_bg)
        )

    def embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(UNet prompt, text_nd, text_bg) embeddings; a dropped caption drops all three."""
        device = self.hidden.device
        picked = []
        for table in (self.prompt, self.nodule, self.tissue):
            chosen = torch.where(batch.dropped, 0, table[batch.indices])
            picked.append(self.hidden[chosen.to(device)])
        return picked[0], picked[1], picked[2]


def draw_batch(config: FineConfig, num_items: int, micro_step: int, accelerator) -> Batch:
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
    return Batch(indices, flips, dropped, generator)


def uncached_inputs(config: FineConfig, dataset: FineDataset, vae, batch: Batch, device, dtype):
    """Load, crop, flip and encode now; one crop and one flip shared by image and conditions."""
    crops = (
        None
        if config.center_crop
        else random_crops(dataset.crop_range, batch.indices.tolist(), batch.generator)
    )
    indices = batch.indices.tolist()
    pixels = flip_where(dataset.load_pixels(indices, crops), batch.flips)
    fg, bg = (flip_where(c, batch.flips) for c in dataset.load_conditions(indices, crops))
    with torch.no_grad():
        posterior = vae.encode(pixels.to(device, dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=batch.generator)
        latents = posterior.mean.float() + posterior.std.float() * noise.to(device)
    return latents, fg, bg


def check_resume_compatible(state: dict, config: FineConfig, path: Path) -> None:
    saved = state.get("config", {})
    changed = [k for k in RESUME_INVARIANTS if k in saved and saved[k] != getattr(config, k)]
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise ValueError(f"{path}: cannot resume exactly, options changed ({details})")


def build_optimizer(config: FineConfig, dual: DualControlNetModel, num_processes: int):
    """One AdamW over both branches (and the gate logits, own lr), one lr schedule."""
    learning_rate = config.learning_rate
    if config.scale_lr:
        learning_rate *= config.train_batch_size * config.gradient_accumulation_steps
        learning_rate *= num_processes
    branch_params = list(dual.controlnet_fg.parameters()) + list(dual.controlnet_bg.parameters())
    groups = [{"params": branch_params, "lr": learning_rate}]
    if dual.fusion.is_gated:
        gate_lr = config.gate_learning_rate or learning_rate
        groups.append({"params": list(dual.fusion.parameters()), "lr": gate_lr, "weight_decay": 0})
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
        num_warmup_steps=config.lr_warmup_steps * num_processes,
        num_training_steps=config.max_train_steps * num_processes,
    )
    return optimizer, lr_scheduler


def check_memory(config: FineConfig, accelerator, dual, frozen, downsampling: int) -> None:
    """Say what this run will hold in memory; refuse before training when it cannot fit."""
    trained = sum(p.numel() for p in dual.trainable_parameters())
    fixed = sum(p.numel() for m in frozen for p in m.parameters())
    half = accelerator.mixed_precision in ("fp16", "bf16")
    unet = frozen[0]
    plan = training_plan(
        "fine",
        trained,
        fixed,
        2 if half else 4,
        config.optimizer,
        False,
        config.train_batch_size,
        list(unet.config.block_out_channels),
        config.resolution // downsampling,
        config.gradient_checkpointing,
        2 if half else 4,
        branches_factor=2.0,
        layers_per_block=int(unet.config.layers_per_block),
    )
    check_plan(plan, accelerator.device, config.allow_memory_over, accelerator.num_processes)


def copy_coarse_pipeline(source: Path, target: Path) -> None:
    """Hard-link the coarse pipeline's parts (not its checkpoints or caches) into `target`."""
    if (target / "model_index.json").is_file():
        return
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (*COMPONENT_FOLDERS, "feature_extractor", "safety_checker"):
        if (source / name).is_dir():
            link_or_copy_tree(source / name, staging / name)
    for name in ("tiger_coarse.json", "model_index.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def save_fine_folder(
    dual: DualControlNetModel, output: Path, coarse_source: str, prompt_background: str
) -> None:
    """Branches and fusion via a staging folder; fine_model.json last, so a half-saved folder is
    never loadable."""
    copy_coarse_pipeline(Path(coarse_source), output / COARSE_FOLDER)
    staging = output / ".fine.staging"
    shutil.rmtree(staging, ignore_errors=True)
    dual.save_pretrained(
        staging,
        prompt_background=prompt_background,
        coarse_pipeline=COARSE_FOLDER,
        coarse_source=str(coarse_source),
    )
    (output / MODEL_FILE).unlink(missing_ok=True)
    for name in (FG_FOLDER, BG_FOLDER, FUSION_FOLDER, MODEL_FILE):
        target = output / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)


def validation_items(
    config: FineConfig,
    prompt_background: str,
    meta_file: Path,
    checked: list[MetadataRecord],
    training: FineDataset,
) -> FineDataset | None:
    """Held-out (valid split) items when the splits file has some, else the training items;
    drawn from the records already read and checked for training."""
    if config.num_validation_items <= 0:
        return None
    if config.splits_file:
        try:
            valid = records_in_splits(checked, config.splits_file, ("valid",), False, meta_file)
            return fine_dataset(meta_file, valid, config.resolution, prompt_background)
        except ValueError:
            pass
    return training


def train_fine(config: FineConfig, step_callback: Callable[[int], None] | None = None) -> Path:
    """Run the fine stage; returns the output folder (loadable by TigerFinePipeline)."""
    config.validate()
    output = Path(config.output_dir)
    enforce_offline(output)
    if config.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(config.cpu_threads)
    log_with = None if config.report_to in ("", "none") else config.report_to
    accelerator = build_accelerator(
        output, config.mixed_precision, config.gradient_accumulation_steps, log_with
    )
    configure_tf32(config.allow_tf32)
    device, dtype = accelerator.device, weight_dtype(accelerator)

    components = load_pipeline_components(config.coarse_model_path)
    prompt_background = config.prompt_background or coarse_prompt_background(components.source)
    meta_file, checked = read_dataset(
        config.train_data_dir, config.skip_bad, output / SKIPPED_FILE if config.skip_bad else None
    )
    records, _ = training_records(
        meta_file, checked, config.splits_file, config.all_cases, "fine stage"
    )
    dataset = fine_dataset(meta_file, records, config.resolution, prompt_background)
    unet, vae, text_encoder = components.unet, components.vae, components.text_encoder
    for frozen in (unet, vae, text_encoder):
        frozen.requires_grad_(False)
        frozen.eval()
        frozen.to(device, dtype)

    torch.manual_seed(config.seed)  # the branches' condition encoders start random
    dual = DualControlNetModel.from_unet(unet, vae_downsampling(vae), config.fusion)
    dual.to(device)
    dual.set_trainable()
    dual.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        for branch in dual.branches:
            branch.enable_gradient_checkpointing()
    attention = configure_attention(
        [unet, *dual.branches], config.enable_xformers_memory_efficient_attention
    )
    check_memory(config, accelerator, dual, (unet, vae, text_encoder), vae_downsampling(vae))
    optimizer, lr_scheduler = build_optimizer(config, dual, accelerator.num_processes)
    trained_params = dual.trainable_parameters()
    dual, optimizer, lr_scheduler = accelerator.prepare(dual, optimizer, lr_scheduler)
    training_state = TrainingState(
        {"dual": accelerator.unwrap_model(dual)}, optimizer, lr_scheduler, None, accelerator.scaler
    )

    texts = TextTable.build(dataset, components, device, dtype)
    latent_cache: LatentCache | None = None
    condition_cache: ConditionCache | None = None
    if config.cache_latents and config.center_crop:
        key = fingerprint(
            [str(p) for p in dataset.image_paths],
            config.resolution,
            config.random_flip,
            module_fingerprint(vae),
        )
        name = f"latents-{key}.safetensors"
        coarse_cache = Path(config.coarse_model_path) / "cache" / name
        # The coarse stage cached the same images with the same VAE under the same key: reuse it
        # (one cache, not a second copy under another folder).
        latent_cache = cached_latents(
            coarse_cache if coarse_cache.is_file() else output / "cache" / name,
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
        latent_cache.mean = latent_cache.mean.to(device)
        latent_cache.std = latent_cache.std.to(device)
        condition_cache = ConditionCache.build(dataset)

    global_step = 0
    resume_path = ckpt.resolve_resume(output, config.resume_from_checkpoint)
    if resume_path is not None:
        state = json.loads((resume_path / ckpt.STATE_FILE).read_text("utf-8"))
        check_resume_compatible(state, config, resume_path)
        state = ckpt.load_checkpoint(resume_path, training_state)
        global_step = int(state["global_step"])
        LOGGER.info("resumed from %s at step %d", resume_path, global_step)
    last_checkpoint = resume_path

    valid_data = validation_items(config, prompt_background, meta_file, checked, dataset)
    if accelerator.is_main_process:
        if log_with:
            scalars = {
                k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str))
            }
            accelerator.init_trackers("fine", scalars)
        write_json(
            output / RUN_FILE,
            {
                "config": config.to_dict(),
                "coarse_source": components.source,
                "prompt_background": prompt_background,
                "attention": attention,
                "prediction_type": components.prediction_type,
                "num_processes": accelerator.num_processes,
                "num_train_items": len(dataset),
                "num_unique_texts": int(texts.hidden.shape[0]) - 1,
                "trained_parameters": sum(p.numel() for p in trained_params),
            },
        )
    progress = Progress(accelerator, config.max_train_steps, global_step, "fine")
    noise_scheduler = components.noise_scheduler()
    scaling = vae.config.scaling_factor
    shift = vae.config.get("shift_factor") or 0.0
    accumulation = config.gradient_accumulation_steps

    while global_step < config.max_train_steps:
        loss_sum = 0.0
        for micro in range(accumulation):
            micro_step = global_step * accumulation + micro
            batch = draw_batch(config, len(dataset), micro_step, accelerator)
            with accelerator.accumulate(dual):
                if latent_cache is not None and condition_cache is not None:
                    latents = latent_cache.sample(
                        batch.indices.to(device), batch.flips.to(device), batch.generator
                    )
                    fg_cond, bg_cond = condition_cache.batch(batch.indices, batch.flips)
                else:
                    latents, fg_cond, bg_cond = uncached_inputs(
                        config, dataset, vae, batch, device, dtype
                    )
                latents = ((latents - shift) * scaling).float()
                noise = sample_noise(latents, batch.generator, config.noise_offset)
                timesteps = sample_timesteps(
                    latents.shape[0], noise_scheduler, batch.generator, device
                )
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                unet_text, fg_text, bg_text = texts.embeddings(batch)
                with accelerator.autocast():
                    prediction = predict_noise(
                        unet,
                        dual,
                        noisy.to(dtype),
                        timesteps,
                        unet_text,
                        BranchInputs(fg_text, fg_cond.to(device, dtype)),
                        BranchInputs(bg_text, bg_cond.to(device, dtype)),
                    )
                target = training_target(noise_scheduler, latents, noise, timesteps)
                loss = diffusion_loss(
                    prediction, target, timesteps, noise_scheduler, config.snr_gamma
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
        if valid_data is not None and (
            global_step % config.validation_steps == 0 or global_step == config.max_train_steps
        ):
            run_validation(
                config, accelerator, components, dual, valid_data, prompt_background, progress,
                global_step,
            )  # fmt: skip
        if step_callback is not None:
            step_callback(global_step)

    progress.close()
    if accelerator.is_main_process:
        write_json(output / TIMING_FILE, progress.timing())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(dual).float()
        save_fine_folder(final, output, str(components.source), prompt_background)
    accelerator.end_training()
    return output


@torch.no_grad()
def run_validation(
    config, accelerator, components, dual, valid_data, prompt_background, progress, step
) -> None:
    """Grid of fixed held-out items x seeds; PNG + tensorboard; main process only."""
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(dual)
    model.eval()
    try:
        pipeline = TigerFinePipeline.from_components(components, model, prompt_background)
        count = min(config.num_validation_items, len(valid_data))
        grid = validation_grid(
            pipeline,
            valid_data,
            list(range(count)),
            config.validation_seeds,
            config.validation_inference_steps,
            config.validation_guidance_scale,
        )
    finally:
        model.train()
    save_png(Path(config.output_dir) / "validation" / f"step-{step:06d}.png", grid)
    progress.log_images("validation", np.ascontiguousarray(grid), step)
