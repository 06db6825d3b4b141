"""Training: the GAN step (``step``), the checkpoint format (``checkpoint``), the Ray Train
worker loop (``loop``) and the driver ``trainer.train_model``.

Only the Ray-free parts are imported here, so inference can load a checkpoint without
pulling in Ray Train: ``from sar2opt.train.trainer import train_model`` for the driver.
"""

from sar2opt.train.checkpoint import CheckpointError, load_generator, save_checkpoint
from sar2opt.train.step import eval_step, gan_step

__all__ = ["CheckpointError", "eval_step", "gan_step", "load_generator", "save_checkpoint"]
