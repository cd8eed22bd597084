"""Clinical feature priors of the phantom's four classes.

The priors overlap on purpose (no single feature decides the class), following the usual
sonographic descriptions: papillary carcinoma is hypoechoic, more often taller-than-wide, with
irregular margins and microcalcifications; follicular is iso/hypoechoic, oval, smooth, with a
halo and larger; medullary is hypoechoic, solid, lobulated, with macrocalcifications.
"""

from __future__ import annotations

import numpy as np

PHANTOM_CLASSES = ("benign", "PTC", "FTC", "MTC")
PHANTOM_COMPOSITIONS = ("solid", "mixed", "cystic", "spongiform")
PHANTOM_ECHOGENICITIES = ("hypoechoic", "isoechoic", "hyperechoic")
PHANTOM_MARGINS = ("well-defined", "ill-defined", "lobulated", "spiculated")

# Default prevalence: follicular and medullary are rare (a few percent each).
DEFAULT_PREVALENCE = {"benign": 0.76, "PTC": 0.14, "FTC": 0.05, "MTC": 0.05}

CLASS_PRIORS: dict[str, dict[str, dict[str, float]]] = {
    "benign": {
        "composition": {"solid": 0.35, "mixed": 0.25, "cystic": 0.2, "spongiform": 0.2},
        "echogenicity": {"hypoechoic": 0.25, "isoechoic": 0.5, "hyperechoic": 0.25},
        "shape": {"wider-than-tall": 0.85, "taller-than-wide": 0.15},
        "margins": {"well-defined": 0.6, "ill-defined": 0.2, "lobulated": 0.15, "spiculated": 0.05},
        "calcifications": {"none": 0.75, "microcalcifications": 0.08, "macrocalcifications": 0.17},
        "halo": {"yes": 0.3, "no": 0.7},
        "size": {"small": 0.35, "medium": 0.4, "large": 0.25},
    },
    "PTC": {
        "composition": {"solid": 0.8, "mixed": 0.2, "cystic": 0.0, "spongiform": 0.0},
        "echogenicity": {"hypoechoic": 0.7, "isoechoic": 0.22, "hyperechoic": 0.08},
        "shape": {"wider-than-tall": 0.5, "taller-than-wide": 0.5},
        "margins": {"well-defined": 0.2, "ill-defined": 0.25, "lobulated": 0.2, "spiculated": 0.35},
        "calcifications": {"none": 0.25, "microcalcifications": 0.6, "macrocalcifications": 0.15},
        "halo": {"yes": 0.1, "no": 0.9},
        "size": {"small": 0.45, "medium": 0.4, "large": 0.15},
    },
    "FTC": {
        "composition": {"solid": 0.75, "mixed": 0.25, "cystic": 0.0, "spongiform": 0.0},
        "echogenicity": {"hypoechoic": 0.35, "isoechoic": 0.5, "hyperechoic": 0.15},
        "shape": {"wider-than-tall": 0.85, "taller-than-wide": 0.15},
        "margins": {"well-defined": 0.6, "ill-defined": 0.15, "lobulated": 0.2, "spiculated": 0.05},
        "calcifications": {"none": 0.75, "microcalcifications": 0.1, "macrocalcifications": 0.15},
        "halo": {"yes": 0.6, "no": 0.4},
        "size": {"small": 0.15, "medium": 0.35, "large": 0.5},
    },
    "MTC": {
        "composition": {"solid": 0.9, "mixed": 0.1, "cystic": 0.0, "spongiform": 0.0},
        "echogenicity": {"hypoechoic": 0.7, "isoechoic": 0.2, "hyperechoic": 0.1},
        "shape": {"wider-than-tall": 0.7, "taller-than-wide": 0.3},
        "margins": {"well-defined": 0.25, "ill-defined": 0.2, "lobulated": 0.45, "spiculated": 0.1},
        "calcifications": {"none": 0.3, "microcalcifications": 0.2, "macrocalcifications": 0.5},
        "halo": {"yes": 0.15, "no": 0.85},
        "size": {"small": 0.25, "medium": 0.45, "large": 0.3},
    },
}


def blended_priors(
    label: str, difficulty: float, prevalence: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Blend a class's priors toward the prevalence-weighted pool: 0 = textbook, 1 = no signal.

    Negative values extrapolate away from the pool (a caricature, clipped at zero), for
    calibration only."""
    if not -1.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [-1, 1], got {difficulty}")
    total = sum(prevalence.values())
    blended: dict[str, dict[str, float]] = {}
    for attribute, own in CLASS_PRIORS[label].items():
        pooled = {
            value: sum(
                prevalence[c] / total * CLASS_PRIORS[c][attribute][value] for c in prevalence
            )
            for value in own
        }
        mixed = {
            value: max(0.0, (1.0 - difficulty) * own[value] + difficulty * pooled[value])
            for value in own
        }
        norm = sum(mixed.values())
        blended[attribute] = {value: weight / norm for value, weight in mixed.items()}
    return blended


def sample_choice(rng: np.random.Generator, distribution: dict[str, float]) -> str:
    values = list(distribution)
    weights = np.array([distribution[v] for v in values], dtype=float)
    return values[int(rng.choice(len(values), p=weights / weights.sum()))]


def class_posterior(
    attributes: dict, difficulty: float, prevalence: dict[str, float]
) -> dict[str, float]:
    """P(class | a nodule's sampled attributes) under the phantom's own generative model.

    The best any detector of wrongly labelled phantom frames can do from the attributes alone
    (benchmarks/bench_moso_validation.py uses it as the ceiling for wrong-class images).
    `attributes` is a record's attribute dict; `halo` may be a bool. Echogenicity is not drawn
    for cystic nodules (always anechoic), so it carries no evidence there."""
    total = sum(prevalence.values())
    joint: dict[str, float] = {}
    for label, weight in prevalence.items():
        priors = blended_priors(label, difficulty, prevalence)
        likelihood = weight / total
        for attribute, distribution in priors.items():
            value = attributes.get(attribute)
            if isinstance(value, bool):
                value = "yes" if value else "no"
            if value is None or value not in distribution:
                continue  # unknown, or anechoic (not drawn from the priors)
            likelihood *= distribution[value]
        joint[label] = likelihood
    evidence = sum(joint.values())
    if evidence <= 0:
        raise ValueError(f"attributes {attributes} are impossible under every class")
    return {label: value / evidence for label, value in joint.items()}
