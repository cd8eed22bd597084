"""A dataset's classes as data: the negative class, the rare positives, the lesion-free class.

Thyroid (TI-RADS) is the built-in default, so folders without a label-set file behave as before.
Any other organ declares its own classes in ROOT/labels.json, for example breast ultrasound:

    {"negative": "benign", "positives": ["malignant"], "rare": ["malignant"],
     "lesion_free": "normal", "words": {"malignant": "malignant"},
     "attribute_words": {"orientation": ["parallel", "not parallel"]}}

- `negative`: the 0 class of every classifier task;
- `positives`: each is one task (positive vs negative);
- `rare`: the positives the pipeline augments by default (`tiger run` without `subtypes`);
- `lesion_free`: the class of frames without a lesion (empty mask, full background). They train
  the coarse stage and serve as backgrounds, never as a lesion class, unless also declared
  negative or positive;
- `words`: what a label writes at the head of `text_nd` (default: the label itself);
- `attribute_words`: extra attributes (CSV columns) and their allowed words, written after the
  built-in TI-RADS attributes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LABELS_FILE = "labels.json"
UNLABELLED = "unlabelled"
SUBTYPE_WORDS = {"PTC": "papillary", "FTC": "follicular", "MTC": "medullary"}
THYROID_WORDS = {
    "benign": "benign",
    **{subtype: f"malignant, {word}" for subtype, word in SUBTYPE_WORDS.items()},
    "malignant": "malignant",
}


@dataclass(frozen=True)
class LabelSet:
    """The classes of one dataset; `thyroid()` is the built-in default."""

    negative: str = "benign"
    positives: tuple[str, ...] = ("PTC", "FTC", "MTC", "malignant")
    rare: tuple[str, ...] = ("FTC", "MTC")
    lesion_free: str | None = None
    words: dict[str, str] = field(default_factory=dict)
    attribute_words: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [self.negative, *self.positives, *([self.lesion_free] if self.lesion_free else [])]
        for name in names:
            if not isinstance(name, str) or not name.strip() or "," in name or "/" in name:
                raise ValueError(f"class name {name!r} must be a non-empty word without , or /")
        if self.negative in self.positives:
            raise ValueError(f"class {self.negative!r} is both negative and positive")
        if len(set(self.positives)) != len(self.positives):
            raise ValueError(f"positives {list(self.positives)} repeat a class")
        unknown = [name for name in self.rare if name not in self.positives]
        if unknown:
            raise ValueError(f"rare class(es) {unknown} are not among positives {self.positives}")
        if UNLABELLED in names:
            raise ValueError(f"{UNLABELLED!r} is reserved for frames without a label")
        for label in self.words:
            if label not in names:
                raise ValueError(f"words given for {label!r}, which is not a declared class")

    @classmethod
    def thyroid(cls) -> LabelSet:
        return cls(words=dict(THYROID_WORDS))

    @property
    def classes(self) -> tuple[str, ...]:
        """Every declared class (negative, positives, then the lesion-free class if any)."""
        declared = (self.negative, *self.positives)
        extra = (self.lesion_free,) if self.lesion_free and self.lesion_free not in declared else ()
        return (*declared, *extra)

    @property
    def labels(self) -> tuple[str, ...]:
        """What a record's label may be: the classes, or unlabelled."""
        return (*self.classes, UNLABELLED)

    def classifier_classes(self) -> tuple[str, ...]:
        """Classes that enter classifier tasks: negative and positives (never lesion-free alone)."""
        return (self.negative, *self.positives)

    def text_words(self, label: str) -> list[str]:
        """The phrases a label writes at the head of text_nd (none for unlabelled)."""
        if label in ("", UNLABELLED):
            return []
        text = self.words.get(label, label)
        return [part.strip() for part in text.split(",") if part.strip()]

    def phrases(self) -> frozenset[str]:
        """Every phrase the label words and extra attributes can write."""
        found = {phrase for label in self.classes for phrase in self.text_words(label)}
        for values in self.attribute_words.values():
            found.update(values)
        return frozenset(found)

    def check_label(self, label: str, where: str = "") -> str:
        if label not in self.labels:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}label {label!r} is not one of {list(self.labels)}")
        return label

    def to_json(self) -> dict:
        return {
            "negative": self.negative,
            "positives": list(self.positives),
            "rare": list(self.rare),
            "lesion_free": self.lesion_free,
            "words": dict(self.words),
            "attribute_words": {k: list(v) for k, v in self.attribute_words.items()},
        }

    @classmethod
    def from_json(cls, data: dict, source: str = LABELS_FILE) -> LabelSet:
        known = {"negative", "positives", "rare", "lesion_free", "words", "attribute_words"}
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a label set must be a JSON object")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected {sorted(known)}")
        if "negative" not in data or "positives" not in data:
            raise ValueError(f"{source}: a label set needs 'negative' and 'positives'")
        positives = tuple(str(v) for v in data["positives"])
        words = {str(k): str(v) for k, v in (data.get("words") or {}).items()}
        try:
            return cls(
                negative=str(data["negative"]),
                positives=positives,
                rare=tuple(str(v) for v in data.get("rare", positives)),
                lesion_free=data.get("lesion_free") or None,
                words=words,
                attribute_words={
                    str(k): tuple(str(v) for v in values)
                    for k, values in (data.get("attribute_words") or {}).items()
                },
            )
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def from_splits(cls, splits: dict) -> LabelSet:
        """The label set a splits.json records (the exporter's copy); thyroid for splits
        written before label sets, or by other tools."""
        recorded = splits.get("labels") if isinstance(splits, dict) else None
        if not recorded:
            return cls.thyroid()
        # A record without positives (another writer): the splits' tasks are the positives.
        return cls.from_json({"positives": splits.get("tasks", []), **recorded}, "splits.json")


def load_labelset_file(path: str | os.PathLike) -> LabelSet:
    """A label-set JSON file, with errors that name it."""
    file = Path(path)
    try:
        data = json.loads(file.read_text("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{file}: label-set file not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not JSON ({error.msg} at line {error.lineno})") from None
    return LabelSet.from_json(data, str(file))


def read_labelset(root: str | os.PathLike) -> LabelSet:
    """ROOT/labels.json when the dataset declares one; the built-in thyroid set otherwise."""
    path = Path(root) / LABELS_FILE
    return load_labelset_file(path) if path.is_file() else LabelSet.thyroid()
