"""The models layer: the sentence VAE as a transformers model, and nothing around it.

It owns :class:`TextVAEConfig` (every architecture option), :class:`TextVAEModel` (the
encoders, decoders, output head and inverse-Lipschitz latent path, returning the raw
ELBO terms; ``generate()`` and the sentence-level text API), the checks a loaded
checkpoint passes (:mod:`~textvae.models.integrity`), their registration with
transformers' Auto classes, and the operations on codes built on that API alone
(:mod:`~textvae.models.latents`: batched encoding, attribute vectors, edits, analogies), and
the memory a count asks for, estimated before it is allocated (:mod:`~textvae.models.memory`). It
imports only the foundation modules (errors,
estimators, padding): no corpora, training, evaluation, Hub or CLI code.
"""

from transformers import AutoConfig, AutoModel

from textvae.models.configuration_textvae import TextVAEConfig
from textvae.models.invlip import InverseLipschitzMap
from textvae.models.modeling_textvae import TextVAEModel, TextVAEOutput

AutoConfig.register(TextVAEConfig.model_type, TextVAEConfig, exist_ok=True)
AutoModel.register(TextVAEConfig, TextVAEModel, exist_ok=True)

__all__ = ["InverseLipschitzMap", "TextVAEConfig", "TextVAEModel", "TextVAEOutput"]
