"""Training with pretrained backbones (tiny random GPT-2/Llama/BERT on disk): recipes, the
frozen-LM state cache, exports, resume, and the commands downstream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import assert_same_weights, copy_with_one_checkpoint
from textvae.errors import TextVAEError
from textvae.training.loop import train
from textvae.training.recipe import load_recipe


def overrides(backbones: Path, corpus_dir: Path, run_dir: Path, *extra: str, decoder: str = "llama") -> list[str]:
    return [f"data.corpus={corpus_dir}", f"output_dir={run_dir}", "data.max_train_lines=128",
            "data.batch_size=16", "data.max_length=20", "model.decoder_type=pretrained",
            f"model.decoder_name_or_path={backbones / decoder}", "model.encoder_type=pretrained",
            f"model.encoder_name_or_path={backbones / 'bert'}", "model.latent_size=4", "model.invlip_state_size=8",
            "model.icnn_hidden_size=16", "train.eval_batches=2", "train.progress=false", *extra]


def run(backbones, corpus_dir, run_dir, *extra, decoder="llama") -> Path:
    return train(load_recipe(None, overrides(backbones, corpus_dir, run_dir, *extra, decoder=decoder)))


def state_caches(root: Path) -> list[Path]:
    return sorted(p for p in (root / "lm-states").iterdir() if not p.name.startswith("."))


def test_a_frozen_lm_is_run_once_per_corpus_and_every_later_run_reads_its_states(
        backbones, corpus_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    first = run(backbones, corpus_dir, tmp_path / "a", "train.max_steps=4", f"train.state_cache_dir={cache}")
    assert "decoder states computed into" in capsys.readouterr().out
    assert len(state_caches(cache)) == 2  # train and valid
    run(backbones, corpus_dir, tmp_path / "b", "train.max_steps=4", f"train.state_cache_dir={cache}")
    assert capsys.readouterr().out.count("decoder states read from") == 2
    assert len(state_caches(cache)) == 2
    # Another corpus (or tokenizer, or LM) is another cache, never a stale one.
    run(backbones, corpus_dir, tmp_path / "c", "train.max_steps=2", f"train.state_cache_dir={cache}",
        "data.max_train_lines=64")
    assert len(state_caches(cache)) == 3
    assert (first / "final" / "model.safetensors").is_file()


def test_cached_states_are_the_lms_states_and_give_the_same_loss(backbones, corpus_dir, tmp_path):
    from tests.models.test_pretrained import build
    from textvae.padding import pad_ids
    from textvae.training.state_cache import open_or_build

    model = build(backbones, "llama").eval()
    ids = [model.tokenizer(s)["input_ids"] for s in ["the old dog saw a cat .", "he ran .", "she will not find it ."]]
    cache = open_or_build(model, ids, "train", tmp_path, progress=False)
    states = cache.features([2, 0])["decoder_states"]
    inputs = pad_ids([ids[2], ids[0]], model.config.pad_token_id)
    with torch.no_grad():
        live = model.decoder(inputs["input_ids"][:, :-1], None)
        torch.testing.assert_close(states[1, : len(ids[0]) - 1], live[1, : len(ids[0]) - 1].bfloat16().float())
        torch.testing.assert_close(states, live.bfloat16().float() * (states != 0))
        with_cache = model(**inputs, decoder_states=states, sample_posterior=False)
        without = model(**inputs, sample_posterior=False)
    torch.testing.assert_close(with_cache.rec_log_likelihood, without.rec_log_likelihood, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "manifest", "starts"])
def test_a_damaged_state_cache_is_reported_in_one_line_and_rebuilt(backbones, tmp_path, capsys, damage):
    from tests.models.test_pretrained import build
    from textvae.training.state_cache import open_or_build

    model = build(backbones, "llama").eval()
    ids = [model.tokenizer(s)["input_ids"] for s in ["the old dog saw a cat .", "he ran ."] * 20]
    cache = open_or_build(model, ids, "train", tmp_path, progress=False)
    want = cache.features(list(range(len(ids))))["decoder_states"].clone()
    directory = cache.directory
    del cache
    states = directory / "states.bin"
    if damage == "truncate":
        states.write_bytes(states.read_bytes()[:100])
    elif damage == "overwrite":
        data = bytearray(states.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        states.write_bytes(bytes(data))
    elif damage == "manifest":
        (directory / "manifest.json").write_text("{not json")
    else:
        (directory / "starts.bin").write_bytes(bytes(len((directory / "starts.bin").read_bytes())))
    capsys.readouterr()
    rebuilt = open_or_build(model, ids, "train", tmp_path, progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "rebuilding it" in lines[0] and directory.name in lines[0], lines
    assert rebuilt.built and torch.equal(rebuilt.features(list(range(len(ids))))["decoder_states"], want)


def test_a_frozen_lm_without_a_latent_is_exported_as_it_is(backbones, corpus_dir, tmp_path, capsys):
    run_dir = run(backbones, corpus_dir, tmp_path / "lm", "model.latent_path=none", "model.encoder_type=lstm")
    assert "nothing to train" in capsys.readouterr().out
    summary = json.loads((run_dir / "final" / "train_summary.json").read_text())
    assert summary["steps"] == 0 and np.isfinite(summary["valid"]["elbo"])
    from textvae.hub.loading import load_model

    assert load_model(run_dir).sample(1, max_length=3) is not None


@pytest.mark.parametrize("trainable", ["frozen", "lora"])
def test_resume_mid_run_is_exact(backbones, corpus_dir, tmp_path, trainable):
    extra = ["train.max_steps=6", "train.save_every=3", "train.keep_last=5", f"model.decoder_trainable={trainable}",
             "train.eval_every=3"]
    whole = run(backbones, corpus_dir, tmp_path / "whole", *extra)
    resumed = copy_with_one_checkpoint(whole, tmp_path / "resumed", 3)
    train(load_recipe(None, overrides(backbones, corpus_dir, resumed, *extra, "train.resume=auto")))
    assert_same_weights(whole, resumed, 6)


@pytest.mark.parametrize("extra, message", [
    (["data.tokenizer=word"], "data.tokenizer': a pretrained decoder models its own tokenizer's ids, which it implies"),
    (["objective.pretrain_steps=5"], "objective.pretrain_steps"),
    (["model.latent_path=concat"], "invlip, memory or none"),
    (["model.latent_path=memory", "train.gradient_checkpointing=true"], "train.gradient_checkpointing"),
])
def test_recipes_that_cannot_work_with_a_pretrained_decoder_are_refused(backbones, corpus_dir, tmp_path, extra, message):
    with pytest.raises(TextVAEError, match=message):
        load_recipe(None, overrides(backbones, corpus_dir, tmp_path / "x", *extra)).check()


def test_the_commands_downstream_take_a_pretrained_export(backbones, corpus_dir, tmp_path, capsys):
    from tests.helpers_models import run_cli

    run_dir = run(backbones, corpus_dir, tmp_path / "run", "train.max_steps=3", "model.latent_path=memory",
                  "model.decoder_trainable=lora", decoder="gpt2")
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--iw-samples", "3", "--max-sentences", "12",
                             "--no-progress", "--batch-size", "4")
    assert code == 0, err
    assert "PPL from IW-NLL, per word" in out and "PPL from IW-NLL, per decoder token" in out
    results = json.loads((run_dir / "final" / "evaluation.json").read_text())
    assert results["checkpoint"]["config"]["decoder"].startswith("pretrained ") and results["ppl_iw_word"] > 1
    code, out, err = run_cli(capsys, "interpolate", run_dir, "the old dog saw a cat .", "he ran .", "--steps", "3",
                             "--max-length", "5")
    assert code == 0 and len(out.splitlines()) == 3, err  # (a random tiny LM may decode empty sentences)
    code, out, _ = run_cli(capsys, "sample", run_dir, "-n", "2", "--decode", "beam", "--max-length", "4")
    assert code == 0 and len(out.splitlines()) == 2
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the old dog saw a cat .\nhe ran .\n")
    code, _, err = run_cli(capsys, "encode", run_dir, sentences, "-o", tmp_path / "codes.npy")
    assert code == 0 and np.load(tmp_path / "codes.npy").shape == (2, 4), err
    code, out, err = run_cli(capsys, "analogy", run_dir, "he ran .", "she ran .", "the old dog saw a cat .",
                             "--max-length", "5")
    assert code == 0, err


@pytest.mark.parametrize("trainable", ["lora", "full"])
def test_gradient_checkpointing_of_the_lm_gives_the_same_loss_and_gradients(backbones, trainable):
    from tests.models.test_pretrained import batch, build

    results = []
    for checkpointing in (False, True):
        model = build(backbones, "llama", decoder_trainable=trainable, seed=0).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(0)
        loss = model(**batch(model)).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.decoder.lm.modules())
    (plain_loss, plain), (checkpointed_loss, checkpointed) = results
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert checkpointed.keys() == plain.keys() and any("lora_" in n or ".lm." in n for n in plain)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


def test_two_processes_train_a_lora_decoder_under_ddp(backbones, corpus_dir, tmp_path):
    """accelerate launch with two CPU processes: the frozen base is left out of DDP's buckets,
    the adapters are synchronised, and the export is the same on disk as one process writes it."""
    import os
    import subprocess
    import sys

    from tests.training.conftest import textvae_command

    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               *textvae_command("train", "quickstart")[1:], *overrides(backbones, corpus_dir, run_dir, "train.max_steps=3",
                                                         "model.decoder_trainable=lora",
                                                         "data.tokenizer=decoder")]  # quickstart states word
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors.torch import load_file

    saved = load_file(run_dir / "final" / "model.safetensors")
    assert any("lora_" in k for k in saved) and not any(k.startswith("decoder.lm.") and "lora_" not in k for k in saved)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [3]


def test_word_dropout_trains_a_pretrained_decoder_and_drops_words_to_no_structural_token(
        backbones, corpus_dir, tmp_path):
    run_dir = run(backbones, corpus_dir, tmp_path / "llama", "train.max_steps=2", "objective.word_dropout=0.5")
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["unk_token_id"] not in {config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]}
    # The tiny GPT-2's word vocabulary has no token but its EOS to drop words to (a real one has '_').
    with pytest.raises(TextVAEError, match=r"'objective.word_dropout': the decoder's tokenizer has no token"):
        run(backbones, corpus_dir, tmp_path / "gpt2", "train.max_steps=2", "objective.word_dropout=0.5",
            decoder="gpt2")
    assert not (tmp_path / "gpt2").exists()
