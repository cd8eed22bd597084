"""The nodule segmenter now lives in the package: `generation.inference.control`.

Kept as a name for scripts that import it as a sibling module (`from fine_segmenter import
NoduleSegmenter`); nothing is defined here, so there is one segmenter to keep correct.
"""

from generation.inference.control import (
    ControlConfig,
    NoduleSegmenter,
    TinyUNet,
    as_grey_tensor,
    conv_block,
    iou,
    largest_component,
)

__all__ = [
    "ControlConfig",
    "NoduleSegmenter",
    "TinyUNet",
    "as_grey_tensor",
    "conv_block",
    "iou",
    "largest_component",
]
