"""One run of a sweep: train a maze config (or load a checkpoint), evaluate it, write the records.

``diffuser job [overrides]`` composes ``configs/job.yaml`` (checked against :class:`JobConfig`) and runs
the maze job (``diffuser.maze_job.run_maze_job``: the same training, evaluation and records as
``diffuser plan maze``) into Hydra's run folder, adding ``result.json``: the job's config and overrides,
seed, git commit and scores, next to the per-episode records ``episodes_<protocol>.jsonl``.

``diffuser job -m seed=0,1,2 plan.model_weight=1,1.5`` sweeps with Hydra's multirun: one run folder per
combination under ``multirun/job/<time>/<n>``; ``hydra/launcher=local`` runs them in a local process
pool, ``hydra/launcher=slurm`` as SLURM jobs, ``sweep=maze`` / ``sweep=demo`` take the axes from
``configs/sweep/``. ``diffuser results aggregate multirun/job/<time>`` makes the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from diffuser.planning.maze import MazePlanConfig

__all__ = ["JobConfig", "RESULT_NAME", "register_job_configs", "run_job"]

RESULT_NAME = "result.json"


@dataclass
class JobTrainConfig:
    steps: Optional[int] = None  # training steps (default: the maze config's, configs/experiment/maze_<maze>.yaml)
    overrides: List[str] = field(default_factory=list)  # further overrides of the training config, e.g. ["model.dim=64"]


@dataclass
class JobEvalConfig:
    protocols: List[str] = field(default_factory=lambda: ["single", "multi"])  # "single" (Maze2D), "multi" (Multi2D)
    seeds: List[int] = field(default_factory=lambda: [1000, 1001, 1002])  # evaluation seeds, the same for every job
    episodes_per_seed: int = 20  # episodes per evaluation seed and protocol
    episode_steps: Optional[int] = None  # shorter episodes than the maze's standard (quick checks only)


@dataclass
class JobConfig:
    seed: int = 0  # the training seed (trainer.seed): the axis that aggregation averages over
    maze: str = "umaze"  # umaze | medium | large
    dataset: Optional[str] = None  # training data; default: the maze's generated dataset (made, under a lock, if absent)
    checkpoint: Optional[str] = None  # evaluate this export instead of training (seed is then only a label)
    train: JobTrainConfig = field(default_factory=JobTrainConfig)
    eval: JobEvalConfig = field(default_factory=JobEvalConfig)
    plan: MazePlanConfig = field(default_factory=MazePlanConfig)  # plan.model_weight: the guide-scale axis
    device: str = "auto"  # auto | cpu | cuda
    figures: bool = True  # plots of plans and executed paths in the run folder
    name: str = "job"  # a label; also names the run folders (runs/<name>, multirun/<name>)
    run_dir: str = "${hydra:runtime.output_dir}"  # where this run writes


def register_job_configs() -> None:
    """Register :class:`JobConfig` with Hydra's ConfigStore as ``job_schema`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="job_schema", node=JobConfig)


def _hydra_overrides() -> list[str]:
    """The overrides that made this run (``seed=1``, ``plan.model_weight=1.5``, ...), when Hydra runs it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):  # not inside a Hydra run
        return []


def run_job(cfg: Any) -> dict:
    """Run one job from its config (a :class:`JobConfig`, or the OmegaConf/dict Hydra hands over);
    returns the record written to ``<run_dir>/result.json``."""
    from diffuser.config import to_container
    from diffuser.maze_job import run_maze_job

    overrides_used = _hydra_overrides()  # read first: training composes its own config with Hydra
    plain = to_container(cfg)
    job = JobConfig(**{**plain, "train": JobTrainConfig(**plain["train"]), "eval": JobEvalConfig(**plain["eval"]),
                       "plan": MazePlanConfig(**plain["plan"])})  # the plan config validates itself here
    run_dir = Path(job.run_dir)
    if job.checkpoint is not None:
        if job.train.steps is not None or job.train.overrides:
            raise ValueError("train.steps / train.overrides were given together with checkpoint, which skips training")
        train_overrides: list[str] = []
    else:
        train_overrides = [f"trainer.seed={job.seed}"]
        if job.train.steps is not None:
            train_overrides.append(f"trainer.steps={job.train.steps}")
        train_overrides += list(job.train.overrides)

    report = run_maze_job(
        maze=job.maze, out_dir=run_dir, checkpoint=job.checkpoint, protocols=job.eval.protocols,
        seeds=job.eval.seeds, episodes_per_seed=job.eval.episodes_per_seed, plan_config=job.plan,
        device=job.device, overrides=train_overrides, dataset=job.dataset, episode_steps=job.eval.episode_steps,
        figures=job.figures,
    )
    result = {
        "kind": "maze_job",
        "config": plain,  # everything the run was given (aggregation groups runs by it)
        "overrides": overrides_used,
        "seed": job.seed,
        "maze": job.maze,
        "dataset": report["dataset"],
        "git_commit": report["git_commit"],
        "device": report["device"],
        "checkpoint": report["checkpoint"],
        "training": report["training"],
        "planner": report["planner"],
        "eval_seeds": report["seeds"],
        "reference_scores": report["reference_scores"],
        "scores": report["results"],  # per protocol: score mean ± se over episodes, success rate, ...
        "episodes": {protocol: f"episodes_{protocol}.jsonl" for protocol in report["results"]},
    }
    from diffuser.utils import atomic_path

    with atomic_path(run_dir / RESULT_NAME) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"job result: {run_dir / RESULT_NAME}")
    return result
