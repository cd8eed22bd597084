"""No hub at run time: every entry point calls `enforce_offline` before loading anything.

Offline is enforced, not defaulted: the variables are set whatever the environment says (a
user's HF_HUB_OFFLINE=0 does not reopen the network), and huggingface_hub's flag, which it reads
once at import, is switched on too in case a hub client was imported first. Every
`from_pretrained` in the project also passes `local_files_only=True`.

Caches live inside the run folder so a run never writes to (or reads from) the user's home cache
by accident, and two runs never share state.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OFFLINE_VARIABLES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
# Modules that copy huggingface_hub's offline flag into a global of their own at import.
FLAG_HOLDERS = ("huggingface_hub.constants", "diffusers.utils.hub_utils")


def enforce_offline(run_dir: str | os.PathLike | None = None) -> None:
    """Switch every hub client offline and point caches into `run_dir`."""
    os.environ.update(OFFLINE_VARIABLES)
    import huggingface_hub.constants  # noqa: F401  (so its flag exists to be switched on)

    for name in FLAG_HOLDERS:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "HF_HUB_OFFLINE"):
            module.HF_HUB_OFFLINE = True
    if run_dir is not None:
        cache = Path(run_dir) / ".cache"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["HF_HOME"] = str(cache / "huggingface")
        os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
        os.environ["TORCH_HOME"] = str(cache / "torch")
        os.environ["MPLCONFIGDIR"] = str(cache / "matplotlib")
