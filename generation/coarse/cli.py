"""`python -m generation.coarse.cli --train_data_dir DATA --output_dir RUN [options]`.

Flags mirror `CoarseConfig` fields (see `--help`); `--config FILE.json` supplies defaults that
flags override; `--profile quick|long` applies a CPU profile for the tiny default.
"""

from __future__ import annotations

import sys

from generation.coarse.config import PROFILES, CoarseConfig, CoarseConfigError
from generation.training import options
from generation.training.launch import run_training_cli


def build_parser():
    return options.config_parser(
        "python -m generation.coarse.cli",
        "Coarse stage: fine-tune Stable Diffusion on ultrasound images + texts.",
        CoarseConfig,
        PROFILES,
    )


def config_from_args(argv: list[str] | None = None) -> CoarseConfig:
    return options.config_from_args(build_parser(), CoarseConfig, PROFILES, argv)


def main(argv: list[str] | None = None) -> int:
    def train(config):
        from generation.coarse.train import train_coarse  # after parsing: --help stays fast

        return train_coarse(config)

    return run_training_cli(
        "generation.coarse.cli",
        config_from_args,
        train,
        "pipeline saved to {output}",
        argv,
        (CoarseConfigError,),
    )


if __name__ == "__main__":
    sys.exit(main())
