"""Diffusion: noise schedules, prediction conversions, the objective, and the one sampling loop
with its three pluggable kinds of piece: experts (score terms), constraints (inpainting), samplers."""

from diffuser.diffusion.constraints import Constraint, Inpaint, state_constraints
from diffuser.diffusion.experts import (ConditionDelta, DenoiserExpert, Expert, NoiseLevel, ValueExpert,
                                        combined_epsilon)
from diffuser.diffusion.loop import SampleOutput, sample
from diffuser.diffusion.compose import Composition, IncompatibleExperts, compose
from diffuser.diffusion.correctors import HMC, MALA, UHMC, ULA, Corrector, make_corrector
from diffuser.diffusion.costs import BoxAvoid, Ceiling, DiscAvoid, RegionPrefer, Smoothness
from diffuser.diffusion.model import DiffusionConfig, TrajectoryDiffusion
from diffuser.diffusion.predictions import PREDICTION_TYPES
from diffuser.diffusion.samplers import DDIM, DDPM, Sampler, make_sampler
from diffuser.diffusion.schedules import BETA_SCHEDULES, NoiseSchedule, make_betas

__all__ = [
    "HMC", "MALA", "UHMC", "ULA", "BoxAvoid", "Composition", "ConditionDelta", "Corrector", "DiscAvoid",
    "Ceiling", "IncompatibleExperts", "RegionPrefer", "Smoothness", "ValueExpert", "compose", "make_corrector",
    "BETA_SCHEDULES", "PREDICTION_TYPES", "Constraint", "DDIM", "DDPM", "DenoiserExpert", "DiffusionConfig",
    "Expert", "Inpaint", "NoiseLevel", "NoiseSchedule", "SampleOutput", "Sampler", "TrajectoryDiffusion",
    "combined_epsilon", "make_betas", "make_sampler", "sample", "state_constraints",
]
