"""Foreground conditions for diversify mode: real masks re-posed, or procedural masks.

A real train-split mask is cropped to its nodule, flipped, rotated and scaled to the asked size,
and placed at a random spot of the frame; a draw is kept only when the result measures as the
asked shape and size (`metadata.vocabulary.measure_mask`, the same rule the dataset used), so a
prompt never says "taller-than-wide" over a wide mask. Margins are a property of the outline, so
real masks are only used for margins their own record states; otherwise (or when no real mask
fits) the phantom's geometry sampler draws a procedural outline with the asked shape, size and
margins (lobulated, spiculated, ill-defined ...). Every draw is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from generation.inference.sources import TrainSource
from metadata.phantom import nodule_coordinates, sample_geometry
from metadata.records import MetadataRecord
from metadata.vocabulary import SHAPES, SIZES, NoduleAttributes, measure_mask

MASK_SOURCES = ("real", "procedural", "mixed")
# Equivalent diameter / frame height drawn inside each vocabulary size bin (edges 0.15, 0.28).
SIZE_TARGETS = {"small": (0.08, 0.14), "medium": (0.17, 0.26), "large": (0.30, 0.38)}
# Outline families the phantom geometry sampler knows; other margin words map onto them.
PROCEDURAL_MARGINS = {
    "well-defined": "well-defined",
    "ill-defined": "ill-defined",
    "lobulated": "lobulated",
    "microlobulated": "lobulated",
    "macrolobulated": "lobulated",
    "spiculated": "spiculated",
}
TOP_MARGIN = 0.15  # keep nodules below the skin/fascia band at the top of the frame


@dataclass
class MaskDraw:
    """One foreground mask and how it was made (recorded in the manifest)."""

    mask: np.ndarray  # bool [R, R]
    origin: dict = field(default_factory=dict)
    case_id: str | None = None


@dataclass
class MaskBankConfig:
    source: str = "mixed"
    max_rotation_deg: float = 20.0
    horizontal_flip: bool = True
    attempts: int = 40


def load_mask(path: Path, resolution: int) -> np.ndarray:
    """Binary mask resized (shorter side) and centre-cropped to `resolution`, as conditions are."""
    with Image.open(path) as image:
        grey = image.convert("L")
    scale = resolution / min(grey.size)
    size = (max(resolution, round(grey.width * scale)), max(resolution, round(grey.height * scale)))
    grey = grey.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    array = np.asarray(grey.crop((left, top, left + resolution, top + resolution)))
    return array > 127


def crop_to_nodule(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def place(
    patch: np.ndarray,
    resolution: int,
    rng: np.random.Generator,
    anchor: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """Put a cropped nodule at a random position inside the frame, or centred on `anchor`
    (row, column fractions; moved inwards as far as the frame needs). None if it cannot fit."""
    height, width = patch.shape
    top_min = int(TOP_MARGIN * resolution)
    border = max(1, resolution // 32)
    if height > resolution - top_min - border or width > resolution - 2 * border:
        return None
    top_max, left_max = resolution - border - height, resolution - border - width
    if anchor is None:
        top = int(rng.integers(top_min, top_max + 1))
        left = int(rng.integers(border, left_max + 1))
    else:
        top = min(max(round(anchor[0] * resolution - height / 2), top_min), top_max)
        left = min(max(round(anchor[1] * resolution - width / 2), border), left_max)
    frame = np.zeros((resolution, resolution), dtype=bool)
    frame[top : top + height, left : left + width] = patch
    return frame


class MaskBank:
    """Masks of the train split, re-posed on demand; procedural outlines as the fallback."""

    def __init__(self, source: TrainSource, resolution: int, config: MaskBankConfig | None = None):
        self.config = config or MaskBankConfig()
        if self.config.source not in MASK_SOURCES:
            raise ValueError(f"mask source {self.config.source!r} must be one of {MASK_SOURCES}")
        self.source = source
        self.resolution = resolution
        self._cache: dict[str, np.ndarray] = {}
        # Never an empty mask: lesion-free frames have none, and a small lesion can vanish at
        # the working resolution (the pipeline's preflight reports those before training).
        self.records = [
            record
            for record in source.records
            if not record.attributes.get("lesion_free") and self.real_mask_of(record).any()
        ]

    def real_mask(self, index: int) -> np.ndarray:
        return self.real_mask_of(self.records[index])

    def real_mask_of(self, record: MetadataRecord) -> np.ndarray:
        if record.file_name not in self._cache:
            self._cache[record.file_name] = load_mask(self.source.fg_path(record), self.resolution)
        return self._cache[record.file_name]

    def candidates(self, margins: str | None) -> list[int]:
        """Real masks whose outline has the asked margins (any, when margins are not asked)."""
        return [
            i
            for i, record in enumerate(self.records)
            if margins is None or record.attributes.get("margins") == margins
        ]

    def draw(
        self, asked: dict[str, str], seed: int, anchor: tuple[float, float] | None = None
    ) -> MaskDraw:
        """A mask with the asked shape/size/margins, centred on `anchor` when given;
        deterministic in `seed`."""
        rng = np.random.default_rng([seed, 104729])
        shape, size = asked.get("shape"), asked.get("size")
        margins = asked.get("margins")
        if self.config.source != "procedural":
            pool = self.candidates(margins)
            if pool:
                found = self.draw_real(pool, shape, size, rng, anchor)
                if found is not None:
                    return found
            if self.config.source == "real":
                raise ValueError(
                    f"no real train mask can show shape={shape}, size={size}, margins={margins} "
                    "(use --mask-source mixed or procedural)"
                )
        drawn = self.draw_procedural(shape, size, margins, rng)
        if anchor is not None:
            moved = place(crop_to_nodule(drawn.mask), self.resolution, rng, anchor)
            if moved is not None:
                drawn.mask = moved
                drawn.origin["anchor"] = [round(v, 4) for v in anchor]
        return drawn

    def draw_real(
        self,
        pool: list[int],
        shape: str | None,
        size: str | None,
        rng: np.random.Generator,
        anchor: tuple[float, float] | None = None,
    ) -> MaskDraw | None:
        for _ in range(self.config.attempts):
            index = pool[int(rng.integers(len(pool)))]
            patch = crop_to_nodule(self.real_mask(index))
            flip = bool(self.config.horizontal_flip and rng.random() < 0.5)
            angle = float(rng.uniform(-1, 1) * self.config.max_rotation_deg)
            target = size or SIZES[int(rng.integers(len(SIZES)))]
            diameter = rng.uniform(*SIZE_TARGETS[target]) * self.resolution
            picture = Image.fromarray((patch[:, ::-1] if flip else patch).astype(np.uint8) * 255)
            picture = picture.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
            rotated = np.asarray(picture) > 127
            if not rotated.any():
                continue
            scale = diameter / (2.0 * np.sqrt(rotated.sum() / np.pi))
            new_size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            resized = np.asarray(picture.resize(new_size, Image.Resampling.BILINEAR)) > 127
            if not resized.any():
                continue
            mask = place(crop_to_nodule(resized), self.resolution, rng, anchor)
            if mask is None or not self.matches(mask, shape, size):
                continue
            record = self.records[index]
            origin = {
                "kind": "real",
                "source": str(self.source.fg_path(record)),
                "flip": flip,
                "rotation_deg": round(angle, 3),
                "scale": round(float(scale), 4),
            }
            if anchor is not None:
                origin["anchor"] = [round(v, 4) for v in anchor]
            return MaskDraw(mask=mask, origin=origin, case_id=record.case_id)
        return None

    def draw_procedural(
        self, shape: str | None, size: str | None, margins: str | None, rng: np.random.Generator
    ) -> MaskDraw:
        for _ in range(self.config.attempts):
            attributes = NoduleAttributes(
                label="benign",
                shape=shape or SHAPES[int(rng.integers(len(SHAPES)))],
                size=size or SIZES[int(rng.integers(len(SIZES)))],
                margins=PROCEDURAL_MARGINS.get(margins or "well-defined", "well-defined"),
            )
            geometry = sample_geometry(attributes, float(rng.uniform(0.08, 0.13)), rng)
            mask = nodule_coordinates(geometry, self.resolution, (0.0, 0.0), 1.0)[2] <= 1.0
            if self.touches_border(mask) or not self.matches(mask, shape, size):
                continue
            origin = {"kind": "procedural", "margins": attributes.margins}
            return MaskDraw(mask=mask, origin=origin, case_id=None)
        raise ValueError(
            f"could not draw a procedural mask with shape={shape}, size={size}, "
            f"margins={margins} at {self.resolution} px"
        )

    @staticmethod
    def touches_border(mask: np.ndarray) -> bool:
        return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())

    @staticmethod
    def matches(mask: np.ndarray, shape: str | None, size: str | None) -> bool:
        if not mask.any():
            return False
        geometry = measure_mask(mask)
        return (shape is None or geometry.shape == shape) and (
            size is None or geometry.size == size
        )


def mask_image(mask: np.ndarray) -> Image.Image:
    """3-channel 0/255 mask, as `condition_FG` files are stored."""
    return Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1))
