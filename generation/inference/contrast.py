"""Contrast words for attribute guidance: the same nodule described with the opposite findings.

Plain classifier-free guidance pushes an image away from the empty prompt, so every word of the
prompt shares one push and the label word (which the data ties to its subtype's usual look) can
carry the image without the finding words. Guiding against the same prompt with the findings
flipped instead pushes along exactly what those words change. Only the findings inside the
nodule are flipped (composition, echogenicity, calcifications, halo); shape, size and margins
stay, since the FG mask draws the outline and both guidance passes see the same mask.
"""

from __future__ import annotations

from generation.inference.attributes import ATTRIBUTE_SPACE, prompt_text
from metadata.labelset import LabelSet

CONTRASTED = ("composition", "echogenicity", "calcifications", "halo")


def contrast_value(name: str, value: str, support: tuple[str, ...]) -> str | None:
    """The finding that reads most unlike `value`, among the words the data uses (`support`);
    None when the data offers no other word (the attribute is then kept as asked)."""
    others = [v for v in support if v != value]
    if not others:
        return None
    if name == "halo":
        return "no" if value == "yes" else "yes"
    if name == "calcifications":
        if value != "none":
            return "none" if "none" in others else None
        calcified = [v for v in ("macrocalcifications", "microcalcifications") if v in others]
        return calcified[0] if calcified else None
    # composition, echogenicity: ordinal scales, the farthest value along the scale.
    scale = ATTRIBUTE_SPACE[name]
    position = scale.index(value)
    return max(others, key=lambda v: (abs(scale.index(v) - position), scale.index(v)))


def contrast_values(values: dict[str, str], support: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """`values` with every contrasted finding flipped (where the data has another word)."""
    flipped = dict(values)
    for name in CONTRASTED:
        if name in values:
            other = contrast_value(name, values[name], support.get(name, ATTRIBUTE_SPACE[name]))
            if other is not None:
                flipped[name] = other
    return flipped


def contrast_text(
    label: str,
    values: dict[str, str],
    support: dict[str, tuple[str, ...]],
    labels: LabelSet | None = None,
) -> str:
    """`text_nd` of the same label with the findings flipped: the guidance's negative."""
    return prompt_text(label, contrast_values(values, support), labels)
