"""Sweeps and their tables: the statistics, aggregation of run folders (and its errors), the dataset
lock, and a 2x2 multirun of tiny jobs with the local (joblib) launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffuser.evaluation.aggregate import aggregate_runs, build_table, find_runs, load_run
from diffuser.evaluation.stats import bootstrap_ci, iqm, mean_se


# ------------------------------------------------------------------------------------------- stats
def test_iqm_and_standard_error_on_known_arrays():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # drops 1, 2 and 7, 8
    assert iqm([0, 0, 0, 0, 100, 100, 100, 1000]) == pytest.approx(50.0)  # the outlier does not count
    assert iqm([5, 1, 3]) == pytest.approx(3.0)  # fewer than 4 values: the mean
    assert iqm(np.arange(10)) == pytest.approx(4.5)  # n = 10: 2 dropped from each end, mean of 2..7
    assert iqm([1, 2, 3, 4, 1000]) == pytest.approx(3.0)  # n = 5: 1 dropped from each end (scipy's trim_mean)
    mean, se = mean_se([1, 2, 3, 4])
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert mean_se([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        iqm([])
    with pytest.raises(ValueError, match="NaN"):
        mean_se([1.0, float("nan")])


def test_bootstrap_ci_contains_the_iqm_and_is_deterministic_under_its_seed():
    x = np.random.default_rng(1).normal(50, 10, size=60)
    low, high = bootstrap_ci(x, "iqm", resamples=1000, seed=3)
    assert low < iqm(x) < high and high - low < 15
    assert bootstrap_ci(x, "iqm", resamples=1000, seed=3) == (low, high)
    assert bootstrap_ci(x, "iqm", resamples=1000, seed=4) != (low, high)
    narrow = bootstrap_ci(np.tile(x, 10), "iqm", resamples=1000, seed=3)
    assert narrow[1] - narrow[0] < high - low  # ten times the data: a narrower interval
    m_low, m_high = bootstrap_ci(x, "mean", resamples=1000, seed=3)
    assert m_low < x.mean() < m_high
    assert bootstrap_ci([4.0, 4.0, 4.0], resamples=50) == (4.0, 4.0)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(x, "median")


# ------------------------------------------------------------------------------------- aggregation
def _write_run(folder: Path, seed: int, weight: float, scores: dict[str, list[float]], maze: str = "umaze") -> Path:
    folder.mkdir(parents=True)
    config = {"seed": seed, "maze": maze, "plan": {"model_weight": weight, "num_candidates": 4},
              "eval": {"seeds": [1000]}, "run_dir": str(folder)}
    result = {"config": config, "seed": seed, "maze": maze, "git_commit": "abc",
              "scores": {p: {"episodes": len(s)} for p, s in scores.items()},
              "episodes": {p: f"episodes_{p}.jsonl" for p in scores}}
    (folder / "result.json").write_text(json.dumps(result))
    for protocol, values in scores.items():
        lines = [json.dumps({"protocol": protocol, "score": v, "success": v > 0}) for v in values]
        (folder / f"episodes_{protocol}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_runs_are_grouped_by_the_swept_keys_except_seed(tmp_path):
    _write_run(tmp_path / "sweep" / "0", 0, 1.0, {"single": [10, 20], "multi": [0, 100]})
    _write_run(tmp_path / "sweep" / "1", 1, 1.0, {"single": [30, 50], "multi": [100, 100]})
    _write_run(tmp_path / "sweep" / "2", 0, 2.0, {"single": [60, 60]})
    _write_run(tmp_path / "other" / "deep" / "3", 1, 2.0, {"single": [80, 100]})
    table = aggregate_runs([tmp_path / "sweep", tmp_path / "other"], out=tmp_path / "table", bootstrap=200)
    assert table["group_by"] == ["maze", "plan.model_weight", "protocol"]  # run_dir and seed differ too
    rows = {(r["group"]["plan.model_weight"], r["protocol"]): r for r in table["rows"]}
    assert set(rows) == {(1.0, "multi"), (1.0, "single"), (2.0, "single")}
    single = rows[(1.0, "single")]
    assert single["runs"] == 2 and single["episodes"] == 4 and single["seeds"] == [0, 1]
    assert single["score_mean"] == pytest.approx(27.5)  # per-seed means 15 and 40
    assert single["score_se"] == pytest.approx(12.5)
    assert single["iqm"] == pytest.approx(25.0) and single["success_rate"] == 1.0
    assert rows[(1.0, "multi")]["success_rate"] == 0.75
    for suffix in (".json", ".md", ".png"):
        assert (tmp_path / f"table{suffix}").stat().st_size > 0
    assert "27.5 ± 12.5" in (tmp_path / "table.md").read_text()
    merged = build_table([load_run(p) for p in find_runs([tmp_path])], group_by=["maze"], bootstrap=50)
    assert [(r["protocol"], r["runs"]) for r in merged["rows"]] == [("multi", 2), ("single", 4)]
    with pytest.raises(ValueError, match="unknown group key"):
        build_table([load_run(p) for p in find_runs([tmp_path])], group_by=["plan.guide"])


def test_aggregation_refuses_empty_folders_and_malformed_records(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs under"):
        aggregate_runs([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError):
        find_runs([tmp_path / "missing"])
    bad = _write_run(tmp_path / "bad", 0, 1.0, {"single": [1, 2]})
    (bad / "episodes_single.jsonl").write_text('{"score": 1}\n{"score": "high"}\n')
    with pytest.raises(ValueError, match=r"episodes_single.jsonl:2: .*finite number 'score'"):
        load_run(bad / "result.json")
    (bad / "episodes_single.jsonl").write_text('{"score": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"episodes_single.jsonl:2 is not valid JSON"):
        load_run(bad / "result.json")
    (bad / "episodes_single.jsonl").write_text('{"score": 1}\n')
    with pytest.raises(ValueError, match="holds 1 episodes but"):
        load_run(bad / "result.json")
    (bad / "result.json").write_text('{"seed": 0')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(bad / "result.json")
    (bad / "result.json").write_text('{"seed": 0}')
    with pytest.raises(ValueError, match="needs a 'config'"):
        load_run(bad / "result.json")


def test_dataset_lock_makes_a_second_process_wait_then_fail_clearly(tmp_path, monkeypatch):
    from diffuser.maze_job import dataset_lock

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with dataset_lock("diffuser/pointmaze/umaze-v2"):
        # flock locks belong to an open file: a second open in this process conflicts like another process.
        with pytest.raises(TimeoutError, match="another process generating diffuser/pointmaze/umaze-v2"):
            with dataset_lock("diffuser/pointmaze/umaze-v2", timeout_s=0.5):
                pass
    with dataset_lock("diffuser/pointmaze/umaze-v2", timeout_s=0.5):  # released: free again
        pass


# --------------------------------------------------------------------------------- a real multirun
def test_multirun_of_tiny_jobs_with_the_local_launcher_aggregates(tmp_path, monkeypatch):
    pytest.importorskip("gymnasium_robotics")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from diffuser.collect.pointmaze import collect_pointmaze_report

    datasets = tmp_path / "datasets"
    with monkeypatch.context() as patch:  # a tiny U-Maze dataset, where the jobs will look for it
        patch.setenv("MINARI_DATASETS_PATH", str(datasets))
        collect_pointmaze_report("umaze", steps=2000, reset_interval=1000, ref_episodes=2, progress=False)
    sweep = tmp_path / "multirun"
    env = {**os.environ, "MINARI_DATASETS_PATH": str(datasets), "DIFFUSER_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "diffuser.cli", "job", "-m", "seed=0,1", "plan.model_weight=1,1.5",
         "hydra/launcher=local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", "train.steps=2",
         'train.overrides=["model.dim=8","model.dim_mults=[1,2]","data.horizon=8","trainer.batch_size=8",'
         '"trainer.val_every=0"]',
         "eval.seeds=[1]", "eval.episodes_per_seed=2", "eval.episode_steps=10", "eval.protocols=[single]",
         "figures=false", "device=cpu", "plan.sampler=ddim", "plan.sampler_steps=2", "plan.num_candidates=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = sorted(sweep.rglob("result.json"))
    assert len(results) == 4
    record = json.loads(results[0].read_text())
    assert {"config", "seed", "git_commit", "scores", "overrides"} <= set(record)
    assert record["training"]["steps"] == 2 and "seed=0" in record["overrides"]
    assert len((results[0].parent / "episodes_single.jsonl").read_text().splitlines()) == 2

    from diffuser.cli import main

    main(["results", "aggregate", str(sweep), "--out", str(tmp_path / "table"), "--bootstrap", "100"])
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["runs"] == 4 and table["group_by"] == ["maze", "plan.model_weight", "protocol"]
    assert [(row["group"]["plan.model_weight"], row["runs"], row["episodes"], sorted(row["seeds"]))
            for row in table["rows"]] == [(1.0, 2, 4, [0, 1]), (1.5, 2, 4, [0, 1])]
    assert (tmp_path / "table.png").stat().st_size > 0
