"""Build, save and load the domain CLIP in open_clip's own formats (no hub, ever).

A saved folder holds `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) and
`open_clip_model.safetensors`, so `open_clip.create_model("local-dir:FOLDER")` loads it; it also
holds `tiger-clip.json` (the bare model config) for `open_clip.add_model_config` followed by
`open_clip.create_model("tiger-clip", pretrained=FOLDER/open_clip_model.safetensors)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import save_file

from metadata.atomic import staging_dir, write_json

MODEL_NAME = "tiger-clip"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def register_config(model_cfg: dict, folder: Path) -> str:
    """Write FOLDER/tiger-clip.json and register it with open_clip; returns the model name."""
    path = folder / f"{MODEL_NAME}.json"
    write_json(path, model_cfg)
    open_clip.add_model_config(path)
    return MODEL_NAME


def build_model(model_cfg: dict, workdir: Path, pretrained: str | None = None):
    """A fresh model from `model_cfg` (or fine-tune start from a local checkpoint/folder)."""
    if pretrained and Path(pretrained).is_dir():
        return load_model(pretrained)[0]
    name = register_config(model_cfg, workdir)
    return open_clip.create_model(name, pretrained=pretrained, load_weights=pretrained is not None)


def tokenizer_for(model) -> SimpleTokenizer:
    """open_clip's BPE tokenizer (ships with the package, so it works offline)."""
    return SimpleTokenizer(context_length=model.context_length)


def save_model(model, model_cfg: dict, folder: str | os.PathLike) -> Path:
    """Save in open_clip's local-dir layout; the folder is swapped in only when complete."""
    target = Path(folder)
    with staging_dir(target) as staging:
        preprocess = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        preprocess["size"] = model_cfg["vision_cfg"]["image_size"]
        write_json(staging / CONFIG_FILE, {"model_cfg": model_cfg, "preprocess_cfg": preprocess})
        write_json(staging / f"{MODEL_NAME}.json", model_cfg)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE))
    return target


def load_model(folder: str | os.PathLike, device: str = "cpu"):
    """(model, preprocess, tokenizer) from a saved folder, through open_clip's loader."""
    path = Path(folder)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: not an open_clip model folder (no {CONFIG_FILE})")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device=device)
    model.eval()
    return model, preprocess, tokenizer_for(model)


def read_model_cfg(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / CONFIG_FILE).read_text())["model_cfg"]
