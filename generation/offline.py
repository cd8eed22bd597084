"""No hub at run time: every entry point calls `enforce_offline` before importing hub clients.

Caches live inside the run folder so a run never writes to (or reads from) the user's home cache
by accident, and two runs never share state.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARIABLES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def enforce_offline(run_dir: str | os.PathLike | None = None) -> None:
    """Set offline defaults (a user's explicit setting wins) and point caches into `run_dir`."""
    for name, value in OFFLINE_VARIABLES.items():
        os.environ.setdefault(name, value)
    if run_dir is not None:
        cache = Path(run_dir) / ".cache"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_HOME", str(cache / "huggingface"))
        os.environ.setdefault("HF_DATASETS_CACHE", str(cache / "datasets"))
        os.environ.setdefault("TORCH_HOME", str(cache / "torch"))
        os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
