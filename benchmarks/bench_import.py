"""Dataset import: the builder as it was (one process, the 5x5 median filter for the frame
border) against today's (a process pool, the median rule counted with a box filter), side by
side in one run on the same frames, alternating, with the two datasets checked identical.

DDTI (595 frames, 500x315) when ../shared/data/ddti is there; the phantom at 512 px otherwise.
Writes benchmarks/results/import_speed.json.

    python -m benchmarks.bench_import [--ddti ../shared/data/ddti] [--repeats 2]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy import ndimage

import metadata.background as background
from metadata.atomic import write_json
from metadata.builder import default_workers
from metadata.importers.ddti import import_ddti
from metadata.phantom import PhantomConfig
from metadata.records import read_metadata


def median_border_region(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The rule as first written: scipy's 5x5 rank filter for the black frame border."""
    grey = background.to_grey(image)
    radius = max(1, round(0.03 * grey.shape[0]))
    structure = ndimage.generate_binary_structure(2, 1)
    nodule = ndimage.binary_dilation(mask > 0, structure, iterations=radius)
    border = ndimage.median_filter(grey, size=5) < 8
    return ~nodule & ~border


@contextmanager
def baseline_rule():
    today = background.background_region
    background.background_region = median_border_region
    try:
        yield
    finally:
        background.background_region = today


def import_once(source: str, out: Path, workers: int, baseline: bool) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    if baseline:  # one process: the patched rule applies in this process only
        with baseline_rule():
            run_import(source, out, workers=1)
    else:
        run_import(source, out, workers=workers)
    return time.perf_counter() - started


def run_import(source: str, out: Path, workers: int) -> None:
    if source == "phantom":
        config = PhantomConfig(size=512, seed=0)
        from metadata.builder import build_dataset
        from metadata.importers.phantom import phantom_samples

        build_dataset(phantom_samples(200, config), out, workers=workers, progress=False)
    else:
        import_ddti(source, out, skip_bad=True, workers=workers)


def identical(a: Path, b: Path) -> bool:
    left = [r.to_json() for r in read_metadata(a)]
    if left != [r.to_json() for r in read_metadata(b)]:
        return False
    return all(
        filecmp.cmp(a / folder / row["file_name"], b / folder / row["file_name"], shallow=False)
        for row in left
        for folder in ("init_image", "condition_FG", "condition_BG")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ddti", default="../shared/data/ddti")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--work", type=Path, default=Path("runs/bench_import"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/import_speed.json"))
    args = parser.parse_args()
    source = args.ddti if Path(args.ddti, "label.txt").is_file() else "phantom"
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.repeats):  # alternating, so drift hits both alike
        times["before"].append(import_once(source, args.work / "before", 1, baseline=True))
        times["after"].append(import_once(source, args.work / "after", args.workers, False))
    frames = len(read_metadata(args.work / "after"))
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    result = {
        "source": source if source == "phantom" else "ddti",
        "frames": frames,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds": times,
        "median_before_s": round(before, 2),
        "median_after_s": round(after, 2),
        "speedup": round(before / after, 2),
        "identical_datasets": identical(args.work / "before", args.work / "after"),
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
