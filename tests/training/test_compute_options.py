"""``train.gradient_checkpointing`` and ``train.compile`` change memory and speed, not the numbers."""

from __future__ import annotations

import json

import pytest
import torch

from tests.models import pad_batch, random_sentences, tiny_model
from tests.training.conftest import REPO
from textvae.errors import TextVAEError
from textvae.training import loop
from textvae.training.loop import train
from textvae.training.recipe import load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    ids, mask = pad_batch(random_sentences(6, [3, 5, 8, 2], 0))
    results = []
    for checkpointing in (False, True):
        model = tiny_model(0, encoder_type="transformer", decoder_type="transformer").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(0)  # the same posterior sample
        loss = model(ids, mask).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain_loss, plain_grads), (checkpointed_loss, checkpointed_grads) = results
    assert model.decoder.layers.blocks[0].gradient_checkpointing  # it was on in the second run
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert checkpointed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def train_losses(overrides: list[str]) -> list[float]:
    run_dir = train(load_recipe(QUICKSTART, overrides))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_gradient_checkpointing_logs_the_same_losses(tiny_overrides, tmp_path):
    common = [*tiny_overrides, "model.decoder_type=transformer", "model.max_position_embeddings=80",
              "model.num_attention_heads=2", "train.max_steps=3", "train.log_every=1", "train.eval_batches=1"]
    plain = train_losses([*common, f"output_dir={tmp_path / 'plain'}"])
    checkpointed = train_losses([*common, "train.gradient_checkpointing=true", f"output_dir={tmp_path / 'option'}"])
    assert checkpointed == pytest.approx(plain, rel=1e-5)


def test_compile_logs_the_same_losses(tiny_overrides, tmp_path, monkeypatch):
    # The training step is captured and run through AOTAutograd as inductor's is, without its
    # minutes of C++ code generation on two cores. (With inductor, and
    # torch._inductor.config.fallback_random for the posterior sample, it matched too.)
    monkeypatch.setattr(loop, "COMPILE_BACKEND", "aot_eager")
    common = [*tiny_overrides, "train.max_steps=2", "train.log_every=1", "train.eval_batches=1"]
    plain = train_losses([*common, f"output_dir={tmp_path / 'plain'}"])
    torch._dynamo.utils.counters.clear()
    compiled = train_losses([*common, "train.compile=true", f"output_dir={tmp_path / 'compiled'}"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert compiled == pytest.approx(plain, rel=1e-5)


def test_gradient_checkpointing_of_an_all_lstm_model_is_a_named_error(tiny_overrides):
    with pytest.raises(TextVAEError, match="'train.gradient_checkpointing': checkpoints Transformer blocks"):
        train(load_recipe(QUICKSTART, [*tiny_overrides, "train.gradient_checkpointing=true"]))


@pytest.mark.parametrize(("how", "overrides", "env"), [
    ("recipe key 'train.fsdp'", ["train.fsdp=true"], {}),
    ("accelerate launch --use_fsdp", [], {"ACCELERATE_USE_FSDP": "true"}),
])
def test_fsdp_without_a_gpu_is_one_line_that_says_why(tiny_overrides, monkeypatch, how, overrides, env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    recipe = load_recipe(QUICKSTART, [*tiny_overrides, *overrides])
    with pytest.raises(TextVAEError, match=f"^{how}: FSDP needs CUDA GPUs .* none is available"):
        train(recipe)
