"""`python -m generation.coarse.cli --train_data_dir DATA --output_dir RUN [options]`.

Flags mirror `CoarseConfig` fields (see `--help`); `--config FILE.json` supplies defaults that
flags override; `--profile quick|long` applies a CPU profile for the tiny default.
"""

from __future__ import annotations

import logging
import sys

from generation.coarse.config import PROFILES, CoarseConfig, CoarseConfigError
from generation.training import options
from generation.training.launch import LaunchError, is_main_process, relaunch_cpu_workers
from generation.training.memory import MemoryPlanError
from generation.training.optim import OptimizerUnavailable
from generation.training.state import CheckpointStateError
from metadata.records import MetadataError


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arguments = sys.argv[1:] if argv is None else argv
    try:
        config = config_from_args(arguments)
        relaunch_cpu_workers("generation.coarse.cli", arguments)
        from generation.coarse.train import train_coarse

        output = train_coarse(config)
    except (
        CoarseConfigError,
        MetadataError,
        CheckpointStateError,
        LaunchError,
        MemoryPlanError,
        OptimizerUnavailable,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_main_process():
        print(f"pipeline saved to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
