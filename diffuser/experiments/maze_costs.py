"""Test-time cost experts in U-Maze: an obstacle on the usual route, and a preferred region.

Both compose the trained U-Maze planner (goal inpainting) with an analytic cost expert and no
retraining, and run real PointMaze episodes with the Multi2D protocol (a random start and goal per
episode) through :func:`diffuser.evaluation.maze.evaluate_protocol`:

- ``obstacle``: a disc placed on the inner side of the U's bend, where the trained plans cut the corner.
  Collisions are counted on the first plan and on the executed path (any state inside the disc), with
  and without the DiscAvoid expert, and on the episodes whose route must pass the bend (start and goal
  on opposite arms of the U);
- ``prefer``: a RegionPrefer box (the U's top arm); the weight trades the time spent in the region
  against success and steps to the goal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from diffuser.diffusion.correctors import make_corrector
from diffuser.diffusion.costs import DiscAvoid, RegionPrefer
from diffuser.evaluation.maze import evaluate_protocol
from diffuser.planning.maze import GOAL_RADIUS, MazePlanConfig, MazePlanner

# On the route between the arms: the disc covers x ∈ [0.5, 1.1] at y = 0 (the inner half of the right
# corridor, where plans cut the corner); a passage of 0.4 remains along the outer wall.
OBSTACLE = {"center": (0.8, 0.0), "radius": 0.3}
# The top arm of the U (its three cells, y ∈ [0.5, 1.5]).
PREFERRED = {"lo": (-1.5, 0.5), "hi": (1.5, 1.5)}


def _refs(checkpoint) -> tuple[float, float]:
    from diffuser.data.minari_io import dataset_info

    path = Path(checkpoint)
    cfg = json.loads(((path / "checkpoint") if (path / "checkpoint").is_dir() else path).joinpath("config.json").read_text())
    info = dataset_info(cfg["dataset"])
    return info["ref_min_score"], info["ref_max_score"]


def _subset(records, keep: np.ndarray) -> dict:
    recs = [r for r, k in zip(records, keep) if k]
    if not recs:
        return {"episodes": 0}
    return {"episodes": len(recs),
            "plan_collision_rate": float(np.mean([not r.plan_clear for r in recs])),
            "path_collision_rate": float(np.mean([not r.path_clear for r in recs])),
            "success_rate": float(np.mean([r.success for r in recs]))}


def _summary(res, crossing: np.ndarray | None = None, avoidable: np.ndarray | None = None) -> dict:
    s = res.summary
    out = {k: s[k] for k in ("score_mean", "score_se", "success_rate", "episodes", "steps_to_goal_median",
                              "plan_collision_rate", "path_collision_rate", "first_plan_feasible", "wall_seconds")}
    if crossing is not None:
        out["crossing"] = _subset(res.records, crossing)
    if avoidable is not None:
        out["avoidable"] = _subset(res.records, avoidable)
    return out


def run_obstacle(checkpoint: str | Path, *, weights: Sequence[float] = (0.0, 30.0), seeds=(1000, 1001, 1002),
                 episodes_per_seed: int = 20, num_candidates: int = 4, corrector: str | None = None,
                 corrector_steps: int = 1, corrector_step_size: float = 0.1, margin: float = 0.3,
                 figure: str | Path | None = "assets/compose_obstacle.png") -> dict:
    """Plans with the DiscAvoid expert at each weight (0: the plain planner), same episodes each."""
    refs = _refs(checkpoint)
    base = MazePlanner.from_checkpoint(checkpoint, "umaze", config=MazePlanConfig(num_candidates=num_candidates))
    normalizer, layout = base.planner.normalizer, base.planner.layout
    measure = DiscAvoid.from_world(OBSTACLE["center"], OBSTACLE["radius"], normalizer, layout, weight=0.0)
    rows, kept = {}, {}
    for w in weights:
        disc = DiscAvoid.from_world(OBSTACLE["center"], OBSTACLE["radius"], normalizer, layout, weight=w, margin=margin)
        variants = [("plain" if w == 0 else f"disc w={w:g}", None)]
        if corrector and w != 0:
            variants.append((f"disc w={w:g} + {corrector}",
                             make_corrector(corrector, corrector_steps, corrector_step_size, scale="sigma")))
        for name, corr in variants:
            planner = MazePlanner(base.planner, base.maze, base.stride, base.config,
                                  experts=[disc] if w != 0 else [], corrector=corr)
            res = evaluate_protocol(planner, "multi", refs, seeds=seeds, episodes_per_seed=episodes_per_seed,
                                    show_progress=False, obstacles=[measure])
            starts = np.array([r.start[:2] for r in res.records])
            goals = np.array([r.goal for r in res.records])
            crossing = np.sign(starts[:, 1]) != np.sign(goals[:, 1])  # opposite arms: the route passes the bend
            # Episodes whose start and goal region (goal radius) both lie outside the disc: a clean path exists.
            centre = np.asarray(OBSTACLE["center"])
            avoidable = ((np.linalg.norm(starts - centre, axis=-1) > OBSTACLE["radius"])
                         & (np.linalg.norm(goals - centre, axis=-1) > OBSTACLE["radius"] + GOAL_RADIUS))
            rows[name] = {"weight": w, "corrector": repr(corr), **_summary(res, crossing, avoidable)}
            kept[name] = res
            r = rows[name]
            a = r["avoidable"]
            print(f"{name:<28} success {100 * r['success_rate']:5.1f} %  plan in disc {100 * r['plan_collision_rate']:5.1f} %"
                  f"  path in disc {100 * r['path_collision_rate']:5.1f} %  | avoidable ({a['episodes']}): plan "
                  f"{100 * a.get('plan_collision_rate', 0):5.1f} %  path {100 * a.get('path_collision_rate', 0):5.1f} %"
                  f"  ({r['wall_seconds']:.0f} s)", flush=True)
    entry = {"config": {"checkpoint": str(checkpoint), "maze": "umaze", "protocol": "multi", "obstacle": OBSTACLE,
                        "margin": margin, "num_candidates": num_candidates, "planner": base.describe(),
                        "episodes_per_seed": episodes_per_seed},
             "seeds": list(seeds), "rows": rows, "reference_scores": list(refs),
             "command": f"diffuser compose maze obstacle --checkpoint {checkpoint}"}
    if figure:
        entry["figure"] = str(_plot_paths(base.maze, kept, Path(figure), disc=OBSTACLE))
    return entry


def run_prefer(checkpoint: str | Path, *, weights: Sequence[float] = (0.0, 3.0, 10.0, 30.0, 100.0),
               seeds=(1000, 1001, 1002), episodes_per_seed: int = 20, num_candidates: int = 4,
               figure: str | Path | None = "assets/compose_prefer.png") -> dict:
    """Goal inpainting plus RegionPrefer over ``weights``: success, steps to goal, time in the region."""
    refs = _refs(checkpoint)
    base = MazePlanner.from_checkpoint(checkpoint, "umaze", config=MazePlanConfig(num_candidates=num_candidates))
    normalizer, layout = base.planner.normalizer, base.planner.layout
    lo, hi = np.array(PREFERRED["lo"]), np.array(PREFERRED["hi"])

    def in_region(path, goal) -> dict:
        # Until the goal is first reached: afterwards the agent only holds the goal.
        near = np.linalg.norm(path[:, :2] - goal, axis=-1) <= GOAL_RADIUS
        until = int(near.argmax()) + 1 if near.any() else len(path)
        inside = ((path[:until, :2] >= lo) & (path[:until, :2] <= hi)).all(-1)
        return {"time_in_region": float(inside.mean())}

    rows, kept = {}, {}
    for w in weights:
        prefer = RegionPrefer.from_world(PREFERRED["lo"], PREFERRED["hi"], normalizer, layout, weight=w)
        planner = MazePlanner(base.planner, base.maze, base.stride, base.config, experts=[prefer] if w else [])
        t0 = time.time()
        res = evaluate_protocol(planner, "multi", refs, seeds=seeds, episodes_per_seed=episodes_per_seed,
                                show_progress=False, path_metrics=in_region)
        s = res.summary
        steps = [r.steps_to_goal for r in res.records if r.steps_to_goal is not None]
        name = f"w={w:g}"
        rows[name] = {"weight": w, "success_rate": s["success_rate"], "score_mean": s["score_mean"],
                      "score_se": s["score_se"], "steps_to_goal_mean": float(np.mean(steps)) if steps else None,
                      "steps_to_goal_median": s["steps_to_goal_median"],
                      "time_in_region": float(np.mean([r.extra["time_in_region"] for r in res.records])),
                      "episodes": s["episodes"], "wall_seconds": round(time.time() - t0, 1)}
        kept[name] = res
        r = rows[name]
        print(f"{name:<8} success {100 * r['success_rate']:5.1f} %  steps {r['steps_to_goal_mean']}  "
              f"in region {100 * r['time_in_region']:5.1f} %", flush=True)
    entry = {"config": {"checkpoint": str(checkpoint), "maze": "umaze", "protocol": "multi", "region": PREFERRED,
                        "num_candidates": num_candidates, "planner": base.describe(),
                        "episodes_per_seed": episodes_per_seed},
             "seeds": list(seeds), "rows": rows, "reference_scores": list(refs),
             "command": f"diffuser compose maze prefer --checkpoint {checkpoint}"}
    if figure:
        entry["figure"] = str(_plot_paths(base.maze, kept, Path(figure), box=PREFERRED))
        entry["tradeoff_figure"] = str(plot_tradeoff(rows, Path(figure).with_name("compose_prefer_tradeoff.png")))
    return entry


def plot_tradeoff(rows: dict, path: Path) -> Path:
    """Success, time in the region and steps to goal against the RegionPrefer weight."""
    from diffuser.viz.plans import _plt, _save

    plt = _plt()

    w = [r["weight"] for r in rows.values()]
    x = np.arange(len(w))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x, [100 * r["success_rate"] for r in rows.values()], "o-", label="success %")
    ax.plot(x, [100 * r["time_in_region"] for r in rows.values()], "s-", label="time in region % (until goal)")
    ax.set_xticks(x, [f"{v:g}" for v in w])
    ax.set_xlabel("RegionPrefer weight")
    ax.set_ylim(0, 105)
    ax2 = ax.twinx()
    ax2.plot(x, [r["steps_to_goal_mean"] or np.nan for r in rows.values()], "^--", color="tab:green",
             label="steps to goal (mean, successes)")
    ax2.set_ylabel("steps to goal")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def _plot_paths(maze, results: dict, path: Path, disc: dict | None = None, box: dict | None = None,
                episodes: int = 8) -> Path:
    from diffuser.viz.plans import _plt, _save

    plt = _plt()
    from matplotlib.patches import Circle, Rectangle

    from diffuser.viz.maze import draw_walls

    cols = min(4, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    x0, x1, y0, y1 = maze.bounds()
    for ax, (name, res) in zip(axes.flat, results.items()):
        draw_walls(maze)(ax)
        if disc:
            ax.add_patch(Circle(disc["center"], disc["radius"], color="orange", alpha=0.6))
        if box:
            (a, b), (c, d) = box["lo"], box["hi"]
            ax.add_patch(Rectangle((a, b), c - a, d - b, color="green", alpha=0.15))
        for k, (plan, executed) in enumerate(zip(res.plans[:episodes], res.paths[:episodes])):
            color = plt.cm.tab10(k % 10)
            ax.plot(plan[:, 0], plan[:, 1], "--", color=color, lw=0.8)
            ax.plot(executed[:, 0], executed[:, 1], "-", color=color, lw=1.2)
        ax.set_xlim(x0, x1), ax.set_ylim(y0, y1), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    fig.suptitle("plans (dashed) and executed paths (solid)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
