"""Stop on a non-finite loss before it reaches the weights, pointing at the last good checkpoint."""

from __future__ import annotations

import math
from pathlib import Path


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the weights were not updated with it."""


def check_finite_loss(loss: float, step: int, last_checkpoint: Path | None) -> None:
    if math.isfinite(loss):
        return
    where = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
    raise NonFiniteLossError(
        f"loss became {loss} at optimizer step {step}; stopped before the update ({where}). "
        "Lower the learning rate, disable fp16 or check the data; resume with "
        "--resume_from_checkpoint latest"
    )
