"""The pipeline's stages as data: output folder, commands, upstream stages, config that keys it.

Every stage is one or more calls of the stage CLIs the user can also run by hand, so the
pipeline never does anything a stage script cannot; this module only decides paths and flags.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metadata.external_test import EXTERNAL_SEED_OFFSET
from metadata.labelset import LabelSet
from scripts.pipeline.config import DataSection, PipelineConfig

PYTHON = sys.executable
COARSE_ONLY = "coarse_only"  # generate/X/coarse_only, filter/X/coarse_only
CLIP_ONLY = "filtered_clip_only"  # filter/X/filtered_clip_only: the filter with MoSo off


@dataclass
class Stage:
    name: str
    output: Path
    commands: list[list[str]]
    inputs: list[str] = field(default_factory=list)  # upstream stage names
    config: dict[str, Any] = field(default_factory=dict)
    external: list[Path] = field(default_factory=list)  # input folders outside the run
    resumable: bool = True  # False: wipe a half-written output before re-running
    files: dict[str, str] = field(default_factory=dict)  # config files written before running


def flags(options: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """{'max_train_steps': 4, 'conditioning-scale': [1, 1]} -> CLI arguments."""
    out: list[str] = []
    for key, value in options.items():
        if key in skip:
            continue
        out.append(f"--{key}")
        if isinstance(value, bool):
            out.append("true" if value else "false")
        elif value is None:
            out.append("none")
        elif isinstance(value, (list, tuple)):
            out.extend(str(v) for v in value)
        else:
            out.append(str(value))
    return out


def module(name: str, *args: str) -> list[str]:
    return [PYTHON, "-m", name, *args]


class Layout:
    """Where each stage writes inside the run folder."""

    def __init__(self, run_dir: Path):
        self.root = run_dir
        self.dataset = run_dir / "data" / "dataset"
        self.croot = run_dir / "data" / "classifier"
        self.splits = self.croot / "splits.json"
        self.train_only = run_dir / "data" / "train_only"
        self.external_test = run_dir / "data" / "external_test"
        self.coarse = run_dir / "coarse"
        self.fine = run_dir / "fine"
        self.clip = run_dir / "filter" / "clip"
        self.report = run_dir / "report"

    def generated(self, subtype: str) -> Path:
        return self.root / "generate" / subtype

    @property
    def segmenter_cache(self) -> Path:
        """One FG segmenter per run: every generated folder is measured by the same fit."""
        return self.root / "generate" / "segmenter"

    def filtered(self, subtype: str) -> Path:
        return self.root / "filter" / subtype

    def classifier(self, subtype: str) -> Path:
        return self.root / "classifier" / subtype


def phantom_command(
    command: str, out: Path, data: DataSection, n_images: int, seed: int
) -> list[str]:
    """`metadata.cli phantom|external-test` with the data section's phantom settings."""
    build = module("metadata.cli", command, "--out", str(out), "--n-images", str(n_images))
    build += ["--size", str(data.size), "--seed", str(seed)]
    if data.difficulty is not None:
        build += ["--difficulty", str(data.difficulty)]
    if data.prevalence:
        build += ["--prevalence", ",".join(f"{k}={v}" for k, v in data.prevalence.items())]
    return build


def external_test_stage(config: PipelineConfig, layout: Layout) -> Stage | None:
    """The phantom's large independent test set (another seed), or None without one."""
    data = config.data
    if data.source != "phantom" or data.external_test_frames <= 0:
        return None
    seed = data.seed + EXTERNAL_SEED_OFFSET
    frames = data.external_test_frames
    command = phantom_command("external-test", layout.external_test, data, frames, seed)
    return Stage(
        "external_test",
        layout.external_test,
        [command],
        config={"data": data.__dict__},
        resumable=False,
    )


def data_stages(config: PipelineConfig, layout: Layout) -> list[Stage]:
    data = config.data
    if data.source == "phantom":
        build = phantom_command("phantom", layout.dataset, data, data.n_images, data.seed)
        external: list[Path] = []
    elif data.source == "ddti":
        build = module(
            "metadata.cli",
            "ddti",
            "--src",
            data.ddti_root,
            "--out",
            str(layout.dataset),
            "--skip-bad",
        )
        external = [Path(data.ddti_root)]
    else:
        build = module("metadata.cli", "tiger", "--src", data.source, "--out", str(layout.dataset))
        build += ["--skip-bad"]
        external = [Path(data.source)]
    split = config.split
    return [
        Stage(
            "data",
            layout.dataset,
            [build],
            # The independent test set is its own stage: asking for one keeps the dataset.
            config={
                "data": {k: v for k, v in data.__dict__.items() if k != "external_test_frames"}
            },
            external=external,
            resumable=False,
        ),
        Stage(
            "split",
            layout.croot,
            [
                module(
                    "metadata.cli",
                    "export-classifier",
                    str(layout.dataset),
                    "--out",
                    str(layout.croot),
                    "--seed",
                    str(split.seed),
                    "--valid-fraction",
                    str(split.valid_fraction),
                    "--test-fraction",
                    str(split.test_fraction),
                )
            ],
            inputs=["data"],
            config={"split": split.__dict__},
            resumable=False,
        ),
        Stage(
            "train_only",
            layout.train_only,
            [
                module(
                    "metadata.cli",
                    "subset",
                    str(layout.dataset),
                    "--splits",
                    str(layout.splits),
                    "--out",
                    str(layout.train_only),
                )
            ],
            inputs=["data", "split"],
            resumable=False,
        ),
    ]


def thread_option(config: PipelineConfig, options: dict, key: str) -> dict:
    if config.cpu_threads and key not in options:
        return {**options, key: config.cpu_threads}
    return options


def training_module(config: PipelineConfig, name: str, *args: str) -> list[str]:
    """`accelerate launch ... -m NAME` when a launcher is configured, else `python -m NAME`."""
    if config.launcher:
        return [*config.launcher, "-m", name, *args]
    return module(name, *args)


def diffusion_stages(config: PipelineConfig, layout: Layout) -> list[Stage]:
    coarse = thread_option(config, dict(config.coarse), "cpu_threads")
    if config.pretrained_model_name_or_path:
        coarse["pretrained_model_name_or_path"] = config.pretrained_model_name_or_path
    coarse_cmd = training_module(
        config,
        "generation.coarse.cli",
        "--train_data_dir",
        str(layout.train_only),
        "--output_dir",
        str(layout.coarse),
        "--resume_from_checkpoint",
        "latest",
        *flags(coarse),
    )
    fine = thread_option(config, dict(config.fine), "cpu_threads")
    fine_cmd = training_module(
        config,
        "generation.fine.cli",
        "--train_data_dir",
        str(layout.train_only),
        "--coarse_model_path",
        str(layout.coarse),
        "--output_dir",
        str(layout.fine),
        "--resume_from_checkpoint",
        "latest",
        *flags(fine),
    )
    return [
        Stage("coarse", layout.coarse, [coarse_cmd], ["train_only"], {"coarse": coarse}),
        Stage("fine", layout.fine, [fine_cmd], ["train_only", "coarse"], {"fine": fine}),
    ]


def negative_label(splits: dict) -> str:
    """The 0 class of every task, from the label set splits.json records (thyroid: benign)."""
    return LabelSet.from_splits(splits).negative


def augment_labels(splits: dict, subtypes: list[str], augment: str) -> dict[str, str]:
    """The class generated for each task: the paper adds the rare subtype, but where the
    negative class is the task's smaller train class (DDTI: 63 benign vs 219 malignant),
    "minority" adds the negative class ("benign" names it, whatever the label set calls it)."""
    negative = negative_label(splits)
    if augment != "minority":
        return {subtype: subtype if augment == "subtype" else negative for subtype in subtypes}
    train = Counter(
        row["label"]
        for row in splits.get("assignments", {}).values()
        if row.get("split") == "train" and not row.get("synthetic")
    )
    return {s: negative if train[negative] < train[s] else s for s in subtypes}


def other_class(subtype: str, label: str, negative: str) -> str:
    """The task's class that is not generated (the rare subtype generated: the negative)."""
    return subtype if label == negative else negative


def other_key(label: str) -> str:
    """Folder and stage suffix of one other-class pool (shared by every task with that class)."""
    return f"other-{label}"


def generation_stage(
    config: PipelineConfig, layout: Layout, subtype: str, label: str | None = None
) -> Stage:
    """Images of `label` (default: the subtype) for the `subtype` task, both modes + checks."""
    label = label or subtype
    gen = config.generation
    options = thread_option(config, dict(gen.options), "cpu-threads")
    control = thread_option(config, dict(gen.control), "cpu-threads")
    out = layout.generated(subtype)
    commands = []
    modes = (("diversify", gen.diversify), ("reference", gen.reference))
    runs = [*modes, (COARSE_ONLY, gen.coarse_only)]
    for mode, count in runs:
        if count == 0:
            continue
        target = out / mode
        # The coarse model alone: diversify prompts with both branches' conditioning scales 0.
        extra = ["--conditioning-scale", "0", "0"] if mode == COARSE_ONLY else []
        commands.append(
            module(
                "generation.inference.cli",
                "diversify" if mode == COARSE_ONLY else mode,
                "--model",
                str(layout.fine),
                "--dataset",
                str(layout.dataset),
                "--splits",
                str(layout.splits),
                "--label",
                label,
                "--out",
                str(target),
                "--num-images",
                str(count),
                "--seed",
                str(gen.seed),
                *flags(options),
                *extra,
            )
        )
        for check in ("evaluate", "control"):  # attributes + memorization; FG IoU + background
            commands.append(
                module(
                    "generation.inference.cli",
                    check,
                    "--gen",
                    str(target),
                    "--dataset",
                    str(layout.dataset),
                    "--splits",
                    str(layout.splits),
                    *(
                        [*flags(control), "--segmenter-cache", str(layout.segmenter_cache)]
                        if check == "control"
                        else []
                    ),
                )
            )
    parts = [str(out / mode) for mode, count in modes if count]  # coarse_only stays apart
    commands.append(module("scripts.pipeline.manifests", "--out", str(out), *parts))
    return Stage(
        f"generate-{subtype}",
        out,
        commands,
        ["data", "split", "fine"],
        # other_class decides which pools exist, not what one pool holds
        {
            "generation": {k: v for k, v in gen.__dict__.items() if k != "other_class"},
            "options": options,
            "subtype": subtype,
            "label": label,
        },
    )


def clip_stage(config: PipelineConfig, layout: Layout) -> Stage:
    command = module(
        "generation.filtering.cli",
        "train-clip",
        "--dataset",
        str(layout.train_only),
        "--out",
        str(layout.clip),
        *flags(config.clip),
    )
    return Stage("clip", layout.clip, [command], ["train_only"], {"clip": config.clip})


def filtering_commands(
    config: PipelineConfig, layout: Layout, gen: Path, out: Path
) -> list[list[str]]:
    """CLIP score, MoSo, the filter, and the same filter with MoSo off (filter_clip_only)."""

    def keep(target: str, options: dict) -> list[str]:
        return module(
            "generation.filtering.cli",
            "filter",
            "--manifest",
            str(gen),
            "--out",
            str(out / target),
            "--clip-scores",
            str(out / "clip" / "clip_scores.jsonl"),
            "--moso-scores",
            str(out / "moso" / "moso_scores.jsonl"),
            "--reference-dataset",
            str(layout.train_only),
            *flags(options),
        )

    return [
        module(
            "generation.filtering.cli",
            "clip-score",
            "--model",
            str(layout.clip / "model"),
            "--manifest",
            str(gen),
            "--out",
            str(out / "clip"),
        ),
        module(
            "generation.filtering.cli",
            "moso",
            "--dataset",
            str(layout.train_only),
            "--manifest",
            str(gen),
            "--out",
            str(out / "moso"),
            *flags(config.moso),
        ),
        keep("filtered", config.filter),
        keep(CLIP_ONLY, {**config.filter, "moso-prune-ratio": 0.0}),
    ]


def filter_stage(config: PipelineConfig, layout: Layout, subtype: str) -> Stage:
    gen, out = layout.generated(subtype), layout.filtered(subtype)
    commands = filtering_commands(config, layout, gen, out)
    if config.generation.coarse_only:
        commands += filtering_commands(config, layout, gen / COARSE_ONLY, out / COARSE_ONLY)
    commands += [
        module(
            "generation.filtering.cli",
            "quality",
            "--model",
            str(layout.clip / "model"),
            "--manifest",
            str(gen),
            "--dataset",
            str(layout.dataset),
            "--splits",
            str(layout.splits),
            "--filtered",
            str(out / "filtered"),
            "--out",
            str(out / "quality"),
            *(
                ["--extra-set", f"{COARSE_ONLY}={gen / COARSE_ONLY}"]
                if config.generation.coarse_only
                else []
            ),
            *(
                ["--inception-weights", str(config.inception_weights)]
                if config.inception_weights
                else []
            ),
        ),
    ]
    return Stage(
        f"filter-{subtype}",
        out,
        commands,
        ["data", "split", "train_only", f"generate-{subtype}", "clip"],
        {"moso": config.moso, "filter": config.filter},
    )


def classifier_stage(
    config: PipelineConfig,
    layout: Layout,
    subtype: str,
    label: str | None = None,
    negative: str = "benign",
) -> Stage:
    """The five arms; synthetic and duplicated images go to the generated class (0 = the
    label set's negative class)."""
    out = layout.classifier(subtype)
    experiment: dict[str, Any] = json.loads(json.dumps(config.classifier))
    experiment.setdefault("data", {}).update({"croot": str(layout.croot), "subtype": subtype})
    label = label or subtype
    pools = [subtype]  # generated-image folders whose images join this task's train/
    inputs = ["split", f"generate-{subtype}", f"filter-{subtype}"]
    classes = [0 if label == negative else 1]
    if config.generation.other_class:
        other = other_key(other_class(subtype, label, negative))
        pools.append(other)
        inputs += [f"generate-{other}", f"filter-{other}"]
        classes = [0, 1]
        experiment.setdefault("train", {})["synthetic_share"] = "matched"

    def manifests(folder: Callable[[str], Path]) -> str | list[str]:
        paths = [str(folder(pool) / "manifest.jsonl") for pool in pools]
        return paths if len(paths) > 1 else paths[0]  # one pool: the config as before

    experiment.setdefault("mix", {}).update(
        {
            "classes": classes,
            "unfiltered_manifest": manifests(layout.generated),
            "filtered_manifest": manifests(lambda p: layout.filtered(p) / "filtered"),
            "clip_only_manifest": manifests(lambda p: layout.filtered(p) / CLIP_ONLY),
        }
    )
    if config.generation.coarse_only:
        experiment["mix"]["coarse_only_manifest"] = manifests(
            lambda p: layout.filtered(p) / COARSE_ONLY / "filtered"
        )
    if external_test_stage(config, layout):
        experiment["data"]["external_croot"] = str(layout.external_test)
        inputs.append("external_test")
    experiment["run_dir"] = str(out.parent)
    config_file = out.parent / f"{subtype}.experiment.json"
    threads = ["--cpu-threads", str(config.cpu_threads)] if config.cpu_threads else []
    command = module("classifier.cli", *threads, "experiment", "--config", str(config_file))
    return Stage(
        f"classifier-{subtype}",
        out,
        [command],
        inputs,
        {"experiment": experiment},
        files={str(config_file): json.dumps(experiment, indent=2)},
    )


def all_stages(
    config: PipelineConfig,
    layout: Layout,
    subtypes: list[str],
    labels: dict[str, str] | None = None,
    negative: str = "benign",
) -> list[Stage]:
    labels = labels or {}
    stages = data_stages(config, layout) + diffusion_stages(config, layout)
    stages += [generation_stage(config, layout, s, labels.get(s)) for s in subtypes]
    others: list[str] = []  # one pool per other class, shared by its tasks (first-seen order)
    if config.generation.other_class:
        others = list(dict.fromkeys(other_class(s, labels.get(s) or s, negative) for s in subtypes))
        stages += [generation_stage(config, layout, other_key(o), o) for o in others]
    stages.append(clip_stage(config, layout))
    stages += [filter_stage(config, layout, s) for s in subtypes]
    stages += [filter_stage(config, layout, other_key(o)) for o in others]
    external = external_test_stage(config, layout)
    stages += [external] if external else []
    stages += [classifier_stage(config, layout, s, labels.get(s), negative) for s in subtypes]
    return stages
