"""Conversions between what a denoiser predicts and what a sampler needs, in one place.

With x_t = α x_0 + σ ε (α = √ᾱ_t, σ = √(1-ᾱ_t)) the three parameterisations are
    epsilon: ε          x0: x_0          v: v = α ε - σ x_0   (Salimans & Ho, 2022)
and the score of the noised marginal is ∇ log p_t(x_t) = -ε / σ.
α and σ may be Python floats or tensors that broadcast against x.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "x0", "v")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def to_x0_eps(prediction: torch.Tensor, prediction_type: str, xt: torch.Tensor, alpha, sigma
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) implied by a network output of the given type at x_t."""
    if prediction_type == "epsilon":
        eps = prediction
        return (xt - sigma * eps) / alpha, eps
    if prediction_type == "x0":
        x0 = prediction
        return x0, (xt - alpha * x0) / sigma
    if prediction_type == "v":
        return alpha * xt - sigma * prediction, sigma * xt + alpha * prediction
    check_prediction_type(prediction_type)
    raise AssertionError  # unreachable


def training_target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """What a network of the given type should output for clean data x_0 noised with ε."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "x0":
        return x0
    if prediction_type == "v":
        return alpha * eps - sigma * x0
    check_prediction_type(prediction_type)
    raise AssertionError


def eps_to_x0(eps: torch.Tensor, xt: torch.Tensor, alpha, sigma) -> torch.Tensor:
    return (xt - sigma * eps) / alpha


def x0_to_eps(x0: torch.Tensor, xt: torch.Tensor, alpha, sigma) -> torch.Tensor:
    return (xt - alpha * x0) / sigma


def eps_to_score(eps: torch.Tensor, sigma) -> torch.Tensor:
    """∇ log p_t(x_t) = -ε / σ."""
    return -eps / sigma


def score_to_eps(score: torch.Tensor, sigma) -> torch.Tensor:
    return -sigma * score
