"""Progress bar on the main process and scalar/image logs through accelerate's trackers."""

from __future__ import annotations

import time

import numpy as np
from accelerate import Accelerator
from tqdm.auto import tqdm


class Progress:
    """Loss, lr and throughput to tensorboard every step; a tqdm bar for humans."""

    def __init__(self, accelerator: Accelerator, total_steps: int, initial_step: int, label: str):
        self.accelerator = accelerator
        self.bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc=label,
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        self.last_time = time.perf_counter()
        self.step_seconds: list[float] = []

    def step(self, step: int, loss: float, lr: float, images: int) -> float:
        now = time.perf_counter()
        self.step_seconds.append(now - self.last_time)
        images_per_second = images / max(now - self.last_time, 1e-9)
        self.last_time = now
        logs = {"train/loss": loss, "train/lr": lr, "train/images_per_second": images_per_second}
        self.accelerator.log(logs, step=step)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ips=f"{images_per_second:.1f}")
        self.bar.update(1)
        return images_per_second

    def log_images(self, tag: str, grid: np.ndarray, step: int) -> None:
        """Write an HWC uint8 grid to every tensorboard tracker."""
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()

    def timing(self) -> dict:
        """Seconds per optimizer step of this process's run (median; TIMING_FILE)."""
        steps = self.step_seconds
        median = float(np.median(steps)) if steps else None
        return {"steps_timed": len(steps), "seconds_per_step": median}


TIMING_FILE = "train_timing.json"
