"""riid: a resolution-invariant autoencoder (RIAE) and latent diffuser (R2ID)."""
from .autoencoder import RIAE, RIAEConfig
from .checkpoint import load_model, save_model
from .diffuser import R2ID, ConditionerConfig, LabelConditioner, R2IDConfig
from .pipeline import Pipeline, load_pipeline

__all__ = ["RIAE", "RIAEConfig", "R2ID", "R2IDConfig", "LabelConditioner", "ConditionerConfig",
           "Pipeline", "load_pipeline", "load_model", "save_model"]
