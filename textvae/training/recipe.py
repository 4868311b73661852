"""Recipes: the one place where YAML becomes typed objects.

A recipe is a YAML file with the sections below. Every key is checked against these
dataclasses (unknown keys, wrong types and choices outside a ``Literal`` are rejected with
the key named), then against each section's value rules (:meth:`Section.rules`), so a bad
recipe fails before anything is read or written. A recipe may start from another with
``base: FILE`` (relative to its own directory; sections merge key by key, the recipe's own
values win), and ``key.path=value`` overrides from the command line merge in last, all
before that check. The ``model`` section is checked
against :class:`~textvae.models.TextVAEConfig`'s own keyword arguments, so the model's
config stays the single source of its options.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from textvae.errors import TextVAEError

KLSchedule = Literal["constant", "linear", "cyclical"]
FreeBitsMode = Literal["dim", "total", "sentence"]


class Section:
    """A recipe section: typed fields (checked by :meth:`check`) plus value rules."""

    NAME: ClassVar[str]

    def rules(self) -> Iterator[tuple[str, bool, str]]:
        """``(key, holds, why)`` for every value rule the types cannot express."""
        return iter(())

    def check(self) -> None:
        """Raise :class:`TextVAEError` naming the first key whose type or value is wrong.

        Also run by the code that consumes a section, so a section built in Python
        (not from YAML) is held to the same rules.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(getattr(self, f.name), hints[f.name], f"{self.NAME}.{f.name}")
        for key, holds, why in self.rules():
            if not holds:
                raise TextVAEError(f"recipe key '{self.NAME}.{key}': {why}")


@dataclass
class DataConfig(Section):
    """Where the sentences come from and how they become batches."""

    NAME: ClassVar[str] = "data"

    corpus: str = "synthetic"
    """A registered corpus (``synthetic``, ``ptb``, ``yahoo``, ``yelp``, ``snli``) or a
    directory holding ``train.txt``/``valid.txt``/``test.txt`` (one sentence a line)."""
    data_dir: str | None = None
    """Where registered corpora live; else ``$TEXTVAE_DATA``, ``../shared/data``, ``~/.cache/textvae``."""
    hf_dataset: str | None = None
    """A local Hugging Face ``datasets`` directory (``save_to_disk``) or data-files folder; replaces ``corpus``."""
    text_column: str = "text"
    tokenizer: str = "word"
    """``word``, ``bpe``, ``unigram`` (trained on the train split) or a saved tokenizer directory."""
    vocab_size: int = 10000
    min_frequency: int = 1
    lowercase: bool = False
    max_length: int = 64
    """Longest sentence in tokens, BOS/EOS not counted."""
    length_policy: Literal["truncate", "drop"] = "truncate"
    """What happens to longer sentences: ``truncate`` or ``drop`` (both counted and reported)."""
    batch_size: int = 32
    max_train_lines: int | None = None
    """Use only the first N training sentences (quick runs)."""
    bucket_batches: int = 50
    """Length bucketing sorts within chunks of this many batches, then shuffles the batches."""

    def rules(self) -> Iterator[tuple[str, bool, str]]:
        yield "vocab_size", self.vocab_size >= 5, f"must be at least 5 (4 special tokens), got {self.vocab_size}"
        yield "min_frequency", self.min_frequency >= 1, f"must be at least 1, got {self.min_frequency}"
        yield "max_length", self.max_length >= 1, f"must be at least 1, got {self.max_length}"
        yield "batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"
        yield ("max_train_lines", self.max_train_lines is None or self.max_train_lines >= 1,
               f"must be at least 1, got {self.max_train_lines}")
        yield "bucket_batches", self.bucket_batches >= 1, f"must be at least 1, got {self.bucket_batches}"


@dataclass
class ObjectiveConfig(Section):
    """How the model's raw terms (log-likelihood, KL per dimension) become the loss."""

    NAME: ClassVar[str] = "objective"
    beta: float = 1.0
    kl_schedule: KLSchedule = "constant"
    """``constant`` (weight ``beta``), ``linear`` (He et al. 2019 warm-up from ``kl_start``) or
    ``cyclical`` (Fu et al. 2019)."""
    kl_start: float = 0.0
    kl_warmup_steps: int = 0
    kl_cycles: int = 4
    kl_cycle_ratio: float = 0.5
    kl_cycle_steps: int | None = None
    """Total steps the cycles span; defaults to the run's total steps."""
    free_bits: float = 0.0
    """Nats; 0 disables free bits."""
    free_bits_mode: FreeBitsMode = "dim"
    """``dim`` (Kingma et al. 2016, per dimension), ``total`` (a batch-level target rate) or
    ``sentence`` (Li et al. 2019's ``fb=2``: ``free_bits / d`` per dimension of every sentence)."""
    word_dropout: float = 0.0
    """Probability of replacing a decoder input token by ``<unk>`` (Bowman et al. 2016)."""
    lipschitz_start: float | None = None
    """If set, the inverse-Lipschitz constant L goes linearly from this to ``model.lipschitz``."""
    lipschitz_warmup_steps: int = 0
    pretrain_steps: int = 0
    """Li et al. (2019) phase 1: the first N steps train an autoencoder (KL weight 0); then the
    decoder is re-initialised, the optimiser restarted, and the KL and L schedules start from
    their step 0. 0 disables."""

    def rules(self) -> Iterator[tuple[str, bool, str]]:
        yield "beta", self.beta >= 0, f"must be >= 0, got {self.beta}"
        yield "pretrain_steps", self.pretrain_steps >= 0, f"must be >= 0, got {self.pretrain_steps}"
        yield "kl_start", self.kl_start >= 0, f"must be >= 0, got {self.kl_start}"
        yield "kl_warmup_steps", self.kl_warmup_steps >= 0, f"must be >= 0, got {self.kl_warmup_steps}"
        yield "kl_cycles", self.kl_cycles >= 1, f"must be >= 1, got {self.kl_cycles}"
        yield "kl_cycle_ratio", 0.0 < self.kl_cycle_ratio <= 1.0, f"must be in (0, 1], got {self.kl_cycle_ratio}"
        yield ("kl_cycle_steps", self.kl_cycle_steps is None or self.kl_cycle_steps >= 1,
               f"the cyclical schedule needs >= 1 step, got {self.kl_cycle_steps}")
        yield "free_bits", self.free_bits >= 0, f"must be >= 0 nats, got {self.free_bits}"
        yield "word_dropout", 0.0 <= self.word_dropout <= 1.0, f"must be in [0, 1], got {self.word_dropout}"
        yield ("lipschitz_start", self.lipschitz_start is None or self.lipschitz_start >= 0,
               f"must be >= 0, got {self.lipschitz_start}")
        yield ("lipschitz_warmup_steps", self.lipschitz_warmup_steps >= 0,
               f"must be >= 0, got {self.lipschitz_warmup_steps}")


@dataclass
class OptimConfig(Section):
    NAME: ClassVar[str] = "optim"
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 5.0
    """Global gradient-norm clip; 0 disables."""
    scheduler: Literal["constant", "plateau", "cosine"] = "constant"
    """``plateau``: He et al. 2019, decay on validation stalls."""
    warmup_steps: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 0.0

    def rules(self) -> Iterator[tuple[str, bool, str]]:
        yield "lr", self.lr >= 0, f"must be >= 0, got {self.lr}"
        yield "weight_decay", self.weight_decay >= 0, f"must be >= 0, got {self.weight_decay}"
        yield "grad_clip", self.grad_clip >= 0, f"must be >= 0 (0 disables), got {self.grad_clip}"
        yield "warmup_steps", self.warmup_steps >= 0, f"must be >= 0, got {self.warmup_steps}"
        yield "plateau_factor", 0.0 < self.plateau_factor <= 1.0, f"must be in (0, 1], got {self.plateau_factor}"
        yield "plateau_patience", self.plateau_patience >= 0, f"must be >= 0, got {self.plateau_patience}"
        yield "min_lr", 0 <= self.min_lr <= self.lr, f"must be in [0, optim.lr], got {self.min_lr}"


@dataclass
class TrainConfig(Section):
    NAME: ClassVar[str] = "train"
    epochs: int = 10
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides ``epochs``)."""
    grad_accum: int = 1
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """``auto``: bf16 on GPU, none on CPU (bf16 autocast crashes ``nn.LSTM`` there)."""
    eval_every: int = 0
    """Validate every N steps; 0 means once an epoch."""
    eval_batches: int | None = None
    """Cap the validation batches (quick runs)."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps; 0 means at every validation."""
    keep_last: int = 2
    early_stopping: int = 0
    """Stop after N validations without a better ELBO; 0 disables."""
    log_every: int = 20
    tensorboard: bool = False
    resume: str = "no"
    """``no``, ``auto`` (the newest checkpoint in the run directory, if any) or a checkpoint path."""
    overwrite: bool = False
    """Start afresh in an ``output_dir`` that holds an earlier run, deleting that run first."""
    progress: bool = True
    aggressive: bool = False
    """He et al. (2019) aggressive inference-network training: before each decoder step the
    encoder alone is updated on fresh batches until the loss stops improving; switched off at
    the first validation whose mutual information I(x; z) is not above the previous one."""
    aggressive_max_inner_steps: int = 100
    """Cap on the encoder-only steps before one decoder step (He et al. loop while ``sub_iter < 100``:
    at most 99)."""
    aggressive_check_every: int = 15
    """Encoder steps per window of the stopping rule: the loop stops when a window's loss per
    token is not below the previous window's (He et al.: 15)."""

    def rules(self) -> Iterator[tuple[str, bool, str]]:
        yield "epochs", self.epochs >= 1, f"must be at least 1, got {self.epochs}"
        yield ("aggressive_max_inner_steps", self.aggressive_max_inner_steps >= 1,
               f"must be at least 1, got {self.aggressive_max_inner_steps}")
        yield ("aggressive_check_every", self.aggressive_check_every >= 1,
               f"must be at least 1, got {self.aggressive_check_every}")
        yield "max_steps", self.max_steps is None or self.max_steps >= 1, f"must be at least 1, got {self.max_steps}"
        yield "grad_accum", self.grad_accum >= 1, f"must be at least 1, got {self.grad_accum}"
        for key in ("eval_every", "save_every", "keep_last", "early_stopping"):
            yield key, getattr(self, key) >= 0, f"must be >= 0, got {getattr(self, key)}"
        yield ("eval_batches", self.eval_batches is None or self.eval_batches >= 1,
               f"must be at least 1, got {self.eval_batches}")
        yield "log_every", self.log_every >= 1, f"must be at least 1, got {self.log_every}"


@dataclass
class Recipe:
    output_dir: str = "runs/quickstart"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Every section's types and value rules (a recipe built or edited in Python)."""
        for section in (self.data, self.objective, self.optim, self.train):
            section.check()
        validate_model_section(self.model)
        needs_encoder = [key for key, used in (("train.aggressive", self.train.aggressive),
                                               ("objective.pretrain_steps", self.objective.pretrain_steps > 0)) if used]
        if needs_encoder and self.model.get("latent_path") == "none":
            raise TextVAEError(f"recipe key '{needs_encoder[0]}': needs an encoder, but model.latent_path is 'none'")


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if isinstance(value, bool) and ("no" if not value else "yes") in args:
            value = "yes" if value else "no"  # YAML 1.1 reads a bare no/yes as a boolean
        if value in args:
            return value
        raise TextVAEError(f"recipe key '{key}': expected one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except TextVAEError:
                continue
        raise TextVAEError(f"recipe key '{key}': expected {_name(annotation)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TextVAEError(f"recipe key '{key}': expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_check_type(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is Any or (isinstance(annotation, type) and isinstance(value, annotation)
                             and not (annotation is int and isinstance(value, bool))):
        return value
    raise TextVAEError(f"recipe key '{key}': expected {_name(annotation)}, got {value!r}")


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise TextVAEError(f"recipe section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise TextVAEError(f"unknown recipe key '{prefix}{key}' (known: {', '.join(sorted(names))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        elif key == "model" and cls is Recipe:
            kwargs[key] = validate_model_section(value)
        else:
            kwargs[key] = _check_type(value, hint, prefix + key)
    built = cls(**kwargs)
    if isinstance(built, Section):
        built.check()
    return built


def validate_model_section(values: Any) -> dict[str, Any]:
    """Check ``model:`` keys and value types against ``TextVAEConfig``'s keyword defaults."""
    from textvae.models.configuration_textvae import TextVAEConfig

    if not isinstance(values, dict):
        raise TextVAEError(f"recipe section 'model' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(TextVAEConfig.__init__)
    known = sorted(k for k in inspect.signature(TextVAEConfig.__init__).parameters if k not in ("self", "kwargs"))
    out = {}
    for key, value in values.items():
        if key not in known:
            raise TextVAEError(f"unknown recipe key 'model.{key}' (known: {', '.join(known)})")
        out[key] = _check_type(value, hints[key], f"model.{key}")
    try:
        TextVAEConfig(**out)  # the config's own value checks (ranges)
    except ValueError as exc:
        raise TextVAEError(f"recipe section 'model': {exc}") from None
    return out


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
        raise TextVAEError(f"{path}: 'base' must be the path of another recipe, got {base!r}")
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


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe and its ``base:`` chain (or start from the defaults), merge overrides, validate."""
    raw: dict[str, Any] = {} if path is None else _read_yaml(Path(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise TextVAEError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return _build(Recipe, raw, "")


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe (defaults filled in) as YAML."""
    data = recipe.to_dict()
    data["optim"]["betas"] = list(data["optim"]["betas"])
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
