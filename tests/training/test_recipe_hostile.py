"""Recipe values as an attacker writes them: every float key with NaN and infinities, every int
key with numbers past any bound (1e8, 10**30, 2**64, -1), and every key that names a path as a
file, a directory, missing, unwritable or empty. Each is either used or refused in one line
naming the key; none reaches torch or the file system as it is."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from textvae.errors import TextVAEError
from textvae.schema import path_keys
from textvae.training.recipe import SECTIONS, Recipe, load_recipe


def _holds(kind: type, annotation) -> bool:
    return annotation is kind or any(_holds(kind, arg) for arg in typing.get_args(annotation))


def keys_holding(kind: type) -> list[tuple[str, typing.Any]]:
    """Every ``kind``-valued recipe key (sections, the model's config, the top level) and its annotation."""
    keys = []
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        keys += [(f"{name}.{f.name}", hints[f.name]) for f in dataclasses.fields(cls) if _holds(kind, hints[f.name])]
    hints = typing.get_type_hints(Recipe)
    keys += [(key, hints[key]) for key in (f.name for f in dataclasses.fields(Recipe)) if _holds(kind, hints[key])]
    return keys


FLOAT_KEYS = keys_holding(float)
NON_FINITE = [".nan", ".inf", "-.inf", "nan", "inf", "-inf", "1e999"]


def test_the_float_keys_are_found():
    names = {key for key, _ in FLOAT_KEYS}
    assert {"optim.lr", "optim.betas", "optim.grad_clip", "objective.beta", "objective.kl_cycle_ratio",
            "model.lipschitz", "model.dropout_input", "model.posterior_bn_gamma"} <= names


@pytest.mark.parametrize("key, annotation", FLOAT_KEYS, ids=[key for key, _ in FLOAT_KEYS])
@pytest.mark.parametrize("bad", NON_FINITE)
def test_every_float_key_refuses_non_finite_values(key, annotation, bad):
    value = f"[0.9, {bad}]" if typing.get_origin(annotation) is tuple else bad
    with pytest.raises(TextVAEError, match=rf"recipe key '{key}': "):
        load_recipe(None, [f"{key}={value}"])


@pytest.mark.parametrize("key, annotation", FLOAT_KEYS, ids=[key for key, _ in FLOAT_KEYS])
def test_every_float_key_refuses_nan_set_from_python(key, annotation):
    recipe = load_recipe(None)
    section, _, name = key.rpartition(".")
    value = (0.9, math.nan) if typing.get_origin(annotation) is tuple else math.nan
    with pytest.raises(TextVAEError, match=rf"recipe key '{key}'"):
        setattr(getattr(recipe, section) if section else recipe, name, value)


# --------------------------------------------------------------------------- integers


INT_KEYS = [key for key, _ in keys_holding(int)]
HOSTILE_INTS = ["1e8", str(10**30), str(2**64), "-1"]
# The special-token ids of `model:` are replaced by the tokenizer's when the model is built.
REPLACED = {"model.pad_token_id", "model.bos_token_id", "model.eos_token_id", "model.unk_token_id"}


def test_the_int_keys_are_found():
    assert {"seed", "data.max_length", "data.batch_size", "data.vocab_size", "train.epochs", "train.max_steps",
            "objective.kl_cycle_steps", "optim.warmup_steps", "model.hidden_size", "model.decoder_layers",
            "model.max_position_embeddings", "model.icnn_layers"} <= set(INT_KEYS)


def assert_names(key: str, message: str) -> None:
    """``recipe key 'a.b': ...``, or the model's own check: ``recipe section 'model': ... b ...``."""
    section, _, name = key.rpartition(".")
    assert f"recipe key '{key}': " in message or (section == "model" and message.startswith(
        "recipe section 'model': ") and name in message), message


@pytest.mark.parametrize("key", INT_KEYS)
@pytest.mark.parametrize("value", HOSTILE_INTS)
def test_every_int_key_refuses_numbers_past_its_bound(key, value):
    """Refused when the recipe is read, before anything is built: 1e8 is YAML's string (not an
    int), 10**30 and 2**64 are past every cap and 64 bits, and no count, size or seed is negative."""
    if value == "-1" and key in REPLACED:
        pytest.skip("replaced by the tokenizer's id")
    with pytest.raises(TextVAEError) as info:
        load_recipe(None, [f"{key}={value}"])
    assert_names(key, str(info.value))


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_int_key_refuses_an_overflow_set_from_python(key):
    recipe = load_recipe(None)
    section, _, name = key.rpartition(".")
    with pytest.raises(TextVAEError) as info:
        if section:
            setattr(getattr(recipe, section), name, 10**30)
        else:
            setattr(recipe, name, 10**30)
            recipe.check()
    assert_names(key, str(info.value))


@pytest.mark.parametrize("override, message", [
    ("seed=4294967296", "recipe key 'seed': must be at most 4294967295, got 4294967296"),
    ("data.max_length=16385", "recipe key 'data.max_length': must be at most 16384, got 16385"),
    ("data.batch_size=4097", "recipe key 'data.batch_size': must be at most 4096, got 4097"),
    ("train.epochs=1000000001", "recipe key 'train.epochs': must be at most 1000000000, got 1000000001"),
    ("model.decoder_layers=1025", "recipe section 'model': decoder_layers must be at most 1024, got 1025"),
])
def test_the_caps_are_stated_and_their_values_taken(override, message):
    """One past each cap is refused naming the cap; the cap itself (the seed numpy takes last) is taken."""
    with pytest.raises(TextVAEError) as info:
        load_recipe(None, [override])
    assert str(info.value) == message
    key, _, value = override.partition("=")
    load_recipe(None, [f"{key}={int(value) - 1}"])


@pytest.mark.parametrize("override", ["model.hidden_size=100000000", "model.embedding_size=4611686018427387904"])
def test_a_model_that_cannot_fit_in_memory_is_refused_before_it_is_built(override, corpus_dir, tmp_path, capsys):
    """Counted on the meta device (a size past 64 bits overflows there), not allocated."""
    from textvae.cli import main

    status = main(["train", "quickstart", f"data.corpus={corpus_dir}", "data.max_train_lines=64", override,
                   "train.progress=false", f"output_dir={tmp_path / 'run'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("textvae: error")]
    assert status == 2 and len(err) == 1 and err[0].startswith("textvae: error: model: "), err
    assert "available on" in err[0] or "overflows 64 bits" in err[0]


# --------------------------------------------------------------------------- paths


def path_keys_of_recipe() -> dict[str, str]:
    keys = {key: kind for key, kind in path_keys(Recipe).items()}
    for name, cls in SECTIONS.items():
        keys.update({f"{name}.{key}": kind for key, kind in path_keys(cls).items()})
    return keys


PATH_KEYS = path_keys_of_recipe()
PATH_KINDS = ["file", "empty directory", "missing", "under a file", "read-only file system", "blank"]


def test_the_path_keys_are_found():
    assert PATH_KEYS == {"output_dir": "output", "data.corpus": "input", "data.data_dir": "input",
                         "data.hf_dataset": "input", "data.tokenizer": "input", "train.resume": "checkpoint",
                         "train.state_cache_dir": "output"}


def path_value(kind: str, tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not what was expected\n")
    (tmp_path / "empty").mkdir(exist_ok=True)
    return {"file": str(tmp_path / "a-file"), "empty directory": str(tmp_path / "empty"),
            "missing": str(tmp_path / "missing"), "under a file": str(tmp_path / "a-file" / "sub"),
            "read-only file system": "/sys/textvae-probe", "blank": ""}[kind]


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
@pytest.mark.parametrize("kind", PATH_KINDS)
def test_every_path_key_is_used_or_refused_in_one_line(key, kind, corpus_dir, tmp_path, capsys):
    """Through the command that reads the key: `data prepare` for data, `train` for the rest."""
    from textvae.cli import main

    if kind == "read-only file system" and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    value = path_value(kind, tmp_path)
    common = [f"data.corpus={corpus_dir}", "data.max_train_lines=64", "model.latent_size=4",
              "model.invlip_state_size=4", "model.hidden_size=16", "model.embedding_size=8",
              "model.icnn_hidden_size=8", "train.max_steps=1", "train.eval_batches=1", "train.progress=false",
              f"output_dir={tmp_path / 'run'}"]
    command = ["data", "prepare"] if key.startswith("data.") else ["train"]
    capsys.readouterr()
    status = main([*command, "quickstart", *common, f"{key}={value}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("textvae: error")]
    assert status in (0, 2)
    assert (status == 2) == bool(err) and len(err) <= 1
    if status == 2:
        assert key in err[0] or key.split(".")[-1] in err[0] or (value and value in err[0]), err[0]
    must_fail = {"file", "under a file", "read-only file system", "blank"}
    if kind in must_fail:
        assert status == 2, (key, kind)


@pytest.mark.parametrize("override, named", [
    ("optim.betas=[0.9, 1.0]", "recipe key 'optim.betas': must be in [0, 1), got 1.0"),
    ("optim.betas=[-0.1, 0.9]", "recipe key 'optim.betas': must be in [0, 1), got -0.1"),
    ("optim.momentum=-1", "recipe key 'optim.momentum': must be >= 0, got -1.0"),
])
def test_optimiser_values_torch_would_reject_are_named(override, named):
    with pytest.raises(TextVAEError) as info:
        load_recipe(None, [override])
    assert str(info.value) == named


# --------------------------------------------------------------------------- names too long, files too large

import os  # noqa: E402 -- with the tests below

TOO_LONG = {  # a path the file system cannot take
    "a name over NAME_MAX": lambda tmp: str(tmp / ("x" * (os.pathconf("/tmp", "PC_NAME_MAX") + 1))),
    "a path over PATH_MAX": lambda tmp: str(tmp / "/".join(["y" * 200] * (os.pathconf("/tmp", "PC_PATH_MAX") // 200 + 1))),
}


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
@pytest.mark.parametrize("kind", TOO_LONG)
def test_every_path_key_too_long_for_the_file_system_is_one_line_naming_it(key, kind, corpus_dir, tmp_path, capsys):
    from tests.training.conftest import TINY
    from textvae.cli import main

    value = TOO_LONG[kind](tmp_path)
    command = ["data", "prepare"] if key.startswith("data.") else ["train"]
    capsys.readouterr()
    status = main([*command, "quickstart", f"data.corpus={corpus_dir}", *TINY, "train.max_steps=1",
                   f"output_dir={tmp_path / 'run'}", f"{key}={value}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("textvae: error: ")]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert value in lines[0] and "File name too long" in lines[0], lines[0]


# Run in a child process: RLIMIT_FSIZE makes every write past LIMIT bytes fail with EFBIG
# (Python ignores SIGXFSZ), the way a full disk or a quota fails it, without filling a disk.
UNDER_A_SIZE_LIMIT = r"""
import contextlib, io, json, resource, sys
sys.path.insert(0, sys.argv[1])
from textvae.cli import main

results = []
for limit, argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY if limit is None else limit,
                                               resource.RLIM_INFINITY))
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""


def test_every_writing_command_under_a_file_size_limit_is_one_line(corpus_dir, tmp_path):
    import json
    import subprocess
    import sys

    from tests.training.conftest import REPO, TINY

    pytest.importorskip("resource")  # POSIX only
    recipe = ["quickstart", f"data.corpus={corpus_dir}", f"data.cache_dir={tmp_path / 'cache'}", *TINY,
              "train.max_steps=1"]
    unlimited = None
    evaluate = ["evaluate", str(tmp_path / "run"), "--iw-samples", "2", "--max-sentences", "8", "--no-progress",
                "--output"]
    commands = {  # what -> (file size limit, argv, the path the error must name)
        "data generate": (1000, ["data", "generate", "--out", str(tmp_path / "gen")], tmp_path / "gen"),
        "data prepare (cache)": (2000, ["data", "prepare", *recipe], tmp_path / "cache"),
        "(the cache, built)": (unlimited, ["data", "prepare", *recipe], None),
        "train (tokenizer)": (3000, ["train", *recipe, f"output_dir={tmp_path / 'a'}"], tmp_path / "a"),
        "train (checkpoint)": (20000, ["train", *recipe, f"output_dir={tmp_path / 'b'}"], tmp_path / "b"),
        "(a trained run)": (unlimited, ["train", *recipe, f"output_dir={tmp_path / 'run'}"], None),
        "(its test split cached)": (unlimited, [*evaluate, str(tmp_path / "first.json")], None),
        "evaluate --output": (200, [*evaluate, str(tmp_path / "eval.json")], tmp_path / "eval.json"),
    }
    plan = json.dumps([[limit, argv] for limit, argv, _ in commands.values()])
    done = subprocess.run([sys.executable, "-c", UNDER_A_SIZE_LIMIT, str(REPO), plan], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for (what, (_, _, named)), (status, err) in zip(commands.items(), json.loads(done.stdout.splitlines()[-1]), strict=True):
        lines = [line for line in err.splitlines() if line.startswith("textvae: error: ")]
        if named is None:
            assert status == 0, (what, err[-2000:])
            continue
        assert status == 2 and len(lines) == 1 and "Traceback" not in err, (what, err[-2000:])
        assert str(named) in lines[0] and "File too large" in lines[0], (what, lines[0])
