"""Recipes: every shipped YAML validates; bad keys, types and overrides are named."""

import re
from pathlib import Path

import pytest

from textvae.errors import RetiredOptionWarning, TextVAEError
from textvae.training.recipe import (
    Recipe,
    dump_recipe,
    load_recipe,
    resolve_recipe_path,
    shipped_recipes_dir,
)

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml"))


def test_recipes_are_shipped():
    names = {p.relative_to(p.parents[1] if p.parent.name == "ptb" else p.parent).as_posix() for p in RECIPES}
    assert {"quickstart.yaml", "ptb/lstm-lm.yaml", "ptb/lstm-vae.yaml", "ptb/lstm-anneal.yaml",
            "ptb/lstm-cyclical.yaml", "ptb/lstm-freebits.yaml", "ptb/lstm-invlip.yaml",
            "ptb/transformer-invlip.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_builds_its_parts(path):
    from textvae.training.objectives import Objective

    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    recipe.check()  # the rules across sections too
    recipe.model.to_config()  # every model key is a real config option
    total_steps = recipe.train.max_steps or recipe.train.epochs * 1000  # a stand-in epoch of 1,000 steps
    Objective.from_config(recipe.objective, total_steps=total_steps)


def test_unknown_key_is_named():
    with pytest.raises(TextVAEError, match=r"unknown recipe key 'train\.epoch'"):
        load_recipe(None, ["train.epoch=3"])
    with pytest.raises(TextVAEError, match=r"unknown recipe key 'model\.hidden'"):
        load_recipe(None, ["model.hidden=3"])
    with pytest.raises(TextVAEError, match=r"unknown recipe key 'colour'"):
        load_recipe(None, ["colour=red"])


def test_wrong_type_is_named():
    with pytest.raises(TextVAEError, match=r"'data\.batch_size': expected int, got 'many'"):
        load_recipe(None, ["data.batch_size=many"])
    with pytest.raises(TextVAEError, match=r"'model\.lipschitz'"):
        load_recipe(None, ["model.lipschitz=[1, 2]"])
    with pytest.raises(TextVAEError, match=r"'train\.max_steps'"):
        load_recipe(None, ["train.max_steps=true"])


@pytest.mark.parametrize("override", [
    "objective.kl_schedule=bogus", "objective.free_bits_mode=foo", "optim.name=rmsprop", "optim.scheduler=step",
    "train.mixed_precision=fp8", "data.length_policy=cut", "model.latent_path=foo", "model.encoder_type=gru",
])
def test_a_choice_outside_its_options_is_named_with_the_options(override):
    key, value = override.split("=")
    with pytest.raises(TextVAEError, match=rf"'{key}': expected one of '.*', got '{value}'"):
        load_recipe(None, [override])


def test_mixed_precision_no_survives_yaml_reading_it_as_false(tmp_path):
    (tmp_path / "r.yaml").write_text("train:\n  mixed_precision: no\n")
    assert load_recipe(tmp_path / "r.yaml").train.mixed_precision == "no"
    assert load_recipe(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", r"'data\.batch_size': must be at least 1"),
    ("objective.kl_cycle_ratio=1.5", r"'objective\.kl_cycle_ratio': must be in \(0, 1\]"),
    ("optim.lr=-1", r"'optim\.lr': must be >= 0"),
    ("train.grad_accum=0", r"'train\.grad_accum': must be at least 1"),
    ("model.latent_size=0", r"'model': latent_size must be at least 1"),
    ("model.dropout_input=1.0", r"'model': dropout_input must be in \[0, 1\)"),
])
def test_a_value_out_of_range_is_named(override, message):
    with pytest.raises(TextVAEError, match=message):
        load_recipe(None, [override])


def test_a_section_built_in_python_is_held_to_the_same_rules():
    from textvae.training.config import TrainConfig

    with pytest.raises(TextVAEError, match=r"'train\.mixed_precision': expected one of 'auto', .*, got 'fp8'"):
        TrainConfig(mixed_precision="fp8")
    recipe = load_recipe(None)
    with pytest.raises(TextVAEError, match=r"'train\.epochs': must be at least 1, got 0"):
        recipe.train.epochs = 0
    recipe.optim.min_lr = 0.5  # a rule across keys runs when the recipe is checked
    with pytest.raises(TextVAEError, match=r"'optim\.min_lr': must be in \[0, optim.lr\], got 0.5"):
        recipe.check()


def test_overrides_merge_into_yaml_and_ints_widen_to_floats(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  batch_size: 8\nmodel:\n  lipschitz: 2.0\n")
    recipe = load_recipe(path, ["model.lipschitz=5", "optim.lr=1e-4", "train.max_steps=null"])
    assert recipe.data.batch_size == 8
    assert recipe.model.lipschitz == 5.0 and isinstance(recipe.model.lipschitz, float)
    assert recipe.optim.lr == 1e-4 and recipe.train.max_steps is None


def test_a_base_recipe_merges_under_the_recipe_and_the_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ndata:\n  batch_size: 8\n  max_length: 20\nmodel:\n  lipschitz: 2.0\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ndata:\n  batch_size: 16\n")
    recipe = load_recipe(tmp_path / "child.yaml", ["data.max_length=30"])
    assert (recipe.seed, recipe.data.batch_size, recipe.data.max_length) == (3, 16, 30)
    assert recipe.model.lipschitz == 2.0


def test_every_ptb_recipe_differs_from_the_shared_base_only_where_it_says():
    base = load_recipe(resolve_recipe_path("ptb/base"))
    invlip = load_recipe(resolve_recipe_path("ptb/transformer-invlip"))  # base -> lstm-invlip -> this
    assert invlip.optim == base.optim and invlip.data == base.data
    assert invlip.model.decoder_type == "transformer" and invlip.model.latent_path == "invlip"
    assert invlip.model.latent_size == base.model.latent_size == 32


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", r"recipe file not found: .*missing.yaml \(the base of .*a.yaml\)"),
    ("base: a.yaml\n", r"a.yaml: 'base: a.yaml' makes a cycle"),
    ("base: [1]\n", r"'base' must be the path of another recipe"),
])
def test_a_bad_base_is_named(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(TextVAEError, match=message):
        load_recipe(tmp_path / "a.yaml")


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(RECIPES[0], ["seed=7"])
    dump_recipe(recipe, tmp_path / "out.yaml")
    assert load_recipe(tmp_path / "out.yaml") == recipe


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  batch_size: [1,\n")
    with pytest.raises(TextVAEError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_recipe(path)
    with pytest.raises(TextVAEError, match="recipe not found: .*missing.yaml is neither a file nor a shipped recipe"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(TextVAEError, match="not of the form"):
        load_recipe(None, ["oops"])


def test_shipped_recipes_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe_path("quickstart") == shipped_recipes_dir() / "quickstart.yaml"
    assert resolve_recipe_path("ptb/lstm-invlip").as_posix().endswith("recipes/ptb/lstm-invlip.yaml")
    assert resolve_recipe_path("ptb/lstm-invlip").is_file()


def test_cli_train_names_an_unknown_recipe_and_where_the_shipped_ones_are_listed(capsys, tmp_path, monkeypatch):
    from textvae.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "ptb/lstm-invlib"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("textvae: error: recipe not found: ptb/lstm-invlib is neither a file nor a shipped recipe "
                   "(`textvae recipes` lists them)")


def test_cli_recipes_lists_every_shipped_recipe_with_its_first_comment(capsys):
    from textvae.cli import main

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert {"quickstart", "ptb/base", "ptb/lstm-invlip", "ptb/transformer-invlip"} <= set(listed)
    assert "inverse-Lipschitz" in listed["ptb/lstm-invlip"]
    assert lines[-1].startswith(f"{len(RECIPES)} recipes in ")


def test_cli_reports_unknown_key_in_one_line(capsys):
    from textvae.cli import main

    assert main(["train", "quickstart", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.epoch" in err


@pytest.mark.parametrize("override,replacement", [
    ("model.invlip_rotations=2", "drop the key"),
    ("model.invlip_condition_input=true", "latent_path=concat"),
    ("model.invlip_lift=plausible", "use frozen"),
    ("objective.lipschitz_start=0.5", "model.lipschitz from the first step"),
])
def test_a_retired_option_is_refused_naming_it_and_what_replaced_it(override, replacement):
    key = override.split("=")[0]
    with pytest.raises(TextVAEError, match=rf"^recipe key '{re.escape(key)}': .*retired.*{replacement}"):
        load_recipe(overrides=[override])


def test_a_retired_option_at_the_value_under_which_it_changed_nothing_is_dropped_with_a_warning():
    """What an earlier version's resolved recipe (an export's recipe.yaml) records for a kept design."""
    with pytest.warns(RetiredOptionWarning) as caught:
        recipe = load_recipe(overrides=["objective.lipschitz_start=null", "model.invlip_rotations=0"])
    assert [str(w.message).split(":")[0] for w in caught] == [
        "ignored recipe key 'objective.lipschitz_start'", "ignored recipe key 'model.invlip_rotations'"]
    assert not hasattr(recipe.model, "invlip_rotations")


@pytest.mark.parametrize("stated", [[], ["data.tokenizer=decoder"]])
def test_a_pretrained_decoder_implies_its_own_tokenizer(stated):
    recipe = load_recipe(None, ["model.decoder_type=pretrained", "model.decoder_name_or_path=some/lm", *stated])
    assert recipe.data.tokenizer == "decoder"


def test_decoder_tokenizer_without_a_pretrained_decoder_is_refused():
    with pytest.raises(TextVAEError, match="recipe key 'data.tokenizer': decoder is a pretrained decoder's own"):
        load_recipe(None, ["data.tokenizer=decoder"]).check()
