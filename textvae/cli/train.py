"""``textvae train RECIPE [key=value ...]`` and ``textvae recipes``."""

from __future__ import annotations

import argparse
from pathlib import Path

from textvae.training.recipe import load_recipe, shipped_recipes, shipped_recipes_dir


def describe(recipe: Path) -> str:
    """The first comment line of a recipe file: what it trains."""
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    resume = args.resume
    if resume is not None and "=" in resume and not Path(resume).exists():
        overrides.append(resume)  # `--resume key=value`: an override after a bare --resume
        resume = "auto"
    if args.resume_inexact:
        resume = resume or "auto"
        overrides.append("train.resume_inexact=true")
    if resume is not None:
        overrides.append(f"train.resume={resume}")
    recipe = load_recipe(args.recipe, overrides)
    from textvae.training.loop import train  # torch/accelerate import only when training

    train(recipe)
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    recipes = shipped_recipes()
    width = max(map(len, recipes))
    for name, path in recipes.items():
        print(f"{name:<{width}}  {describe(path)}")
    print(f"\n{len(recipes)} recipes in {shipped_recipes_dir()}; run one with `textvae train NAME`")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``recipes``."""
    parser = subparsers.add_parser(
        "train",
        help="train a sentence VAE from a YAML recipe",
        description="Train from a recipe. Overrides are key.path=value (YAML values), e.g. "
        "model.lipschitz=2 train.max_steps=500. For several processes/GPUs: "
        "accelerate launch -m textvae train RECIPE.yaml",
    )
    parser.add_argument("recipe", help="a recipe file, or a shipped recipe name such as quickstart or "
                        "ptb/lstm-invlip (see `textvae recipes`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|CHECKPOINT",
                        help="continue from the newest intact checkpoint of the run (or the one given); a resume "
                        "that would not continue exactly is refused")
    parser.add_argument("--resume-inexact", action="store_true",
                        help="--resume, accepting a resume that cannot continue exactly (missing RNG, optimiser or "
                        "schedule state, other data or recipe values); the log says what differs")
    parser.set_defaults(handler=run_train)

    listing = subparsers.add_parser("recipes", help="list the recipes shipped with textvae",
                                    description="The recipes installed with textvae, by the name `textvae train` takes.")
    listing.set_defaults(handler=run_recipes)
