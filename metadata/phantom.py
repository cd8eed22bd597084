"""A procedural B-mode thyroid ultrasound phantom with known ground truth.

Why: the whole pipeline needs real work to do with no download, and every later stage (prompt
adherence, mask control, classifier gains) can be scored against attributes we know exactly.

Physics, kept simple but honest: a reflectivity map (tissue, fascia, vessel, nodule, halo,
calcifications, shadowing and posterior enhancement) multiplies a complex Gaussian scatterer
field; a point-spread blur makes speckle (Rayleigh envelope); depth attenuation, log compression
with a per-frame gain and dynamic range (the "machine") give the B-mode picture. All levels are
in dB relative to normal thyroid tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special

from metadata.phantom_priors import (
    DEFAULT_PREVALENCE,
    PHANTOM_CLASSES,
    blended_priors,
    sample_choice,
)
from metadata.vocabulary import NoduleAttributes, measure_mask

ECHO_DB = {"anechoic": -32.0, "hypoechoic": -12.0, "isoechoic": -4.5, "hyperechoic": 5.0}
FASCIA_DB = 9.0
SUBCUTANEOUS_DB = -4.0
HALO_DB = -16.0
CAPSULE_DB = 4.0
LOOKS = 3  # spatial compounding: independent speckle looks averaged in power
CALCIFICATION_DB = 16.0
# Equivalent diameter as a fraction of frame height, drawn inside each size bin
# (bins at 0.15 and 0.28, see metadata.vocabulary.SIZE_BIN_EDGES) with a safety margin.
SIZE_DIAMETER = {"small": (0.09, 0.135), "medium": (0.175, 0.25), "large": (0.31, 0.38)}
ASPECT = {"wider-than-tall": (0.5, 0.78), "taller-than-wide": (1.3, 1.9)}


@dataclass
class PhantomConfig:
    """Everything that decides a phantom dataset; same config + seed gives the same bytes."""

    size: int = 128
    difficulty: float = -0.8  # calibrated: benchmarks/phantom_calibration.py (FTC 0.66, MTC 0.83)
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    two_frame_probability: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"phantom size must be at least 32 px, got {self.size}")
        unknown = set(self.prevalence) - set(PHANTOM_CLASSES)
        if unknown:
            raise ValueError(f"unknown phantom classes in prevalence: {sorted(unknown)}")
        if sum(self.prevalence.values()) <= 0:
            raise ValueError("prevalence must have a positive total")


@dataclass
class NoduleGeometry:
    """Shape of one nodule in frame-independent units (fractions of the frame)."""

    center: tuple[float, float]
    semi_axes: tuple[float, float]  # (vertical, horizontal), fractions of frame size
    rotation: float
    harmonics: list[tuple[int, float, float]]  # (order k, amplitude, phase) radial perturbation
    spikes: tuple[int, float, float] | None  # (count, amplitude, phase) for spiculated margins
    cysts: list[tuple[float, float, float]]  # (u, v, radius) in nodule-normalised coordinates
    specks: list[tuple[float, float]]  # microcalcifications, nodule-normalised
    arc: tuple[float, float, float] | None  # macrocalcification (theta start, span, radius)


@dataclass
class PhantomCase:
    """One patient: a nodule with its attributes, seen in one or more frames."""

    case_id: str
    label: str
    attributes: NoduleAttributes
    halo: bool
    geometry: NoduleGeometry
    vessel: tuple[float, float, float] | None  # (y, x, radius) of a carotid-like vessel
    fascia_depth: float
    tissue_seed: int
    frame_seeds: list[int]


@dataclass
class PhantomFrame:
    image: np.ndarray  # uint8 HxW
    mask: np.ndarray  # bool HxW
    machine: dict[str, float]


def sample_case(case_index: int, config: PhantomConfig, rng: np.random.Generator) -> PhantomCase:
    label = sample_choice(rng, config.prevalence)
    priors = blended_priors(label, config.difficulty, config.prevalence)
    composition = sample_choice(rng, priors["composition"])
    echogenicity = (
        "anechoic" if composition == "cystic" else sample_choice(rng, priors["echogenicity"])
    )
    attributes = NoduleAttributes(
        label=label,
        composition=composition,
        echogenicity=echogenicity,
        shape=sample_choice(rng, priors["shape"]),
        margins=sample_choice(rng, priors["margins"]),
        calcifications=sample_choice(rng, priors["calcifications"]),
        halo=sample_choice(rng, priors["halo"]) == "yes",
        size=sample_choice(rng, priors["size"]),
    )
    fascia_depth = float(rng.uniform(0.08, 0.13))
    vessel = None
    if rng.random() < 0.35:
        # Carotid-like vessel cut by the lateral edge of the field of view.
        side = rng.choice([-0.02, 1.02])
        vessel = (float(rng.uniform(0.6, 0.82)), float(side), float(rng.uniform(0.1, 0.14)))
    n_frames = 2 if rng.random() < config.two_frame_probability else 1
    return PhantomCase(
        case_id=f"case{case_index:05d}",
        label=label,
        attributes=attributes,
        halo=bool(attributes.halo),
        geometry=sample_geometry(attributes, fascia_depth, rng),
        vessel=vessel,
        fascia_depth=fascia_depth,
        tissue_seed=int(rng.integers(2**31)),
        frame_seeds=[int(s) for s in rng.integers(2**31, size=n_frames)],
    )


def sample_geometry(
    attributes: NoduleAttributes, fascia_depth: float, rng: np.random.Generator
) -> NoduleGeometry:
    diameter = rng.uniform(*SIZE_DIAMETER[attributes.size])
    aspect = rng.uniform(*ASPECT[attributes.shape])  # height / width
    vertical = diameter / 2 * np.sqrt(aspect)
    horizontal = diameter / 2 / np.sqrt(aspect)
    top = fascia_depth + 0.06 + vertical * 1.15
    bottom = 0.95 - vertical * 1.15
    center_y = rng.uniform(top, max(top, bottom))
    center_x = rng.uniform(0.1 + horizontal * 1.15, 0.9 - horizontal * 1.15)
    harmonics: list[tuple[int, float, float]] = []
    spikes = None
    if attributes.margins == "lobulated":
        for order in rng.choice([3, 4, 5, 6], size=2, replace=False):
            harmonics.append(
                (int(order), float(rng.uniform(0.07, 0.11)), rng.uniform(0, 2 * np.pi))
            )
    elif attributes.margins == "spiculated":
        spikes = (
            int(rng.integers(11, 17)),
            float(rng.uniform(0.2, 0.3)),
            rng.uniform(0, 2 * np.pi),
        )
    elif attributes.margins == "ill-defined":
        harmonics.append((2, float(rng.uniform(0.02, 0.05)), rng.uniform(0, 2 * np.pi)))
    cysts: list[tuple[float, float, float]] = []
    if attributes.composition == "mixed":
        for _ in range(int(rng.integers(1, 4))):
            radius = rng.uniform(0.2, 0.38)
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.75 - radius)
            cysts.append((distance * np.sin(angle), distance * np.cos(angle), radius))
    elif attributes.composition == "spongiform":
        for _ in range(int(rng.integers(14, 24))):
            radius = rng.uniform(0.09, 0.16)
            angle, distance = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.78
            cysts.append((distance * np.sin(angle), distance * np.cos(angle), radius))
    specks: list[tuple[float, float]] = []
    arc = None
    if attributes.calcifications == "microcalcifications":
        for _ in range(int(rng.integers(4, 11))):
            angle, distance = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.75
            specks.append((distance * np.sin(angle), distance * np.cos(angle)))
    elif attributes.calcifications == "macrocalcifications":
        # Arc in the upper half so its shadow falls through the nodule and below it.
        start = rng.uniform(-2.6, -1.6)
        arc = (float(start), float(rng.uniform(0.9, 1.5)), float(rng.uniform(0.45, 0.7)))
    return NoduleGeometry(
        center=(float(center_y), float(center_x)),
        semi_axes=(float(vertical), float(horizontal)),
        rotation=float(rng.uniform(-0.17, 0.17)),
        harmonics=harmonics,
        spikes=spikes,
        cysts=cysts,
        specks=specks,
        arc=arc,
    )


def nodule_coordinates(
    geometry: NoduleGeometry, size: int, shift: tuple[float, float], scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel (u, v) in nodule-normalised units and the margin-perturbed radius rho."""
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(grid, grid, indexing="ij")
    dy = y - (geometry.center[0] + shift[0])
    dx = x - (geometry.center[1] + shift[1])
    cos_r, sin_r = np.cos(geometry.rotation), np.sin(geometry.rotation)
    u = (cos_r * dy - sin_r * dx) / (geometry.semi_axes[0] * scale)
    v = (sin_r * dy + cos_r * dx) / (geometry.semi_axes[1] * scale)
    theta = np.arctan2(u, v)
    radius = np.ones_like(theta)
    for order, amplitude, phase in geometry.harmonics:
        radius += amplitude * np.cos(order * theta + phase)
    if geometry.spikes is not None:
        count, amplitude, phase = geometry.spikes
        radius += amplitude * np.clip(np.cos(count * theta + phase), 0, None) ** 6
    rho = np.sqrt(u**2 + v**2) / radius
    return u, v, rho


def reflectivity_db(
    case: PhantomCase, size: int, shift: tuple[float, float], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Echo level in dB for every pixel, plus the nodule mask."""
    rng = np.random.default_rng(case.tissue_seed)
    depth = (np.arange(size, dtype=np.float64)[:, None] + 0.5) / size * np.ones((1, size))
    lateral = (np.arange(size, dtype=np.float64)[None, :] + 0.5) / size * np.ones((size, 1))
    # Thyroid tissue with gentle low-frequency heterogeneity.
    heterogeneity = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=size / 10)
    level = 1.5 * heterogeneity / (heterogeneity.std() + 1e-9)
    fascia = case.fascia_depth + shift[0] + 0.01 * np.sin(lateral * 6 + rng.uniform(0, 6))
    level = np.where(depth < fascia, SUBCUTANEOUS_DB + 0.5 * level, level)
    band = np.exp(-(((depth - fascia) / 0.016) ** 2))
    level = level + FASCIA_DB * band
    if case.vessel is not None:
        vy, vx, vr = case.vessel
        distance = np.sqrt((depth - vy - shift[0]) ** 2 + (lateral - vx - shift[1]) ** 2) / vr
        level = np.where(distance < 1, ECHO_DB["anechoic"], level)
        wall = np.exp(-(((distance - 1.0) / 0.08) ** 2))
        level = level + 6.0 * wall * (distance >= 1)
        below = (lateral - vx - shift[1]) ** 2 < vr**2
        level = level + 3.0 * below * (depth > vy + shift[0] + vr) * (distance >= 1)

    geometry = case.geometry
    attributes = case.attributes
    u, v, rho = nodule_coordinates(geometry, size, shift, scale)
    mask = rho <= 1.0
    edge_width = 0.14 if attributes.margins == "ill-defined" else 0.03
    weight = special.expit((1.0 - rho) / edge_width)
    # Nodule parenchyma has its own, finer heterogeneity than the surrounding gland.
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=size / 48)
    texture = 2.5 * texture / (texture.std() + 1e-9)
    inside = np.full((size, size), ECHO_DB[attributes.echogenicity]) + 0.4 * level + texture
    for cu, cv, radius in geometry.cysts:
        cyst = np.sqrt((u - cu) ** 2 + (v - cv) ** 2) / radius
        inside = np.where(cyst < 1, ECHO_DB["anechoic"], inside)
    if attributes.composition == "cystic":
        wall = np.exp(-(((rho - 0.95) / 0.05) ** 2))
        inside = np.maximum(inside, -4.0 * wall + ECHO_DB["anechoic"] * (1 - wall))
    level = (1 - weight) * level + weight * inside
    if attributes.margins in ("well-defined", "lobulated") and attributes.composition != "cystic":
        level = level + CAPSULE_DB * np.exp(-(((rho - 1.0) / 0.05) ** 2))
    if case.halo:
        ring = np.exp(-(((rho - 1.08) / 0.045) ** 2)) * (rho > 1.0)
        level = (1 - ring) * level + ring * HALO_DB

    # Column mask of the nodule for posterior effects.
    below_nodule = np.cumsum(mask, axis=0) > 0
    below_nodule &= ~mask
    columns = mask.any(axis=0)
    if attributes.composition in ("cystic", "spongiform") or (
        attributes.composition == "mixed" and attributes.echogenicity != "hyperechoic"
    ):
        enhancement = 4.0 if attributes.composition == "cystic" else 2.0
        level = level + enhancement * below_nodule * columns[None, :]
    for su, sv in geometry.specks:
        speck = np.exp(-((u - su) ** 2 + (v - sv) ** 2) / (2 * 0.035**2))
        level = np.where(speck > 0.35, np.maximum(level, CALCIFICATION_DB), level)
    if geometry.arc is not None:
        start, span, radius = geometry.arc
        theta = np.arctan2(u, v)
        on_arc = (np.abs(np.sqrt(u**2 + v**2) - radius) < 0.07) & (
            np.mod(theta - start, 2 * np.pi) < span
        )
        level = np.where(on_arc, CALCIFICATION_DB, level)
        # Acoustic shadow: everything deeper than the arc in its columns loses most echo.
        arc_columns = on_arc.any(axis=0)
        shadow = (np.cumsum(on_arc, axis=0) > 0) & ~on_arc & arc_columns[None, :]
        shadow = ndimage.gaussian_filter(shadow.astype(float), sigma=(0.5, size / 200))
        level = level - 16.0 * shadow
    return level, mask


def render_frame(case: PhantomCase, size: int, frame_index: int) -> PhantomFrame:
    rng = np.random.default_rng(case.frame_seeds[frame_index])
    shift = (0.0, 0.0) if frame_index == 0 else tuple(rng.uniform(-0.04, 0.04, size=2))
    scale = 1.0 if frame_index == 0 else float(rng.uniform(0.95, 1.05))
    level, mask = reflectivity_db(case, size, shift, scale)
    machine = {
        "gain_db": float(rng.uniform(-5.0, 5.0)),
        "dynamic_range_db": float(rng.uniform(38.0, 50.0)),
        "attenuation_db": float(rng.uniform(5.0, 12.0)),
        "psf_axial": float(rng.uniform(0.8, 1.0) * size / 128),
        "psf_lateral": float(rng.uniform(1.4, 1.9) * size / 128),
    }
    depth = (np.arange(size)[:, None] + 0.5) / size
    level = level - machine["attenuation_db"] * depth
    amplitude = 10 ** (level / 20.0)
    sigma = (machine["psf_axial"], machine["psf_lateral"])
    power = np.zeros((size, size))
    for _ in range(LOOKS):
        real = ndimage.gaussian_filter(rng.normal(size=(size, size)) * amplitude, sigma)
        imag = ndimage.gaussian_filter(rng.normal(size=(size, size)) * amplitude, sigma)
        power += real**2 + imag**2
    envelope = np.sqrt(power / (2 * LOOKS * point_spread_energy(sigma)))
    decibels = 20 * np.log10(envelope + 1e-6) + machine["gain_db"]
    image = np.clip(0.55 + decibels / machine["dynamic_range_db"], 0, 1) * 255
    return PhantomFrame(image=image.round().astype(np.uint8), mask=mask, machine=machine)


def point_spread_energy(sigma: tuple[float, float]) -> float:
    """Sum of squared Gaussian weights, so the envelope's mean power equals the reflectivity."""
    impulse = np.zeros((31, 31))
    impulse[15, 15] = 1.0
    return float((ndimage.gaussian_filter(impulse, sigma) ** 2).sum())


def geometry_matches(case: PhantomCase, size: int) -> bool:
    """The drawn mask must show the attributes we record, and stay inside the frame."""
    for frame_index in range(len(case.frame_seeds)):
        rng = np.random.default_rng(case.frame_seeds[frame_index])
        shift = (0.0, 0.0) if frame_index == 0 else tuple(rng.uniform(-0.04, 0.04, size=2))
        scale = 1.0 if frame_index == 0 else float(rng.uniform(0.95, 1.05))
        mask = nodule_coordinates(case.geometry, size, shift, scale)[2] <= 1.0
        if (
            not mask.any()
            or mask[0].any()
            or mask[-1].any()
            or mask[:, 0].any()
            or mask[:, -1].any()
        ):
            return False
        geometry = measure_mask(mask)
        if geometry.shape != case.attributes.shape or geometry.size != case.attributes.size:
            return False
    return True


def generate_case(case_index: int, config: PhantomConfig) -> PhantomCase:
    """Deterministic per case (its own seed), so cases can be made in any order or in parallel."""
    rng = np.random.default_rng([config.seed, case_index])
    case = sample_case(case_index, config, rng)
    for _ in range(50):
        if geometry_matches(case, config.size):
            return case
        case.geometry = sample_geometry(case.attributes, case.fascia_depth, rng)
    raise RuntimeError(f"could not place a nodule for case {case_index} at size {config.size}")
