"""Stage skipping: a finished stage is reused only while its inputs, config and output stand."""

import sys

from scripts.pipeline.monitor import run_monitored
from scripts.pipeline.stage_cache import is_complete, mark_complete, output_hash, stage_key


def test_key_changes_with_config_and_inputs():
    base = stage_key("coarse", {"steps": 10}, ["abc"])
    assert base == stage_key("coarse", {"steps": 10}, ["abc"])
    assert base != stage_key("coarse", {"steps": 11}, ["abc"])
    assert base != stage_key("coarse", {"steps": 10}, ["abd"])
    assert base != stage_key("fine", {"steps": 10}, ["abc"])


def test_complete_only_while_key_and_content_match(tmp_path):
    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    key = stage_key("s", {}, [])
    assert not is_complete(folder, key)
    mark_complete(folder, key, seconds=1.0, peak_rss_mb=10.0, peak_gpu_mb=None)
    first = output_hash(folder)
    assert is_complete(folder, key)
    assert not is_complete(folder, stage_key("s", {"x": 1}, []))
    (folder / "a.txt").write_text("two")
    assert not is_complete(folder, key)
    (folder / "a.txt").write_text("one")
    assert is_complete(folder, key)  # same content again, new mtime: hash recomputed, equal
    assert output_hash(folder) == first


def test_monitored_run_reports_time_memory_and_exit_code(tmp_path):
    code = "import numpy as np; a = np.ones(50_000_000); print('peak_gpu_mb=12.5'); print(a.sum())"
    run = run_monitored([sys.executable, "-c", code], tmp_path / "log.txt")
    assert run.returncode == 0
    assert run.peak_rss_mb > 300  # 400 MB array
    assert run.peak_gpu_mb == 12.5
    assert "50000000.0" in (tmp_path / "log.txt").read_text()
    failed = run_monitored([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log2.txt")
    assert failed.returncode == 3
