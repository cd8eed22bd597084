"""Wall time and peak memory of a stage run as a child process (its whole process tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class StageRun:
    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    returncode: int


def tree_rss(process: psutil.Process) -> int:
    """RSS of a process and its children; 0 for whatever exits while being read (the sampler
    races the children's exits)."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_monitored(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> StageRun:
    """Run `command`, teeing its output to `log_path`, sampling the tree's RSS every 0.2 s."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    peak = 0
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            text=True,
            bufsize=1,
        )
        process = psutil.Process(child.pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss(process))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert child.stdout is not None
        for line in child.stdout:
            log.write(line)
            if not line.startswith("\r"):
                sys.stdout.write("    " + line)
        # wait4 gives the child's own kernel-recorded peak RSS, which catches short-lived
        # peaks the 0.2 s sampler can miss; the sampler still covers grandchildren.
        _, status, usage = os.wait4(child.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        child.returncode = returncode
        stop.set()
        sampler.join()
        peak = max(peak, usage.ru_maxrss * 1024)
    gpu = gpu_peak_from_log(log_path)
    return StageRun(time.perf_counter() - started, peak / 2**20, gpu, returncode)


def gpu_peak_from_log(log_path: Path) -> float | None:
    """Stages print `peak_gpu_mb=<n>` when they ran on a GPU; the last one wins."""
    value = None
    for line in log_path.read_text(errors="replace").splitlines():
        if "peak_gpu_mb=" in line:
            try:
                value = float(line.rsplit("peak_gpu_mb=", 1)[1].split()[0])
            except ValueError:
                continue
    return value
