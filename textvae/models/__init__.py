"""Sentence VAE models: config, inverse-Lipschitz map, encoders/decoders."""

from transformers import AutoConfig, AutoModel

from textvae.models.configuration_textvae import TextVAEConfig
from textvae.models.invlip import InverseLipschitzMap
from textvae.models.modeling_textvae import TextVAEModel, TextVAEOutput

AutoConfig.register(TextVAEConfig.model_type, TextVAEConfig, exist_ok=True)
AutoModel.register(TextVAEConfig, TextVAEModel, exist_ok=True)

__all__ = ["InverseLipschitzMap", "TextVAEConfig", "TextVAEModel", "TextVAEOutput"]
