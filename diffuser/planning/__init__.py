"""Planning: turn observations (and goals) into plans with a trained model."""

from diffuser.planning.planner import Plan, Planner

__all__ = ["Plan", "Planner"]
