"""Kill-and-resume with two CPU processes, launched as users launch them.

`accelerate launch --cpu --num_processes 2 -m generation.{coarse,fine}.cli ...` is started, killed
(SIGKILL to the whole process group) shortly after each new checkpoint appears, and resumed with
`--resume_from_checkpoint latest`, ROUNDS times; then it runs to the end. A second run with the
same options and no kills is the reference. Every checkpoint of the killed run (trained weights,
optimizer, EMA) must equal the reference's checkpoint at the same step bit for bit, and so must
the final weights. Writes benchmarks/results/multiprocess_resume.json.

    python -m benchmarks.bench_multiprocess_resume [--rounds 10] [--steps 48]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from generation.models import SMOKE_TINY_OVERRIDES
from generation.training.checkpoint import list_checkpoints
from metadata.atomic import write_json

TINY = SMOKE_TINY_OVERRIDES
COMMON = [
    "--resolution", "32", "--train_batch_size", "2", "--learning_rate", "1e-3",
    "--lr_warmup_steps", "2", "--checkpointing_steps", "2", "--checkpoints_total_limit", "0",
    "--report_to", "none", "--cpu_threads", "1", "--all_cases", "true",
    "--resume_from_checkpoint", "latest",
]  # fmt: skip


def stage_flags(stage: str, work: Path, steps: int) -> list[str]:
    flags = ["--train_data_dir", str(work / "data"), "--max_train_steps", str(steps), *COMMON]
    if stage == "coarse":
        return [*flags, "--tiny_config_file", str(work / "tiny.json"),
                "--autoencoder_crop_size", "16", "--autoencoder_steps", "3",
                "--autoencoder_batch_size", "4", "--validation_prompts"]  # fmt: skip
    return [*flags, "--coarse_model_path", str(work / "coarse-reference"),
            "--num_validation_items", "0"]  # fmt: skip


def launch(stage: str, output: Path, flags: list[str], log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
        "-m", f"generation.{stage}.cli", "--output_dir", str(output), *flags,
    ]  # fmt: skip
    handle = open(log, "a", encoding="utf-8")  # noqa: SIM115 (closed by the OS at exit)
    return subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(folder.rglob("*.safetensors")):
        relative = path.relative_to(folder)
        if relative.parts[0] in ("cache", "autoencoder") or relative.parts[0].startswith("."):
            continue
        found.update({f"{relative}:{k}": v for k, v in load_file(str(path)).items()})
    return found


def differences(ours: Path, reference: Path) -> list[str]:
    a, b = tensors(ours), tensors(reference)
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))[:5]
    return [key for key in a if not torch.equal(a[key], b[key])][:5]


def killed_run(stage: str, work: Path, steps: int, rounds: int, seed: int) -> dict:
    output, log = work / f"{stage}-killed", work / f"{stage}-killed.log"
    rng = random.Random(seed)
    kills = []
    for round_index in range(rounds):
        before = len(list_checkpoints(output))
        process = launch(stage, output, stage_flags(stage, work, steps), log)
        while process.poll() is None and len(list_checkpoints(output)) == before:
            time.sleep(0.05)
        if process.poll() is not None:
            raise SystemExit(f"{stage} finished before round {round_index + 1}'s kill; more steps")
        time.sleep(rng.uniform(0.0, 0.6))  # kill anywhere: mid-step, mid-save, between
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kills.append(list_checkpoints(output)[-1].name)
    final = launch(stage, output, stage_flags(stage, work, steps), log)
    if final.wait() != 0:
        raise SystemExit(f"{stage}: the last resume failed; see {log}")
    return {"output": output, "latest_checkpoint_at_each_kill": kills}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/multiprocess_resume.json")
    args = parser.parse_args()
    results: dict = {"processes": 2, "launcher": "accelerate launch --cpu --num_processes 2"}
    with tempfile.TemporaryDirectory(prefix="tiger-mp-") as scratch:
        work = Path(scratch)
        subprocess.run(
            [sys.executable, "-m", "metadata.cli", "phantom", "--out", str(work / "data"),
             "--n-images", "24", "--size", "32", "--seed", "3"],
            check=True, capture_output=True,
        )  # fmt: skip
        (work / "tiny.json").write_text(json.dumps(TINY))
        for stage in ("coarse", "fine"):
            started = time.perf_counter()
            reference = work / f"{stage}-reference"
            run = launch(stage, reference, stage_flags(stage, work, args.steps), work / "ref.log")
            if run.wait() != 0:
                raise SystemExit(f"{stage} reference run failed: {(work / 'ref.log').read_text()}")
            killed = killed_run(stage, work, args.steps, args.rounds, args.seed)
            checkpoints = {}
            for checkpoint in list_checkpoints(killed["output"]):
                diff = differences(checkpoint, reference / checkpoint.name)
                checkpoints[checkpoint.name] = "exact" if not diff else f"differs: {diff}"
            final = differences(killed["output"], reference)
            run_file = json.loads((reference / f"tiger_{stage}.json").read_text())
            results[stage] = {
                "rounds": args.rounds,
                "steps": args.steps,
                "num_processes_seen_by_the_trainer": run_file["num_processes"],
                "latest_checkpoint_at_each_kill": killed["latest_checkpoint_at_each_kill"],
                "checkpoints": checkpoints,
                "every_checkpoint_exact": all(v == "exact" for v in checkpoints.values()),
                "final_weights_equal_uninterrupted": not final,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps({stage: results[stage]}, indent=1), flush=True)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
