"""Pretrained Hugging Face backbones: tiny random GPT-2, Llama and BERT models saved to disk,
loaded by the same code as real ones (textvae.models.pretrained)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers_backbones import save_tiny_backbone
from tests.models.test_modeling_textvae import assert_bounded_below
from textvae.data.tokenization import load_encoder_tokenizer, load_pretrained_tokenizer
from textvae.errors import TextVAEError
from textvae.models import TextVAEConfig, TextVAEModel
from textvae.models.invlip import centred_whitening
from textvae.padding import default_attention_mask, pad_ids

SENTENCES = ["the old dog saw a small cat .", "she will not find the red boxes .", "he ran ."]
TINY = dict(latent_size=4, invlip_state_size=8, icnn_hidden_size=16, embedding_size=16, hidden_size=32,
            num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)


def build(backbones: Path, decoder: str = "llama", encoder: str = "lstm", seed: int = 0, **options) -> TextVAEModel:
    """A model over the tiny ``decoder`` (``gpt2``/``llama``, or an own ``lstm``/``transformer``)."""
    pretrained = decoder in ("gpt2", "llama")
    if pretrained:
        tok, _ = load_pretrained_tokenizer(str(backbones / decoder))
    else:
        from tests.helpers_models import word_tokenizer

        tok = word_tokenizer()
    special = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                   eos_token_id=tok.eos_token_id, unk_token_id=tok.unk_token_id)
    backbone = {"decoder_type": "pretrained", "decoder_name_or_path": str(backbones / decoder)} if pretrained \
        else {"decoder_type": decoder}
    if encoder == "pretrained":
        backbone.update(encoder_type="pretrained", encoder_name_or_path=str(backbones / "bert"))
    else:
        backbone.update(encoder_type=encoder)
    torch.manual_seed(seed)
    model = TextVAEModel(TextVAEConfig(**{**TINY, **special, **backbone, **options}))
    model.tokenizer = tok
    if encoder == "pretrained":
        model.encoder_tokenizer = load_encoder_tokenizer(str(backbones / "bert"))
    return model


def batch(model: TextVAEModel, sentences=SENTENCES) -> dict[str, torch.Tensor]:
    return pad_ids(model.tokenizer(list(sentences))["input_ids"], model.config.pad_token_id)


def perturb_trainable(model: TextVAEModel, scale: float = 0.3, seed: int = 1) -> None:
    """Move every trained weight away from its init (LoRA's B starts at 0, memory near 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn(param.shape, generator=generator))


# ------------------------------------------------------------------ every combination


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
@pytest.mark.parametrize("encoder", ["lstm", "transformer", "pretrained"])
@pytest.mark.parametrize("path", ["invlip", "memory", "none"])
def test_every_encoder_with_every_pretrained_decoder_and_path_trains_and_decodes(backbones, decoder, encoder, path):
    model = build(backbones, decoder, encoder, latent_path=path, decoder_trainable="lora")
    out = model(**batch(model))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trained if "lora_" in n or n.startswith("head.")), trained
    assert not any(p.requires_grad for n, p in model.decoder.lm.named_parameters() if "lora_" not in n)
    model.eval()
    assert len(model.sample(2, max_length=5)) == 2
    assert len(model.reconstruct(SENTENCES[:2], max_length=6, num_beams=2)) == 2
    assert len(model.sample(2, max_length=5, do_sample=True, top_p=0.9, seed=0)) == 2


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
@pytest.mark.parametrize("path", ["invlip", "concat"])
def test_a_pretrained_encoder_serves_the_own_decoders(backbones, decoder, path):
    model = build(backbones, decoder, "pretrained", latent_path=path)
    out = model(**batch(model))
    out.loss.backward()
    assert model.posterior.encoder.model.embeddings.word_embeddings.weight.grad is not None  # encoder_trainable: full
    assert model.encoder_inputs(*batch(model).values())[0][0, 0] == model.encoder_tokenizer.cls_token_id


def test_the_encoder_reads_the_sentence_the_decoder_models(backbones):
    """Decoder ids are decoded back to text (a literal <unk> kept, BOS/EOS cut) for the encoder's tokenizer."""
    model = build(backbones, "llama", "pretrained")
    sentences = ["the <unk> dog saw a cat ."]
    ids, mask = batch(model, sentences).values()
    enc_ids, enc_mask = model.encoder_inputs(ids, mask)
    assert enc_ids[0].tolist() == model.encoder_tokenizer(sentences)["input_ids"][0]
    assert enc_mask.all()


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
@pytest.mark.parametrize("path", ["invlip", "memory", "none"])
def test_incremental_decoding_gives_the_teacher_forced_logits(backbones, decoder, path):
    """generate()'s path (one position a step, the LM's cache, the memory slot prefilled once)
    computes the same logits as one pass over the sentence."""
    model = build(backbones, decoder, latent_path=path).eval()
    perturb_trainable(model)
    ids = batch(model, SENTENCES[:1])["input_ids"]
    z = torch.randn(1, model.config.latent_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.prefix_logits(ids, z)
        cache, steps = None, []
        for t in range(ids.shape[1] - 1):
            out = model(ids[:, t : t + 1], latents=z, cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
def test_several_memory_slots_per_layer_are_prefilled_read_and_decoded_incrementally(backbones, decoder):
    """k slots per layer with separate keys and values (grouped-query heads on the tiny Llama, rotary
    positions): each slot moves the prediction, and generate()'s path equals teacher forcing."""
    model = build(backbones, decoder, latent_path="memory", memory_slots=4).eval()
    perturb_trainable(model)
    ids = batch(model, SENTENCES[:1])["input_ids"]
    z = torch.randn(1, model.config.latent_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cache = model.decoder.new_cache()
        model.decoder._prefill(z, cache)
        assert cache.get_seq_length() == 4
        full = model.prefix_logits(ids, z)
        steps, cache = [], None
        for t in range(ids.shape[1] - 1):
            out = model(ids[:, t : t + 1], latents=z, cache=cache, use_cache=True)
            cache, steps = out.cache, [*steps, out.logits]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
        layers, kv_heads, head_dim = model.decoder.layers, *model.decoder.kv_shape
        weight = model.decoder.memory.weight.view(layers, 2, kv_heads, 4, head_dim, -1)
        weight[:, :, :, 3] = 0.0  # the last slot says nothing: the prediction changes
        assert not torch.allclose(model.prefix_logits(ids, z), full)
    assert len(model.reconstruct(SENTENCES[:2], max_length=6, num_beams=2)) == 2


@pytest.mark.parametrize("latent_logits", [False, True])
@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
def test_memory_makes_the_first_prediction_depend_on_z(backbones, decoder, latent_logits):
    model = build(backbones, decoder, latent_path="memory", latent_logits=latent_logits).eval()
    perturb_trainable(model)
    ids = batch(model, SENTENCES[:1])["input_ids"].expand(2, -1)
    z = torch.randn(2, model.config.latent_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.prefix_logits(ids, z)
        steps, cache = [], None
        for t in range(ids.shape[1] - 1):
            out = model(ids[:, t : t + 1], latents=z, cache=cache, use_cache=True)
            cache, steps = out.cache, [*steps, out.logits]
    assert not torch.allclose(logits[0, 0], logits[1, 0])
    torch.testing.assert_close(torch.cat(steps, dim=1), logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ the inverse-Lipschitz bound


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
@pytest.mark.parametrize("lift", ["frozen", "output_whitened"])
@pytest.mark.parametrize("trainable", ["frozen", "lora", "full"])
@pytest.mark.parametrize("lipschitz", [1.0, 3.0])
def test_invlip_on_a_pretrained_lm_moves_the_logits_at_least_bound_times_z_at_every_position(
        backbones, decoder, lift, trainable, lipschitz):
    model = build(backbones, decoder, lipschitz=lipschitz, invlip_lift=lift, decoder_trainable=trainable).eval()
    perturb_trainable(model)  # trained weights of any value (the LM's too, under `full`)
    bound = model.lipschitz_bound()
    assert bound >= lipschitz
    assert_bounded_below(model, bound)


def test_the_output_lift_goes_through_the_lms_own_output_layer(backbones):
    """logits = W (h + s A M g): the change lies in the span of W A, A orthonormal directions of W."""
    model = build(backbones, "llama", invlip_lift="output_whitened", lipschitz=2.0).eval()
    invlip, weight = model.head.invlip, model.get_output_embeddings().weight
    directions = invlip.directions  # (H, in): orthonormal columns
    torch.testing.assert_close(directions.T @ directions, torch.eye(directions.shape[1]), atol=1e-5, rtol=0)
    wa = weight @ directions
    torch.testing.assert_close(model.head.lift(), invlip.scale * wa @ centred_whitening(wa))


def test_the_output_lift_is_computed_once_for_a_frozen_lm_and_afresh_for_a_trained_one(backbones):
    frozen = build(backbones, "llama", invlip_lift="output_whitened").eval()
    assert frozen.head.lift() is frozen.head.lift() or torch.equal(frozen.head.lift(), frozen.head.lift())
    trained = build(backbones, "llama", invlip_lift="output_whitened", decoder_trainable="full")
    before = trained.head.lift().detach().clone()
    with torch.no_grad():
        trained.get_output_embeddings().weight.mul_(2.0)
    after = trained.head.lift().detach()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)  # W doubled, the whitened W A M unchanged


# ------------------------------------------------------------------ tokenization


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
def test_the_decoders_tokenizer_frames_every_sentence_and_round_trips(backbones, decoder, tmp_path):
    tok, meta = load_pretrained_tokenizer(str(backbones / decoder))
    ids = tok(SENTENCES[0])["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == len(SENTENCES[0].split()) + 2
    assert tok.pad_token_id is not None and meta["kind"] == "pretrained"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path)(SENTENCES[0])["input_ids"] == ids


def test_bos_and_eos_can_be_chosen_and_must_exist(backbones):
    tok, _ = load_pretrained_tokenizer(str(backbones / "llama"), bos_token="</s>", eos_token="</s>")
    ids = tok("the dog")["input_ids"]
    assert ids[0] == ids[-1] == tok.convert_tokens_to_ids("</s>")
    with pytest.raises(TextVAEError, match="data.eos_token"):
        load_pretrained_tokenizer(str(backbones / "llama"), eos_token="<nope>")


def test_a_pad_token_that_is_also_eos_never_masks_the_eos():
    ids = torch.tensor([[0, 5, 6, 0, 0, 0], [0, 7, 0, 0, 0, 0]])  # GPT-2: BOS = EOS = pad = 0
    assert default_attention_mask(ids, 0, 0).tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]


# ------------------------------------------------------------------ exports


@pytest.mark.parametrize("trainable", ["frozen", "lora", "full"])
@pytest.mark.parametrize("path", ["invlip", "memory"])
def test_exports_keep_a_reference_to_the_base_unless_it_trained_in_full(backbones, tmp_path, trainable, path):
    model = build(backbones, "llama", "pretrained", latent_path=path, decoder_trainable=trainable).eval()
    perturb_trainable(model)
    inputs = batch(model)
    with torch.no_grad():
        want = model(**inputs, sample_posterior=False).logits
    model.save_pretrained(tmp_path / "export")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "export" / "model.safetensors")
    lm_keys = [k for k in saved if k.startswith("decoder.lm.")]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    if trainable == "full":
        assert config["decoder_weights"] == "embedded" and any(".embed_tokens." in k for k in lm_keys)
    else:
        assert config["decoder_weights"] == "reference"
        assert all("lora_" in k for k in lm_keys) and (trainable == "lora") == bool(lm_keys)
    loaded = TextVAEModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, sample_posterior=False).logits, want)


def test_a_sharded_reference_export_loads_its_shards(backbones, tmp_path):
    """A large export is written in shards (``max_shard_size``); transformers' shard index finds them."""
    model = build(backbones, "llama", "pretrained", decoder_trainable="lora").eval()
    perturb_trainable(model)
    model.save_pretrained(tmp_path / "export", max_shard_size="20KB")
    assert len(list((tmp_path / "export").glob("model-*-of-*.safetensors"))) > 1
    loaded = TextVAEModel.from_pretrained(tmp_path / "export").eval()
    inputs = batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, sample_posterior=False).logits,
                                   model(**inputs, sample_posterior=False).logits)


@pytest.mark.parametrize("trainable", ["frozen", "lora"])
def test_a_merged_export_needs_neither_the_base_model_nor_peft(backbones, tmp_path, trainable, monkeypatch):
    base = shutil.copytree(backbones / "llama", tmp_path / "base")
    tok, _ = load_pretrained_tokenizer(str(base))
    model = TextVAEModel(TextVAEConfig(**TINY, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       decoder_type="pretrained", decoder_name_or_path=str(base),
                                       decoder_trainable=trainable)).eval()
    model.tokenizer = tok
    perturb_trainable(model)
    inputs = batch(model)
    with torch.no_grad():
        want = model(**inputs, sample_posterior=False).logits
    model.save_pretrained(tmp_path / "merged", embed_backbones=True)
    shutil.rmtree(base)
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # importing peft now fails
    loaded = TextVAEModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, sample_posterior=False).logits, want, atol=1e-5, rtol=1e-5)


def test_a_reference_export_refuses_a_base_model_with_other_weights(backbones, tmp_path):
    base = shutil.copytree(backbones / "llama", tmp_path / "base")
    model = build(backbones, "llama").eval()
    model.config.decoder_name_or_path = str(base)
    model.save_pretrained(tmp_path / "export")
    save_tiny_backbone("llama", base, seed=1)  # same architecture, other weights
    with pytest.raises(TextVAEError, match="not the ones this model was trained on"):
        TextVAEModel.from_pretrained(tmp_path / "export")
    shutil.rmtree(base)
    with pytest.raises(TextVAEError, match="cannot load"):
        TextVAEModel.from_pretrained(tmp_path / "export")


# ------------------------------------------------------------------ bad input: one line each


def config_for(backbones: Path, **options) -> TextVAEConfig:
    return TextVAEConfig(**{**TINY, "vocab_size": 200, "decoder_type": "pretrained",
                            "decoder_name_or_path": str(backbones / "llama"), **options})


@pytest.mark.parametrize("options, message", [
    ({"decoder_name_or_path": "/nowhere/at/all"}, "cannot load '/nowhere/at/all'"),
    ({"decoder_name_or_path": "nobody/no-such-model"}, "neither a local directory nor a model"),
    ({"decoder_name_or_path": "DISTILBERT"}, "no causal-LM head"),
    ({"encoder_type": "pretrained", "encoder_name_or_path": "/nowhere"}, "model.encoder_name_or_path"),
    ({"decoder_trainable": "lora", "lora_target_modules": ["no_such_module"]}, "model.lora_target_modules"),
])
def test_unusable_backbones_are_one_line_errors(backbones, options, message):
    options = {k: (str(backbones / "distilbert") if v == "DISTILBERT" else v) for k, v in options.items()}
    with pytest.raises(TextVAEError, match=message) as caught:
        TextVAEModel(config_for(backbones, **options))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("package, where", [("gguf", "model"), ("gguf", "tokenizer"), ("peft", "model")])
def test_an_optional_package_that_is_missing_is_named_with_what_to_install(backbones, monkeypatch, package, where):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(TextVAEError, match=rf"needs the {package} package: pip install 'textvae\[{package}\]'"):
        if where == "tokenizer":
            load_pretrained_tokenizer(str(backbones / "llama"), gguf_file="model.gguf")
        elif package == "gguf":
            TextVAEModel(config_for(backbones, decoder_gguf_file="model.gguf"))
        else:
            TextVAEModel(config_for(backbones, decoder_trainable="lora"))


def test_memory_is_refused_on_an_lm_whose_cache_cannot_be_prefilled(backbones, tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    MambaForCausalLM(MambaConfig(vocab_size=200, hidden_size=16, state_size=4, num_hidden_layers=1)).save_pretrained(
        tmp_path / "mamba")
    with pytest.raises(TextVAEError, match="latent_path=memory"):
        TextVAEModel(config_for(backbones, decoder_name_or_path=str(tmp_path / "mamba"), latent_path="memory"))


def test_an_lm_whose_logits_are_not_its_output_layer_of_its_states_is_refused(backbones, tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    Gemma2ForCausalLM(Gemma2Config(vocab_size=200, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                   final_logit_softcapping=0.5)).save_pretrained(tmp_path / "gemma")
    with pytest.raises(TextVAEError, match="soft-capped or scaled"):
        TextVAEModel(config_for(backbones, decoder_name_or_path=str(tmp_path / "gemma")))


@pytest.mark.parametrize("options, message", [
    ({"decoder_type": "pretrained"}, "needs decoder_name_or_path"),
    ({"decoder_type": "lstm", "latent_path": "memory"}, "needs decoder_type=pretrained"),
    ({"decoder_type": "lstm", "decoder_trainable": "lora"}, "applies to a pretrained decoder"),
    ({"decoder_type": "pretrained", "decoder_name_or_path": "x", "latent_path": "concat"}, "invlip, memory or none"),
    ({"decoder_type": "pretrained", "decoder_name_or_path": "x", "tie_word_embeddings": True}, "keeps its own tying"),
    ({"decoder_type": "pretrained", "decoder_name_or_path": "x", "decoder_trainable": "half"}, "decoder_trainable"),
])
def test_inconsistent_backbone_options_are_refused_by_the_config(options, message):
    with pytest.raises(ValueError, match=message):
        TextVAEConfig(**options)


def test_the_weights_fingerprint_samples_inside_tensors_of_any_size():
    """(float32 positions of 66 samples once overran a 28M-element embedding)"""
    from torch import nn

    from textvae.models.pretrained import weights_fingerprint

    big = nn.Linear(1, 1)
    big.register_buffer("table", torch.arange(2**24 + 7, dtype=torch.float32))
    first = weights_fingerprint(big)
    with torch.no_grad():
        big.table[-1] += 1  # the last element is one of the samples
    assert weights_fingerprint(big) != first


@pytest.mark.parametrize("path", ["invlip", "memory"])
def test_a_pretrained_decoder_trains_and_decodes_under_bf16_autocast(backbones, path):
    """What Accelerate's bf16 does on a GPU, here on the CPU (no LSTM in the model)."""
    model = build(backbones, "llama", "pretrained", latent_path=path, invlip_lift="output_whitened",
                  decoder_trainable="lora")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch(model))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(model.eval().reconstruct(SENTENCES[:1], max_length=4)) == 1


def test_the_map_starts_from_the_code_alone_on_a_pretrained_decoder(backbones):
    """P = 0 at init: the logits move with z alone, not with a random projection of the LM's state."""
    model = build(backbones, "llama").eval()
    assert not model.head.state_proj.weight.any() and not model.head.state_proj.bias.any()
    own = build(backbones, "lstm").eval()
    assert own.head.state_proj.weight.any()  # the own decoders keep their init


def test_the_whitened_output_lift_is_an_orthonormal_basis_of_the_directions_w_a_reaches(backbones):
    model = build(backbones, "llama", invlip_lift="output_whitened", lipschitz=2.0).eval()
    invlip, weight = model.head.invlip, model.get_output_embeddings().weight
    lift = model.head.lift()
    centred = lift - lift.mean(dim=0)
    torch.testing.assert_close(torch.linalg.svdvals(centred), torch.full((lift.shape[1],), float(invlip.scale)),
                               atol=1e-3, rtol=1e-3)
    wa = weight @ invlip.directions  # the same span as W A
    residual = wa - lift @ torch.linalg.lstsq(lift, wa).solution
    assert float(residual.norm() / wa.norm()) < 1e-3


# ------------------------------------------------------------------ a backbone and its tokenizer

def built(decoder: Path, encoder: Path | None = None, *overrides: str) -> TextVAEModel:
    """The model ``textvae train`` builds over the backbones in ``decoder`` (and ``encoder``)."""
    from textvae.training.builders import build_model, pretrained_tokenizer
    from textvae.training.recipe import load_recipe

    pretrained_encoder = [] if encoder is None else ["model.encoder_type=pretrained",
                                                      f"model.encoder_name_or_path={encoder}"]
    recipe = load_recipe(None, ["data.tokenizer=decoder", "model.decoder_type=pretrained",
                                f"model.decoder_name_or_path={decoder}", "model.latent_size=4",
                                "model.invlip_state_size=8", "model.icnn_hidden_size=16", *pretrained_encoder,
                                *overrides])
    return build_model(recipe, pretrained_tokenizer(recipe)[0])


def own_size(backbones: Path, kind: str) -> int:
    """The size of the tokenizer of the tiny ``kind`` backbone (and of its table)."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(backbones / kind))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_an_embedding_table_padded_beyond_the_tokenizer_is_a_legitimate_backbone(backbones, tmp_path, kind):
    """Models pad their table to a round size (Qwen2, Phi-2, T5): the ids all fit, the specials are the model's."""
    padded = -(-own_size(backbones, kind) // 64) * 64 + 64
    model = built(save_tiny_backbone(kind, tmp_path / kind, vocab_size=padded),
                  save_tiny_backbone("bert", tmp_path / "bert", vocab_size=padded))
    assert model.config.vocab_size == padded
    assert torch.isfinite(model(**batch(model)).loss)


def test_an_eos_chosen_in_the_recipe_is_not_held_against_a_padded_table(tmp_path):
    model = built(save_tiny_backbone("llama", tmp_path / "llama", vocab_size=256), None, "data.eos_token=<unk>")
    assert model.tokenizer.eos_token == "<unk>"


@pytest.mark.parametrize(("part", "kind", "tokenizer_kind", "rows", "message"), [
    ("decoder", "llama", None, -3, "ids from {rows} on would index past the table"),
    ("decoder", "gpt2", None, -1, "ids from {rows} on would index past the table"),
    ("decoder", "gpt2", "llama", 0, "ids from {rows} on would index past the table"),
    ("decoder", "llama", "gpt2", 64, "the model's eos_token_id 1 is '.+' there, no special token"),
    ("decoder", "gpt2", "llama", 64, r"its eos token is id 1 where the model's eos_token_id is 0"),
    ("encoder", "bert", None, -2, "ids from {rows} on would index past the table"),
    ("encoder", "bert", "gpt2", 64, "the model's pad_token_id 2 is '.+' there, no special token"),
])
def test_a_backbone_whose_table_is_not_its_tokenizers_is_refused_naming_both_sizes(
        backbones, tmp_path, part, kind, tokenizer_kind, rows, message):
    """Smaller: an IndexError mid-training before; another model's tokenizer: trained silently on its ids."""
    table = own_size(backbones, kind) + rows
    directory = save_tiny_backbone(kind, tmp_path / "odd", vocab_size=table, tokenizer_kind=tokenizer_kind)
    size = own_size(backbones, tokenizer_kind or kind)
    with pytest.raises(TextVAEError) as caught:
        built(directory, backbones / "bert") if part == "decoder" else built(backbones / "llama", directory)
    assert str(caught.value).startswith(f"model.{part}_name_or_path: '{directory}' has an embedding table of "
                                        f"{table} tokens but its tokenizer has {size}")
    assert re.search(message.format(rows=table), str(caught.value)) and "\n" not in str(caught.value)
