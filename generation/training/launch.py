"""Several training processes on CPUs, launched the way users launch them.

`accelerate launch --cpu --num_processes N` runs its *simple* launcher, which starts one process
and leaves the fan-out to MPI: without an MPI hostfile a user silently trains on one process.
`relaunch_cpu_workers` notices that case (accelerate set MASTER_ADDR for N > 1 but no rank
variables exist) and re-executes the stage under torchrun with N CPU workers, which accelerate
then joins into one gloo group. `check_process_group` refuses the opposite mistake:
`--multi_gpu` without CUDA starts N processes that each think they are alone and write into one
folder.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

RELAUNCHED = "TIGER_CPU_RELAUNCHED"
RANK_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK")
PROCESS_FLAGS = ("--num_processes", "--num-processes")


class LaunchError(RuntimeError):
    """A launch that would not train the way it was asked to."""


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def single_process_cpu_launch(environ: dict[str, str]) -> bool:
    """accelerate's simple launcher with --cpu and N > 1, no MPI, not yet relaunched."""
    return (
        truthy(environ.get("ACCELERATE_USE_CPU"))
        and "MASTER_ADDR" in environ
        and not any(name in environ for name in RANK_VARIABLES + MPI_VARIABLES)
        and RELAUNCHED not in environ
    )


def requested_processes(command_line: list[str]) -> int | None:
    """N from an `accelerate launch ... --num_processes N ...` command line, if it says so."""
    for index, token in enumerate(command_line):
        for flag in PROCESS_FLAGS:
            if token == flag and index + 1 < len(command_line):
                return int(command_line[index + 1])
            if token.startswith(flag + "="):
                return int(token.split("=", 1)[1])
    return None


def parent_command_line() -> list[str]:
    import psutil

    try:
        return psutil.Process(os.getppid()).cmdline()
    except (psutil.Error, OSError):
        return []


def relaunch_cpu_workers(module: str, argv: list[str]) -> None:
    """Re-execute `python -m module argv` under torchrun with the N CPU workers asked for."""
    if not single_process_cpu_launch(dict(os.environ)):
        return
    count = requested_processes(parent_command_line())
    if count is None:
        raise LaunchError(
            "accelerate launch --cpu with several processes starts only one without MPI, and "
            "the process count could not be read; run "
            f"`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m {module} ...` instead"
        )
    if count <= 1:
        return
    env = dict(os.environ, ACCELERATE_USE_CPU="1", **{RELAUNCHED: "1"})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={count}",
        f"--master_addr={env['MASTER_ADDR']}",
        f"--master_port={env.get('MASTER_PORT', '29500')}",
        "-m",
        module,
        *argv,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(sys.executable, command, env)


def check_process_group(num_processes: int, cuda_available: bool) -> None:
    """Refuse N launched processes that did not form one group (each would train alone)."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and num_processes == 1:
        hint = (
            "--multi_gpu needs CUDA, and none is available here; on CPUs launch with "
            "`accelerate launch --cpu --num_processes N`"
            if not cuda_available
            else "check the launcher's settings"
        )
        raise LaunchError(
            f"{launched} processes were launched but each sees only itself, so each would "
            f"train alone and write into the same folder: {hint}"
        )


def is_main_process() -> bool:
    """Rank 0 (or no launcher): the one process that prints a stage's result."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def run_training_cli(
    module: str,
    parse: Callable[[list[str]], object],
    train: Callable[[object], object],
    done: str,
    argv: list[str] | None,
    config_errors: tuple[type[Exception], ...],
) -> int:
    """The body of a training stage's CLI: parse, fan out CPU workers when asked, train, and turn
    every expected failure (config, data, checkpoint, launch, memory, optimizer) into one
    `error: ...` line and exit code 2. Only rank 0 prints `done` (with {output})."""
    from generation.training.memory import MemoryPlanError
    from generation.training.optim import OptimizerUnavailable
    from generation.training.state import CheckpointStateError
    from metadata.records import MetadataError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arguments = sys.argv[1:] if argv is None else argv
    expected = (
        *config_errors,
        MetadataError,
        CheckpointStateError,
        LaunchError,
        MemoryPlanError,
        OptimizerUnavailable,
    )
    try:
        config = parse(arguments)
        relaunch_cpu_workers(module, arguments)
        output = train(config)
    except expected as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_main_process():
        print(done.format(output=output))
    return 0
