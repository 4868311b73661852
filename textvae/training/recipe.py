"""Recipes: the one place where YAML becomes typed objects.

A recipe is a YAML file with one section per layer: ``data`` (:mod:`textvae.data.config`),
``model`` (:data:`~textvae.models.configuration_textvae.ModelConfig`: the keyword arguments of
:class:`~textvae.models.TextVAEConfig`, so the model's config stays the single source of its
options; a pretrained decoder implies ``data.tokenizer: decoder``) and ``objective``/``optim``/``train``
(:mod:`textvae.training.config`). The sections are declarative dataclasses: each key's type
and value rule sit on its field (:mod:`textvae.schema`), so unknown keys, wrong types,
choices outside a ``Literal`` and values out of range are rejected in one line naming the
key, before anything is read or written. A recipe may start from another with ``base:
FILE`` (relative to its own directory; sections merge key by key, the recipe's own values
win), and ``key.path=value`` overrides from the command line merge in last, all before
that check. Wherever a recipe is taken, a shipped one can be named instead of a path
(``quickstart``, ``ptb/lstm-invlip``: :func:`resolve_recipe_path`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textvae.atomic import write_text
from textvae.data.config import DECODER_TOKENIZER, DataConfig
from textvae.errors import TextVAEError
from textvae.models.configuration_textvae import ModelConfig
from textvae.resources import shipped_directory
from textvae.schema import SEED, check_value, from_mapping, shown
from textvae.training.config import ObjectiveConfig, OptimConfig, TrainConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "objective": ObjectiveConfig, "optim": OptimConfig,
            "train": TrainConfig}
TOP_LEVEL_RULES = {"seed": (SEED,)}  # the sections' keys declare theirs on their fields


@dataclass
class Recipe:
    output_dir: str = field(default="runs/quickstart", metadata={"path": "output"})
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """The rules across keys and sections, for a recipe built or edited in Python (each
        key's own type and value rule already ran when it was set)."""
        if not str(self.output_dir).strip():
            raise TextVAEError("recipe key 'output_dir': must not be empty (it would be the current directory)")
        check_value("seed", self.seed, int, *TOP_LEVEL_RULES["seed"])
        for name in SECTIONS:
            getattr(self, name).validate()
        config = self.model
        config.to_config()  # the model's own rules across its options
        needs_encoder = [key for key, used in (("train.aggressive", self.train.aggressive),
                                               ("objective.pretrain_steps", self.objective.pretrain_steps > 0)) if used]
        if needs_encoder and config.latent_path == "none":
            raise TextVAEError(f"recipe key '{needs_encoder[0]}': needs an encoder, but model.latent_path is 'none'")
        pretrained = config.decoder_type == "pretrained"
        if pretrained != (self.data.tokenizer == DECODER_TOKENIZER):
            raise TextVAEError(
                "recipe key 'data.tokenizer': a pretrained decoder models its own tokenizer's ids, which it implies: "
                "leave data.tokenizer out" if pretrained else
                f"recipe key 'data.tokenizer': {DECODER_TOKENIZER} is a pretrained decoder's own tokenizer, but "
                f"model.decoder_type is {config.decoder_type}")
        if pretrained and self.objective.pretrain_steps:
            raise TextVAEError("recipe key 'objective.pretrain_steps': Li et al.'s recipe re-initialises the decoder "
                               "after its autoencoder phase, which would throw a pretrained decoder away")
        if self.train.gradient_checkpointing and config.latent_path == "memory":
            raise TextVAEError("recipe key 'train.gradient_checkpointing': transformers' checkpointed layers drop the "
                               "key/value cache that carries z on the memory path; turn it off or use invlip")
        if self.train.gradient_checkpointing and not {"transformer", "pretrained"} & {config.encoder_type, config.decoder_type}:
            raise TextVAEError("recipe key 'train.gradient_checkpointing': checkpoints Transformer blocks, but "
                               "model.encoder_type and model.decoder_type are both 'lstm'")


def _build(values: Any) -> Recipe:
    if not isinstance(values, dict):
        raise TextVAEError(f"a recipe must be a mapping, got {shown(values)}")
    hints = typing.get_type_hints(Recipe)
    kwargs = {}
    for key, value in values.items():
        if key in SECTIONS:
            kwargs[key] = from_mapping(SECTIONS[key], value)
        elif key in hints:
            kwargs[key] = check_value(key, value, hints[key], *TOP_LEVEL_RULES.get(key, ()))
        else:
            raise TextVAEError(f"unknown recipe key '{key}' (known: {', '.join(sorted(hints))})")
    recipe = Recipe(**kwargs)
    recipe.model.to_config()  # the model's own rules across its options, before anything is read
    stated = isinstance(values.get("data"), dict) and "tokenizer" in values["data"]
    if recipe.model.decoder_type == "pretrained" and not stated:  # a pretrained decoder implies its tokenizer
        recipe.data.tokenizer = DECODER_TOKENIZER
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise TextVAEError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    if not key:
        raise TextVAEError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise TextVAEError(f"override '{text}': value is not valid YAML ({exc.problem})") from None
    return key.split("."), value


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file as a mapping, with its ``base:`` chain merged underneath it."""
    if not path.is_file():
        raise TextVAEError(f"recipe file not found: {path}" + (f" (the base of {chain[-1]})" if chain else ""))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise TextVAEError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError as exc:
        raise TextVAEError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(raw, dict):
        raise TextVAEError(f"{path}: a recipe must be a YAML mapping")
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str):
        raise TextVAEError(f"{path}: 'base' must be the path of another recipe, got {shown(base)}")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise TextVAEError(f"{path}: 'base: {base}' makes a cycle of recipes")
    return _merge(_read_yaml(base_path, (*chain, path.resolve())), raw)


def _merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in own.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def shipped_recipes_dir() -> Path:
    """The recipes installed with the package (``textvae.recipes``), wherever it is installed.

    A real directory is needed because a recipe names its ``base:`` by a relative path;
    pip unpacks wheels, so only a zip-imported textvae lacks one. A checkout run from
    ``PYTHONPATH`` without installing uses its own ``recipes/`` (:mod:`textvae.resources`).
    """
    return shipped_directory("textvae.recipes", "recipes", "the shipped recipes")


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (``quickstart``, ``ptb/lstm-invlip``) -> file, sorted by name."""
    root = shipped_recipes_dir()
    return {path.relative_to(root).with_suffix("").as_posix(): path for path in sorted(root.rglob("*.yaml"))}


def resolve_recipe_path(name: str | Path) -> Path:
    """A path as given, else a shipped recipe by name (``quickstart``, ``ptb/lstm-invlip``)."""
    path = Path(name)
    root = shipped_recipes_dir()
    if path.exists() or path.suffix in (".yaml", ".yml") and not (root / path).exists():
        return path
    shipped = root / (path if path.suffix in (".yaml", ".yml") else f"{path}.yaml")
    return shipped if shipped.is_file() else path


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (a path, or a shipped recipe's name) and its ``base:`` chain (or
    start from the defaults), merge overrides, validate."""
    if path is not None:
        path = resolve_recipe_path(path)
        if not path.exists():
            raise TextVAEError(f"recipe not found: {path} is neither a file nor a shipped recipe "
                               "(`textvae recipes` lists them)")
    raw: dict[str, Any] = {} if path is None else _read_yaml(Path(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise TextVAEError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return _build(raw)


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe (defaults filled in) as YAML."""
    data = recipe.to_dict()
    data["optim"]["betas"] = list(data["optim"]["betas"])
    write_text(path, yaml.safe_dump(data, sort_keys=False))
