"""`python -m generation.fine.cli --train_data_dir DATA --coarse_model_path SD --output_dir RUN`.

Flags mirror `FineConfig` fields (see `--help`); `--config FILE.json` supplies defaults that flags
override; `--profile quick|long` applies a CPU profile for the tiny default.
"""

from __future__ import annotations

import sys

from generation.fine.config import PROFILES, FineConfig, FineConfigError
from generation.training import options
from generation.training.launch import run_training_cli


def build_parser():
    return options.config_parser(
        "python -m generation.fine.cli",
        "Fine stage: train FG/BG ControlNet branches on the frozen coarse model.",
        FineConfig,
        PROFILES,
    )


def config_from_args(argv: list[str] | None = None) -> FineConfig:
    return options.config_from_args(build_parser(), FineConfig, PROFILES, argv)


def main(argv: list[str] | None = None) -> int:
    def train(config):
        from generation.fine.train import train_fine  # after parsing: --help stays fast

        return train_fine(config)

    return run_training_cli(
        "generation.fine.cli",
        config_from_args,
        train,
        "fine-stage model saved to {output}",
        argv,
        (FineConfigError,),
    )


if __name__ == "__main__":
    sys.exit(main())
