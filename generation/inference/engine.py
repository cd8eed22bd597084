"""The batched generation engine: jobs in, PNGs with provenance and manifest.jsonl out.

Resume is by construction: a job is done when its PNG exists with its provenance chunk (PNGs are
written atomically right after each batch), so a crash loses at most the batch in flight and a
re-run of the same command makes exactly the missing images. `GEN/generation.json` records what
decides the images (model hash, sampler, prompts' options ...); a re-run that differs is refused
instead of silently mixing two runs in one folder. Under `accelerate launch` every process plans
the same jobs, all processes list the unfinished ones before any writes, and process k takes
every k-th of them, so no image is made twice and no two processes write the same file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.coarse.prompts import combine_prompt
from generation.fine.conditions import condition_array, open_rgb
from generation.inference.masks import MaskBank, mask_image
from generation.inference.plan import Job
from generation.inference.provenance import model_hash, read_provenance, save_with_provenance
from generation.training.precision import configure_attention, configure_tf32
from metadata.atomic import save_png, write_json, write_jsonl

LOGGER = logging.getLogger(__name__)
IMAGES_DIR = "images"
CONDITIONS_DIR = "conditions"
MANIFEST_FILE = "manifest.jsonl"
RUN_FILE = "generation.json"
SAMPLERS = ("dpm++", "ddim", "euler", "euler_a", "unipc", "pndm", "ddpm")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ATTENTION = ("sdpa", "xformers")


class GenerationError(ValueError):
    """A generation run that cannot proceed; names the folder or option at fault."""


# Diversify mode's default for SamplingConfig.background_outside_nodule: on. Paired on the quick
# run's 32 diversify jobs per subtype (benchmarks/guidance_levers.py, lever bg_outside_nodule):
# MTC echogenicity 0.09 -> 0.28 (+0.19 [+0.06, +0.34], 6 gained / 0 lost, p = 0.03), FTC margins
# +0.12 [+0.03, +0.25] (4 / 0), no attribute of either subtype significantly worse. Reference
# mode (img2img from the real frame) was not measured and keeps both branches everywhere.
DIVERSIFY_BACKGROUND_OUTSIDE_NODULE = True


@dataclass
class SamplingConfig:
    """What decides the pixels (besides the jobs): part of the run's identity."""

    scheduler: str = "dpm++"
    num_inference_steps: int = 25
    guidance_scale: float = 4.0
    conditioning_scale: tuple[float, float] = (1.0, 1.0)
    strength: float = 0.6
    negative_prompt: str = ""
    resolution: int | None = None
    eta: float = 0.0
    # Guide against each job's own prompt with its findings flipped (Job.negative_text_nd)
    # instead of against the empty prompt.
    attribute_contrast: bool = False
    # The BG branch acts outside the FG mask only: its map has the nodule filled in with the
    # tissue around it, and inside the nodule it pulls the generated nodule to the tissue's
    # brightness. Off here; the diversify CLI's default is DIVERSIFY_BACKGROUND_OUTSIDE_NODULE.
    background_outside_nodule: bool = False

    def validate(self) -> SamplingConfig:
        if self.scheduler not in SAMPLERS:
            raise GenerationError(f"--scheduler {self.scheduler!r} must be one of {SAMPLERS}")
        if self.num_inference_steps < 1:
            raise GenerationError("--steps must be >= 1")
        if self.guidance_scale < 0:
            raise GenerationError("--guidance-scale must be >= 0")
        if not 0.0 < self.strength <= 1.0:
            raise GenerationError(f"--strength must be in (0, 1], got {self.strength}")
        self.conditioning_scale = tuple(float(v) for v in self.conditioning_scale)
        if len(self.conditioning_scale) != 2:
            raise GenerationError("--conditioning-scale takes two numbers (fg, bg)")
        if self.attribute_contrast and self.negative_prompt:
            raise GenerationError("--attribute-contrast replaces --negative-prompt: give one")
        return self


@dataclass
class RuntimeConfig:
    """How fast, not what: batch size, precision, attention backend, device."""

    batch_size: int = 8
    precision: str = "auto"
    attention: str = "sdpa"
    allow_tf32: bool = True
    cpu_threads: int | None = None
    device: str | None = None

    def validate(self) -> RuntimeConfig:
        if self.batch_size < 1:
            raise GenerationError("--batch-size must be >= 1")
        if self.precision not in PRECISIONS:
            raise GenerationError(f"--precision {self.precision!r} must be one of {PRECISIONS}")
        if self.attention not in ATTENTION:
            raise GenerationError(f"--attention {self.attention!r} must be one of {ATTENTION}")
        return self


@dataclass
class RunIdentity:
    """Stored as GEN/generation.json; a re-run into GEN must match it (except num_images)."""

    model: str
    model_hash: str
    mode: str
    label: str
    seed: int
    sampling: dict
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def torch_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 (or fp16 where bf16 is unsupported) on CUDA for "auto"; float32 on CPU."""
    if device.type != "cuda":
        if precision in ("fp16", "bf16"):
            LOGGER.warning("%s asked without CUDA: generating in float32", precision)
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def model_folders(model: Path) -> list[Path]:
    """The fine folder, plus its coarse folder when that lives outside it."""
    from generation.fine.model import read_model_info
    from generation.fine.pipeline import coarse_folder

    coarse = coarse_folder(model, read_model_info(model)).resolve()
    return [model] if coarse.is_relative_to(model.resolve()) else [model, coarse]


def load_generator(model: str | os.PathLike, sampling: SamplingConfig, runtime: RuntimeConfig):
    """TigerFinePipeline from the fine folder, on this process's device, in the asked dtype."""
    from accelerate import PartialState

    from generation.fine.pipeline import TigerFinePipeline

    state = PartialState()
    device = torch.device(runtime.device) if runtime.device else state.device
    dtype = torch_dtype(runtime.precision, device)
    if device.type == "cpu" and runtime.cpu_threads:
        torch.set_num_threads(runtime.cpu_threads)
    configure_tf32(runtime.allow_tf32)
    pipe = TigerFinePipeline.from_pretrained(model, torch_dtype=dtype, local_files_only=True)
    pipe.use_scheduler(sampling.scheduler)
    pipe.to(device)
    if dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        pipe.vae.to(torch.float32)  # SD's VAE overflows in fp16; decode in float32
    configure_attention([pipe.unet, pipe.controlnet.controlnet_fg, pipe.controlnet.controlnet_bg],
                        runtime.attention == "xformers")  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_identity(out_dir: Path, identity: RunIdentity) -> None:
    """Refuse to resume into a folder made by a different command."""
    run_file = out_dir / RUN_FILE
    if not run_file.is_file():
        return
    try:
        previous = json.loads(run_file.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise GenerationError(f"{run_file}: unreadable ({error})") from None
    current = identity.to_dict()
    differing = sorted(k for k in current if previous.get(k) != current[k] and k != "model")
    if differing:
        raise GenerationError(
            f"{out_dir} holds images from a different run (differs in: {', '.join(differing)}); "
            "use a new --out folder or the same options to resume"
        )


def image_path(out_dir: Path, job: Job) -> Path:
    return out_dir / IMAGES_DIR / f"{job.id}.png"


def is_finished(out_dir: Path, job: Job) -> bool:
    row = read_provenance(image_path(out_dir, job))
    return bool(row and row.get("id") == job.id)


def reference_image(path: str, resolution: int) -> Image.Image:
    """The reference resized and centre-cropped exactly like its conditions."""
    array = condition_array(open_rgb(path), resolution)
    return Image.fromarray((array.transpose(1, 2, 0) * 255).round().astype(np.uint8))


def relative_or_absolute(path: Path, out_dir: Path) -> str:
    resolved = path.resolve()
    root = out_dir.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


class GenerationEngine:
    """Runs jobs through a TigerFinePipeline in batches and writes the synthetic folder."""

    def __init__(
        self,
        pipe,
        out_dir: str | os.PathLike,
        identity: RunIdentity,
        sampling: SamplingConfig,
        runtime: RuntimeConfig,
        mask_bank: MaskBank | None = None,
    ):
        self.pipe = pipe
        self.out_dir = Path(out_dir)
        self.identity = identity
        self.sampling = sampling.validate()
        self.runtime = runtime.validate()
        self.mask_bank = mask_bank
        self.resolution = sampling.resolution or pipe.default_resolution()

    # Conditions ------------------------------------------------------------------------

    def foreground(self, job: Job) -> tuple[Path, dict]:
        """The job's FG condition file (a bank mask is drawn and saved first) and its origin."""
        if job.condition_FG is not None:
            return Path(job.condition_FG), {"kind": "reference"}
        if self.mask_bank is None or job.mask_seed is None:
            raise GenerationError(f"job {job.id} needs a mask bank")
        target = self.out_dir / CONDITIONS_DIR / f"{job.id}_FG.png"
        draw = self.mask_bank.draw(job.mask_request or {}, job.mask_seed, job.mask_anchor)
        save_png(target, mask_image(draw.mask))
        if draw.case_id and draw.case_id not in job.source_cases:
            job.source_cases = sorted({*job.source_cases, draw.case_id})
        return target, draw.origin

    def row(self, job: Job, prompt: str, fg: Path, fg_origin: dict) -> dict:
        """The manifest row (ARCHITECTURE.md "Synthetic manifest") of one job."""
        sampling = self.sampling
        return {
            "id": job.id,
            "file_name": f"{IMAGES_DIR}/{job.id}.png",
            "label": job.label,
            "mode": job.mode,
            "prompt": prompt,
            "negative_prompt": sampling.negative_prompt,
            "negative_text_nd": job.negative_text_nd if sampling.attribute_contrast else None,
            "text_nd": job.text_nd,
            "text_bg": job.text_bg,
            "attributes": job.attributes,
            "seed": job.seed,
            "scheduler": sampling.scheduler,
            "steps": sampling.num_inference_steps,
            "guidance_scale": sampling.guidance_scale,
            "conditioning_scales": list(sampling.conditioning_scale),
            "background_outside_nodule": sampling.background_outside_nodule,
            "strength": sampling.strength if job.reference else None,
            "resolution": self.resolution,
            "condition_FG": relative_or_absolute(fg, self.out_dir),
            "condition_FG_origin": fg_origin,
            "condition_BG": job.condition_BG,
            "reference": job.reference,
            "case_id": job.case_id,
            "source_cases": job.source_cases,
            "model": self.identity.model,
            "model_hash": self.identity.model_hash,
            "synthetic": True,
        }

    # Running ---------------------------------------------------------------------------

    def pending(self, jobs: list[Job]) -> list[Job]:
        return [job for job in jobs if not is_finished(self.out_dir, job)]

    def contrast_texts(self, batch: list[Job]) -> list[str] | None:
        if not self.sampling.attribute_contrast:
            return None
        missing = [job.id for job in batch if job.negative_text_nd is None]
        if missing:
            raise GenerationError(f"jobs {', '.join(missing)} have no contrast text")
        return [job.negative_text_nd for job in batch]

    def generate_batch(self, batch: list[Job]) -> None:
        sampling = self.sampling
        mode = self.pipe.config.prompt_background
        conditions = [self.foreground(job) for job in batch]
        prompts = [combine_prompt(job.text_nd, job.text_bg, mode) for job in batch]
        references = [job.reference for job in batch]
        if any(references) and not all(references):
            raise GenerationError("a batch mixes reference and text-only jobs")
        images = None
        if all(references):
            images = [reference_image(path, self.resolution) for path in references]
        output = self.pipe(
            text_nd=[job.text_nd for job in batch],
            text_bg=[job.text_bg for job in batch],
            condition_FG=[str(path) for path, _ in conditions],
            condition_BG=[job.condition_BG for job in batch],
            prompt=prompts,
            negative_prompt=sampling.negative_prompt or None,
            negative_text_nd=self.contrast_texts(batch),
            image=images,
            strength=sampling.strength,
            num_inference_steps=sampling.num_inference_steps,
            guidance_scale=sampling.guidance_scale,
            conditioning_scale=tuple(sampling.conditioning_scale),
            background_outside_nodule=sampling.background_outside_nodule,
            generator=[torch.Generator("cpu").manual_seed(job.seed) for job in batch],
            resolution=self.resolution,
            eta=sampling.eta,
            output_type="pil",
        )
        for job, picture, prompt, (fg, origin) in zip(
            batch, output.images, prompts, conditions, strict=True
        ):
            grey = picture.convert("L").convert("RGB")  # ultrasound frames are grayscale
            row = self.row(job, prompt, fg, origin)
            save_with_provenance(image_path(self.out_dir, job), grey, row)

    def run(
        self, jobs: list[Job], on_batch: Callable[[int, int], None] | None = None
    ) -> dict[str, int]:
        """Make every unfinished job (this process's share) and rebuild manifest.jsonl."""
        from accelerate import PartialState

        state = PartialState()
        if len({job.id for job in jobs}) != len(jobs):
            raise GenerationError("duplicate job ids in the plan")
        if state.is_main_process:
            check_identity(self.out_dir, self.identity)
            write_json(self.out_dir / RUN_FILE, self.identity.to_dict())
        state.wait_for_everyone()
        todo = self.pending(jobs)
        state.wait_for_everyone()  # everyone has listed the unfinished jobs before any write
        mine = process_share(todo, state.process_index, state.num_processes)
        started = time.perf_counter()
        size = self.runtime.batch_size
        done = 0
        for start in range(0, len(mine), size):
            batch = mine[start : start + size]
            self.generate_batch(batch)
            done += len(batch)
            elapsed = time.perf_counter() - started
            LOGGER.info(
                "process %d: %d/%d images (%.2f img/s)",
                state.process_index, done, len(mine), done / max(elapsed, 1e-9),
            )  # fmt: skip
            if on_batch is not None:
                on_batch(done, len(mine))
        state.wait_for_everyone()
        written = write_manifest(self.out_dir, jobs) if state.is_main_process else 0
        return {"planned": len(jobs), "skipped": len(jobs) - len(todo), "generated": done,
                "manifest_rows": written}  # fmt: skip


def process_share(jobs: list[Job], process_index: int, num_processes: int) -> list[Job]:
    """Process k of n takes jobs k, k+n, ...: disjoint shares that cover every job."""
    if not 0 <= process_index < num_processes:
        raise GenerationError(f"process {process_index} outside 0..{num_processes - 1}")
    return jobs[process_index::num_processes]


def write_manifest(out_dir: Path, jobs: list[Job]) -> int:
    """GEN/manifest.jsonl from the PNGs' provenance, in plan order (atomic)."""
    rows = []
    for job in jobs:
        row = read_provenance(image_path(out_dir, job))
        if row and row.get("id") == job.id:
            rows.append(row)
    write_jsonl(out_dir / MANIFEST_FILE, rows)
    return len(rows)


def sampling_identity(sampling: SamplingConfig) -> dict:
    """The sampler's part of a run's identity; an option left at its off value is left out, so
    folders made before it existed still resume."""
    identity = asdict(sampling) | {"conditioning_scale": list(sampling.conditioning_scale)}
    for option in ("attribute_contrast", "background_outside_nodule"):
        if not identity[option]:
            identity.pop(option)
    return identity


def identity_for(
    model: str | os.PathLike, out_dir: Path, mode: str, label: str, seed: int,
    sampling: SamplingConfig, options: dict,
) -> RunIdentity:  # fmt: skip
    """Hash the model folder (cached in GEN) and assemble the run's identity."""
    from generation.fine.model import validate_fine_folder

    try:
        folder = validate_fine_folder(model)
    except ValueError as error:  # FineModelError names the folder and every gap
        raise GenerationError(str(error)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = model_hash(model_folders(folder), cache_dir=out_dir)
    return RunIdentity(
        model=str(folder.resolve()),
        model_hash=digest,
        mode=mode,
        label=label,
        seed=seed,
        sampling=sampling_identity(sampling),
        options=options,
    )
