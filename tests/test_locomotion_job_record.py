"""results/locomotion.json merging: one row per env × dataset, never mixing models of two trainings."""

import json

import pytest

from diffuser.locomotion_job import record_locomotion, weights_fingerprint


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


def test_weights_fingerprint_changes_with_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"one")
    first = weights_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"two")
    assert weights_fingerprint(tmp_path) != first and len(first) == 12
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "model.safetensors").write_bytes(b"two")
    assert weights_fingerprint(tmp_path / "run") == weights_fingerprint(tmp_path)  # a run dir: its checkpoint/
    with pytest.raises(FileNotFoundError, match="safetensors"):
        weights_fingerprint(tmp_path / "run" / "nothing")
