"""textvae: sentence VAEs whose autoregressive decoders do not collapse."""

from textvae.errors import TextVAEError
from textvae.models import InverseLipschitzMap, TextVAEConfig, TextVAEModel

__version__ = "0.1.0"
__all__ = ["InverseLipschitzMap", "TextVAEConfig", "TextVAEError", "TextVAEModel", "__version__"]
