"""One results file for the composition experiments: results/compose.json, one key per experiment."""

from __future__ import annotations

import json
from pathlib import Path

from diffuser.utils import atomic_path, git_commit

DEFAULT_PATH = Path("results/compose.json")


def record(key: str, entry: dict, path: str | Path = DEFAULT_PATH) -> Path:
    """Merge ``entry`` (its config, seed and numbers) under ``key``, stamped with the git commit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = json.loads(path.read_text()) if path.exists() else {
        "description": "Composition experiments (products of experts); written by `diffuser compose ...`."}
    table[key] = {**entry, "git_commit": git_commit()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2, default=float))
    return path
