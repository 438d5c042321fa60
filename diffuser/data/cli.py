"""``diffuser datasets list`` and ``diffuser datasets info ID|FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_datasets_parser"]


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _list(args: argparse.Namespace) -> None:
    from diffuser.data.minari_io import datasets_root, list_local_datasets

    datasets = list_local_datasets()
    if args.json:
        print(json.dumps(datasets, indent=2))
        return
    root = datasets_root()
    if not datasets:
        print(f"no local Minari datasets under {root}\n"
              f"generate one with: diffuser collect pointmaze --maze umaze")
        return
    width = max(len(i) for i in datasets)
    print(f"local Minari datasets under {root}:")
    print(f"{'id':<{width}}  {'steps':>9}  {'episodes':>8}  {'ref_min':>8}  {'ref_max':>8}  env")
    for dataset_id, info in datasets.items():
        if "error" in info:
            print(f"{dataset_id:<{width}}  unreadable: {info['error'].splitlines()[0]}")
            continue
        print(
            f"{dataset_id:<{width}}  {_fmt(info['total_steps'], ',d'):>9}  {_fmt(info['total_episodes'], ',d'):>8}  "
            f"{_fmt(info['ref_min_score']):>8}  {_fmt(info['ref_max_score']):>8}  {info['env_id'] or '-'}"
        )


def _info(args: argparse.Namespace) -> None:
    from diffuser.data.d4rl import guess_d4rl_env_name, load_d4rl_hdf5
    from diffuser.data.minari_io import DatasetError, dataset_info, load_episodes
    from diffuser.data.prepare import dataset_stats
    from diffuser.envs.registry import d4rl_ref_scores

    target = args.dataset
    try:
        if Path(target).suffix in (".hdf5", ".h5"):
            episodes = load_d4rl_hdf5(target, max_episodes=args.max_episodes)
            env_name = guess_d4rl_env_name(target)
            ref = d4rl_ref_scores(env_name) if env_name else (None, None)
            info = {"path": str(Path(target).resolve()), "format": "D4RL HDF5", "env_name": env_name,
                    "ref_min_score": ref[0], "ref_max_score": ref[1]}
        else:
            info = dataset_info(target)
            episodes = load_episodes(target, max_episodes=args.max_episodes)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    stats = dataset_stats(episodes, printer=None)
    if args.json:
        print(json.dumps({"info": info, "stats": stats.to_dict()}, indent=2, default=str))
        return
    for key, value in info.items():
        if key == "description" and value:
            value = value.splitlines()[0]
        print(f"{key}: {value}")
    scope = f" (first {len(episodes)} episodes)" if args.max_episodes else ""
    print(f"statistics{scope}:\n{stats}")


def add_datasets_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``datasets list`` and ``datasets info`` under ``subparsers``; returns ``datasets``."""
    datasets = subparsers.add_parser("datasets", help="list and inspect local datasets")
    cmds = datasets.add_subparsers(dest="datasets_cmd", metavar="COMMAND")
    cmds.required = True
    p = cmds.add_parser("list", help="local Minari datasets with steps, episodes and reference scores")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_list)
    p = cmds.add_parser("info", help="metadata and episode statistics of a dataset")
    p.add_argument("dataset", metavar="ID|FILE", help="a local Minari id (namespace/name-vN) or a D4RL .hdf5 file")
    p.add_argument("--max-episodes", type=int, default=None, help="read only the first N episodes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    return datasets
