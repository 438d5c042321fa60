"""Training: a model-agnostic trainer, EMA, checkpoints (export + resume), metric logging, the seeded
data order and data-parallel training (``torchrun``/SLURM; ``diffuser.training.distributed``).

    from diffuser.training import Trainer, TrainerConfig
    summary = Trainer(model, dataset, TrainerConfig(steps=1000), "runs/demo").train()
"""

from diffuser.training.checkpoint import (
    EXPORT_FORMAT_VERSION,
    CheckpointError,
    CheckpointNotFoundError,
    capture_rng_state,
    load_export,
    load_resume,
    restore_rng_state,
    save_export,
    save_resume,
)
from diffuser.training.data_order import DataOrder, ShardedBatchSampler
from diffuser.training.distributed import init_distributed
from diffuser.training.ema import EMA
from diffuser.training.logging import (
    CSVLogger,
    JSONLinesLogger,
    Logger,
    MultiLogger,
    NullLogger,
    TensorBoardLogger,
    make_logger,
)
from diffuser.training.trainer import NonFiniteLossError, Trainer, TrainerConfig
from diffuser.training.trainer_config import learning_rate

__all__ = [
    "EMA",
    "EXPORT_FORMAT_VERSION",
    "CSVLogger",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DataOrder",
    "JSONLinesLogger",
    "Logger",
    "MultiLogger",
    "NonFiniteLossError",
    "NullLogger",
    "ShardedBatchSampler",
    "TensorBoardLogger",
    "Trainer",
    "TrainerConfig",
    "capture_rng_state",
    "init_distributed",
    "learning_rate",
    "load_export",
    "load_resume",
    "make_logger",
    "restore_rng_state",
    "save_export",
    "save_resume",
]
