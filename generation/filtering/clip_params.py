"""CLIP training configuration: a small open_clip ViT that trains on the CPU in minutes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClipConfig:
    """Model shape (an open_clip model config, scaled down) and the training recipe."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    embed_dim: int = 128
    context_length: int = 32
    epochs: int = 30
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 20
    holdout_fraction: float = 0.2
    # keep the epoch with the best held-out retrieval AUC (validation cases); False: last epoch
    select_best: bool = True
    precision: str = "auto"  # auto | fp32 | amp_bf16 | amp_fp16
    seed: int = 0
    device: str = "auto"
    pretrained: str | None = None  # a local open_clip folder or checkpoint to fine-tune

    def model_cfg(self) -> dict:
        """The open_clip model config dict (same schema as open_clip/model_configs/*.json)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": 64,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }
