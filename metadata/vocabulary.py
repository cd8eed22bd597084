"""The fixed clinical vocabulary and the one function that turns nodule attributes into text.

Every stage (phantom, importers, prompt composition in generation, CLIP training) uses this
module, so a word means the same thing everywhere and `text_nd` always has the same order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from metadata.labelset import SUBTYPE_WORDS, UNLABELLED, LabelSet

# Class labels used across the project. "malignant" is the DDTI label, where no subtype is known;
# "unlabelled" images feed the diffusion stages but never a classifier task.
BENIGN = "benign"
MALIGNANT = "malignant"
SUBTYPES = ("PTC", "FTC", "MTC")
CLASS_LABELS = (BENIGN, *SUBTYPES, MALIGNANT, UNLABELLED)

COMPOSITIONS = (
    "solid",
    "predominantly solid",
    "mixed",
    "predominantly cystic",
    "cystic",
    "spongiform",
)
ECHOGENICITIES = ("anechoic", "markedly hypoechoic", "hypoechoic", "isoechoic", "hyperechoic")
SHAPES = ("wider-than-tall", "taller-than-wide")
MARGINS = (
    "well-defined",
    "ill-defined",
    "lobulated",
    "microlobulated",
    "macrolobulated",
    "spiculated",
)
CALCIFICATIONS = ("none", "microcalcifications", "macrocalcifications")
SIZES = ("small", "medium", "large")

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "composition": COMPOSITIONS,
    "echogenicity": ECHOGENICITIES,
    "shape": SHAPES,
    "margins": MARGINS,
    "calcifications": CALCIFICATIONS,
    "size": SIZES,
}

# Size bins on the mask's equivalent diameter as a fraction of the frame height (depth), so
# that the same words mean the same thing at 128 px and at 500x315.
SIZE_BIN_EDGES = (0.15, 0.28)


@dataclass
class NoduleAttributes:
    """What a radiologist would say of one nodule; None means unknown (left out of the text)."""

    label: str
    composition: str | None = None
    echogenicity: str | None = None
    shape: str | None = None
    margins: str | None = None
    calcifications: str | None = None
    halo: bool | None = None
    size: str | None = None
    other: dict[str, str] = field(default_factory=dict)  # a label set's own attribute words

    def __post_init__(self) -> None:
        # Which labels a dataset allows is its label set's business (metadata.labelset); here
        # only the form is checked, since the label becomes a folder name and a text phrase.
        if not isinstance(self.label, str) or not self.label.strip() or "," in self.label:
            raise ValueError(f"class label {self.label!r} must be a non-empty word without ','")
        for name, allowed in ATTRIBUTE_VALUES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")

    def to_dict(self) -> dict[str, object]:
        """Flat: a label set's own attributes sit beside the built-in ones."""
        data = asdict(self)
        other = data.pop("other")
        return {**data, **other}

    @classmethod
    def from_dict(cls, data: dict[str, object], labels: LabelSet | None = None) -> NoduleAttributes:
        names = {f.name for f in fields(cls)} - {"other"}
        own = labels.attribute_words if labels else {}
        other = {k: str(v) for k, v in data.items() if k in own and v}
        return cls(**{k: v for k, v in data.items() if k in names}, other=other)


def compose_text_nd(attributes: NoduleAttributes, labels: LabelSet | None = None) -> str:
    """Fixed order: the label's words (thyroid: malignancy, subtype), composition,
    echogenicity, shape, margins, calcifications, halo, size, then the label set's own
    attributes in its declared order."""
    labels = labels or LabelSet.thyroid()
    parts = labels.text_words(attributes.label)
    if attributes.composition:
        parts.append(attributes.composition)
    if attributes.echogenicity:
        parts.append(attributes.echogenicity)
    if attributes.shape:
        parts.append(attributes.shape)
    if attributes.margins:
        parts.append(f"{attributes.margins} margins")
    if attributes.calcifications:
        calcs = attributes.calcifications
        parts.append("no calcifications" if calcs == "none" else calcs)
    if attributes.halo:
        parts.append("halo")
    if attributes.size:
        parts.append(attributes.size)
    for name in labels.attribute_words:
        if attributes.other.get(name):
            parts.append(attributes.other[name])
    return ", ".join(parts)


@dataclass(frozen=True)
class MaskGeometry:
    """Shape and size measured from a binary nodule mask."""

    height: int
    width: int
    area: int
    equivalent_diameter: float
    shape: str
    size: str

    @property
    def aspect_ratio(self) -> float:
        """Height over width of the bounding box (taller-than-wide when > 1)."""
        return self.height / max(self.width, 1)


def measure_mask(mask: np.ndarray) -> MaskGeometry:
    """Measure shape (bounding-box height vs width) and size (equivalent diameter vs depth)."""
    binary = np.asarray(mask) > 0
    if binary.ndim == 3:
        binary = binary.any(axis=-1)
    if not binary.any():
        raise ValueError("empty mask: no nodule pixel to measure")
    rows = np.flatnonzero(binary.any(axis=1))
    cols = np.flatnonzero(binary.any(axis=0))
    height = int(rows[-1] - rows[0] + 1)
    width = int(cols[-1] - cols[0] + 1)
    area = int(binary.sum())
    diameter = float(2.0 * np.sqrt(area / np.pi))
    return MaskGeometry(
        height=height,
        width=width,
        area=area,
        equivalent_diameter=diameter,
        shape=SHAPES[1] if height > width else SHAPES[0],
        size=size_from_diameter(diameter, binary.shape[0]),
    )


def size_from_diameter(diameter: float, frame_height: int) -> str:
    fraction = diameter / frame_height
    if fraction < SIZE_BIN_EDGES[0]:
        return "small"
    if fraction < SIZE_BIN_EDGES[1]:
        return "medium"
    return "large"


def fill_measured(attributes: NoduleAttributes, mask: np.ndarray) -> NoduleAttributes:
    """Shape and size are measured from the mask when the source did not give them."""
    if attributes.shape is not None and attributes.size is not None:
        return attributes
    geometry = measure_mask(mask)
    return replace(
        attributes,
        shape=attributes.shape or geometry.shape,
        size=attributes.size or geometry.size,
    )


def text_nd_phrases() -> frozenset[str]:
    """Every comma-separated phrase `compose_text_nd` can write (the built-in vocabulary)."""
    phrases = {BENIGN, MALIGNANT, *SUBTYPE_WORDS.values(), "halo", "no calcifications"}
    for name, values in ATTRIBUTE_VALUES.items():
        if name == "margins":
            phrases.update(f"{value} margins" for value in values)
        elif name == "calcifications":
            phrases.update(value for value in values if value != "none")
        else:
            phrases.update(values)
    return frozenset(phrases)


def split_phrases(text_nd: str) -> list[str]:
    return [part.strip() for part in text_nd.split(",") if part.strip()]


VOCABULARY_FILE = "vocabulary.json"


@dataclass(frozen=True)
class DatasetVocabulary:
    """The labels and text_nd phrases a dataset may use. Built-in: the TI-RADS words above; a
    dataset folder's `vocabulary.json` ({"labels": [...], "text_nd_phrases": [...]}) adds its
    own (the Tiger importer writes one for the words of a user's own descriptions)."""

    labels: frozenset[str]
    phrases: frozenset[str]
    lesion_free: str | None = None  # the label set's class whose frames have no lesion

    @classmethod
    def builtin(cls) -> DatasetVocabulary:
        return cls(frozenset(CLASS_LABELS), text_nd_phrases())

    def problems(self, label: str, text_nd: str) -> list[str]:
        """What in (label, text_nd) lies outside this vocabulary; empty when all is known."""
        found = []
        if label and label not in self.labels:
            found.append(f"label {label!r} is not one of {sorted(self.labels)}")
        unknown = [p for p in split_phrases(text_nd) if p not in self.phrases]
        if unknown:
            found.append(
                f"text_nd word(s) {unknown} not in the dataset's vocabulary (built-in TI-RADS "
                f"words, plus {VOCABULARY_FILE} in the dataset folder)"
            )
        return found

    def to_json(self) -> dict:
        return {"labels": sorted(self.labels), "text_nd_phrases": sorted(self.phrases)}
