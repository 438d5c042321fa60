"""Planning: turn observations (and goals) into plans with a trained model."""

from diffuser.planning.planner import Plan, Planner, shift_plans

__all__ = ["Plan", "Planner", "shift_plans"]
