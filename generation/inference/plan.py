"""The job list of a generation run: one `Job` per output image, fixed before anything runs.

Planning is cheap and deterministic (same options -> same jobs, and a longer run's first jobs
equal a shorter run's), so every process of a multi-GPU run plans the same list and takes its
own share, and a re-run recognises finished images by id. Masks drawn from the bank are made
later, by whichever process renders the job, from the job's own `mask_seed`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from generation.inference.attributes import (
    MASK_ATTRIBUTES,
    AttributeConstraints,
    AttributeSpecError,
    AttributeStats,
    attribute_dict,
    prompt_text,
    record_value,
)
from generation.inference.contrast import contrast_text
from generation.inference.prompts import PromptConfig, PromptSampler
from generation.inference.sources import TrainSource
from metadata.records import MetadataError, MetadataRecord

MODES = ("diversify", "reference")
BRANCH_CHOICES = ("keep", "bank")
# How diversify mode pairs a prompt with a background map: any train frame, or one whose own
# nodule had the prompt's findings that show outside the nodule (a calcification's shadow, a
# cyst's posterior enhancement), with the new mask placed where that nodule was.
# "findings" is the default: on the quick profile it lifts MTC's calcification agreement from
# 0.03 to 0.53 (16 images gained, none lost; benchmarks/guidance_levers.py).
BACKGROUND_MATCHES = ("any", "findings")
DEFAULT_BACKGROUND_MATCH = "findings"
POSTERIOR_FINDINGS = ("calcifications", "composition")


@dataclass
class Job:
    """Everything needed to make (and describe) one synthetic image."""

    id: str
    index: int
    mode: str
    label: str
    seed: int
    attributes: dict[str, str]
    text_nd: str
    text_bg: str
    condition_BG: str
    case_id: str
    source_cases: list[str] = field(default_factory=list)
    condition_FG: str | None = None  # a real mask file (reference mode, kept branch)
    mask_request: dict[str, str] | None = None  # asked shape/size/margins for a bank mask
    mask_seed: int | None = None
    # Where a bank mask is centred (row, column as fractions of the square frame); None: anywhere.
    mask_anchor: tuple[float, float] | None = None
    reference: str | None = None
    # The same nodule with its findings flipped (generation.inference.contrast): the negative
    # of attribute-contrast guidance.
    negative_text_nd: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def image_seed(base_seed: int, index: int, salt: int) -> int:
    """A per-image seed that depends only on (run seed, image index)."""
    return int(np.random.SeedSequence([base_seed, index, salt]).generate_state(1)[0] >> 1)


def job_id(mode: str, label: str, index: int) -> str:
    return f"{mode[:3]}-{label}-{index:06d}"


def draw_background(records: list[MetadataRecord], seed: int, index: int) -> MetadataRecord:
    rng = np.random.default_rng([seed, index, 31337])
    return records[int(rng.integers(len(records)))]


ANCHOR_GRID = 128


class FindingsBackgrounds:
    """Train frames with a lesion, grouped once per plan by their posterior findings, so that
    each job's draw is a lookup; each frame's nodule centre is read once."""

    def __init__(self, source: TrainSource):
        self.source = source
        self.groups: dict[tuple, list[MetadataRecord]] = {}
        self.anchors: dict[str, tuple[float, float] | None] = {}
        subsets = [POSTERIOR_FINDINGS, *((name,) for name in POSTERIOR_FINDINGS)]
        for record in source.records:
            if record.attributes.get("lesion_free"):
                continue
            for names in subsets:
                key = tuple((name, record_value(record, name)) for name in names)
                if all(value is not None for _, value in key):
                    self.groups.setdefault(key, []).append(record)

    def draw(self, values: dict[str, str], seed: int, index: int) -> MetadataRecord | None:
        """A frame whose own findings match the prompt's posterior findings (both, else
        calcifications alone); None when no frame matches."""
        wanted = [name for name in POSTERIOR_FINDINGS if name in values]
        rng = np.random.default_rng([seed, index, 31338])
        for names in (wanted, wanted[:1]):
            key = tuple((name, values[name]) for name in names)
            pool = self.groups.get(key, []) if names else []
            if pool:
                return pool[int(rng.integers(len(pool)))]
        return None

    def anchor(self, record: MetadataRecord) -> tuple[float, float] | None:
        """The centre of a frame's nodule as fractions of the square conditions are cropped to."""
        if record.file_name not in self.anchors:
            from generation.inference.masks import load_mask

            mask = load_mask(self.source.fg_path(record), ANCHOR_GRID)
            rows, cols = np.nonzero(mask)
            self.anchors[record.file_name] = (
                (float(rows.mean() + 0.5) / ANCHOR_GRID, float(cols.mean() + 0.5) / ANCHOR_GRID)
                if mask.any()
                else None
            )
        return self.anchors[record.file_name]


def plan_diversify(
    source: TrainSource,
    label: str,
    count: int,
    seed: int,
    constraints: AttributeConstraints,
    prompt_config: PromptConfig,
    background_match: str = DEFAULT_BACKGROUND_MATCH,
) -> list[Job]:
    """Prompts from the subtype's statistics; masks from the bank; real train background maps
    (`background_match`: any frame, or one that shows the prompt's posterior findings)."""
    if background_match not in BACKGROUND_MATCHES:
        raise AttributeSpecError(
            f"background match {background_match!r} must be one of {BACKGROUND_MATCHES}"
        )
    stats = AttributeStats.from_records(source.records, label)
    if stats.n_records == 0:
        raise MetadataError(source.meta_file, f"no {label} image in the train split")
    sampler = PromptSampler(stats, constraints, prompt_config)
    matching = FindingsBackgrounds(source) if background_match == "findings" else None
    jobs = []
    for index, values in enumerate(sampler.combinations(count, seed)):
        background, anchor = None, None
        if matching is not None:
            background = matching.draw(values, seed, index)
            anchor = matching.anchor(background) if background is not None else None
        background = background or draw_background(source.records, seed, index)
        jobs.append(
            Job(
                id=job_id("diversify", label, index),
                index=index,
                mode="diversify",
                label=label,
                seed=image_seed(seed, index, 1),
                attributes=values,
                text_nd=prompt_text(label, values, source.labels),
                text_bg=background.text_bg,
                condition_BG=str(source.bg_path(background)),
                # The background map is the real case this image leans on most.
                case_id=background.case_id,
                source_cases=[background.case_id],
                mask_request={k: values[k] for k in MASK_ATTRIBUTES if k in values},
                mask_seed=image_seed(seed, index, 2),
                mask_anchor=anchor,
                negative_text_nd=contrast_text(label, values, stats.dataset_support, source.labels),
            )
        )
    return jobs


def select_references(
    source: TrainSource, label: str, names: list[str] | None
) -> list[MetadataRecord]:
    """Train-split images of the subtype, or the named ones (which must be train and the label)."""
    pool = source.of_label(label)
    if not names:
        if not pool:
            raise MetadataError(source.meta_file, f"no {label} image in the train split")
        return pool
    by_name = {}
    for record in source.records:
        by_name[record.file_name] = record
        by_name[record.stem] = record
    chosen = []
    for name in names:
        record = by_name.get(name)
        if record is None:
            raise MetadataError(
                source.meta_file,
                f"reference {name!r} is not a train-split image (references must never come "
                "from validation or test cases)",
            )
        if record.label != label:
            raise MetadataError(
                source.meta_file, f"reference {name!r} is {record.label}, not {label}"
            )
        chosen.append(record)
    return chosen


def plan_reference(
    source: TrainSource,
    label: str,
    count: int,
    seed: int,
    constraints: AttributeConstraints,
    references: list[str] | None = None,
    foreground: str = "keep",
    background: str = "keep",
) -> list[Job]:
    """img2img from train-split images of the subtype with their own conditions and text.

    `foreground`/`background` = "bank" replace that branch's condition (and for the background
    its text) with a draw from the banks; fixed attributes override the reference's words.
    """
    for name, value in (("foreground", foreground), ("background", background)):
        if value not in BRANCH_CHOICES:
            raise AttributeSpecError(f"{name} must be one of {BRANCH_CHOICES}, got {value!r}")
    if constraints.excluded:
        raise AttributeSpecError("--exclude applies to diversify mode; use --fix to override")
    for name, values in constraints.fixed.items():
        if len(values) != 1:
            raise AttributeSpecError(f"reference mode needs one value for --fix {name}")
    changes_mask = [n for n in MASK_ATTRIBUTES if n in constraints.fixed]
    if changes_mask and foreground == "keep":
        raise AttributeSpecError(
            f"--fix {', '.join(changes_mask)} changes the nodule outline: use --foreground bank"
        )
    chosen = select_references(source, label, references)
    support = AttributeStats.from_records(source.records, label).dataset_support
    jobs = []
    for index in range(count):
        ref = chosen[index % len(chosen)]
        values = attribute_dict(ref)
        values.update({name: vals[0] for name, vals in constraints.fixed.items()})
        text_nd = prompt_text(label, values, source.labels) if constraints.fixed else ref.text_nd
        bg_record = ref if background == "keep" else draw_background(source.records, seed, index)
        cases = sorted({ref.case_id, bg_record.case_id})
        job = Job(
            id=job_id("reference", label, index),
            index=index,
            mode="reference",
            label=label,
            seed=image_seed(seed, index, 1),
            attributes=values,
            text_nd=text_nd,
            text_bg=bg_record.text_bg,
            condition_BG=str(source.bg_path(bg_record)),
            case_id=ref.case_id,
            source_cases=cases,
            reference=str(source.image_path(ref)),
            negative_text_nd=contrast_text(label, values, support, source.labels),
        )
        if foreground == "keep":
            job.condition_FG = str(source.fg_path(ref))
        else:
            job.mask_request = {k: values[k] for k in MASK_ATTRIBUTES if k in values}
            job.mask_seed = image_seed(seed, index, 2)
        jobs.append(job)
    return jobs
