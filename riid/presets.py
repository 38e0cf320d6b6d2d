"""Named model sizes, reused as CLI choices: ``default`` is the shipped checkpoints' size (a fresh
diffuser predicts v, as the shipped one does)."""
from .autoencoder import RIAEConfig
from .diffuser import ConditionerConfig, R2IDConfig

AUTOENCODER_PRESETS = {
    "default": RIAEConfig(),
    "tiny": RIAEConfig(latent_channels=4, dim=16, heads=2, encoder_blocks=1, decoder_blocks=1,
                       pixel_layers=1)}
DIFFUSER_PRESETS = {
    "default": (R2IDConfig(prediction="v"), ConditionerConfig()),
    "tiny": (
        R2IDConfig(dim=16, heads=2, encoder_blocks=1, decoder_blocks=1, mlp_ratio=2, cond_dim=16,
                   prediction="v"),
        ConditionerConfig(tokens=2, dim=16))}
