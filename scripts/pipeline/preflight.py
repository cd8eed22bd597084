"""What `tiger run` checks after importing and splitting the data, before any training.

Seconds of checks instead of a crash after 40 minutes of training:
- every path resolves: the dataset passes the checks every stage makes (files, sizes, masks,
  words), the pretrained folder (if any) is a complete diffusers folder;
- every lesion mask of the train cases survives resizing to the working resolution of the
  stages that read masks (the fine stage and the sampler's mask bank); a lesion that vanishes
  is an error naming the files, or with `preflight.tiny_lesions: skip` a listed warning (the
  mask bank then leaves it out);
- every task has enough cases per class in train, valid and test for its arms (an AUC needs both
  classes in valid and test);
- with a pretrained folder, the coarse and fine memory plans (generation.training.memory) of the
  resolved stage configs fit the device the run will train on.
The findings go to RUN/preflight.json.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metadata.atomic import write_json
from metadata.labelset import LabelSet
from scripts.pipeline.config import PipelineConfig
from scripts.pipeline.stages import Layout

PREFLIGHT_FILE = "preflight.json"
TINY_LESION_CHOICES = ("error", "skip")


class PreflightError(RuntimeError):
    """The run would fail or mean nothing; the message lists every problem found."""


@dataclass
class PreflightReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"problems": self.problems, "warnings": self.warnings, "checks": self.checks}


def stage_options(config_cls: type, profiles: dict[str, dict], options: dict) -> Any:
    """A stage's config as its CLI would resolve it: dataclass defaults, profile, then flags."""
    values = dict(profiles.get(options.get("profile", ""), {}))
    values.update({k: v for k, v in options.items() if k != "profile"})
    known = set(config_cls.__dataclass_fields__)
    return config_cls(**{k: v for k, v in values.items() if k in known})


def fine_config(config: PipelineConfig):
    from generation.fine.config import PROFILES, FineConfig

    return stage_options(FineConfig, PROFILES, config.fine)


def coarse_config(config: PipelineConfig):
    from generation.coarse.config import PROFILES, CoarseConfig

    return stage_options(CoarseConfig, PROFILES, config.coarse)


def mask_resolutions(config: PipelineConfig) -> dict[str, int]:
    """The sizes at which lesion masks are read: the fine stage's and the sampler's."""
    fine = int(fine_config(config).resolution)
    sampler = config.generation.options.get("resolution")
    return {"fine": fine, "generation": int(sampler) if sampler else fine}


def vanishing_lesions(
    meta_file: Path, records: list, resolutions: dict[str, int]
) -> dict[str, list[int]]:
    """file name -> the working resolutions at which its lesion mask comes out empty."""
    from generation.inference.masks import load_mask
    from metadata.records import resolve

    found: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.attributes.get("lesion_free"):
            continue
        for size in sorted(set(resolutions.values())):
            if not load_mask(resolve(meta_file, record.condition_FG), size).any():
                found[record.file_name].append(size)
    return dict(found)


def case_count_problems(splits: dict, subtypes: list[str], minimum: dict[str, int]) -> list[str]:
    """Per task, class and split: fewer real cases than the arms need."""
    negative = LabelSet.from_splits(splits).negative
    counts: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for entry in splits.get("assignments", {}).values():
        if entry.get("synthetic"):
            continue
        for task in entry.get("tasks", []):
            counts[(task, entry["split"], entry["label"])].add(entry["case_id"])
    problems = []
    for task in subtypes:
        for split, needed in minimum.items():
            for label in (negative, task):
                have = len(counts[(task, split, label)])
                if have < needed:
                    problems.append(
                        f"task {task}: {have} {label} case(s) in {split}, the arms need at "
                        f"least {needed} (more images of that class, or other split fractions)"
                    )
    return problems


def meta_counts(folder: Path) -> dict[str, Any]:
    """Parameter counts of a diffusers SD folder's models, built on the meta device (no
    weights are read, so this takes seconds for any size)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from generation.fine.model import DualControlNetModel
    from generation.models import vae_downsampling

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        dual = DualControlNetModel.from_unet(unet, vae_downsampling(vae), "gate")
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    lora = 0
    for name, module in unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and isinstance(
            module, torch.nn.Linear
        ):
            lora += module.in_features + module.out_features
    return {
        "unet": count(unet),
        "vae": count(vae),
        "text_encoder": count(text),
        "branches": sum(p.numel() for p in dual.trainable_parameters()),
        "lora_per_rank": lora,
        "unet_channels": list(unet.config.block_out_channels),
        "layers_per_block": int(unet.config.layers_per_block),
        "downsampling": vae_downsampling(vae),
    }


def memory_plans(config: PipelineConfig, folder: Path) -> list:
    """The coarse and fine memory plans of the resolved stage configs."""
    from generation.training.memory import training_plan

    counts = meta_counts(folder)
    coarse, fine = coarse_config(config), fine_config(config)
    frozen_base = counts["text_encoder"] + counts["vae"]
    plans = []
    for name, stage in (("coarse", coarse), ("fine", fine)):
        half = stage.mixed_precision in ("fp16", "bf16")
        if name == "coarse":  # LoRA adapters are added to a frozen UNet; full training trains it
            lora = counts["lora_per_rank"] * coarse.lora_rank
            trained = lora if coarse.use_lora else counts["unet"]
            frozen = counts["vae"] + (counts["unet"] if coarse.use_lora else 0)
            if coarse.train_text_encoder:
                trained += counts["text_encoder"]
            else:
                frozen += counts["text_encoder"]
            extra = {"ema_on_device": coarse.use_ema}
        else:
            trained, frozen = counts["branches"], frozen_base + counts["unet"]
            extra = {"ema_on_device": False, "branches_factor": 2.0}
        plans.append(
            training_plan(
                name,
                trained,
                frozen,
                2 if half else 4,
                stage.optimizer,
                batch_size=stage.train_batch_size,
                unet_channels=counts["unet_channels"],
                latent_size=stage.resolution // counts["downsampling"],
                gradient_checkpointing=stage.gradient_checkpointing,
                activation_bytes=2 if half else 4,
                layers_per_block=counts["layers_per_block"],
                **extra,
            )
        )
    return plans


def training_device_capacity() -> tuple[str, float]:
    import torch

    from generation.training.memory import device_capacity

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return str(device), float(device_capacity(device) or 0.0)


def check_memory(config: PipelineConfig, report: PreflightReport) -> None:
    from generation.models import PipelineFolderError, validate_pipeline_folder
    from generation.training.memory import GIB

    if not config.pretrained_model_name_or_path:
        report.checks["memory"] = "tiny models built from config: well under 1 GiB, not planned"
        return
    try:
        folder = validate_pipeline_folder(config.pretrained_model_name_or_path)
    except PipelineFolderError as error:
        report.problems.append(str(error))
        return
    device, capacity = training_device_capacity()
    rows = {}
    for plan in memory_plans(config, folder):
        allowed = (config.coarse if plan.stage == "coarse" else config.fine).get(
            "allow_memory_over", False
        )
        rows[plan.stage] = round(plan.total / GIB, 2)
        if capacity and plan.total > capacity and not allowed:
            report.problems.append(
                f"{plan.stage} stage needs about {plan.total / GIB:.1f} GiB but {device} has "
                f"{capacity / GIB:.1f} GiB:\n{plan.table()}\n(the stage's optimizer, "
                "gradient_checkpointing, train_batch_size, resolution or use_lora lower it)"
            )
    report.checks["memory_plan_gib"] = {**rows, "device": device, "capacity_gib": capacity / GIB}


def run_preflight(
    config: PipelineConfig, layout: Layout, subtypes: list[str], tiny_lesions: str = "error"
) -> PreflightReport:
    """Every check; raises PreflightError listing all problems, else writes preflight.json."""
    from metadata.records import MetadataError
    from metadata.validate import read_dataset

    if tiny_lesions not in TINY_LESION_CHOICES:
        raise PreflightError(f"preflight tiny_lesions must be one of {TINY_LESION_CHOICES}")
    started = time.perf_counter()
    report = PreflightReport()
    checked = {}  # the train-only records, read once, are the ones whose masks are checked
    for dataset in (layout.dataset, layout.train_only):
        try:
            checked[dataset] = read_dataset(dataset)
            report.checks[f"records_{dataset.name}"] = len(checked[dataset][1])
        except MetadataError as error:
            report.problems.append(str(error))
    resolutions = mask_resolutions(config)
    report.checks["mask_resolutions"] = resolutions
    if not report.problems:
        vanished = vanishing_lesions(*checked[layout.train_only], resolutions)
        report.checks["vanishing_lesions"] = vanished
        if vanished:
            listing = ", ".join(
                f"{name} (at {sizes} px)" for name, sizes in sorted(vanished.items())
            )
            message = (
                f"{len(vanished)} lesion mask(s) of the train cases vanish when resized to the "
                f"working resolution: {listing}"
            )
            if tiny_lesions == "error":
                report.problems.append(
                    f"{message}. Raise the resolution, remove those frames, or set "
                    "preflight.tiny_lesions=skip (the mask bank then leaves them out)"
                )
            else:
                report.warnings.append(f"{message}; the mask bank leaves them out")
    splits = json.loads(layout.splits.read_text())
    minimum = {"train": 2, "valid": 1, "test": 1}
    report.checks["minimum_cases"] = minimum
    report.checks["images"] = {
        task: dict(
            Counter(
                f"{entry['split']}/{entry['label']}"
                for entry in splits["assignments"].values()
                if task in entry.get("tasks", [])
            )
        )
        for task in subtypes
    }
    report.problems += case_count_problems(splits, subtypes, minimum)
    check_memory(config, report)
    report.checks["seconds"] = round(time.perf_counter() - started, 2)
    write_json(layout.root / PREFLIGHT_FILE, report.to_json())
    if report.problems:
        raise PreflightError(
            "preflight found problems before any training (details in "
            f"{layout.root / PREFLIGHT_FILE}):\n- " + "\n- ".join(report.problems)
        )
    return report
