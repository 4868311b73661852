"""Exports that belong to something else, or are damaged: every way is refused in one line.

The ways enumerated: the model type (another library's ``config.json``), the tokenizer
(another corpus's of the same size, another size), the weights (each tensor missing, NaN or
infinite, of another shape, an extra one), and every file of an export damaged or missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers_models import offline_and_quiet, run_cli, save_export, tiny_model, word_tokenizer  # noqa: F401
from textvae.errors import TextVAEError
from textvae.hub.loading import load_model
from textvae.models.integrity import record_tokenizer


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A trainer-like export whose config records its tokenizer."""
    tokenizer = word_tokenizer()
    model = tiny_model(tokenizer)
    record_tokenizer(model.config, tokenizer, "synthetic")
    return save_export(model, tmp_path_factory.mktemp("export") / "final", active_units=4)


def copy(export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export, tmp_path / "copy"))


def rewrite_weights(directory: Path, change) -> None:
    weights = load_file(directory / "model.safetensors")
    change(weights)
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})


def refused(directory: Path, pattern: str) -> None:
    with pytest.raises(TextVAEError, match=pattern) as info:
        load_model(directory)
    assert "\n" not in str(info.value)


def test_an_intact_export_loads(export):
    model = load_model(export)
    assert model.config.tokenizer_fingerprint and model.config.tokenizer_corpus == "synthetic"


@pytest.mark.parametrize("model_type", ["bert", "gpt2", None])
def test_another_model_type_is_named(export, tmp_path, model_type):
    directory = copy(export, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config.pop("model_type") if model_type is None else config.update(model_type=model_type)
    (directory / "config.json").write_text(json.dumps(config))
    described = "no model_type" if model_type is None else f"a '{model_type}' model"
    refused(directory, rf"config.json describes {described}, not a textvae model: this checkpoint belongs to another")


@pytest.mark.parametrize("key, value", [("hidden_size", 100_000), ("vocab_size", 10**12), ("latent_size", 2**62),
                                        ("embedding_size", 10**7)])
def test_a_config_that_asks_for_more_memory_than_the_machine_has_is_refused_before_building(
        export, tmp_path, monkeypatch, key, value):
    import textvae.models.memory as memory

    directory = copy(export, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, key: value}))
    monkeypatch.setattr(memory, "memory_budget", lambda device: 2**30)  # 1 GiB: none of these may be built
    refused(directory, r"config.json describes a model of .* of weights, more than the 1.0 GiB this machine can give")


def test_a_tokenizer_of_another_corpus_with_the_same_size_is_refused(export, tmp_path):
    directory = copy(export, tmp_path)
    words = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    foreign = word_tokenizer([f"{word}x" for word in words if not word.startswith("<")])  # same size, other words
    foreign.save_pretrained(directory)
    refused(directory, r"the tokenizer files are not the ones the model was trained with \(config.json records the "
                       r"tokenizer of corpus 'synthetic'")


def test_a_tokenizer_of_another_size_is_refused(export, tmp_path):
    directory = copy(export, tmp_path)
    word_tokenizer(["just", "four", "words", "here"]).save_pretrained(directory)
    refused(directory, r"tokenizer has 8 tokens but the model was built for vocab_size=\d+")


def tensor_names(export: Path) -> list[str]:
    return sorted(load_file(export / "model.safetensors"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_each_non_finite_tensor_is_named(export, tmp_path, value):
    names = tensor_names(export)
    assert len(names) > 10
    for name in names:
        directory = tmp_path / name
        shutil.copytree(export, directory)

        def poison(weights, name=name):
            weights[name] = weights[name].clone().reshape(-1)
            weights[name][0] = value
            weights[name] = weights[name].reshape(load_file(export / "model.safetensors")[name].shape)

        rewrite_weights(directory, poison)
        refused(directory, rf"weight {name} holds 1 non-finite value")


def test_each_missing_tensor_is_named(export, tmp_path):
    for name in tensor_names(export):
        directory = tmp_path / name
        shutil.copytree(export, directory)
        rewrite_weights(directory, lambda weights, name=name: weights.pop(name))
        refused(directory, rf"tensor {name} missing from the weights \(it would be random\)")


def test_extra_and_mis_shaped_tensors_are_named(export, tmp_path):
    extra = copy(export, tmp_path)
    rewrite_weights(extra, lambda weights: weights.update({"bert.pooler.weight": torch.zeros(2, 2)}))
    refused(extra, r"tensor bert.pooler.weight in the weights but not in this model")
    shaped = tmp_path / "shaped"
    shutil.copytree(export, shaped)
    rewrite_weights(shaped, lambda weights: weights.update(
        {"decoder.embedding.weight": weights["decoder.embedding.weight"][:-1]}))
    refused(shaped, r"tensor decoder.embedding.weight \(\d+ x 16, the model has \d+ x 16\) of another shape")


DAMAGE = {
    "missing": lambda path: path.unlink(),
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
    "garbage": lambda path: path.write_bytes(b"\xff\xfe not what this file should hold \x00" * 4),
}


@pytest.mark.parametrize("how", DAMAGE)
def test_every_file_of_an_export_damaged_is_one_line_or_harmless(export, tmp_path, capsys, how):
    """Through `textvae sample` (loading) and `textvae reconstruct` (the generate commands' path)."""
    files = sorted(p.name for p in export.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "train_summary.json"} <= set(files)
    for name in files:
        directory = tmp_path / how / name
        shutil.copytree(export, directory)
        DAMAGE[how](directory / name)
        status, _, err = run_cli(capsys, "sample", directory, "-n", "1", "--max-length", "4")
        errors = [line for line in err if line.startswith("textvae: error")]
        assert status in (0, 2) and len(errors) == (status == 2), (name, err)
        if name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert status == 2, (name, how)


@pytest.mark.parametrize("name", ["recipe.yaml", "metrics.jsonl"])
def test_evaluate_reads_damaged_metadata_in_one_line_or_without_it(export, tmp_path, capsys, name):
    directory = copy(export, tmp_path)
    (directory / "metrics.jsonl").write_text('{"step": 1, "split": "train", "elbo": -3.0, "rec": -2.0, "kl": 1.0}\n')
    DAMAGE["garbage"](directory / name)
    status, _, err = run_cli(capsys, "evaluate", directory, "--corpus", "synthetic", "--max-sentences", "4",
                             "--iw-samples", "2", "--no-progress")
    errors = [line for line in err if line.startswith("textvae: error")]
    assert status in (0, 2) and len(errors) == (status == 2), err
    if name == "metrics.jsonl":  # the training log only decorates the results
        assert status == 0 and any("no training curves" in line for line in err)


def test_evaluate_never_writes_non_finite_figures(export, tmp_path, capsys):
    """Finite weights whose outputs overflow: the numbers would be NaN/inf, so nothing is written."""
    directory = copy(export, tmp_path)
    rewrite_weights(directory, lambda weights: weights.update(
        {name: torch.full_like(t, 3e38) for name, t in weights.items() if name.startswith("posterior.to_params")}))
    status, out, err = run_cli(capsys, "evaluate", directory, "--corpus", "synthetic", "--max-sentences", "4",
                               "--iw-samples", "2", "--no-progress", "--output", tmp_path / "eval.json")
    assert status == 2 and len(err) == 1 and out == ""
    assert "the evaluation gave non-finite numbers (" in err[0] and "no results were written" in err[0]
    assert not (directory / "evaluation.json").exists() and not (tmp_path / "eval.json").exists()


def test_evaluate_of_one_sentence_says_why_it_cannot(export, capsys):
    status, out, err = run_cli(capsys, "evaluate", export, "--corpus", "synthetic", "--max-sentences", "1",
                               "--iw-samples", "2", "--no-progress")
    assert status == 2 and err == ["textvae: error: an evaluation compares sentences (active units, mutual "
                                   "information) and needs at least 2, got 1"]


@pytest.mark.parametrize(("kind", "rows", "tokenizer_kind"), [("llama", -3, None), ("llama", 64, "gpt2")],
                         ids=["smaller", "another-models-tokenizer"])
def test_training_on_a_backbone_that_does_not_match_its_tokenizer_is_refused(backbones, tmp_path, capsys, kind,
                                                                             rows, tokenizer_kind):
    """Before: an IndexError traceback (a smaller table), or a silent run on another model's ids (a larger one)."""
    from transformers import AutoTokenizer

    from tests.helpers_backbones import save_tiny_backbone

    table = len(AutoTokenizer.from_pretrained(backbones / kind)) + rows
    backbone = save_tiny_backbone(kind, tmp_path / "backbone", vocab_size=table, tokenizer_kind=tokenizer_kind)
    status, _, err = run_cli(capsys, "train", "quickstart", "data.corpus=synthetic", f"output_dir={tmp_path / 'run'}",
                             "data.tokenizer=decoder", "data.max_train_lines=64", "model.decoder_type=pretrained",
                             f"model.decoder_name_or_path={backbone}", "model.latent_size=4",
                             "model.invlip_state_size=8", "model.icnn_hidden_size=16", "train.max_steps=1",
                             "train.progress=false")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"textvae: error: model.decoder_name_or_path: '{backbone}' has an embedding table of "
                             f"{table} tokens but its tokenizer has ")
    assert not (tmp_path / "run").exists()


LABELLED = (Path(__file__).resolve().parents[2] / "data" / "synthetic" / "valid.txt").read_text().splitlines()[:4]


def labelled(i: int, tense: str = '"past"', name: str = "tense", text: str | None = None) -> str:
    """Line i of a labels file, written by hand (JSON itself cannot write NaN keys twice or 1e400)."""
    return f'{{"text": {json.dumps(text or LABELLED[i])}, {json.dumps(name)}: {tense}}}'


def good(i: int) -> str:
    return labelled(i, '"past"' if i % 2 else '"present"')


HOSTILE_LABELS = {
    "one-value": ([labelled(i) for i in range(4)], 'l.jsonl: attribute \'tense\' is "past" on all 4 lines'),
    "key-twice": ([good(0), good(1), labelled(2)[:-1] + ', "tense": "present"}', good(3)],
                  "l.jsonl:3: key 'tense' is given twice"),
    "text-twice": ([good(0), labelled(1)[:-1] + f', "text": {json.dumps(LABELLED[2])}}}', good(2), good(3)],
                   "l.jsonl:2: key 'text' is given twice"),
    "contradiction": ([good(0), good(1), labelled(2, '"past"', text=LABELLED[0]), good(3)],
                      f"l.jsonl:3: '{LABELLED[0]}' is labelled tense=\"past\" here but \"present\" on line 1"),
    "nan": ([good(0), labelled(1, "NaN"), good(2)], "l.jsonl:2: NaN is not a label value"),
    "infinity": ([good(0), labelled(1, "Infinity"), good(2)], "l.jsonl:2: Infinity is not a label value"),
    "-infinity": ([good(0), labelled(1, "-Infinity"), good(2)], "l.jsonl:2: -Infinity is not a label value"),
    "1e400": ([good(0), labelled(1, "1e400"), good(2)], "l.jsonl:2: 'tense' is a number beyond float range (inf)"),
    "-1e400": ([good(0), labelled(1, "-1e400"), good(2)], "l.jsonl:2: 'tense' is a number beyond float range (-inf)"),
    "huge-int": ([good(0), labelled(1, "1" + "0" * 5000), good(2)], "l.jsonl:2: not a JSON object (Exceeds the limit"),
    "cut-last-line": ([good(0), good(1), good(2)[:-5]], "l.jsonl:3: not a JSON object"),
    **{f"name-{label}": ([labelled(i, '"past"' if i % 2 else '"present"', name=name) for i in range(2)],
                         f"l.jsonl:1: attribute name {json.dumps(name)} cannot be written as `textvae edit --set")
       for label, name in [("=", "ten=se"), (",", "ten,se"), ("space", "ten se"), ("tab", "tense\t"),
                           ("empty", ""), ("blank", " ")]},
    **{f"value-{label}": ([good(0), labelled(1, json.dumps(value)), good(2)],
                          f"l.jsonl:2: 'tense' is {json.dumps(value)}, which `textvae edit --set tense=VALUE` cannot")
       for label, value in [("empty", ""), ("blank", "  "), ("leading", " past"), ("trailing", "past\n")]},
}


@pytest.mark.parametrize("case", HOSTILE_LABELS)
def test_labels_a_user_would_not_mean_are_refused_naming_the_file_and_line(export, tmp_path, capsys, case):
    """Before: each accepted without a word (NaN, 1e400, a key twice, a name --set cannot write, ...)."""
    lines, message = HOSTILE_LABELS[case]
    labels = tmp_path / "l.jsonl"
    labels.write_text("\n".join(lines) + ("" if case == "cut-last-line" else "\n"), encoding="utf-8")
    output = tmp_path / "vectors.safetensors"
    status, out, err = run_cli(capsys, "attributes", export, labels, "--output", output, "--min-count", "1")
    assert status == 2 and out == "" and len(err) == 1, err
    assert err[0].startswith(f"textvae: error: {tmp_path}/{message}"), err
    assert not output.exists()


def test_the_same_labels_written_well_are_stored(export, tmp_path, capsys):
    """The hostile files above differ from this one by their one fault."""
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(good(i) + "\n" for i in range(4)) + good(0) + "\n", encoding="utf-8")
    status, out, _ = run_cli(capsys, "attributes", export, labels, "--output", tmp_path / "v.safetensors",
                             "--min-count", "1")
    assert status == 0 and (tmp_path / "v.safetensors").is_file()
    assert "past (2), present (3)" in out  # a sentence repeated with its own labels counts each time


def test_the_library_refuses_an_attribute_with_a_single_value_too():
    from textvae.models.latents import AttributeVectors

    with pytest.raises(TextVAEError, match="^attribute 'tense' has a single value \\('past'\\): vectors of it tell "):
        AttributeVectors.fit(torch.zeros(3, 2), {"tense": ["past"] * 3})
