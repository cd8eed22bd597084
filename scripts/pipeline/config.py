"""The one config that drives the whole pipeline, and its built-in profiles.

Each stage section is a dict of that stage's own CLI options (spelled as the stage's CLI spells
them, without the leading dashes), so anything a stage can do, the pipeline config can ask for;
the runner adds the paths. `classifier` is an `ExperimentConfig` dict (classifier/config.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from classifier.config import ALL_ARMS

DATA_SOURCES = ("phantom", "ddti")
# What `tiger run` runs without --profile (the profiles are at the end of this module).
DEFAULT_PROFILE = "quick"
DEFAULT_DDTI = "../shared/data/ddti"


class PipelineConfigError(ValueError):
    """A bad pipeline config; names the file (when there is one) and the option."""


@dataclass
class DataSection:
    """Where the real images come from: the phantom, DDTI, or a folder of ours / Tiger's."""

    source: str = "phantom"  # phantom | ddti | a path (Tiger dataset or Tiger-style folder)
    ddti_root: str = DEFAULT_DDTI
    n_images: int = 1000  # the calibrated phantom default (benchmarks/phantom_calibration.py)
    size: int = 128
    seed: int = 0
    difficulty: float | None = None  # None: the phantom's calibrated default
    prevalence: dict[str, float] | None = None  # None: the phantom's default (FTC, MTC rare)
    # Phantom only: frames of an independent phantom (seed + 10000) that every arm is also
    # scored on (metadata/external_test.py); 0: none.
    external_test_frames: int = 0


@dataclass
class SplitSection:
    """Case-level split shared by the classifier and (train part only) the generators."""

    valid_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0


AUGMENT_CHOICES = ("minority", "subtype", "benign")


@dataclass
class GenerationSection:
    """Synthetic images per rare subtype and mode, and the sampler's options."""

    diversify: int = 32
    reference: int = 32
    # Images per subtype from the coarse model alone (diversify prompts, FG/BG conditioning
    # scales 0), filtered the same way: the `coarse_only` arm's pool. 0: not made.
    coarse_only: int = 0
    seed: int = 0
    # Which class of each task is generated and added to train/: "minority" (the task's smaller
    # class in train: the rare subtype on the phantom, benign on DDTI), "subtype" (always the
    # task's positive class, the paper's setting) or "benign".
    augment: str = "minority"
    # Also generate (and filter) the same images of each task's other class, and let the
    # classifier draw generated images equally often in both classes (train.synthetic_share
    # "matched"): a ResNet tells generated from real frames apart (out-of-fold AUC 0.994,
    # benchmarks/synthetic_shortcut.py), so generated images in the rare class only teach
    # "looks generated, so positive" (benchmarks/synthetic_share.py).
    other_class: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # generation CLI flags (both modes)
    control: dict[str, Any] = field(default_factory=dict)  # `inference.cli control` flags


@dataclass
class PreflightSection:
    """What the checks before training do with a lesion that vanishes at the working size."""

    tiny_lesions: str = "error"  # error: stop, naming the files | skip: the mask bank skips them


@dataclass
class PipelineConfig:
    profile: str = DEFAULT_PROFILE
    run_dir: str = "runs/tiger"
    subtypes: list[str] = field(default_factory=list)  # empty: every task in splits.json
    cpu_threads: int = 0  # 0: torch's default; stages get it as their thread count
    pretrained_model_name_or_path: str | None = None  # a local SD folder (GPU profile)
    # A local InceptionV3 FID weights file: the quality check adds FID/KID in Inception space.
    inception_weights: str | None = None
    # Launcher of the two training stages, e.g. ["accelerate", "launch", "--num_processes", "4"]
    # for several GPUs; empty: plain `python -m`.
    launcher: list[str] = field(default_factory=list)
    data: DataSection = field(default_factory=DataSection)
    split: SplitSection = field(default_factory=SplitSection)
    coarse: dict[str, Any] = field(default_factory=dict)
    fine: dict[str, Any] = field(default_factory=dict)
    generation: GenerationSection = field(default_factory=GenerationSection)
    preflight: PreflightSection = field(default_factory=PreflightSection)
    clip: dict[str, Any] = field(default_factory=dict)
    moso: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)
    classifier: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {
    "data": DataSection,
    "split": SplitSection,
    "generation": GenerationSection,
    "preflight": PreflightSection,
}

# The CPU profiles' classifier recipe, early-stopped on validation AUC (the long profile lifts
# the cap: in the quick 3-seed run 5 of 27 MTC trainings peaked at epoch 10-12 of 12).
CPU_CLASSIFIER_TRAIN: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 32,
    "lr": 1e-3,
    "patience": 4,
    # From-scratch resnet18 and ~11 validation positives: an epoch-1 model (19 steps) won the
    # selection in 7 of the long run's 27 FTC trainings and scored near chance (README).
    "min_epochs": 3,
    "imbalance": "weighted_sampler",
    "progress": False,
}

# The tiny default on the phantom, CPU only. Stage-internal profiles (coarse/fine `profile`) are
# those stages' own CPU profiles; everything else here is explicit.
PROFILES: dict[str, dict] = {
    "toy": {
        "data": {
            "n_images": 60,
            "size": 64,
            "prevalence": {"benign": 0.5, "PTC": 0.1, "FTC": 0.3, "MTC": 0.1},
            "external_test_frames": 40,
        },
        "subtypes": ["FTC"],
        "cpu_threads": 1,
        "coarse": {
            "resolution": 64,
            "max_train_steps": 6,
            "train_batch_size": 4,
            "autoencoder_steps": 6,
            "autoencoder_crop_size": 32,
            "autoencoder_batch_size": 4,
            "checkpointing_steps": 3,
            "validation_steps": 6,
            "validation_seeds": [0],
            "validation_inference_steps": 2,
            "report_to": "none",
        },
        "fine": {
            "resolution": 64,
            "max_train_steps": 4,
            "train_batch_size": 4,
            "checkpointing_steps": 2,
            "validation_steps": 4,
            "validation_inference_steps": 2,
            "num_validation_items": 2,
        },
        "generation": {
            "diversify": 4,
            "reference": 4,
            "options": {"steps": 3, "batch-size": 4, "resolution": 64},
            "control": {"epochs": 2, "image-size": 32},
        },
        "clip": {"epochs": 1, "image-size": 32, "batch-size": 16},
        "moso": {"epochs": 2, "image-size": 32, "sampled-checkpoints": 2},
        "filter": {"clip-quantile": 0.25, "moso-prune-ratio": 0.25},
        "classifier": {
            "data": {"image_size": 32},
            "model": {"arch": "resnet18"},
            "train": {"epochs": 1, "batch_size": 16, "progress": False},
            "eval": {"n_bootstrap": 200},
            "seeds": [0],
        },
    },
    "quick": {
        "cpu_threads": 2,
        # ~100 FTC and ~100 MTC positives beside ~1500 benign frames (the split's test set: 9-12).
        "data": {"external_test_frames": 2000},
        # The rare subtypes; `--data ddti` or a folder resets this to every task it has.
        "subtypes": ["FTC", "MTC"],
        "coarse": {"profile": "quick"},
        # The coarse quick profile trains at 64 px (the 128 px phantom is resized); the fine
        # branches and the sampler follow it: ~30-40 min on 2 cores with all nine arms (README,
        # "The default run").
        "fine": {"profile": "quick", "cpu_threads": 2, "resolution": 64},
        "generation": {
            "diversify": 32,
            "reference": 32,
            "coarse_only": 32,
            "options": {"steps": 20, "resolution": 64},
        },
        "clip": {"epochs": 10},
        "moso": {"epochs": 6},
        "filter": {"clip-quantile": 0.2, "moso-prune-ratio": 0.2},
        # The calibrated phantom setting (benchmarks/phantom_calibration.py, setting C): a
        # from-scratch resnet50 with ~25 rare positives learns nothing on the CPU budget.
        "classifier": {
            "data": {"image_size": 64},
            "model": {"arch": "resnet18"},
            "train": dict(CPU_CLASSIFIER_TRAIN),
            "seeds": [0],
            "arms": list(ALL_ARMS),
        },
    },
    "long": {
        "cpu_threads": 2,
        "subtypes": ["FTC", "MTC"],
        "data": {"n_images": 1200, "external_test_frames": 4000},
        "coarse": {"profile": "long"},
        "fine": {"profile": "long", "cpu_threads": 2},
        # 576 images per subtype: after the filter (~64% kept) enough for the ratio curve's
        # 10:1 on ~33 train positives; the arms at 1:1 draw from the same pool.
        "generation": {
            "diversify": 288,
            "reference": 288,
            "coarse_only": 96,
            "options": {"steps": 30},
        },
        "clip": {"epochs": 30},
        # MoSo sees the frames at the size they are generated: at 128 px the 6-epoch surrogate
        # ranks wrong-class images lower than at 64 px (bottom-k 0.22 vs 0.11), and 12 epochs
        # do not beat 6 (0.19); benchmarks/bench_moso_validation.py --size 128.
        "moso": {"image-size": 128},
        "filter": {"clip-quantile": 0.2, "moso-prune-ratio": 0.2},
        # The quick profile's classifier at the size the phantom's difficulty was calibrated at
        # (benchmarks/phantom_calibration.py), with a higher epoch cap; 128 px costs 4x per
        # image, and the long run trains 9 arms + 2 x 5 ratio arms, 3 seeds each, per subtype.
        "classifier": {
            "data": {"image_size": 64},
            "model": {"arch": "resnet18"},
            "train": {**CPU_CLASSIFIER_TRAIN, "epochs": 20},
            "seeds": [0, 1, 2],
            "arms": list(ALL_ARMS),
            "ratios": [0.25, 0.5, 1, 2, 5, 10],
        },
    },
    # Real scale on one GPU from a local Stable Diffusion folder (set
    # pretrained_model_name_or_path); sizes follow the paper's 512 px setting.
    "gpu": {
        "subtypes": ["FTC", "MTC"],
        "data": {"n_images": 2000, "size": 512},
        # The stages' own "gpu" profiles (generation/{coarse,fine}/config.py), which the
        # scripts use too: one source of truth for the recipe.
        "coarse": {"profile": "gpu"},
        "fine": {"profile": "gpu"},
        "generation": {
            "diversify": 500,
            "reference": 500,
            "options": {"steps": 30, "precision": "bf16", "batch-size": 16, "resolution": 512},
        },
        "clip": {"epochs": 30, "image-size": 224, "device": "cuda"},
        "moso": {"epochs": 12, "image-size": 128, "device": "cuda"},
        "filter": {"clip-quantile": 0.2, "moso-prune-ratio": 0.2},
        "classifier": {
            "data": {"image_size": 224},
            "model": {"arch": "resnet50"},
            "train": {"epochs": 30, "batch_size": 64, "progress": False},
            "seeds": [0, 1, 2],
        },
    },
}


def merge(base: dict, override: dict) -> dict:
    """Nested dict merge; dicts merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def from_dict(values: dict, source: str = "config") -> PipelineConfig:
    known = {f.name for f in fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
    kwargs = dict(values)
    for name, section in SECTIONS.items():
        if name in kwargs:
            section_known = {f.name for f in fields(section)}
            bad = sorted(set(kwargs[name]) - section_known)
            if bad:
                raise PipelineConfigError(f"{source}: unknown {name} option(s) {', '.join(bad)}")
            kwargs[name] = section(**kwargs[name])
    config = PipelineConfig(**kwargs)
    validate(config, source)
    return config


def is_dataset_folder(path: Path) -> bool:
    """A Tiger dataset (ours or the authors' layout): ROOT[/init_image]/metadata.jsonl."""
    return any((path / sub / "metadata.jsonl").is_file() for sub in ("", "init_image"))


def validate(config: PipelineConfig, source: str) -> None:
    if config.profile not in PROFILES:
        raise PipelineConfigError(f"{source}: profile {config.profile!r} not in {list(PROFILES)}")
    data = config.data
    if data.source not in DATA_SOURCES and not Path(data.source).exists():
        raise PipelineConfigError(
            f"{source}: data.source {data.source!r} is neither {DATA_SOURCES} "
            "nor an existing folder"
        )
    if data.source not in DATA_SOURCES and not is_dataset_folder(Path(data.source)):
        raise PipelineConfigError(
            f"{source}: data.source {data.source} holds no init_image/metadata.jsonl: import it "
            "first (python -m metadata.cli folders --root DIR --out DATASET --negative CLASS, "
            "or metadata.cli generic --csv FILE --out DATASET), then --data DATASET"
        )
    if data.source == "ddti" and not Path(data.ddti_root).is_dir():
        raise PipelineConfigError(f"{source}: data.ddti_root {data.ddti_root} is not a folder")
    if config.inception_weights and not Path(config.inception_weights).is_file():
        raise PipelineConfigError(
            f"{source}: inception_weights {config.inception_weights} is not a file"
        )
    if data.n_images < 8:
        raise PipelineConfigError(f"{source}: data.n_images must be >= 8, got {data.n_images}")
    if config.generation.diversify < 0 or config.generation.reference < 0:
        raise PipelineConfigError(f"{source}: generation counts must be >= 0")
    if config.generation.diversify + config.generation.reference == 0:
        raise PipelineConfigError(f"{source}: generation makes no images at all")
    if config.preflight.tiny_lesions not in ("error", "skip"):
        raise PipelineConfigError(
            f"{source}: preflight.tiny_lesions must be error or skip, "
            f"got {config.preflight.tiny_lesions!r}"
        )
    arms = config.classifier.get("arms") or []
    if "coarse_only" in arms and config.generation.coarse_only <= 0:
        raise PipelineConfigError(
            f"{source}: the coarse_only arm needs generation.coarse_only > 0 (its images)"
        )
    if config.generation.augment not in AUGMENT_CHOICES:
        raise PipelineConfigError(
            f"{source}: generation.augment must be one of {AUGMENT_CHOICES}, "
            f"got {config.generation.augment!r}"
        )
    imbalance = config.classifier.get("train", {}).get("imbalance", "weighted_loss")
    if config.generation.other_class and imbalance != "weighted_sampler":
        raise PipelineConfigError(
            f"{source}: generation.other_class matches the generated share of both classes "
            f"through the sampler: set classifier.train.imbalance to weighted_sampler "
            f"(it is {imbalance!r})"
        )


def read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PipelineConfigError(f"{path}: config file not found") from None
    try:
        values = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise PipelineConfigError(f"{path}: cannot parse ({error})") from None
    if not isinstance(values, dict):
        raise PipelineConfigError(f"{path}: the config must be a mapping")
    return values


def load_config(
    profile: str = DEFAULT_PROFILE, path: str | Path | None = None, overrides: dict | None = None
) -> PipelineConfig:
    """Profile defaults, then the config file (its own `profile` wins), then `overrides`."""
    file_values = read_file(Path(path)) if path else {}
    profile = file_values.get("profile", profile)
    if profile not in PROFILES:
        raise PipelineConfigError(f"{path or 'profile'}: unknown profile {profile!r}")
    values = merge({"profile": profile}, PROFILES[profile])
    values = merge(values, file_values)
    values = merge(values, overrides or {})
    own_data = values.get("data", {}).get("source", "phantom") != "phantom"
    if own_data and "subtypes" not in file_values and "subtypes" not in (overrides or {}):
        values["subtypes"] = []  # the profiles name the phantom's rare subtypes; use every task
    return from_dict(values, str(path) if path else f"profile {profile}")
