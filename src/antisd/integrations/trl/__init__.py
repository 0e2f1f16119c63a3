"""TRL integration: ``AntiSDConfig(GRPOConfig)`` and ``AntiSDTrainer(GRPOTrainer)``, adapters over :mod:`antisd.method.step`."""

from antisd.integrations.trl.config import AntiSDConfig
from antisd.integrations.trl.trainer import AntiSDBatch, AntiSDTrainer

__all__ = ["AntiSDBatch", "AntiSDConfig", "AntiSDTrainer"]
