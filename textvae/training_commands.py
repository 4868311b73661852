"""``textvae train RECIPE.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from textvae.recipe import load_recipe

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def resolve_recipe_path(name: str) -> Path:
    """A path as given, else a shipped recipe by name (``quickstart``, ``ptb/lstm-invlip``)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") and not (RECIPES_DIR / name).exists():
        return path
    shipped = RECIPES_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return shipped if shipped.exists() else path


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    recipe = load_recipe(resolve_recipe_path(args.recipe), overrides)
    from textvae.training import train  # torch/accelerate import only when training

    train(recipe)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a sentence VAE from a YAML recipe",
        description="Train from a recipe. Overrides are key.path=value (YAML values), e.g. "
        "model.lipschitz=2 train.max_steps=500. For several processes/GPUs: "
        "accelerate launch -m textvae train RECIPE.yaml",
    )
    parser.add_argument("recipe", help="a recipe file, or a shipped recipe name such as quickstart or ptb/lstm-invlip")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|CHECKPOINT",
                        help="continue from the newest checkpoint of the run (or the one given)")
    parser.set_defaults(handler=run_train)
