"""An experiment's trainings in several processes at once (`ExperimentConfig.workers`).

On a CPU, small models train faster side by side with one thread each than one after another
with every thread (`benchmarks/classifier_workers.py`). Each training is independent and
resumes from its own checkpoint, so the workers only pre-train: the experiment then reads every
run as finished, in its own order, and scores it exactly as a one-process run would.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from classifier.config import ExperimentConfig
from classifier.evaluate import METRICS_FILE, PREDICTIONS_FILE
from classifier.layout import ImageItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """One arm and seed: its train set, augmentation policy and run folder."""

    arm: str
    seed: int
    items: tuple[ImageItem, ...]
    augmentation: str
    folder: Path


def is_finished(folder: Path) -> bool:
    """What `run_one` treats as done: metrics and predictions written."""
    return (folder / METRICS_FILE).is_file() and (folder / PREDICTIONS_FILE).is_file()


def worker_threads(workers: int) -> int:
    """The caller's torch threads shared out between the workers (at least one each)."""
    import torch

    return max(1, torch.get_num_threads() // workers)


# Set once per worker process by `_start_worker`: what every training of the experiment shares.
_shared: dict = {}


def _start_worker(
    config: ExperimentConfig,
    valid: list[ImageItem],
    test: list[ImageItem],
    external: list[ImageItem] | None,
    threads: int,
) -> None:
    import torch

    from classifier.data import ImageCache
    from generation.offline import enforce_offline

    torch.set_num_threads(threads)
    enforce_offline(config.run_dir)
    _shared.update(
        config=config,
        valid=valid,
        test=test,
        external=external,
        cache=ImageCache(config.data.image_size),
    )


def _train(training: Training) -> tuple[str, float]:
    from classifier.experiment import run_one

    started = time.perf_counter()
    run_one(
        _shared["config"],
        training.arm,
        training.seed,
        list(training.items),
        training.augmentation,
        _shared["valid"],
        _shared["test"],
        training.folder,
        _shared["cache"],
        _shared["external"],
    )
    return str(training.folder), time.perf_counter() - started


def train_in_parallel(
    config: ExperimentConfig,
    trainings: list[Training],
    valid: list[ImageItem],
    test: list[ImageItem],
    external: list[ImageItem] | None = None,
) -> list[Path]:
    """Every unfinished training, `config.workers` at a time; returns the folders trained.
    With one worker (or one training left) nothing runs here: the experiment trains in order.
    A failed training stops the rest and raises its error; what finished stays finished."""
    pending: dict[Path, Training] = {}
    for training in trainings:
        if not is_finished(training.folder):
            pending.setdefault(training.folder, training)
    workers = min(config.workers, len(pending))
    if workers <= 1:
        return []
    threads = worker_threads(workers)
    logger.info("%d trainings in %d processes, %d thread(s) each", len(pending), workers, threads)
    context = get_context("spawn")  # no fork of a process that already holds torch threads
    arguments = (config, valid, test, external, threads)
    done = []
    with ProcessPoolExecutor(workers, context, _start_worker, arguments) as pool:
        futures = [pool.submit(_train, training) for training in pending.values()]
        try:
            for future in as_completed(futures):
                folder, seconds = future.result()
                logger.info("trained %s in %.0f s", folder, seconds)
                done.append(Path(folder))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return done
