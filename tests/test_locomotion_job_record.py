"""results/locomotion.json merging: one row per env × dataset, never mixing models of two trainings."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffuser.locomotion_job import record_locomotion, run_locomotion_job, weights_fingerprint


def _report(training: dict, guides: dict) -> dict:
    return {"env": "hopper", "level": "medium", "dataset": "d", "dataset_average": {"score": 50.0},
            "reference_scores": {"min": 0.0, "max": 1.0}, "training": training, "seeds": [0],
            "git_commit": "abc", "command": "diffuser plan locomotion",
            "results": {g: {"score": s, "score_se": 1.0, "episodes": 10} for g, s in guides.items()}}


def _training(weights: str) -> dict:
    return {"diffusion": {"checkpoint": "runs/x", "weights": weights}, "value": {"weights": "vvv"}}


def test_record_keeps_other_guides_of_the_same_models_and_drops_those_of_other_models(tmp_path):
    path = tmp_path / "locomotion.json"
    record_locomotion(_report(_training("aaa"), {"value": 60.0, "none": 40.0}), path)
    record_locomotion(_report(_training("aaa"), {"value": 70.0}), path)
    row = json.loads(path.read_text())["rows"]["hopper-medium"]
    assert row["value"]["score"] == 70.0 and row["none"]["score"] == 40.0  # same models: merged

    record_locomotion(_report(_training("bbb"), {"cfg": 80.0}), path)
    row = json.loads(path.read_text())["rows"]["hopper-medium"]
    assert row["cfg"]["score"] == 80.0 and "value" not in row and "none" not in row  # new models: a fresh row


def test_record_keeps_the_value_fit_of_its_models(tmp_path):
    path = tmp_path / "locomotion.json"
    fit = {"held_out": True, "0": {"r2": 0.9, "mae": 3.0}}
    record_locomotion({**_report(_training("aaa"), {"value": 60.0}), "value_fit": fit}, path)
    record_locomotion({**_report(_training("aaa"), {"none": 40.0}), "value_fit": None}, path)  # --no-figures
    assert json.loads(path.read_text())["rows"]["hopper-medium"]["value_fit"] == fit  # same models: kept
    record_locomotion(_report(_training("bbb"), {"none": 40.0}), path)
    assert "value_fit" not in json.loads(path.read_text())["rows"]["hopper-medium"]  # other models: gone


def _save(path: Path, value: float, export_id: str = "x") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((2, 3), value)}, str(path / "model.safetensors"), metadata={"export_id": export_id})
    return path


def test_weights_fingerprint_follows_the_weights_not_the_export(tmp_path):
    first = weights_fingerprint(_save(tmp_path, 1.0, "first export"))
    assert weights_fingerprint(_save(tmp_path, 1.0, "second export")) == first and len(first) == 12
    assert weights_fingerprint(_save(tmp_path, 2.0, "second export")) != first
    _save(tmp_path / "run" / "checkpoint", 2.0)
    assert weights_fingerprint(tmp_path / "run") == weights_fingerprint(tmp_path)  # a run dir: its checkpoint/
    with pytest.raises(FileNotFoundError, match="safetensors"):
        weights_fingerprint(tmp_path / "run" / "nothing")


def test_an_ensembles_fingerprint_covers_every_member_in_order(tmp_path):
    a, b = _save(tmp_path / "a", 1.0), _save(tmp_path / "b", 2.0)
    assert weights_fingerprint([a]) == weights_fingerprint(a)
    assert len({weights_fingerprint(a), weights_fingerprint(b), weights_fingerprint([a, b]),
                weights_fingerprint([b, a])}) == 4


def test_pessimism_without_an_ensemble_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="needs an ensemble"):
        run_locomotion_job(checkpoint=str(tmp_path / "missing"), value=str(tmp_path / "v"), value_pessimism=1.0,
                           out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _cell(score: float, seeds: int = 3, scale: float = 0.1) -> dict:
    return {"score": score, "score_se": 1.0, "seeds": list(range(seeds)), "planner": {"scale": scale}}


def _table_script():
    spec = importlib.util.spec_from_file_location(
        "locomotion_table", Path(__file__).resolve().parents[1] / "scripts" / "locomotion_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


def test_targets_line_judges_the_best_three_seed_guide_against_data_or_expert():
    table = _table_script()
    row = {"dataset_average": {"score": 50.0}, "value": _cell(55.0), "cfg": _cell(99.0, seeds=1), "none": _cell(52.0)}
    line = table._target_line("hopper-medium", row)
    assert "55.0 ± 1.0 (value guidance)" in line and "**met**" in line and "yes (52.0)" in line  # 1-seed cfg ignored
    assert "missed" in table._target_line("hopper-medium-expert", row)  # 55 < 90: not within 10 % of the expert
    row["value"] = _cell(91.0, scale=0.0)
    line = table._target_line("walker2d-medium-expert-v1", row)
    assert "value ranking, scale 0" in line and "**met**" in line
    row["cfg"] = {**_cell(93.0), "planner": {"guide": "cfg", "select": "value"}}
    assert "93.0 ± 1.0 (classifier-free, ranked by value)" in table._target_line("walker2d-medium-expert-v1", row)
    row["cfg"]["planner"] = {"guide": "cfg", "select": "first", "candidates": 16, "average": 16, "avoid_falls": True}
    assert "(classifier-free, averaged over its 16 candidates, planned falls avoided)" in table._target_line(
        "walker2d-medium-expert-v1", row)
    row["cfg"]["planner"] = {"guide": "cfg", "select": "value", "candidates": 16, "average": 4}
    assert "(classifier-free, ranked by value, the best 4 averaged)" in table._target_line("walker2d-medium-expert-v1", row)
    assert "no guided cell" in table._target_line("x-medium", {"dataset_average": {"score": 1.0}, "cfg": _cell(5.0, 1)})


def test_planner_column_names_the_horizon_and_discount_only_where_not_the_defaults():
    table = _table_script()
    planner = {"sampler": "dpmpp", "sampler_steps": 3, "warm_level": 0.67, "scale": 0.1}
    row = {"training": {"diffusion": {}}, "value": {"planner": planner}, "none": {"planner": planner}}
    assert table._planner(row) == "DPM-Solver++ 3 warm 0.67, value scale 0.1"  # rows from before H and γ were stored
    row["training"]["diffusion"] = {"horizon": 32, "discount": 0.99}
    assert table._planner(row) == "DPM-Solver++ 3 warm 0.67, value scale 0.1"
    row["training"]["diffusion"] = {"horizon": 4, "discount": 0.999}
    assert table._planner(row) == "DPM-Solver++ 3 warm 0.67, H 4, γ 0.999, value scale 0.1"
    row["training"]["value"] = {"bootstrap_truncated": True}
    assert table._planner(row) == ("DPM-Solver++ 3 warm 0.67, H 4, γ 0.999, value returns continued past the cut, "
                                   "value scale 0.1")
    row["training"]["diffusion"]["bootstrap_truncated"] = True  # both models' targets: named together
    assert table._planner(row) == ("DPM-Solver++ 3 warm 0.67, H 4, γ 0.999, condition and value returns continued "
                                   "past the cut, value scale 0.1")
    # Value ranking is named on guides other than the value guide's own (which always ranks by value).
    row["value"]["planner"] = {**planner, "guide": "value", "select": "value"}
    row["cfg"] = {"planner": {**planner, "guide": "cfg", "select": "value"}}
    assert table._planner(row) == ("DPM-Solver++ 3 warm 0.67, H 4, γ 0.999, condition and value returns continued "
                                   "past the cut, classifier-free ranked by value, value scale 0.1")
    row["cfg"]["planner"]["select"] = "consensus"
    assert "classifier-free as its candidates' medoid" in table._planner(row)
