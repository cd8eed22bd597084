"""`python -m generation.autoencoder.cli --data DATA --out VAE_DIR [--steps N ...]`.

Stage 0 on its own: fit the tiny default's AutoencoderKL on random crops of a dataset's images,
print full-frame PSNR and speckle-texture metrics (with a Gaussian-blur control) and save a
diffusers AutoencoderKL folder (usable as the coarse stage's `--pretrained_vae_path`).
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from generation.autoencoder.train import AutoencoderFitConfig, fit_and_save
from generation.coarse.data import load_coarse_dataset
from generation.models import TinyModelConfig, build_tiny_vae
from generation.offline import enforce_offline


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m generation.autoencoder.cli")
    parser.add_argument("--data", required=True, help="Tiger dataset ROOT")
    parser.add_argument("--out", required=True, help="output AutoencoderKL folder")
    parser.add_argument("--tiny_config_file", help="TinyModelConfig JSON (VAE sizes)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--cpu_threads", type=int, help="torch CPU threads (1 on a shared CPU)")
    defaults = AutoencoderFitConfig()
    for name in ("steps", "crop_size", "batch_size", "seed", "eval_images"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "gradient_weight", "texture_weight", "kl_weight"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    enforce_offline(args.out)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    tiny = TinyModelConfig(resolution=args.resolution)
    if args.tiny_config_file:
        with open(args.tiny_config_file, encoding="utf-8") as handle:
            tiny = TinyModelConfig.from_dict({"resolution": args.resolution, **json.load(handle)})
    dataset = load_coarse_dataset(args.data, args.resolution)
    images = dataset.load_pixels(list(range(len(dataset))))
    fit = AutoencoderFitConfig(
        **{name: getattr(args, name) for name in AutoencoderFitConfig.__dataclass_fields__}
    )
    torch.manual_seed(args.seed)
    _, metrics = fit_and_save(build_tiny_vae(tiny), images, fit, args.out)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
