"""Goal-conditioned maze planning: exact constraints, the tracker, reproducible evaluation, bad input, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

from diffuser.data.episodes import Episode  # noqa: E402
from diffuser.data.normalizers import TrajectoryNormalizer  # noqa: E402
from diffuser.data.windows import GoalDataset  # noqa: E402
from diffuser.diffusion.model import DiffusionConfig  # noqa: E402
from diffuser.envs.maze import MazeMap  # noqa: E402
from diffuser.envs.registry import make_pointmaze_env  # noqa: E402
from diffuser.envs.stepping import pointmaze_step_fn  # noqa: E402
from diffuser.evaluation.maze import evaluate_protocol  # noqa: E402
from diffuser.models.temporal_unet import UNetConfig  # noqa: E402
from diffuser.planning.controller import TrackingController, densify  # noqa: E402
from diffuser.planning.maze import MazePlanConfig, MazePlanner  # noqa: E402
from diffuser.planning.planner import Planner  # noqa: E402
from diffuser.pretrained import build_diffusion, export_state  # noqa: E402
from diffuser.training.checkpoint import save_export  # noqa: E402

UMAZE = MazeMap.preset("umaze")


def _maze_episodes(n=6, length=40, seed=0):
    """Straight-ish random walks inside the U-Maze's free cells: enough to fit a normalizer."""
    rng = np.random.default_rng(seed)
    free = UMAZE.cell_to_xy(np.array(UMAZE.free_cells()))
    eps = []
    for _ in range(n):
        a, b = free[rng.integers(len(free), size=2)]
        s = np.linspace(0, 1, length)[:, None]
        pos = a + (b - a) * s
        vel = np.gradient(pos, axis=0) / 0.01
        obs = np.concatenate([pos, vel], 1).astype(np.float32)
        act = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        eps.append(Episode(observations=obs, actions=act, rewards=np.zeros(length, np.float32),
                           terminations=np.zeros(length, bool), truncations=np.eye(1, length, length - 1, dtype=bool)[0]))
    return eps


def _tiny_planner(horizon=16, stride=2, **config):
    torch.manual_seed(0)
    eps = _maze_episodes()
    normalizer = TrajectoryNormalizer("limits").fit(eps)
    data = GoalDataset(eps, horizon, normalizer, padding="edge", rest_dims=[2, 3], stride=stride)
    model = build_diffusion(data.layout, horizon, UNetConfig(dim=8, dim_mults=(1, 2)),
                            DiffusionConfig(num_steps=5, prediction_type="x0", clip_denoised=True))
    return MazePlanner(Planner(model.eval(), normalizer), "umaze", stride, MazePlanConfig(**config)), model, normalizer


def test_densify_interpolates_between_planned_states():
    plan = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 2.0]])
    d = densify(plan, 2)
    assert np.allclose(d, [[0, 0], [0.5, 1.0], [1, 2], [2, 2], [3, 2]])
    assert densify(plan, 1) is plan


def test_plans_satisfy_start_and_goal_exactly():
    planner, _, _ = _tiny_planner(num_candidates=3)
    starts = np.array([[1.0, 1.0, 0.3, -0.2], [-1.0, -1.0, 0.0, 0.0]])
    goals = np.array([[-1.0, 1.0], [1.0, -1.0]])
    plans = planner.plan(starts, goals, seed=0)
    assert plans.states.shape == (2, 16, 4) and plans.dense.shape == (2, 31, 4)
    assert plans.candidates.shape == (2, 3, 16, 4)
    assert np.allclose(plans.states[:, 0], starts, atol=1e-5)
    assert np.allclose(plans.states[:, -1, :2], goals, atol=1e-5)
    assert np.allclose(plans.states[:, -1, 2:], 0.0, atol=1e-5)  # arrive at rest
    assert np.allclose(plans.candidates[:, :, 0], starts[:, None], atol=1e-5)


def test_selection_prefers_feasible_then_earliest_arrival():
    planner, _, _ = _tiny_planner()
    goal = np.array([[-1.0, 1.0]])  # free cell (1, 1)
    H = planner.horizon
    line = lambda a, b: np.linspace(a, b, H)  # noqa: E731
    late = np.concatenate([line([1, 1], [-1, 1]), np.zeros((H, 2))], 1)  # arrives at the end
    early = late.copy()
    early[H // 2:, :2] = [-1.0, 1.0]  # arrives halfway, then stays
    through_wall = early.copy()
    through_wall[2, :2] = [0.0, 0.0]  # the U's inner wall cell
    candidates = np.stack([late, through_wall, early])[None]
    best, arrival, feasible, _ = planner.select(candidates, goal)
    assert feasible.tolist() == [[True, False, True]]
    assert best.tolist() == [2]
    assert arrival[0, 2] < arrival[0, 0]


def test_controller_drives_the_point_mass_along_a_straight_plan():
    env = make_pointmaze_env("umaze", continuing_task=True, reset_target=False, max_episode_steps=1000)
    env.reset(seed=0, options={"reset_cell": (3, 1), "goal_cell": (1, 1)})
    u = env.unwrapped
    start = np.array([-1.0, -1.0])
    u.point_env.data.qpos[:] = start
    u.point_env.data.qvel[:] = 0.0
    step = pointmaze_step_fn(env)
    end = np.array([1.0, -1.0])  # along the bottom corridor of the U
    L = 100
    pos = start + (end - start) * np.linspace(0, 1, L)[:, None]
    vel = np.gradient(pos, axis=0) / u.point_env.dt
    plan = np.concatenate([pos, vel], 1)[None]
    ctl = TrackingController()
    state = np.array([[*start, 0.0, 0.0]])
    errors = []
    for t in range(L + 60):  # 60 steps past the plan's end: hold its last state
        a = ctl(state, ctl.targets(plan, np.array([t])))
        assert np.all(np.abs(a) <= 1.0)
        x, y, vx, vy, *_ = step(a[0])
        state[0] = (x, y, vx, vy)
        errors.append(np.linalg.norm(state[0, :2] - pos[min(t + 1, L - 1)]))
    assert max(errors[:L]) < 0.3
    assert np.linalg.norm(state[0, :2] - end) < 0.05 and np.linalg.norm(state[0, 2:]) < 0.1
    env.close()


def test_evaluation_is_reproducible_under_a_seed():
    planner, _, _ = _tiny_planner(num_candidates=2, replan_every=10)
    kw = dict(seeds=(7,), episodes_per_seed=2, episode_steps=25, show_progress=False)
    a = evaluate_protocol(planner, "multi", (0.0, 100.0), **kw)
    b = evaluate_protocol(planner, "multi", (0.0, 100.0), **kw)
    assert [r.__dict__ for r in a.records] == [r.__dict__ for r in b.records]
    assert a.summary["episodes"] == 2 and a.records[0].plans == 3  # at t = 0, 10 and 20
    assert a.records[0].seed == 70_000 and a.records[1].seed == 70_001
    single = evaluate_protocol(planner, "single", (0.0, 100.0), **kw)
    goal = UMAZE.cell_to_xy((1, 1))
    assert all(np.abs(np.array(r.goal) - goal).max() <= 0.25 + 1e-6 for r in single.records)


def test_bad_input_is_refused_before_sampling(tmp_path):
    planner, model, normalizer = _tiny_planner()
    start = np.array([1.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="inside a wall"):
        planner.plan(start, np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="outside the maze"):
        planner.plan(start, np.array([9.0, 0.0]))
    with pytest.raises(ValueError, match="4 dims"):
        planner.plan(np.array([1.0, 1.0]), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="horizon"):
        MazePlanner(planner.planner, "umaze", 2, MazePlanConfig(horizon=15))
    tensors, cfg = export_state(model, normalizer, UNetConfig(dim=8, dim_mults=(1, 2)), step=0,
                                dataset="diffuser/pointmaze/medium-v2", data={"stride": 2})
    save_export(tmp_path / "ckpt", tensors, cfg)
    with pytest.raises(ValueError, match="medium maze"):
        MazePlanner.from_checkpoint(tmp_path / "ckpt", "umaze")
    loaded = MazePlanner.from_checkpoint(tmp_path / "ckpt")  # the maze its dataset names
    assert loaded.maze.name == "medium" and loaded.stride == 2


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "diffuser.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_cli_maze_job_smoke(tmp_path):
    import os

    from diffuser.collect.pointmaze import collect_pointmaze_report

    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "datasets"), "DIFFUSER_PROGRESS": "0"}
    os.environ["MINARI_DATASETS_PATH"] = env["MINARI_DATASETS_PATH"]
    try:
        collect_pointmaze_report("umaze", steps=3000, reset_interval=1000, ref_episodes=2, progress=False)
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    out = tmp_path / "job"
    record = tmp_path / "maze2d.json"
    r = _cli("plan", "maze", "--out", str(out), "--seeds", "1", "--episodes", "2", "--candidates", "2",
             "--sampler", "ddim", "--sampler-steps", "3", "--record", str(record), "--device", "cpu",
             "trainer.steps=3", "model.dim=8", "model.dim_mults=[1,2]", "data.horizon=8", "trainer.batch_size=8",
             cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "maze.json").read_text())
    assert set(report["results"]) == {"single", "multi"}
    assert report["results"]["single"]["episodes"] == 2 and report["training"]["steps"] == 3
    assert (out / "plans_single.png").stat().st_size > 0 and (out / "chain_single.png").exists()
    lines = (out / "episodes_multi.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "steps_to_goal" in json.loads(lines[0])
    table = json.loads(record.read_text())
    assert table["mazes"]["umaze"]["multi"]["episodes"] == 2
    assert "score" in r.stdout and "plans_single.png" in r.stdout
    # A goal the job cannot use: an unknown maze is an error that names the valid ones.
    r = _cli("plan", "maze", "--maze", "huge", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = _cli("plan", "maze", "--train", "--checkpoint", str(out / "train"), cwd=tmp_path, env=env)
    assert r.returncode == 2 and "exclude each other" in r.stderr


def test_shift_advances_plans_and_holds_their_end():
    planner, _, _ = _tiny_planner(horizon=8, stride=2)
    traj = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8, 1).expand(2, 8, 3).contiguous()
    shifted = planner.shift(traj, np.array([4, 15]))  # 2 and 7 planned steps
    assert shifted[0, :, 0].tolist() == [2, 3, 4, 5, 6, 7, 7, 7]
    assert shifted[1, :, 0].tolist() == [15] * 8
    half = planner.shift(traj, np.array([1, 0]))  # half a planned step
    assert half[0, :, 0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7]
    assert torch.equal(half[1], traj[1])


def test_warm_started_replans_run_through_the_evaluation():
    planner, _, _ = _tiny_planner(num_candidates=2, replan_every=5, warm_level=0.4, sampler="ddim", sampler_steps=5)
    res = evaluate_protocol(planner, "multi", (0.0, 100.0), seeds=(3,), episodes_per_seed=2, episode_steps=12,
                            show_progress=False)
    assert res.records[0].plans == 3 and res.summary["episodes"] == 2


def test_replanning_at_every_step_can_continue_after_the_goal():
    planner, _, _ = _tiny_planner(num_candidates=1, replan_every=1, replan_at_goal=True, sampler="ddim",
                                  sampler_steps=2)
    res = evaluate_protocol(planner, "multi", (0.0, 100.0), seeds=(3,), episodes_per_seed=2, episode_steps=10,
                            show_progress=False)
    assert [r.plans for r in res.records] == [10, 10]  # one plan per step, whether or not the goal was reached


def test_composition_from_config_and_obstacle_aware_selection(tmp_path):
    from diffuser.diffusion.compose import composition_from_config
    from diffuser.diffusion.costs import DiscAvoid

    planner, model, normalizer = _tiny_planner(num_candidates=3)
    tensors, cfg = export_state(model, normalizer, UNetConfig(dim=8, dim_mults=(1, 2)), step=0,
                                dataset="diffuser/pointmaze/umaze-v2", data={"stride": 2})
    save_export(tmp_path / "ckpt", tensors, cfg)
    config = tmp_path / "c.yaml"
    config.write_text(f"checkpoint: {tmp_path / 'ckpt'}\nexperts:\n"
                      "  - {kind: denoiser, checkpoint: '${checkpoint}', name: umaze}\n"
                      "  - {kind: disc_avoid, center: [0.0, 1.0], radius: 0.3, weight: 5.0}\n"
                      "corrector: {name: ula, steps: 1, step_size: 0.05}\n")
    composition, corrector = composition_from_config(config)
    assert composition.horizon == 16 and corrector.name == "ula"
    disc = composition.experts[1]
    assert isinstance(disc, DiscAvoid) and disc.weight == 5.0
    # Selection: of three candidates, one crosses the disc at (0, 1) early; the clear one is kept.
    composed = MazePlanner(planner.planner, "umaze", 2, MazePlanConfig(num_candidates=3), experts=[disc])
    H = composed.horizon
    line = lambda a, b: np.linspace(a, b, H)  # noqa: E731
    through = np.concatenate([line([1, 1], [-1, 1]), np.zeros((H, 2))], 1)
    through[H // 2:, :2] = [-1.0, 1.0]  # arrives early, through the disc
    around = np.concatenate([line([1, 1], [-1, 1]), np.zeros((H, 2))], 1)
    around[:, 1] = 1.0 + 0.4 * np.sin(np.linspace(0, np.pi, H))  # bends over the disc, arrives last
    best, _, _, clear = composed.select(np.stack([through, around])[None], np.array([[-1.0, 1.0]]))
    assert clear.tolist() == [[False, True]] and best.tolist() == [1]
