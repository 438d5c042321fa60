"""`diffuser results training-runs`: one planner's score across models trained apart."""

import json

import pytest

from diffuser.cli import main
from diffuser.evaluation.training_runs import summarize_training_runs

PLANNER = {"guide": "cfg", "cfg_weight": 3.0, "select": "value", "sampler": "dpmpp", "target_return_value": 1.0}


def _run(root, name, scores, weights, planner=PLANNER, steps=20000, fell=(), seeds=(0,)):
    """A folder as `diffuser plan locomotion --out` writes it: locomotion.json and episodes_cfg.jsonl."""
    run = root / name
    run.mkdir()
    report = {"env": "walker2d", "level": "medium-expert", "dataset_version": "v1", "dataset": "d/walker2d-me-v1",
              "seeds": list(seeds), "git_commit": "abc", "command": f"diffuser plan locomotion --out {run}",
              "training": {"diffusion": {"checkpoint": str(run / "none"), "weights": weights, "steps": steps,
                                         "horizon": 32, "discount": 0.999, "bootstrap_truncated": True},
                           "value": {"weights": "v" + weights, "steps": 3000, "bootstrap_truncated": False}},
              "results": {"cfg": {"score": sum(scores) / len(scores), "score_se": 1.0, "episodes": len(scores),
                                  "seed_scores": {"0": sum(scores) / len(scores)}, "planner": planner}}}
    (run / "locomotion.json").write_text(json.dumps(report))
    (run / "episodes_cfg.jsonl").write_text("".join(
        json.dumps({"score": s, "terminated": i in fell}) + "\n" for i, s in enumerate(scores)))
    return run


def test_the_spread_is_across_training_runs_not_episodes(tmp_path):
    runs = [_run(tmp_path, "a", [70.0, 90.0], "w1", fell=(0,)), _run(tmp_path, "b", [100.0, 100.0], "w2")]
    table = summarize_training_runs(runs, "cfg")
    s = table["summary"]
    assert s["training_runs"] == 2 and s["episodes"] == 4
    assert s["score"] == pytest.approx(90.0) and s["score_se"] == pytest.approx(10.0)  # runs' means 80 and 100
    assert s["fell"] == pytest.approx(0.25)
    assert table["key"] == "walker2d-medium-expert-v1" and table["planner"]["select"] == "value"
    assert [r["diffusion_weights"] for r in table["runs"]] == ["w1", "w2"]


def test_runs_of_other_planners_recipes_or_the_same_models_do_not_pool(tmp_path):
    a = _run(tmp_path, "a", [90.0], "w1")
    with pytest.raises(ValueError, match="planner"):
        summarize_training_runs([a, _run(tmp_path, "b", [90.0], "w2", planner={**PLANNER, "cfg_weight": 5.0})], "cfg")
    with pytest.raises(ValueError, match="training recipe"):
        summarize_training_runs([a, _run(tmp_path, "c", [90.0], "w3", steps=6000)], "cfg")
    with pytest.raises(ValueError, match="evaluation"):
        summarize_training_runs([a, _run(tmp_path, "g", [90.0], "w6", seeds=(1,))], "cfg")
    with pytest.raises(ValueError, match="different diffusion weights"):
        summarize_training_runs([a, _run(tmp_path, "d", [80.0], "w1")], "cfg")
    with pytest.raises(ValueError, match="two or more"):
        summarize_training_runs([a], "cfg")
    with pytest.raises(ValueError, match=r"no 'value' results \(it has \['cfg'\]\)"):
        summarize_training_runs([a, _run(tmp_path, "e", [90.0], "w4")], "value")
    # the target return's value is derived from the data, not chosen: it may differ
    summarize_training_runs([a, _run(tmp_path, "f", [90.0], "w5", planner={**PLANNER, "target_return_value": 2.0})],
                            "cfg")
    # a setting added later (cold candidates) is at its default in runs recorded before it existed
    summarize_training_runs([a, _run(tmp_path, "h", [90.0], "w7", planner={**PLANNER, "cold_candidates": 0})], "cfg")
    with pytest.raises(ValueError, match="planner"):
        summarize_training_runs([a, _run(tmp_path, "i", [90.0], "w8", planner={**PLANNER, "cold_candidates": 4})],
                                "cfg")


def test_cli_writes_the_table_with_its_command(tmp_path, capsys):
    runs = [_run(tmp_path, n, [s], "w" + n) for n, s in (("a", 88.0), ("b", 96.0), ("c", 92.0))]
    out = tmp_path / "out.json"
    main(["results", "training-runs", *map(str, runs), "--guide", "cfg", "--out", str(out)])
    table = json.loads(out.read_text())
    assert table["summary"]["score"] == pytest.approx(92.0) and table["command"].startswith("diffuser ")
    assert "across 3 training runs" in capsys.readouterr().out
    assert out.with_suffix(".png").stat().st_size > 0 and len(table["runs"][0]["episode_scores"]) == 1


def test_targets_are_judged_across_three_or_more_training_runs(tmp_path):
    from test_locomotion_job_record import _cell, _table_script

    table = _table_script()
    row = {"dataset_average": {"score": 50.0}, "cfg": {**_cell(87.0), "planner": {"select": "value"}}}
    assert "missed" in table._target_line("walker2d-medium-expert-v1", row)
    runs = [_run(tmp_path, n, [s], "w" + n) for n, s in (("a", 87.0), ("b", 96.0), ("c", 92.0))]
    three = summarize_training_runs(runs, "cfg")
    line = table._target_line("walker2d-medium-expert-v1", row, [three])
    assert "91.7 ± 2.6 (classifier-free, ranked by value, 3 runs)" in line and "**met**" in line
    two = summarize_training_runs(runs[1:], "cfg")  # two runs are shown but do not decide
    assert "missed" in table._target_line("walker2d-medium-expert-v1", row, [two])
    assert "**met**" in table._target_line("walker2d-medium-expert-v1", row, [two, three])  # 94 (2 runs) < 91.7
    unguided = {**three, "guide": "none", "summary": {**three["summary"], "score": 99.0}}
    assert "91.7" in table._target_line("walker2d-medium-expert-v1", row, [unguided, three])  # not a guide
    # the first three runs of a planner scored on four are superseded by the four, good or bad
    four = summarize_training_runs([*runs, _run(tmp_path, "d", [70.0], "wd")], "cfg")
    assert table._latest([three, four, unguided]) == [four, unguided]
    overlapping = summarize_training_runs(runs[:2] + [tmp_path / "d"], "cfg")  # shares runs but is no subset
    assert table._latest([three, overlapping]) == [three, overlapping]
    assert "missed" in table._target_line("walker2d-medium-expert-v1", row, table._latest([three, four]))
