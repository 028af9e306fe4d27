"""Training: losses, learning-rate schedules, statistics, checkpoints and the loop."""

from .loss import LOSSES, EnergyLoss, build_loss
from .lr import LearningRate
from .trainer import Trainer, train

__all__ = ["LOSSES", "EnergyLoss", "LearningRate", "Trainer", "build_loss", "train"]
