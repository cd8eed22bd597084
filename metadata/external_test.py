"""A large independent test set from the phantom: thousands of real frames no stage ever sees.

A split's own test set holds 9-12 rare positives, so every arm's AUC spans about ±0.2 and the
arms cannot be told apart. The phantom can render as many independent cases as wanted: the same
config from another seed gives other cases (case-disjoint by construction; their ids are also
prefixed, so no id can match a case of the run's own dataset). They are written in the
classifier layout with every image in `test/`, one task per positive class, and scored by every
arm's selected model beside the split's own test set (`DataConfig.external_croot`).

    OUT/<TASK>/test/{0,1}/<stem>.png   frames (grey PNG, as the builder writes them)
    OUT/splits.json                     {"assignments": {file: {case_id, label, split: test}}}
    OUT/external_test.json              phantom config, frames rendered, frames per class
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from metadata.atomic import save_png, staging_dir, write_json
from metadata.builder import grey_of
from metadata.classifier_export import link_or_copy
from metadata.importers.phantom import phantom_samples
from metadata.labelset import LabelSet
from metadata.phantom import PhantomConfig

# The independent set's phantom seed is the run's seed plus this (benchmarks use it too).
EXTERNAL_SEED_OFFSET = 10_000
CASE_PREFIX = "external-"
INFO_FILE = "external_test.json"


def build_external_test(
    out_root: str | os.PathLike,
    n_images: int,
    config: PhantomConfig,
    labels: LabelSet | None = None,
) -> Path:
    """Render `n_images` phantom frames with `config` into a test-only classifier layout.

    Frames of a class that is neither the negative nor a positive one are counted, not written;
    a task is written only when both its classes were drawn. Built whole in a staging folder,
    then swapped in."""
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    labels = labels or LabelSet.thyroid()
    tasks = list(labels.positives)
    rendered: Counter[str] = Counter()
    frames_by_label: dict[str, list[str]] = {}
    assignments: dict[str, dict] = {}
    with staging_dir(out_root) as staging:
        frames = staging / "frames"
        frames.mkdir()
        for sample in phantom_samples(n_images, config):
            label = sample.attributes.label
            rendered[label] += 1
            if label != labels.negative and label not in tasks:
                continue
            name = f"{sample.stem}.png"
            save_png(frames / name, grey_of(sample.image))
            frames_by_label.setdefault(label, []).append(name)
            assignments[name] = {
                "case_id": f"{CASE_PREFIX}{sample.case_id}",
                "label": label,
                "split": "test",
                "synthetic": False,
                "tasks": [],
            }
        # A task needs both classes for an AUC.
        kept = [t for t in tasks if frames_by_label.get(t) and frames_by_label.get(labels.negative)]
        for task in kept:
            for label, target_class in ((labels.negative, "0"), (task, "1")):
                for name in frames_by_label[label]:
                    link_or_copy(frames / name, staging / task / "test" / target_class / name)
                    assignments[name]["tasks"].append(task)
        write_json(
            staging / "splits.json",
            {"source": "phantom", "tasks": kept, "assignments": assignments},
        )
        write_json(
            staging / INFO_FILE,
            {
                "phantom": asdict(config),
                "n_images": n_images,
                "rendered_per_class": dict(sorted(rendered.items())),
                "tasks": {
                    t: {
                        "negative": len(frames_by_label[labels.negative]),
                        "positive": len(frames_by_label[t]),
                    }
                    for t in kept
                },
            },
        )
    return Path(out_root)
