"""Two ControlNet branches (foreground, background) on the frozen coarse UNet, and their fusion.

The FG branch reads `condition_FG` (nodule mask) with the encoded `text_nd`; the BG branch reads
`condition_BG` (tissue map) with the encoded `text_bg`. Both start as copies of the coarse UNet's
encoder (`ControlNetModel.from_unet`), so their zero convolutions make the fused model equal to
the coarse model at step 0. `ResidualFusion` adds the two branches' residuals level by level:
"sum" is diffusers' multi-ControlNet behaviour; "gate" learns a per-level, per-channel weight
`2 * sigmoid(g)` for each branch, zero-initialised so it starts exactly as the sum.

Saved layout (each part loads with diffusers' `from_pretrained`):

    FOLDER/controlnet_fg/   ControlNetModel
    FOLDER/controlnet_bg/   ControlNetModel
    FOLDER/fusion/          ResidualFusion
    FOLDER/fine_model.json  format version, prompt_background, coarse pipeline pointer
    FOLDER/coarse/          (pipeline folders only) the coarse Stable Diffusion folder
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from generation.models import halvings
from metadata.atomic import write_json

FUSION_MODES = ("sum", "gate")
BRANCHES = ("fg", "bg")
FG_FOLDER = "controlnet_fg"
BG_FOLDER = "controlnet_bg"
FUSION_FOLDER = "fusion"
MODEL_FILE = "fine_model.json"
FORMAT_VERSION = 1

Residuals = tuple[list[torch.Tensor], torch.Tensor]


class FineModelError(ValueError):
    """A fine-stage folder that is missing or incomplete; names the folder and the gap."""

    def __init__(self, folder: str | os.PathLike, problem: str):
        super().__init__(f"{folder}: {problem}")
        self.folder = str(folder)


class ResidualFusion(ModelMixin, ConfigMixin):
    """Fuse per-branch ControlNet residuals: plain sum, or a learned gate that starts as the sum."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        down_channels: tuple[int, ...] = (),
        mid_channels: int = 0,
        mode: str = "gate",
        num_branches: int = 2,
    ):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode {mode!r} must be one of {FUSION_MODES}")
        # One logit per branch and channel at every level; 0 -> weight 2*sigmoid(0) = 1 (sum).
        self.down_logits = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(num_branches, int(c))) for c in down_channels]
        )
        self.mid_logits = torch.nn.Parameter(torch.zeros(num_branches, int(mid_channels)))

    @property
    def is_gated(self) -> bool:
        return self.config.mode == "gate"

    def branch_weights(self, logits: torch.Tensor, branch: int) -> torch.Tensor:
        """[C] -> broadcastable [1, C, 1, 1] weight of one branch at one level."""
        return (2.0 * torch.sigmoid(logits[branch])).view(1, -1, 1, 1)

    def forward(
        self, branch_residuals: list[Residuals | None], nodule: torch.Tensor | None = None
    ) -> Residuals:
        """`branch_residuals[i]` is branch i's (down list, mid) or None when it is switched off;
        given the FG condition `nodule` ([B, C, H, W] in [0, 1]), the background branch is kept
        outside the nodule (`outside_nodule`)."""
        fused_down: list[torch.Tensor] | None = None
        fused_mid: torch.Tensor | None = None
        for branch, residuals in enumerate(branch_residuals):
            if residuals is None:
                continue
            down, mid = residuals
            if branch == BACKGROUND and nodule is not None:
                down, mid = outside_nodule(down, mid, nodule)
            if self.is_gated:
                down = [
                    r * self.branch_weights(g, branch).to(r.dtype)
                    for r, g in zip(down, self.down_logits, strict=True)
                ]
                mid = mid * self.branch_weights(self.mid_logits, branch).to(mid.dtype)
            if fused_down is None:
                fused_down, fused_mid = list(down), mid
            else:
                fused_down = [a + b for a, b in zip(fused_down, down, strict=True)]
                fused_mid = fused_mid + mid
        if fused_down is None:
            raise ValueError("no active ControlNet branch to fuse")
        return fused_down, fused_mid


BACKGROUND = 1  # the branch order: (FG, BG)


def outside_nodule(
    down: list[torch.Tensor], mid: torch.Tensor, nodule: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Background residuals weighted by the tissue share of each cell (1 - the nodule's area
    share at that level's grid): inside the nodule only the FG branch and the text act. The
    background map has the nodule filled in from its surroundings, so its branch pulls the
    nodule towards the tissue's brightness (an isoechoic nodule) wherever it acts."""
    share = nodule.float().mean(dim=1, keepdim=True).clamp(0, 1)

    def weigh(residual: torch.Tensor) -> torch.Tensor:
        covered = torch.nn.functional.adaptive_avg_pool2d(share, residual.shape[-2:])
        return residual * (1.0 - covered).to(residual.dtype)

    return [weigh(r) for r in down], weigh(mid)


def residual_channels(controlnet: ControlNetModel) -> tuple[list[int], int]:
    """Channels of every down residual and of the mid residual a ControlNet emits."""
    down = [int(block.out_channels) for block in controlnet.controlnet_down_blocks]
    return down, int(controlnet.controlnet_mid_block.out_channels)


def conditioning_channels_for(downsampling: int) -> tuple[int, ...]:
    """ControlNet's condition encoder must shrink images by the VAE's factor (8 for SD, 4 tiny).

    diffusers' default (16, 32, 96, 256) has three stride-2 convolutions (8x); the tiny default's
    4x autoencoder needs two.
    """
    widths = (16, 32, 96, 256, 256, 256)
    return widths[: halvings(downsampling) + 1]


@dataclass
class BranchInputs:
    """What one branch sees at one step: its text embeddings, condition image and scale."""

    hidden_states: torch.Tensor
    condition: torch.Tensor
    scale: float = 1.0


class DualControlNetModel(torch.nn.Module):
    """Foreground and background ControlNets plus their fusion: the fine stage's trained part."""

    def __init__(
        self, controlnet_fg: ControlNetModel, controlnet_bg: ControlNetModel, fusion: ResidualFusion
    ):
        super().__init__()
        self.controlnet_fg = controlnet_fg
        self.controlnet_bg = controlnet_bg
        self.fusion = fusion

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        downsampling: int = 8,
        fusion: str = "gate",
    ) -> DualControlNetModel:
        """Both branches copy the UNet's encoder weights; `downsampling` is the VAE's factor."""
        widths = conditioning_channels_for(downsampling)
        branches = [
            ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=widths, conditioning_channels=3
            )
            for _ in BRANCHES
        ]
        down, mid = residual_channels(branches[0])
        return cls(*branches, ResidualFusion(tuple(down), mid, mode=fusion))

    @property
    def branches(self) -> tuple[ControlNetModel, ControlNetModel]:
        return self.controlnet_fg, self.controlnet_bg

    @property
    def device(self) -> torch.device:
        return self.controlnet_fg.device

    @property
    def dtype(self) -> torch.dtype:
        return self.controlnet_fg.dtype

    @property
    def fusion_mode(self) -> str:
        return str(self.fusion.config.mode)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Branch weights, plus the gate logits when the fusion is gated."""
        params = list(self.controlnet_fg.parameters()) + list(self.controlnet_bg.parameters())
        if self.fusion.is_gated:
            params += list(self.fusion.parameters())
        return params

    def set_trainable(self) -> None:
        self.controlnet_fg.requires_grad_(True)
        self.controlnet_bg.requires_grad_(True)
        self.fusion.requires_grad_(self.fusion.is_gated)

    def branch_residuals(
        self,
        branch: int,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        hidden_states: torch.Tensor,
        condition: torch.Tensor,
        scale: float,
    ) -> Residuals:
        down, mid = self.branches[branch](
            sample,
            timestep,
            encoder_hidden_states=hidden_states,
            controlnet_cond=condition,
            conditioning_scale=scale,
            return_dict=False,
        )
        return list(down), mid

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        fg_hidden_states: torch.Tensor | None = None,
        fg_condition: torch.Tensor | None = None,
        bg_hidden_states: torch.Tensor | None = None,
        bg_condition: torch.Tensor | None = None,
        fg_scale: float = 1.0,
        bg_scale: float = 1.0,
        background_outside_nodule: bool = False,
    ) -> Residuals:
        """Fused (down residuals, mid residual) for the UNet; a branch without inputs is off.

        Every tensor is batch-first, so each sample keeps its own control. Plain tensor
        arguments (no containers) keep it wrappable by DistributedDataParallel.
        """
        inputs = (
            (fg_hidden_states, fg_condition, fg_scale),
            (bg_hidden_states, bg_condition, bg_scale),
        )
        residuals = [
            None
            if hidden is None or condition is None
            else self.branch_residuals(i, sample, timestep, hidden, condition, scale)
            for i, (hidden, condition, scale) in enumerate(inputs)
        ]
        return self.fusion(residuals, fg_condition if background_outside_nodule else None)

    # Persistence -------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, **info) -> Path:
        """Write both branches and the fusion (safetensors) plus fine_model.json (`info` merged)."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.controlnet_fg.save_pretrained(path / FG_FOLDER, safe_serialization=True)
        self.controlnet_bg.save_pretrained(path / BG_FOLDER, safe_serialization=True)
        self.fusion.save_pretrained(path / FUSION_FOLDER, safe_serialization=True)
        previous = read_model_info(path) if (path / MODEL_FILE).is_file() else {}
        previous.update(info)
        previous.update(format_version=FORMAT_VERSION, fusion=self.fusion_mode)
        write_json(path / MODEL_FILE, previous)
        return path

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None
    ) -> DualControlNetModel:
        """Load a folder written by `save_pretrained`, strictly from disk."""
        path = validate_fine_folder(folder)
        options: dict = {"local_files_only": True}
        if torch_dtype is not None:
            options["torch_dtype"] = torch_dtype
        try:
            fg = ControlNetModel.from_pretrained(path / FG_FOLDER, **options)
            bg = ControlNetModel.from_pretrained(path / BG_FOLDER, **options)
            fusion = ResidualFusion.from_pretrained(path / FUSION_FOLDER, **options)
        except (OSError, ValueError, KeyError) as error:
            raise FineModelError(path, f"could not load the branches: {error}") from error
        return cls(fg, bg, fusion)


def predict_noise(
    unet: UNet2DConditionModel,
    dual: DualControlNetModel,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    unet_hidden_states: torch.Tensor,
    fg: BranchInputs | None,
    bg: BranchInputs | None,
    background_outside_nodule: bool = False,
) -> torch.Tensor:
    """The UNet's prediction with the fused control residuals: used by training and inference
    (`background_outside_nodule`: a sampling option, see `outside_nodule`)."""
    if fg is None and bg is None:
        return unet(sample, timestep, unet_hidden_states, return_dict=False)[0]
    down, mid = dual(
        sample,
        timestep,
        fg_hidden_states=None if fg is None else fg.hidden_states,
        fg_condition=None if fg is None else fg.condition,
        bg_hidden_states=None if bg is None else bg.hidden_states,
        bg_condition=None if bg is None else bg.condition,
        fg_scale=1.0 if fg is None else fg.scale,
        bg_scale=1.0 if bg is None else bg.scale,
        background_outside_nodule=background_outside_nodule,
    )
    dtype = sample.dtype
    return unet(
        sample,
        timestep,
        unet_hidden_states,
        down_block_additional_residuals=[r.to(dtype) for r in down],
        mid_block_additional_residual=mid.to(dtype),
        return_dict=False,
    )[0]


def read_model_info(folder: str | os.PathLike) -> dict:
    file = Path(folder) / MODEL_FILE
    try:
        data = json.loads(file.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FineModelError(folder, f"cannot read {MODEL_FILE} ({error})") from None
    if not isinstance(data, dict):
        raise FineModelError(folder, f"{MODEL_FILE} must hold a JSON object")
    return data


def validate_fine_folder(folder: str | os.PathLike) -> Path:
    """Check a fine-stage folder before loading; raise FineModelError naming every gap."""
    path = Path(folder)
    if not path.is_dir():
        raise FineModelError(path, "no such folder (expected a fine-stage model folder)")
    problems = []
    for name in (FG_FOLDER, BG_FOLDER, FUSION_FOLDER):
        sub = path / name
        if not (sub / "config.json").is_file():
            problems.append(f"{name}/config.json missing")
        elif not any(p.suffix in (".safetensors", ".bin") for p in sub.iterdir()):
            problems.append(f"{name}/ has no weights")
    if not (path / MODEL_FILE).is_file():
        problems.append(f"{MODEL_FILE} missing")
    if problems:
        raise FineModelError(path, "incomplete fine-stage folder: " + "; ".join(problems))
    return path


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Copy a folder, hard-linking files where the filesystem allows (no extra disk for SD)."""

    def link(src: str, dst: str) -> str:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=False)
