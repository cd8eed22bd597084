"""Training state in safetensors + JSON only: nothing in a checkpoint can run code when resumed.

accelerate's `save_state` pickles the EMA (`custom_checkpoint_*.pkl`), the RNG states
(`random_states_*.pkl`) and the optimizer (`optimizer.bin`); loading those unpickles whatever a
checkpoint holds. Here every tensor goes to a safetensors file and every other value to JSON.
The RNG states are not needed: data order and noise are pure functions of (seed, step)
(`generation.training.randomness`), so a resumed run draws exactly what the first one would.

Only trainable parameters are saved (for LoRA: the adapters), since the frozen weights are
rebuilt identically from the pretrained folder or the seeded tiny model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

from metadata.atomic import atomic_open, write_json

MODEL_FILE = "model-{name}.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
EMA_TENSORS = "ema.safetensors"
STATE_JSON = "training_state.json"


class CheckpointStateError(ValueError):
    """A checkpoint folder that does not hold the state this run needs."""


@dataclass
class TrainingState:
    """What a resumed run restores: trained weights, optimizer, lr schedule, EMA, loss scaler."""

    models: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    lr_scheduler: object | None = None
    ema: object | None = None
    scaler: object | None = None
    extra: dict = field(default_factory=dict)


def host_tensor(value: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """The tensor as safetensors writes it, without a copy when it already lies in CPU memory
    (a copy of the SD UNet and its EMA would add 3.5 GB each to the peak at every checkpoint);
    GPU tensors come to the host, as they must. Storage already written once (bitsandbytes
    shares its quantisation maps between parameters) is cloned: safetensors refuses sharing."""
    tensor = value.detach().cpu().contiguous()
    pointer = tensor.untyped_storage().data_ptr()
    if pointer in seen:
        return tensor.clone()
    seen.add(pointer)
    return tensor


def saved_entries(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's trainable parameters and its buffers (e.g. batch-norm running statistics)."""
    entries = {name: p for name, p in module.named_parameters() if p.requires_grad}
    entries.update(dict(module.named_buffers()))
    return entries


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """A module's whole state_dict as one safetensors file, written atomically."""
    seen: set[int] = set()
    tensors = {k: host_tensor(v, seen) for k, v in module.state_dict().items()}
    with atomic_open(path, "wb") as handle:
        handle.write(save(tensors))


def load_weights(path: Path, module: torch.nn.Module) -> None:
    module.load_state_dict(load_file(str(path)))


def split_tensors(
    entries: dict, prefix: str, seen: set[int] | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """{key: tensor, value or nested dict} -> (tensors under 'prefix.key[.subkey]', the
    JSON-safe rest, nested the same way). bitsandbytes nests its quantisation state."""
    seen = set() if seen is None else seen
    tensors, plain = {}, {}
    for key, value in entries.items():
        if torch.is_tensor(value):
            tensors[f"{prefix}.{key}"] = host_tensor(value, seen)
        elif isinstance(value, dict):
            inner_tensors, inner_plain = split_tensors(value, f"{prefix}.{key}", seen)
            tensors.update(inner_tensors)
            plain[key] = inner_plain
        else:
            plain[key] = value
    return tensors, plain


def put_nested(target: dict, path: list[str], value: torch.Tensor) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def optimizer_to_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain_state = {}
    seen: set[int] = set()  # one file: storage shared across entries is written once
    for index, entry in state["state"].items():
        entry_tensors, plain = split_tensors(entry, str(index), seen)
        tensors.update(entry_tensors)
        plain_state[str(index)] = plain
    return tensors, {"state": plain_state, "param_groups": state["param_groups"]}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict, current: dict) -> dict:
    state: dict[int, dict] = {int(index): dict(plain) for index, plain in meta["state"].items()}
    for key, value in tensors.items():
        index, *path = key.split(".")
        put_nested(state.setdefault(int(index), {}), path, value)
    groups = []
    for saved, now in zip(meta["param_groups"], current["param_groups"]):
        # JSON turns tuples (betas) into lists; give each value the type the optimizer uses.
        groups.append(
            {k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in saved.items()}
        )
    if len(groups) != len(current["param_groups"]):
        raise CheckpointStateError(
            f"optimizer has {len(current['param_groups'])} parameter groups, checkpoint "
            f"{len(groups)}"
        )
    return {"state": state, "param_groups": groups}


def save_training_state(folder: Path, state: TrainingState) -> None:
    """Write the state into `folder` (the caller stages and renames it; main process only)."""
    for name, module in state.models.items():
        seen: set[int] = set()
        tensors = {key: host_tensor(value, seen) for key, value in saved_entries(module).items()}
        save_file(tensors, str(folder / MODEL_FILE.format(name=name)))
    optimizer_tensors, optimizer_meta = optimizer_to_files(state.optimizer.state_dict())
    save_file(optimizer_tensors, str(folder / OPTIMIZER_TENSORS))
    meta: dict = {"optimizer": optimizer_meta}
    if state.lr_scheduler is not None:
        meta["lr_scheduler"] = state.lr_scheduler.state_dict()
    if state.ema is not None:
        ema = state.ema.state_dict()
        shadow = {f"shadow.{i}": p for i, p in enumerate(ema.pop("shadow_params"))}
        save_file(split_tensors(shadow, "ema")[0], str(folder / EMA_TENSORS))
        meta["ema"] = ema
    if state.scaler is not None:
        meta["scaler"] = state.scaler.state_dict()
    meta.update(state.extra)
    write_json(folder / STATE_JSON, meta)


def load_training_state(folder: Path, state: TrainingState) -> dict:
    """Restore `state` in place from safetensors/JSON; returns the JSON part. Never unpickles."""
    meta_path = folder / STATE_JSON
    if not meta_path.is_file():
        raise CheckpointStateError(
            f"{folder}: no {STATE_JSON}; a checkpoint from an older Tiger (pickled accelerate "
            "state) is not loaded, since unpickling can run code. Restart from the last saved "
            "model instead."
        )
    meta = json.loads(meta_path.read_text("utf-8"))
    for name, module in state.models.items():
        path = folder / MODEL_FILE.format(name=name)
        if not path.is_file():
            raise CheckpointStateError(f"{path}: missing (this run trains {name!r})")
        entries = saved_entries(module)
        with safe_open(str(path), framework="pt") as saved:  # one tensor at a time in memory
            keys = set(saved.keys())
            if keys != set(entries):
                missing, extra = sorted(set(entries) - keys), sorted(keys - set(entries))
                raise CheckpointStateError(
                    f"{path}: trained tensors differ (missing {missing[:3]}, extra {extra[:3]})"
                )
            with torch.no_grad():
                for key in keys:
                    entries[key].copy_(saved.get_tensor(key))
    current = state.optimizer.state_dict()
    optimizer_state = optimizer_from_files(
        load_file(str(folder / OPTIMIZER_TENSORS)), meta["optimizer"], current
    )
    state.optimizer.load_state_dict(optimizer_state)
    if state.lr_scheduler is not None:
        state.lr_scheduler.load_state_dict(meta["lr_scheduler"])
    if state.ema is not None:
        if "ema" not in meta:
            raise CheckpointStateError(f"{folder}: this run uses EMA but the checkpoint has none")
        shadow = state.ema.shadow_params
        with safe_open(str(folder / EMA_TENSORS), framework="pt") as saved:
            if len(saved.keys()) != len(shadow):
                raise CheckpointStateError(
                    f"{folder}: EMA holds {len(saved.keys())} tensors, run {len(shadow)}"
                )
            with torch.no_grad():  # in place: EMAModel.load_state_dict deep-copies a new list
                for index, tensor in enumerate(shadow):
                    tensor.copy_(saved.get_tensor(f"ema.shadow.{index}"))
        state.ema.load_state_dict(meta["ema"])
    if state.scaler is not None and "scaler" in meta:
        state.scaler.load_state_dict(meta["scaler"])
    return meta
