"""``textvae train RECIPE [key=value ...]`` and ``textvae recipes``."""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from textvae.errors import TextVAEError
from textvae.training.recipe import load_recipe


def shipped_recipes_dir() -> Path:
    """The recipes installed with the package (``textvae.recipes``), wherever it is installed.

    A real directory is needed because a recipe names its ``base:`` by a relative path;
    pip unpacks wheels, so only a zip-imported textvae lacks one.
    """
    root = files("textvae.recipes")
    if not isinstance(root, Path):
        raise TextVAEError(f"the shipped recipes are inside an archive ({root}); install textvae with pip")
    return root


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (``quickstart``, ``ptb/lstm-invlip``) -> file, sorted by name."""
    root = shipped_recipes_dir()
    return {path.relative_to(root).with_suffix("").as_posix(): path for path in sorted(root.rglob("*.yaml"))}


def resolve_recipe_path(name: str) -> Path:
    """A path as given, else a shipped recipe by name (``quickstart``, ``ptb/lstm-invlip``)."""
    path = Path(name)
    root = shipped_recipes_dir()
    if path.exists() or path.suffix in (".yaml", ".yml") and not (root / name).exists():
        return path
    shipped = root / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return shipped if shipped.exists() else path


def describe(recipe: Path) -> str:
    """The first comment line of a recipe file: what it trains."""
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    path = resolve_recipe_path(args.recipe)
    if not path.exists():
        raise TextVAEError(f"recipe not found: {args.recipe} is neither a file nor a shipped recipe "
                           "(`textvae recipes` lists them)")
    recipe = load_recipe(path, overrides)
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
                        help="continue from the newest checkpoint of the run (or the one given)")
    parser.set_defaults(handler=run_train)

    listing = subparsers.add_parser("recipes", help="list the recipes shipped with textvae",
                                    description="The recipes installed with textvae, by the name `textvae train` takes.")
    listing.set_defaults(handler=run_recipes)
