"""Run the stages in order, skipping each one whose output is complete and whose key is unchanged.

A stage's key hashes its config and commands (run folder written as `$RUN`, so a moved run
still matches) and the content hashes of its upstream stages' outputs. A stage killed half-way
re-runs in place with the same key (the training stages resume from their last checkpoint); a
stage whose key changed starts from an empty folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metadata.atomic import write_json, write_text
from metadata.cli import skip_report
from metadata.labelset import LabelSet
from scripts.pipeline.config import PipelineConfig
from scripts.pipeline.monitor import run_monitored
from scripts.pipeline.preflight import PreflightError, run_preflight
from scripts.pipeline.stage_cache import (
    StageRecord,
    is_complete,
    listing_fingerprint,
    mark_complete,
    output_hash,
    read_marker,
    stage_key,
)
from scripts.pipeline.stages import (
    Layout,
    Stage,
    all_stages,
    augment_labels,
    data_stages,
    negative_label,
)

STATE_DIR = ".pipeline"


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage, its exit code and its log."""


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    record: StageRecord


def relative_payload(stage: Stage, root: Path) -> dict:
    text = json.dumps({"config": stage.config, "commands": stage.commands, "files": stage.files})
    text = text.replace(str(root), "$RUN").replace(sys.executable, "python")
    return json.loads(text)


def child_env(root: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(root / ".cache" / "huggingface"),
        "PYTHONUNBUFFERED": "1",
    }


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class PipelineRunner:
    def __init__(self, config: PipelineConfig, log=print):
        self.config = config
        self.root = Path(config.run_dir).resolve()
        self.layout = Layout(self.root)
        self.state = self.root / STATE_DIR
        self.log = log
        self.outcomes: list[StageOutcome] = []
        self.known_stages: list[Stage] = []

    def key_of(self, stage: Stage) -> str:
        inputs = [f"{name}:{output_hash(self.output_of(name))}" for name in stage.inputs]
        inputs += [f"external:{listing_fingerprint(path)}" for path in stage.external]
        return stage_key(stage.name, relative_payload(stage, self.root), inputs)

    def output_of(self, name: str) -> Path:
        for outcome_stage in self.known_stages:
            if outcome_stage.name == name:
                return outcome_stage.output
        raise KeyError(name)

    def run_stage(self, stage: Stage) -> StageOutcome:
        key = self.key_of(stage)
        if is_complete(stage.output, key):
            record = read_marker(stage.output)
            assert record is not None
            self.log(f"[tiger] {stage.name}: up to date, skipped")
            return StageOutcome(stage.name, True, record)
        pending = self.state / f"{stage.name}.pending"
        same_attempt = pending.is_file() and pending.read_text() == key
        if stage.output.exists() and not (stage.resumable and same_attempt):
            shutil.rmtree(stage.output)
        write_text(pending, key)
        for path, text in stage.files.items():
            write_text(path, text)
        self.log(f"[tiger] {stage.name}: running ({len(stage.commands)} command(s))")
        seconds, peak_rss, peak_gpu = 0.0, 0.0, None
        log_path = self.root / "logs" / f"{stage.name}.log"
        for index, command in enumerate(stage.commands):
            part = log_path if len(stage.commands) == 1 else log_path.with_suffix(f".{index}.log")
            run = run_monitored(command, part, child_env(self.root))
            seconds += run.seconds
            peak_rss = max(peak_rss, run.peak_rss_mb)
            if run.peak_gpu_mb is not None:
                peak_gpu = max(peak_gpu or 0.0, run.peak_gpu_mb)
            if run.returncode != 0:
                raise PipelineError(
                    f"stage {stage.name} failed (exit {run.returncode}); full log: {part}\n"
                    f"{tail(part)}\nFix the cause and run the same command again: finished "
                    "stages are skipped and this one resumes."
                )
        record = mark_complete(stage.output, key, seconds, peak_rss, peak_gpu)
        pending.unlink(missing_ok=True)
        self.log(f"[tiger] {stage.name}: done in {seconds:.0f} s, peak RSS {peak_rss:.0f} MB")
        return StageOutcome(stage.name, False, record)

    def subtypes(self, splits: dict) -> list[str]:
        """The configured subtypes, else the label set's rare classes present, else every task."""
        tasks = splits["tasks"]
        if self.config.subtypes:
            missing = [s for s in self.config.subtypes if s not in tasks]
            if missing:
                raise PipelineError(
                    f"subtypes {missing} have no images in {self.layout.dataset} "
                    f"(its tasks: {tasks}); set `subtypes` in the config"
                )
            return list(self.config.subtypes)
        rare = [task for task in tasks if task in LabelSet.from_splits(splits).rare]
        return rare or list(tasks)

    def run(self) -> list[StageOutcome]:
        """Every stage, then the report; returns what ran and what was skipped."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / "pipeline_config.json", self.config.to_dict())
        started = time.perf_counter()
        self.known_stages = data_stages(self.config, self.layout)
        for stage in self.known_stages:
            self.outcomes.append(self.run_stage(stage))
        for line in skip_report(self.layout.dataset):
            self.log(f"[tiger] data: {line}")
        splits = json.loads(self.layout.splits.read_text())
        subtypes = self.subtypes(splits)
        try:
            preflight = run_preflight(
                self.config, self.layout, subtypes, self.config.preflight.tiny_lesions
            )
        except PreflightError as error:
            raise PipelineError(str(error)) from None
        for warning in preflight.warnings:
            self.log(f"[tiger] preflight: {warning}")
        self.log(f"[tiger] preflight: passed in {preflight.checks['seconds']} s")
        labels = augment_labels(splits, subtypes, self.config.generation.augment)
        self.known_stages = all_stages(
            self.config, self.layout, subtypes, labels, negative_label(splits)
        )
        done = {outcome.name for outcome in self.outcomes}
        for stage in self.known_stages:
            if stage.name not in done:
                self.outcomes.append(self.run_stage(stage))
        write_json(
            self.root / "timings.json",
            {
                "total_seconds": round(time.perf_counter() - started, 1),
                "stages": [
                    {"stage": o.name, "skipped": o.skipped, **o.record.__dict__}
                    for o in self.outcomes
                ],
            },
        )
        return self.outcomes
