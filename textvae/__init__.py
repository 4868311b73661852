"""textvae: sentence VAEs whose autoregressive decoders do not collapse."""

import textvae.hub.push  # noqa: E402, F401, I001 -- gives TextVAEModel.push_to_hub its uploader
from textvae.errors import TextVAEError
from textvae.models import InverseLipschitzMap, TextVAEConfig, TextVAEModel

__version__ = "0.1.0"
__all__ = ["InverseLipschitzMap", "TextVAEConfig", "TextVAEError", "TextVAEModel", "__version__"]
