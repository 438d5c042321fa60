"""The locomotion job: reward-seeking planning on a locomotion dataset, end to end.

``diffuser plan locomotion --env hopper --level medium``:

1. collects ``diffuser/mujoco/<env>/<level>-v0`` from the committed behaviour policies when absent;
2. trains the fast config (``configs/experiment/locomotion_fast.yaml``: a return-conditioned U-Net) and
   a value function for it (``configs/train_value.yaml``), unless ``--checkpoint`` / ``--value`` are given;
3. evaluates each guide (value guidance, classifier-free return guidance, unguided samples) in the real
   environment, receding horizon, over the evaluation seeds;
4. writes ``locomotion.json`` (config, seeds, git commit, scores, the dataset's own average return),
   per-episode JSONL records, a video of a rollout next to its plans and the value model's fit plot.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from diffuser.evaluation.locomotion import evaluate_locomotion, summarize_episodes, write_episodes
from diffuser.evaluation.training_runs import row_key
from diffuser.planning.locomotion import GUIDES, LocomotionPlanConfig, LocomotionPlanner
from diffuser.utils import atomic_path, git_commit, resolve_device

__all__ = ["ensure_locomotion_dataset", "train_locomotion", "dataset_average", "run_locomotion_job", "record_locomotion"]


def ensure_locomotion_dataset(env: str, level: str, steps: int | None = None, version: str = "v0",
                              policy_dir: str | None = None) -> str:
    """The local dataset id of ``env``/``level``/``version``, collected (with its prerequisites) when absent,
    from the policies in ``policy_dir`` (default: the version's own set, ``assets/policies`` for v0 and
    ``assets/policies_vN`` for vN)."""
    from diffuser.collect.locomotion import collect_locomotion, default_dataset_id, default_policy_dir
    from diffuser.data.minari_io import dataset_path
    from diffuser.maze_job import dataset_lock

    def present(level_: str) -> bool:
        return (dataset_path(default_dataset_id(env, level_, version)) / "data" / "metadata.json").exists()

    needed = ["medium", "expert", level] if level == "medium-expert" else [level]
    for level_ in needed:
        dataset_id = default_dataset_id(env, level_, version)
        if not present(level_):
            with dataset_lock(dataset_id):
                if not present(level_):
                    policy_dir = policy_dir if policy_dir is not None else default_policy_dir(version)
                    print(f"{dataset_id} is not here yet: collecting it from {policy_dir}")
                    if level_ == "medium-replay":  # None: the whole buffer, as `diffuser collect locomotion` takes it
                        kwargs = {"steps": steps}
                    else:  # medium-expert concatenates; medium and expert keep the collector's default size
                        kwargs = {} if level_ == "medium-expert" or steps is None else {"steps": steps}
                    collect_locomotion(env=env, level=level_, dataset_id=dataset_id, policy_dir=policy_dir, **kwargs)
    return default_dataset_id(env, level, version)


def train_locomotion(dataset_id: str, run_dir: Path, device, overrides: Sequence[str] = (),
                     value_overrides: Sequence[str] = ()) -> dict:
    """Train the fast config's diffusion model and its value function; returns both summaries."""
    from diffuser.demo import compose_train_config
    from diffuser.training.pipeline import train_diffusion, train_value

    t0 = time.time()
    cfg = compose_train_config(["experiment=locomotion_fast", f"data.dataset={dataset_id}",
                                f"run_dir={run_dir / 'diffusion'}", f"trainer.device={device}", *overrides])
    diffusion = train_diffusion(cfg)
    t1 = time.time()
    vcfg = compose_train_config([f"checkpoint={diffusion['checkpoint']}", f"run_dir={run_dir / 'value'}",
                                 f"trainer.device={device}", *value_overrides], config_name="train_value")
    value = train_value(vcfg)
    return {"diffusion": {"checkpoint": diffusion["checkpoint"], "steps": diffusion["step"],
                          "minutes": round((t1 - t0) / 60, 2), "parameters": diffusion["parameters"]},
            "value": {"checkpoint": value["checkpoint"], "steps": value["step"],
                      "minutes": round((time.time() - t1) / 60, 2), "parameters": value["parameters"]},
            "device": str(device)}


def dataset_average(dataset_id: str, refs: tuple[float, float], d4rl: tuple[float, float] | None) -> dict:
    """The behaviour policy's own score: the mean return of the dataset's episodes."""
    from diffuser.data.minari_io import load_episodes

    returns = np.array([float(ep.rewards.sum()) for ep in load_episodes(dataset_id)])
    out = {"episodes": int(returns.size), "return": float(returns.mean()),
           "score": float(100 * (returns.mean() - refs[0]) / (refs[1] - refs[0]))}
    if d4rl is not None:
        out["d4rl_score"] = float(100 * (returns.mean() - d4rl[0]) / (d4rl[1] - d4rl[0]))
    return out


def run_locomotion_job(env: str = "hopper", level: str = "medium", out_dir: str | Path | None = None,
                       checkpoint: str | None = None, value: str | Sequence[str] | None = None,
                       value_pessimism: float = 0.0, guides: Sequence[str] = GUIDES,
                       seeds: Sequence[int] = (0, 1, 2), episodes: int = 10, plan_config: LocomotionPlanConfig | None = None,
                       device: str = "auto", overrides: Sequence[str] = (), value_overrides: Sequence[str] = (),
                       record: str | Path | None = None, max_episode_steps: int | None = None,
                       dataset_steps: int | None = None, figures: bool = True, compile: bool = False,
                       dataset_version: str = "v0", policy_dir: str | None = None, inverse: str | None = None,
                       inverse_overrides: Sequence[str] = ()) -> dict:
    """Run the job (see the module docstring); returns the report written to ``<out_dir>/locomotion.json``.
    ``compile``: plan with ``torch.compile``'d networks (:func:`~diffuser.pretrained.compile_for_planning`).
    ``dataset_version`` / ``policy_dir``: the dataset set (``<level>-<version>``) and, when it must be
    collected, the behaviour policies it is collected from. ``value``: one value function, or several
    trained for ``checkpoint`` (other seeds), read as an ensemble with ``value_pessimism``. ``inverse``: the
    inverse-dynamics export a planner with ``inverse_weight`` > 0 reads actions from; without one the job fits
    one on the dataset (``inverse_overrides``: KEY=V of :class:`~diffuser.training.inverse_dynamics.InverseFitConfig`)."""
    from diffuser.collect.behaviour import env_id_for, env_name_for
    from diffuser.data.minari_io import dataset_info
    from diffuser.envs.registry import D4RL_REF_SCORES
    from diffuser.pretrained import compile_for_planning, load_model, load_values

    env_name, env_id = env_name_for(env), env_id_for(env)
    bad = [g for g in guides if g not in GUIDES]
    if bad:
        raise ValueError(f"unknown guide(s) {bad}; valid: {', '.join(GUIDES)}")
    values = [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value or ()]
    value = None if not values else values[0] if len(values) == 1 else values
    if value_pessimism and len(values) < 2:
        raise ValueError("--value-pessimism needs an ensemble: pass two or more --value paths, value functions "
                         "trained for --checkpoint with other trainer.seed")
    base = plan_config or LocomotionPlanConfig()
    if (inverse or inverse_overrides) and not base.inverse_weight:
        raise ValueError("an inverse-dynamics model or its fit settings were given, but --inverse-weight is 0, so "
                         "no action would come from it: set --inverse-weight (1: its actions alone)")
    if inverse and inverse_overrides:
        raise ValueError("inverse: fit settings were given together with --inverse, which skips the fit")
    if "value" in guides and checkpoint is not None and value is None:
        raise ValueError("--checkpoint without --value: value guidance needs the value function trained for it")
    suffix = "" if dataset_version == "v0" else f"-{dataset_version}"
    out = Path(out_dir or f"runs/locomotion/{env_name}-{level}{suffix}")
    commit = git_commit()
    device = resolve_device(device)
    command = "diffuser " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    dataset_id = ensure_locomotion_dataset(env_name, level, dataset_steps, dataset_version, policy_dir)
    info = dataset_info(dataset_id)
    if info.get("ref_min_score") is None or info.get("ref_max_score") is None:
        raise ValueError(f"{dataset_id} has no reference scores in its metadata: collect it with "
                         "`diffuser collect locomotion`, which stores them")
    refs = (float(info["ref_min_score"]), float(info["ref_max_score"]))
    d4rl = D4RL_REF_SCORES.get(env_name)

    if checkpoint is None:
        training = train_locomotion(dataset_id, out / "train", device, overrides, value_overrides)
        checkpoint, value = training["diffusion"]["checkpoint"], training["value"]["checkpoint"]
    elif overrides or value_overrides:
        raise ValueError("training overrides were given together with --checkpoint, which skips training")
    else:
        training = {"given": True}
    loaded_model = load_model(checkpoint, device, dataset=dataset_id)
    loaded_value = load_values(value, device, value_pessimism) if value else None
    if training.get("given"):  # the record of the given models, from their own configs
        for key, path, loaded in (("diffusion", checkpoint, loaded_model), ("value", value, loaded_value)):
            if loaded is not None:
                cfg = loaded.config
                training[key] = {"checkpoint": path if isinstance(path, list) else str(path), "steps": cfg.get("step"),
                                 "minutes": round(cfg.get("train_seconds", 0) / 60, 2)}
        if len(values) > 1:
            training["value"]["pessimism"] = value_pessimism
    loaded_inverse = None
    if base.inverse_weight:
        from diffuser.pretrained import load_inverse
        from diffuser.training.inverse_dynamics import InverseFitConfig, train_inverse_dynamics

        if inverse is None:  # fit on the planner's dataset, kept beside the run's other models
            fit = InverseFitConfig.from_overrides(inverse_overrides)
            training["inverse"] = train_inverse_dynamics(dataset_id, out / "train" / "inverse", fit, device)
            inverse = training["inverse"]["checkpoint"]
        loaded_inverse = load_inverse(inverse, device)
        cfg = loaded_inverse.config
        if "inverse" not in training:  # a given model: its record from its own config
            training["inverse"] = {"checkpoint": str(inverse), "config": cfg.get("fit"), **(cfg.get("report") or {})}
        training["inverse"]["dataset"] = cfg.get("dataset")
    for key, path in (("diffusion", checkpoint), ("value", value), ("inverse", inverse)):
        if key in training:
            training[key]["weights"] = weights_fingerprint(path)
    if compile:
        compile_for_planning(loaded_model, loaded_value)
    training["diffusion"]["horizon"] = loaded_model.model.horizon  # the plans' length, part of the recipe
    data = loaded_model.config.get("data", {})
    training["diffusion"]["discount"] = data.get("discount")  # returns' reach (value's too)
    # Whether the return targets (the condition's, the value function's) continued time-limited episodes past the cut.
    training["diffusion"]["bootstrap_truncated"] = bool(data.get("bootstrap_truncated"))
    if loaded_value is not None:
        training["value"]["bootstrap_truncated"] = bool(loaded_value.config.get("bootstrap_truncated"))

    results, figures_written = {}, []
    for guide in guides:
        config = replace(base, guide=guide)
        planner = LocomotionPlanner(loaded_model, loaded_value, config, device, loaded_inverse)
        records = []
        for seed in seeds:
            records += evaluate_locomotion(planner, env_id, episodes=episodes, eval_seed=seed, ref_scores=refs,
                                           d4rl_ref=d4rl, max_episode_steps=max_episode_steps,
                                           record=1 if figures and seed == seeds[0] else 0)
        write_episodes(records, out / f"episodes_{guide}.jsonl")
        results[guide] = {**summarize_episodes(records), "planner": planner.describe()}
        if config.avoid_falls:  # how often the planned-fall check overrode the plain choice
            results[guide]["fall_checks"] = dict(planner.fall_checks)
        if config.speed_limit is not None and config.speed_limit_by == "choice":  # and the planned-speed check
            results[guide]["speed_checks"] = dict(planner.speed_checks)
        print(f"{guide:>6}: score {results[guide]['score']:.1f} ± {results[guide]['score_se']:.1f} "
              f"(return {results[guide]['return']:.0f}, length {results[guide]['length']:.0f}, "
              f"{results[guide]['plan_seconds']:.0f} s planning)")
        trace = next((r.trace for r in records if r.trace), None)
        if figures and trace is not None:
            with atomic_path(out / f"trace_{guide}.json") as tmp:  # re-render with scripts/rollout_video.py
                tmp.write_text(json.dumps({"env_id": env_id, "horizon": planner.horizon, **trace}))
            figures_written += _rollout_figures(env_id, trace, out / f"rollout_{guide}.mp4", planner.horizon)
    fit = None  # held-out R² / MAE of the value function at a few noise levels, kept with the scores
    if figures and loaded_value is not None:
        from diffuser.viz.values import plot_value_fit

        fit_plot = plot_value_fit(loaded_value, out / "value_fit.png")
        figures_written.append(str(fit_plot))
        fit = json.loads(Path(fit_plot).with_suffix(".json").read_text())

    report = {"job": "locomotion", "env": env_name, "env_id": env_id, "level": level, "dataset": dataset_id,
              "dataset_version": dataset_version,
              "git_commit": commit, "device": str(device), "training": training, "seeds": [int(s) for s in seeds],
              "episodes_per_seed": episodes, "reference_scores": {"min": refs[0], "max": refs[1], "d4rl": d4rl},
              "dataset_average": dataset_average(dataset_id, refs, d4rl), "value_fit": fit, "results": results,
              "figures": figures_written, "command": command, "max_episode_steps": max_episode_steps,
              "compiled": compile}
    with atomic_path(out / "locomotion.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    behaviour = report["dataset_average"]
    print(f"behaviour policy (dataset average): score {behaviour['score']:.1f} (return {behaviour['return']:.0f})")
    print(f"results: {out / 'locomotion.json'}")
    if record:
        record_locomotion(report, record)
        print(f"recorded in {record}")
    return report


def _rollout_figures(env_id: str, trace: dict, path: Path, horizon: int, **kwargs) -> list[str]:
    """A video of the recorded episode beside the plans made along it (skipped without offscreen GL)."""
    try:
        from diffuser.viz.mujoco_video import plan_rollout_video

        return [str(plan_rollout_video(env_id, trace_segments(trace, horizon), path, **kwargs))]
    except Exception as err:  # rendering needs offscreen OpenGL (MUJOCO_GL=egl), absent on some machines
        print(f"no rollout video ({type(err).__name__}: {err})")
        return []


def trace_segments(trace: dict, horizon: int) -> list[dict]:
    """Each recorded plan with the executed states from the step it was made (for plan_rollout_video)."""
    obs, xs = np.asarray(trace["observations"]), np.asarray(trace["x"])
    segments = [{"plan": np.asarray(p["states"]), "executed": obs[p["step"]: p["step"] + horizon],
                 "x": xs[p["step"]: p["step"] + horizon]} for p in trace["plans"]]
    return [s for s in segments if len(s["executed"]) > 1]


def weights_fingerprint(checkpoint: str | Path | Sequence[str | Path]) -> str:
    """A short hash of a checkpoint's weights (of every member's, in order, for an ensemble): which
    models a result row was made with. It covers the tensors (names, dtypes, shapes, bytes) and not the
    file's metadata, whose export id is new on every save: the same weights exported twice are one model."""
    from diffuser.pretrained import export_dir

    digest = hashlib.sha256()
    for member in [checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint:
        path = export_dir(member)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}: pass an export or a run directory")
        for f in files:
            # safetensors layout: an 8-byte little-endian header size, a JSON header, then the tensor bytes.
            raw = f.read_bytes()
            size = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8: 8 + size])
            header.pop("__metadata__", None)
            digest.update(json.dumps(header, sort_keys=True).encode())
            digest.update(raw[8 + size:])
    return digest.hexdigest()[:12]


def _models_of(training: dict | None) -> tuple:
    training = training or {}
    return tuple(training.get(k, {}).get("weights") for k in ("diffusion", "value", "inverse"))


def record_locomotion(report: dict, path: str | Path) -> None:
    """Merge this run's rows into ``results/locomotion.json``: one row per env × dataset × guide."""
    path = Path(path)
    table = json.loads(path.read_text()) if path.exists() else {"description": (
        "Locomotion normalized scores x100 with the local datasets' reference scores (random and expert "
        "behaviour policy returns); written by `diffuser plan locomotion --record`."), "rows": {}}
    row = table["rows"].setdefault(row_key(report), {})
    if _models_of(row.get("training")) != _models_of(report["training"]):  # other models: old guides' rows go
        row.clear()
    row["dataset"], row["dataset_average"] = report["dataset"], report["dataset_average"]
    row["reference_scores"], row["training"] = report["reference_scores"], report["training"]
    if report.get("value_fit"):  # a run without figures keeps the fit measured on the same models before
        row["value_fit"] = report["value_fit"]
    for guide, r in report["results"].items():
        row[guide] = {k: r[k] for k in ("score", "score_se", "return", "return_se", "length", "fell", "episodes",
                                        "seed_scores", "planner", "plan_seconds") if k in r}
        row[guide].update({"seeds": report["seeds"], "git_commit": report["git_commit"], "command": report["command"]})
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2))
