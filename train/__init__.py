"""Training: one trainer for tokenizers and generators, exact-resume checkpoints, DDP, recipes."""
from mmgen.train.ema import EMA
from mmgen.train.optim import lr_at, make_adamw
from mmgen.train.run import Recipe, resolve_recipe, train
from mmgen.train.state import latest_checkpoint, load_checkpoint, save_checkpoint
from mmgen.train.trainer import TrainConfig, Trainer, TrainingDiverged, default_export, seed_everything

__all__ = ["EMA", "Recipe", "TrainConfig", "Trainer", "TrainingDiverged", "default_export", "latest_checkpoint",
           "load_checkpoint", "lr_at", "make_adamw", "resolve_recipe", "save_checkpoint", "seed_everything", "train"]
