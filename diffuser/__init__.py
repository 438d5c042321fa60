"""diffuser: planning with trajectory diffusion models.

Planning is sampling: a temporal U-Net learns whole trajectories from offline data, and inpainting,
guidance and composition are configurations of one sampling loop (:func:`diffuser.diffusion.sample`).
"""

__version__ = "0.1.0"
