"""Which of a decision's candidate plans to execute: pure rules on (n, c) tables, n starts by c candidates.

A rule either scores the candidates (higher is better) or allows some of them; :func:`best` takes the k
best-scoring allowed ones. The locomotion planner combines them: the env's termination rule and a speed
limit narrow the candidates, and the value, the sampling order or consensus ranks the rest.
"""

from __future__ import annotations

import torch

__all__ = ["best", "count_switches", "longest", "lowest_under", "spread"]


def best(scores: torch.Tensor, allowed: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(CPU tensors) The k best-scoring candidates of each start among the allowed ones, (n, k) indices, best first, and
    (n, k) equal weights over those of them that are allowed (a start with fewer than k allowed candidates
    averages only those; the best one always is)."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, -torch.inf)
    chosen = scores.topk(k, dim=1).indices
    w = torch.ones(chosen.shape) if allowed is None else allowed.gather(1, chosen).float()
    return chosen, w / w.sum(dim=1, keepdim=True)


def spread(trajectories: torch.Tensor, allowed: torch.Tensor | None, n: int, c: int) -> torch.Tensor:
    """(n, c) squared distance of each normalised candidate plan from its start's mean plan (over the allowed
    candidates). The nearest is the medoid: Σ_j |x_i − x_j|² = c·|x_i − mean|² + const."""
    x = trajectories.reshape(n, c, -1)
    w = torch.ones(n, c, device=x.device) if allowed is None else allowed.to(x.device, torch.float32)
    center = torch.einsum("nc,ncd->nd", w / w.sum(dim=1, keepdim=True), x)
    return (x - center[:, None]).square().sum(-1)


def longest(steps: torch.Tensor) -> torch.Tensor:
    """(n, c) bool: the candidates of each start with the most steps (e.g. planned steps that stay healthy)."""
    return steps == steps.max(dim=1, keepdim=True).values


def lowest_under(peak: torch.Tensor, allowed: torch.Tensor | None, limit: float) -> torch.Tensor:
    """(n, c) bool: of the allowed candidates of each start, those whose ``peak`` stays under ``limit``; where
    none does, those that exceed it least."""
    if allowed is not None:
        peak = peak.masked_fill(~allowed, torch.inf)
    return peak <= peak.min(dim=1, keepdim=True).values.clamp(min=limit)


def count_switches(checks: dict[str, int], allowed: torch.Tensor, unchecked: torch.Tensor) -> None:
    """Add to ``checks`` the decisions made and those a rule changed: where the (n, k) choice made without
    the rule, ``unchecked``, takes a candidate the rule does not allow."""
    checks["decisions"] += allowed.shape[0]
    checks["switched"] += int((~allowed.gather(1, unchecked)).any(dim=1).sum())
