"""One call per generation run: plan the jobs, load the model, generate, write the manifest.

request = GenerationRequest(mode="diversify", model="runs/fine", dataset="data/phantom",
                            out_dir="runs/gen_ftc", label="FTC", num_images=200)
summary = run_generation(request)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generation.inference.attributes import AttributeConstraints
from generation.inference.engine import (
    GenerationEngine,
    GenerationError,
    RuntimeConfig,
    SamplingConfig,
    check_identity,
    identity_for,
    load_generator,
)
from generation.inference.masks import MaskBank, MaskBankConfig
from generation.inference.plan import (
    DEFAULT_BACKGROUND_MATCH,
    MODES,
    Job,
    plan_diversify,
    plan_reference,
)
from generation.inference.prompts import PromptConfig
from generation.inference.sources import TrainSource, load_train_source
from generation.offline import enforce_offline
from metadata.splits import SplitConfig
from metadata.vocabulary import UNLABELLED

LOGGER = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """Everything a run needs; `num_images` may grow between runs into the same folder."""

    mode: str
    model: str
    dataset: str
    out_dir: str
    label: str
    num_images: int = 100
    seed: int = 0
    splits_file: str | None = None
    split: SplitConfig | None = None  # Python API only: an explicit split instead of splits_file
    constraints: AttributeConstraints = field(default_factory=AttributeConstraints)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    masks: MaskBankConfig = field(default_factory=MaskBankConfig)
    references: list[str] | None = None
    foreground: str = "keep"
    background: str = "keep"
    background_match: str = DEFAULT_BACKGROUND_MATCH  # diversify: plan.BACKGROUND_MATCHES
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> GenerationRequest:
        if self.mode not in MODES:
            raise GenerationError(f"mode {self.mode!r} must be one of {MODES}")
        if not self.label or self.label == UNLABELLED:
            raise GenerationError("--label must name a class of the dataset's label set")
        if self.num_images < 1:
            raise GenerationError("--num-images must be >= 1")
        if not Path(self.model).is_dir():
            raise GenerationError(f"{self.model}: model folder not found (expected a fine-stage "
                                  "folder from python -m generation.fine.cli)")  # fmt: skip
        self.sampling.validate()
        self.runtime.validate()
        return self

    def options(self) -> dict:
        """What, besides sampling, decides the images (num_images excluded: it may grow)."""
        options = {
            "dataset": str(Path(self.dataset).resolve()),
            "splits_file": self.splits_file,
            "split": asdict(self.split) if self.split else None,
            "constraints": self.constraints.to_dict(),
            "masks": asdict(self.masks),
        }
        if self.mode == "diversify":
            options["prompts"] = asdict(self.prompts)
            if self.background_match != "any":  # folders made before the option still resume
                options["background_match"] = self.background_match
        else:
            options.update(
                references=self.references, foreground=self.foreground, background=self.background
            )
        return options


def plan_jobs(request: GenerationRequest, source) -> list[Job]:
    if request.mode == "diversify":
        return plan_diversify(
            source, request.label, request.num_images, request.seed,
            request.constraints, request.prompts, request.background_match,
        )  # fmt: skip
    return plan_reference(
        source, request.label, request.num_images, request.seed, request.constraints,
        request.references, request.foreground, request.background,
    )  # fmt: skip


def check_label(label: str, source: TrainSource) -> None:
    """The label must be a lesion class of the dataset's label set (the generator draws lesions)."""
    labels = source.labels
    lesion_classes = [c for c in labels.classes if c != labels.lesion_free]
    if label not in lesion_classes:
        raise GenerationError(
            f"--label {label!r} must be one of the lesion classes {lesion_classes} of "
            f"{source.meta_file}'s label set"
        )


def run_generation(request: GenerationRequest, pipe=None) -> dict:
    """Plan, (re)load the model unless `pipe` is given, generate what is missing; a summary."""
    request.validate()
    out_dir = Path(request.out_dir)
    enforce_offline(out_dir)
    source = load_train_source(request.dataset, request.splits_file, request.split)
    check_label(request.label, source)
    jobs = plan_jobs(request, source)
    identity = identity_for(
        request.model, out_dir, request.mode, request.label, request.seed,
        request.sampling, request.options(),
    )  # fmt: skip
    check_identity(out_dir, identity)  # before the (slow) model load
    if pipe is None:
        pipe = load_generator(request.model, request.sampling, request.runtime)
    else:
        pipe.use_scheduler(request.sampling.scheduler)
    resolution = request.sampling.resolution or pipe.default_resolution()
    bank = MaskBank(source, resolution, request.masks)
    engine = GenerationEngine(pipe, out_dir, identity, request.sampling, request.runtime, bank)
    summary = engine.run(jobs)
    LOGGER.info("generation %s: %s", out_dir, summary)
    return summary
