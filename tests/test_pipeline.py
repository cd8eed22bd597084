"""The whole pipeline at toy size, its stage cache, and its failure messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scripts.cli import main as tiger
from scripts.pipeline.checks import compare, run_checks
from scripts.pipeline.config import PipelineConfigError, load_config
from scripts.pipeline.runner import PipelineError, PipelineRunner
from scripts.pipeline.stages import (
    Layout,
    Stage,
    all_stages,
    augment_labels,
    classifier_stage,
    flags,
    generation_stage,
)


def dataset_folder(root) -> None:
    """Enough of a dataset folder for the config check (the data stage reads the rest)."""
    (root / "init_image").mkdir(parents=True, exist_ok=True)
    (root / "init_image" / "metadata.jsonl").write_text("")


def stage_runs(run_dir) -> dict[str, bool]:
    timings = json.loads((run_dir / "timings.json").read_text())
    return {s["stage"]: not s["skipped"] for s in timings["stages"]}


def test_toy_pipeline_runs_end_to_end_then_redoes_only_what_changed(tmp_path):
    run_dir = tmp_path / "run"
    assert tiger(["run", "--profile", "toy", "--run-dir", str(run_dir)]) == 0
    ran = stage_runs(run_dir)
    expected = {"data", "split", "train_only", "coarse", "fine", "generate-FTC", "clip"}
    expected |= {"filter-FTC", "external_test", "classifier-FTC"}
    assert set(ran) == expected and all(ran.values())

    manifest = run_dir / "generate" / "FTC" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 8 and {r["mode"] for r in rows} == {"diversify", "reference"}
    filtered = run_dir / "filter" / "FTC" / "filtered" / "manifest.jsonl"
    kept = [json.loads(line)["kept"] for line in filtered.read_text().splitlines()]
    assert 0 < sum(kept) < len(kept)
    results = json.loads((run_dir / "classifier" / "FTC" / "results.json").read_text())
    assert set(results["arms"]) == {"real", "classic_aug", "dup_real", "synthetic"} | {
        "synthetic_filtered"
    }
    assert set(results["external"]) == set(results["arms"])  # scored on the independent set
    assert results["setup"]["external_counts"]["1"] > 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "The same models on the independent test set" in report
    assert "What the generated FTC images carry (attribute agreement" in report
    needed_sections = ("## Dataset", "FG IoU", "## Filtering", "5 real + synthetic", "Memorization")
    for needed in (*needed_sections, "Domain CLIP: ", "## Synthetic-data quality"):
        assert needed in report
    quality = json.loads((run_dir / "filter" / "FTC" / "quality" / "quality.json").read_text())
    assert {"diversify", "reference"} <= set(quality["modes"])
    assert quality["real_vs_real"]["frechet"] > 0
    assert (run_dir / "report" / "report.html").is_file()
    assert (run_dir / "report" / "figures" / "samples_FTC.png").is_file()
    checks = run_checks(run_dir)  # what a cheaper profile's report is compared by
    for mode in ("diversify", "reference"):
        assert f"FTC/{mode}/fg_iou" in checks and f"FTC/{mode}/agreement/shape" in checks
    arms = {name.rsplit("/", 1)[1] for name in checks if name.startswith("FTC/auc_independent/")}
    assert arms == set(results["arms"])
    assert compare(checks, checks)["neither_inside_the_other"] == []

    assert tiger(["run", "--profile", "toy", "--run-dir", str(run_dir)]) == 0
    assert not any(stage_runs(run_dir).values())

    assert (
        tiger(
            ["run", "--profile", "toy", "--run-dir", str(run_dir), "--set", "classifier.seeds=[1]"]
        )
        == 0
    )
    ran = stage_runs(run_dir)
    assert [name for name, did in ran.items() if did] == ["classifier-FTC"]

    # Generated images in both classes: the other class's pool is made and filtered, the
    # subtype's own images are kept, and the classifier draws generated images of both classes.
    other = ["generation.other_class=true", "classifier.seeds=[1]"]
    with pytest.raises(PipelineConfigError, match=r"classifier\.train\.imbalance"):
        load_config("toy", overrides={"generation": {"other_class": True}})
    other.append("classifier.train.imbalance=weighted_sampler")
    assert tiger(["run", "--profile", "toy", "--run-dir", str(run_dir), "--set", *other]) == 0
    ran = stage_runs(run_dir)
    did = {name for name, done in ran.items() if done}
    assert did == {"generate-other-benign", "filter-other-benign", "classifier-FTC"}
    results = json.loads((run_dir / "classifier" / "FTC" / "results.json").read_text())
    pool = results["setup"]["pool_sizes"]["synthetic_filtered"]
    assert pool.get("0", 0) > 0 and pool.get("1", 0) > 0
    assert results["setup"]["config"]["train"]["synthetic_share"] == "matched"
    arm = run_dir / "classifier" / "FTC" / "synthetic_filtered" / "seed_1"
    composition = json.loads((arm / "composition.json").read_text())
    assert composition.get("synthetic_0", 0) > 0 and composition.get("synthetic_1", 0) > 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "generated images drawn equally often in both classes" in report


def test_failed_stage_names_itself_and_its_log_and_resumes_in_place(tmp_path):
    config = load_config("toy", overrides={"run_dir": str(tmp_path / "run")})
    runner = PipelineRunner(config, log=lambda _: None)
    out = tmp_path / "run" / "flaky"
    script = (
        "import pathlib,sys; p=pathlib.Path(sys.argv[1]); p.mkdir(exist_ok=True); "
        "n=len(list(p.iterdir())); (p/f'part{n}').write_text('x'); sys.exit(3 if n == 0 else 0)"
    )
    stage = Stage("flaky", out, [[sys.executable, "-c", script, str(out)]])
    with pytest.raises(PipelineError, match=r"stage flaky failed \(exit 3\).*flaky\.log"):
        runner.run_stage(stage)
    assert (out / "part0").is_file()
    outcome = runner.run_stage(stage)  # same key: re-runs in place, keeps what was written
    assert not outcome.skipped and (out / "part0").is_file() and (out / "part1").is_file()
    assert runner.run_stage(stage).skipped
    changed = Stage("flaky", out, stage.commands, config={"option": 2})
    with pytest.raises(PipelineError):  # new key: starts from an empty folder, so fails first
        runner.run_stage(changed)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["part0"]


def test_config_errors_name_the_file_and_option(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: quick\ncoarse_steps: 3\n")
    with pytest.raises(PipelineConfigError, match=r"bad\.yaml: unknown option\(s\) coarse_steps"):
        load_config(path=bad)
    bad.write_text("data:\n  source: /no/such/folder\n")
    with pytest.raises(PipelineConfigError, match=r"data\.source"):
        load_config(path=bad)
    assert tiger(["run", "--config", str(tmp_path / "missing.json")]) == 2


def test_other_class_pools_are_made_once_and_join_every_task():
    """Both rare subtypes share one benign pool; where the negative class is the generated one
    (DDTI's minority), the other class is the task's positive class."""
    sampler = {"train": {"imbalance": "weighted_sampler"}}
    overrides = {"generation": {"other_class": True}, "classifier": sampler}
    config = load_config("toy", overrides=overrides)
    tmp = Path("/nonexistent/run")
    layout = Layout(tmp)
    stages = all_stages(config, layout, ["FTC", "MTC"], {"FTC": "FTC", "MTC": "MTC"})
    names = [stage.name for stage in stages]
    assert names.count("generate-other-benign") == 1 and names.count("filter-other-benign") == 1
    for subtype in ("FTC", "MTC"):
        stage = next(s for s in stages if s.name == f"classifier-{subtype}")
        assert "filter-other-benign" in stage.inputs
        experiment = json.loads(next(iter(stage.files.values())))
        assert experiment["mix"]["classes"] == [0, 1]
        assert experiment["train"]["synthetic_share"] == "matched"
        filtered = experiment["mix"]["filtered_manifest"]
        assert filtered == [
            str(tmp / "filter" / subtype / "filtered" / "manifest.jsonl"),
            str(tmp / "filter" / "other-benign" / "filtered" / "manifest.jsonl"),
        ]
    ddti = all_stages(config, layout, ["malignant"], {"malignant": "benign"})
    assert "generate-other-malignant" in [stage.name for stage in ddti]
    plain = all_stages(load_config("toy"), layout, ["FTC"], {"FTC": "FTC"})
    experiment = json.loads(next(iter(plain[-1].files.values())))
    assert isinstance(experiment["mix"]["filtered_manifest"], str)  # one pool: as before
    assert "synthetic_share" not in experiment.get("train", {})


def test_stage_options_become_cli_flags():
    options = {"max_train_steps": 4, "use_lora": True, "lora_alpha": None, "scale": [1.0, 0.5]}
    assert flags(options) == [
        "--max_train_steps", "4", "--use_lora", "true", "--lora_alpha", "none",
        "--scale", "1.0", "0.5",
    ]  # fmt: skip


def test_profiles_target_the_rare_subtypes_and_own_data_every_task(tmp_path):
    """A dataset folder of one's own (DDTI's importer works the same) has its own tasks."""
    assert load_config("quick").subtypes == ["FTC", "MTC"]
    with pytest.raises(PipelineConfigError, match=r"metadata\.cli folders --root"):
        load_config("quick", overrides={"data": {"source": str(tmp_path)}})  # not imported yet
    dataset_folder(tmp_path)
    folder = {"data": {"source": str(tmp_path)}}
    assert load_config("quick", overrides=folder).subtypes == []
    assert load_config("quick", overrides={**folder, "subtypes": ["malignant"]}).subtypes == [
        "malignant"
    ]
    own = tmp_path / "own.yaml"
    own.write_text(f"data:\n  source: {tmp_path}\n")
    assert load_config(path=own).subtypes == []


def test_the_tasks_smaller_train_class_is_generated_and_added(tmp_path):
    """DDTI's minority is benign (63 vs 219 in train): synthetic benign images go to class 0."""

    def splits(benign: int, malignant: int) -> dict:
        rows = [("benign", "train")] * benign + [("malignant", "train")] * malignant
        rows += [("benign", "test")] * 50  # only train counts decide
        return {
            "assignments": {
                f"img{i}.png": {"label": label, "split": split, "synthetic": False}
                for i, (label, split) in enumerate(rows)
            }
        }

    assert augment_labels(splits(3, 9), ["malignant"], "minority") == {"malignant": "benign"}
    assert augment_labels(splits(9, 3), ["malignant"], "minority") == {"malignant": "malignant"}
    assert augment_labels(splits(3, 9), ["malignant"], "subtype") == {"malignant": "malignant"}
    dataset_folder(tmp_path)
    config = load_config("quick", overrides={"data": {"source": str(tmp_path)}})
    layout = Layout(tmp_path / "run")
    for label, classes in (("benign", [0]), ("malignant", [1])):
        stage = classifier_stage(config, layout, "malignant", label)
        assert stage.config["experiment"]["mix"]["classes"] == classes
        command = generation_stage(config, layout, "malignant", label).commands[0]
        assert command[command.index("--label") + 1] == label
    with pytest.raises(PipelineConfigError, match=r"generation\.augment"):
        load_config("quick", overrides={"generation": {"augment": "rarest"}})


def test_moso_scores_frames_at_the_size_the_profile_generates():
    """MoSo downsizing 128 px frames to 64 px halves its wrong-class bottom-k (benchmark)."""
    from generation.coarse.config import PROFILES as COARSE_PROFILES
    from generation.filtering.moso_params import MosoConfig

    for profile in ("quick", "long"):
        config = load_config(profile)
        coarse = COARSE_PROFILES[config.coarse["profile"]]
        generated = config.generation.options.get("resolution", coarse["resolution"])
        moso_size = config.moso.get("image-size", MosoConfig().image_size)
        assert moso_size == generated, profile


def test_monitor_reads_a_process_that_has_exited():
    """The RSS sampler races the children's exits: a vanished process counts 0, never raises."""
    import subprocess

    import psutil

    from scripts.pipeline.monitor import tree_rss

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(child.pid)
    assert tree_rss(process) >= 0
    child.wait()
    assert tree_rss(process) == 0


def test_cli_help_describes_commands_profiles_and_set(capsys):
    from scripts.cli import PROFILE_COSTS, build_parser
    from scripts.pipeline.config import PROFILES

    assert set(PROFILE_COSTS) == set(PROFILES)
    text = build_parser().format_help()
    assert "run every stage" in text and "rebuild the report" in text
    with pytest.raises(SystemExit):
        tiger(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    assert "--set generation.diversify=64" in run_help
    assert all(" ".join(cost.split()) in run_help for cost in PROFILE_COSTS.values())
