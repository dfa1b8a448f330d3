"""The training harness: ``sfumato train`` and ``sfumato.train``.

=================  ==============================================================
file               purpose
=================  ==============================================================
spec.py            the ``[train]`` table (``TrainSpec``)
trainer.py         the loop: accumulation, clipping, AdamW, EMA, outputs
recipe.py          ``Recipe``, ``TrainSetup``, ``TrainingTask``: what a task supplies
evaluation.py      held-out evaluation (``EvalContext``, ``eval_every``) and its metrics
data.py            resumable sampler, item seeding, collation
randomness.py      per-sample noise, RNG snapshots
checkpoint.py      atomic, resumable checkpoints
run_folder.py      one run per output folder: the lock, --overwrite, stale temporaries
distributed.py     torchrun process groups, gradient averaging
lr_schedule.py     warm-up, constant and cosine learning rates
ema.py             exponential moving average of weights
metrics.py         metrics.jsonl, loss curve, sample grids
callbacks.py       the callback protocol; TensorBoard and W&B loggers
=================  ==============================================================
"""

from .callbacks import TensorBoardLogger, TrainCallback, WandbLogger
from .checkpoint import CheckpointError
from .data import collate_examples
from .ema import EMA
from .evaluation import EvalContext, held_out_spec, retrieval_recall, topk_accuracy
from .lr_schedule import learning_rate
from .randomness import SampleRandom
from .recipe import Recipe, SampleContext, StepContext, TrainingTask, TrainSetup
from .run_folder import RunFolderError
from .spec import TrainSpec
from .trainer import DivergenceError, TrainResult, train

__all__ = [
    "TensorBoardLogger", "TrainCallback", "WandbLogger", "CheckpointError", "collate_examples", "EMA",
    "learning_rate", "SampleRandom", "Recipe", "SampleContext", "StepContext", "TrainingTask",
    "TrainSetup", "TrainSpec", "TrainResult", "train", "DivergenceError", "RunFolderError", "EvalContext",
    "held_out_spec", "retrieval_recall", "topk_accuracy",
]
