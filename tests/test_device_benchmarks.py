"""What the prepared device call (benchmarks/device/) relies on, checked on CPU in seconds.

The call is made once, with no time to debug on the device: the PTB rows and their step
budget, the deadline that cuts a row without losing it, the commit recorded without git,
the speed options, a bare checkout finding its recipes, and run.sh refusing to run as if on
the device where it is not. Also the pretrained table's rows (benchmarks/pretrained/run.py),
which the same one-shot logic applies to: every row must be a valid recipe.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from textvae import resources
from textvae.errors import TextVAEError

REPO = Path(__file__).resolve().parents[1]


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ptb_run():
    return load("benchmarks/ptb/run.py", "textvae_ptb_run_benchmark")


@pytest.fixture(scope="module")
def pretrained_run():
    return load("benchmarks/pretrained/run.py", "textvae_pretrained_run_benchmark")


def overrides(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in args)


def test_gpu_budget_rows_are_every_recipe_the_three_L_and_the_wide_code(ptb_run):
    rows = ptb_run.runs([3.0, 10.0, 30.0], "gpu-budget", budget_steps=800)
    recipes = sorted(path.stem for path in (REPO / "recipes" / "ptb").glob("*.yaml") if path.stem != "base")
    assert sorted({recipe for _, recipe, _ in rows}) == recipes
    invlip = {name: overrides(extra) for name, recipe, extra in rows if recipe == "lstm-invlip"}
    assert sorted(float(o["model.lipschitz"]) for o in invlip.values()) == [3.0, 3.0, 10.0, 30.0]
    assert invlip["lstm-invlip (d=64, L=3)"] == {"model.latent_size": "64", "model.lipschitz": "3"}
    assert len({name for name, _, _ in rows}) == len(rows) == 14


def test_gpu_budget_scales_the_schedules_with_the_steps(ptb_run):
    shared = overrides(ptb_run.size_overrides("gpu-budget", 800))
    assert shared["train.max_steps"] == "800" and shared["train.eval_every"] == "100"
    assert shared["objective.kl_warmup_steps"] == "320" and shared["objective.kl_cycle_steps"] == "800"
    assert "model.hidden_size" not in shared  # literature sizes: the recipes' own networks
    assert overrides(ptb_run.size_overrides("gpu-budget")) == overrides(ptb_run.SIZES["gpu-budget"])
    rows = {name: overrides(extra) for name, _, extra in ptb_run.runs([10.0], "gpu-budget", budget_steps=800)}
    assert rows["lstm-pretrain-fb"] == {"objective.pretrain_steps": "400"}  # half the budget is the autoencoder
    assert rows["lstm-aggressive"]["train.aggressive_max_inner_steps"] == "30"
    assert overrides(ptb_run.size_overrides("cpu", 800))["train.max_steps"] == "2500"  # the budget is gpu-budget's


def test_every_gpu_budget_command_is_a_valid_recipe(ptb_run):
    """The device run trains every row at once: one bad override key would cost its row there."""
    from textvae.training.recipe import load_recipe

    for name, recipe, extra in ptb_run.runs([3.0, 10.0, 30.0], "gpu-budget"):
        loaded = load_recipe(REPO / "recipes" / "ptb" / f"{recipe}.yaml",
                             [*ptb_run.size_overrides("gpu-budget"), *extra])
        loaded.check()
        assert loaded.train.max_steps == ptb_run.GPU_BUDGET_STEPS, name
        own = load_recipe(REPO / "recipes" / "ptb" / f"{recipe}.yaml").model.latent_size  # 64 for interpolate
        assert loaded.model.latent_size == (64 if "d=64" in name else own), name


FAKE_TEXTVAE = """
import json, sys, time
from pathlib import Path
command = sys.argv[1]
if command == "train":
    run = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("output_dir=")))
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 250}) + "\\n")
    if "export=yes" in sys.argv:  # a validation exported the best model so far
        (run / "final").mkdir()
        (run / "final" / "train_summary.json").write_text(json.dumps({"best_step": 200}))
    time.sleep(60)  # past the deadline
else:
    Path(sys.argv[sys.argv.index("--output") + 1]).write_text(json.dumps({"nll_iw": 100.0}))
"""


def deadline_args(export: str) -> argparse.Namespace:
    """ptb/run.py's arguments for one row with a 2 s deadline; ``export=`` tells the fake trainer."""
    return argparse.Namespace(seed=0, size="gpu-budget", budget_steps=4, set=[f"export={export}"], iw_samples=5,
                              eval_batch_size=16, max_sentences=None, train_timeout=2.0)


def test_a_row_past_the_deadline_is_evaluated_from_its_best_export(ptb_run, tmp_path, monkeypatch):
    fake = tmp_path / "fake_textvae.py"
    fake.write_text(FAKE_TEXTVAE)
    monkeypatch.setattr(ptb_run, "TEXTVAE", [sys.executable, str(fake)])
    monkeypatch.setenv("TEXTVAE_CODE_VERSION", "abc1234")
    row = ptb_run.train_and_evaluate("lstm-lm", "lstm-lm", [], tmp_path, deadline_args("yes"),
                                     dict(os.environ, OMP_NUM_THREADS="1"))
    assert row["cut"] == "last logged step 250, best export at step 200"
    assert row["train_s"] == 2.0 and row["metrics"] == {"nll_iw": 100.0} and row["commit"] == "abc1234"
    with pytest.raises(SystemExit, match="before its first export"):
        ptb_run.train_and_evaluate("lstm-vae", "lstm-vae", [], tmp_path, deadline_args("no"),
                                   dict(os.environ, OMP_NUM_THREADS="1"))


def test_speed_options_of_the_device_call_parse():
    speed = load("benchmarks/speed.py", "textvae_speed_benchmark_device")
    args = speed.parse_args(["--device", "cuda", "--batch-size", "128", "--steps", "10", "--warmup", "3", "--iw-eval"])
    assert (args.batch_size, args.iw_eval, args.iw_samples, args.iw_sentences) == (128, True, 500, None)
    quick = speed.parse_args(["--quick", "--iw-eval"])
    assert quick.iw_samples <= 5 and quick.iw_sentences <= 20  # the smoke run stays seconds long


def test_a_bare_checkout_finds_its_recipes_and_corpus(monkeypatch):
    """Without an install (the device runs the checkout from PYTHONPATH) the two data
    packages do not exist; their folders at the top of the checkout are used instead."""
    def not_installed(package):
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)

    monkeypatch.setattr(resources, "files", not_installed)
    assert resources.shipped_directory("textvae.recipes", "recipes", "the shipped recipes") == REPO / "recipes"
    corpus = resources.shipped_directory("textvae.data.synthetic_corpus", "data/synthetic", "the embedded corpus")
    assert (corpus / "train.txt").is_file()
    with pytest.raises(TextVAEError, match="does not exist"):
        resources.shipped_directory("textvae.recipes", "no-such-folder", "the shipped recipes")


def test_another_missing_module_is_not_taken_for_a_bare_checkout(monkeypatch):
    def broken(package):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")

    monkeypatch.setattr(resources, "files", broken)
    with pytest.raises(ModuleNotFoundError, match="yaml"):
        resources.shipped_directory("textvae.recipes", "recipes", "the shipped recipes")


@pytest.mark.parametrize(("args", "message"), [([], "use --dry-run"), (["everything"], "usage")])
def test_run_sh_refuses_before_doing_anything(args, message, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "OUT"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "device" / "run.sh"), *args], capture_output=True,
                          text=True, env={**env, "WORK": str(tmp_path / "work")}, timeout=30)
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "work").exists()


def test_cut_note_reads_the_last_logged_step(ptb_run, tmp_path):
    """cut_note reads what the trainer writes: metrics.jsonl rows and, once exported, the summary."""
    (tmp_path / "final").mkdir()
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s}) for s in (100, 200)) + "\n")
    assert ptb_run.cut_note(tmp_path) == "last logged step 200, best export at step None"


def test_every_pretrained_row_names_its_lift_and_is_a_valid_recipe(pretrained_run):
    """Each invlip row names its lift, so a row means the same design whatever the recipes'
    defaults; the default path (pretrained/invlip) is the table's winner, the whitened output lift."""
    from textvae.training.recipe import load_recipe

    bench = pretrained_run
    rows = bench.rows([10.0, 30.0], sorted(bench.LIFTS))
    assert len({name for name, _, _ in rows}) == len(rows) == 2 + 2 * len(bench.LIFTS)
    for name, recipe, extra in rows:
        loaded = load_recipe(REPO / "recipes" / "pretrained" / f"{recipe}.yaml", extra)
        loaded.check()
        if recipe not in ("lm", "memory"):
            assert any(key.startswith("model.invlip_lift=") for key in extra), name
            assert loaded.model.lipschitz == float(name.rsplit("L=", 1)[1].rstrip(")")), name
    default = load_recipe(REPO / "recipes" / "pretrained" / "invlip.yaml").model
    assert (default.invlip_lift, default.invlip_state_size + default.latent_size) == ("output_whitened", 576)


def test_pretrained_interpolations_give_each_pair_and_decoding_its_steps(pretrained_run, tmp_path):
    """Both pairs come from one --from-file call per decoding; a lost block would shift the labels."""
    from tests.helpers_models import save_export, tiny_model, use_latent, word_tokenizer

    bench = pretrained_run
    pairs = [bench.PTB_PAIR, bench.DEMO_PAIR]
    model = tiny_model(word_tokenizer(set(" ".join(a + " " + b for a, b in pairs).split())))
    export = save_export(use_latent(model, [s for pair in pairs for s in pair]), tmp_path / "export", active_units=4)
    paths = bench.interpolations([{"name": "row", "recipe": "invlip", "run_dir": str(export)}], tmp_path)
    assert sorted(paths) == sorted(f"row, {pair}, {decoding}" for pair in ("PTB pair", "demo pair")
                                   for decoding in bench.DECODINGS)
    assert all(len(lines) == bench.STEPS for lines in paths.values())
    for pair, (a, b) in zip(("PTB pair", "demo pair"), pairs, strict=True):
        assert paths[f"row, {pair}, greedy"] == model.interpolate(a, b, steps=bench.STEPS, max_length=40)
        assert paths[f"row, {pair}, greedy, no repeated 3-gram"] == model.interpolate(
            a, b, steps=bench.STEPS, max_length=40, no_repeat_ngram_size=3)
