"""torchvision ResNet18/34/50 with a one-logit head, optionally initialised from a local weights
file. Files are read without executing pickle code (safetensors, or torch.load weights_only)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

ARCHITECTURES = {
    "resnet18": tv_models.resnet18,
    "resnet34": tv_models.resnet34,
    "resnet50": tv_models.resnet50,
}
# Wrappers added by DDP, torch.compile, timm/lightning checkpoints around the torchvision names.
PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")


class WeightsError(ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any unpickling refusal: same report
            raise WeightsError(path, f"not a plain tensor state dict ({error})") from None
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(path, "expected a mapping of parameter names to tensors")
    return state


def canonical_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes; timm's ResNet uses torchvision's names otherwise (conv1, bn1,
    layerN.M.convK, downsample.{0,1}, fc), and its `head.fc` variant maps to `fc`."""
    renamed = {}
    for name, tensor in state.items():
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        name = name.replace("head.fc.", "fc.")
        renamed[name] = tensor
    return renamed


def build_model(arch: str = "resnet50", weights: str | Path = "") -> nn.Module:
    """ResNet with a single-logit head; backbone from `weights` when given (head re-initialised
    unless the file already holds a one-logit head)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (choose from {sorted(ARCHITECTURES)})")
    model = ARCHITECTURES[arch](weights=None)
    model.fc = nn.Linear(model.fc.in_features, 1)
    if weights:
        state = canonical_names(read_state_dict(weights))
        own = model.state_dict()
        state = {
            k: v for k, v in state.items() if not (k.startswith("fc.") and v.shape != own[k].shape)
        }
        missing = [k for k in own if k not in state and not k.startswith("fc.")]
        wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
        if missing or wrong:
            raise WeightsError(
                weights,
                f"does not fit {arch}: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(wrong)} wrong shape (e.g. {wrong[:3]})",
            )
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model


MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_pretrained(model: nn.Module, folder: str | Path, arch: str, extra: dict | None = None):
    """Folder with model.safetensors + config.json, written atomically (staging then swap)."""
    import json

    from safetensors.torch import save_file

    from metadata.atomic import staging_dir

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with staging_dir(folder) as staging:
        save_file(state, str(staging / MODEL_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps({"arch": arch, **(extra or {})}, indent=2))


def from_pretrained(folder: str | Path) -> tuple[nn.Module, dict]:
    """Load a folder written by `save_pretrained` (weights read safely)."""
    import json

    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise WeightsError(config_path, "missing (not a classifier model folder)")
    config = json.loads(config_path.read_text())
    return build_model(config["arch"], folder / MODEL_FILE), config
