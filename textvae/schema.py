"""Recipe sections as declarative dataclasses, validated by huggingface_hub.

A section is a ``@section("name")`` dataclass. huggingface_hub's strict dataclasses check
every field's type on construction and on every assignment, and run the value rules
declared on the field itself (``field(at_least(1), default=32)``); a rule across fields is
a ``validate_<key>`` method, run after construction and by ``section.validate()``. This
module adds what a recipe needs on top: the key of the first problem in a one-line
:class:`~textvae.errors.TextVAEError` (``recipe key 'data.batch_size': must be at least 1,
got 0``), and :func:`from_mapping`, which builds a section from YAML values.

A foundation module: each layer declares its own section (``data`` in
:mod:`textvae.data.config`, the training sections in :mod:`textvae.training.config`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from huggingface_hub.dataclasses import strict, type_validator, validated_field
from huggingface_hub.errors import (
    StrictDataclassClassValidationError,
    StrictDataclassFieldValidationError,
)

from textvae.errors import RetiredOptionWarning, TextVAEError

Rule = Callable[[Any], None]


# --------------------------------------------------------------------------- value rules


def at_least(minimum: float) -> Rule:
    """``value >= minimum`` (None passes: an unset optional key; NaN fails)."""

    def rule(value: Any) -> None:
        if value is not None and not value >= minimum:
            raise ValueError(f"must be at least {minimum}, got {value}" if minimum else f"must be >= 0, got {value}")

    return rule


def at_most(maximum: float) -> Rule:
    """``value <= maximum`` (None passes; NaN fails)."""

    def rule(value: Any) -> None:
        if value is not None and not value <= maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")

    return rule


def between(minimum: float, maximum: float) -> Rule:
    """:func:`at_least` ``minimum`` and :func:`at_most` ``maximum``: the message names the end that failed."""
    rules = at_least(minimum), at_most(maximum)

    def rule(value: Any) -> None:
        for check in rules:
            check(value)

    return rule


def in_interval(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """``low <= value <= high``, either end open (None passes; NaN fails)."""
    text = f"{'(' if open_low else '['}{_number(low)}, {_number(high)}{')' if open_high else ']'}"

    def rule(value: Any) -> None:
        if value is None:
            return
        if not low <= value <= high or (open_low and value == low) or (open_high and value == high):
            raise ValueError(f"must be in {text}, got {value}")

    return rule


def _number(value: float) -> str:
    """An interval's end as written: ints whole (``4294967295``, not ``4.29497e+09``)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def each(rule: Rule) -> Rule:
    """``rule`` for every item of a tuple value (``betas``)."""

    def check(value: Any) -> None:
        for item in value or ():
            rule(item)

    return check


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's (``accelerate.set_seed`` seeds numpy too; torch takes up to 2**64 - 1),
so a seed one command or recipe takes, every other takes."""
SEED = between(0, SEED_MAX)
"""The rule of every seed."""

# Caps of the integer keys and flags that have no tighter bound of their own.
MAX_TOKENS = 16384
"""A sentence's length in tokens (``data.max_length``, ``--max-length``): a sentence, not a book."""
MAX_BATCH = 4096
"""Sentences in one forward pass."""
MAX_VOCAB = 10_000_000
"""Entries of a trained tokenizer (the largest LM vocabularies hold a few hundred thousand)."""
MAX_COUNT = 10**9
"""Steps, epochs, sentences and intervals between events: beyond any run or corpus, short of the
64-bit overflow where schedules and samplers multiply them."""



def count(minimum: int) -> Rule:
    """An integer key that counts (steps, epochs, sentences): in [``minimum``, :data:`MAX_COUNT`]."""
    return between(minimum, MAX_COUNT)


INT64 = (-(2**63), 2**63 - 1)
"""The integers torch (and numpy) can hold: Python's are unbounded, so 10**30 would overflow the
first tensor or C call it reaches."""


def require_representable(key: str, value: Any) -> None:
    """Every number a recipe holds (a key's value or an item of its tuple) is one the machine can
    compute with: a finite float, an int within 64 bits.

    Applied to every key of every section and of ``model:``, whatever its own rule: NaN compares
    false with everything, so ``x < minimum`` rules let it through, inf overflows the first sum it
    enters, and an int past 64 bits the first tensor.
    """
    items = value if isinstance(value, (tuple, list)) else (value,)
    if any(isinstance(item, float) and not math.isfinite(item) for item in items):
        raise TextVAEError(f"recipe key '{key}': must be a finite number, got {value!r}")
    low, high = INT64
    if any(isinstance(item, int) and not low <= item <= high for item in items):
        raise TextVAEError(f"recipe key '{key}': must be a 64-bit integer, in [-2**63, 2**63 - 1], got {shown(value)}")


def field(*rules: Rule, **options: Any) -> Any:
    """A dataclass field with value ``rules`` (``default=``/``default_factory=`` as in dataclasses)."""
    return validated_field(list(rules), **options)


PATH_KINDS = ("input", "output", "checkpoint")


def path_field(kind: str, default: Any) -> Any:
    """A key whose value may name a file system path: ``input`` (read), ``output`` (written) or
    ``checkpoint`` (resumed). Marked so that every such key can be found (:func:`path_keys`) and
    tested as a file, a directory, missing and unwritable."""
    assert kind in PATH_KINDS, kind
    return validated_field([_not_blank], default=default, metadata={"path": kind})


def _not_blank(value: Any) -> None:
    if isinstance(value, str) and not value.strip():  # "" would silently mean the current directory
        raise ValueError(f"must not be empty, got {value!r}")


def path_keys(cls: type) -> dict[str, str]:
    """``key -> kind`` of a dataclass's :func:`path_field` keys."""
    return {f.name: f.metadata["path"] for f in dataclasses.fields(cls) if "path" in f.metadata}


# --------------------------------------------------------------------------- sections


def section(name: str) -> Callable[[type], type]:
    """Make ``cls`` a validated recipe section called ``name`` (errors read ``recipe key 'name.key'``).

    Class attributes ``RETIRED`` and ``RETIRED_VALUES`` (:func:`drop_retired`) name the keys and
    choices an earlier version took, so that a recipe (or an earlier export's) that still sets one
    is told so, not "unknown key"."""

    def wrap(cls: type) -> type:
        cls = strict(dataclasses.dataclass(cls))
        cls.NAME = name
        cls.RETIRED = getattr(cls, "RETIRED", {})
        cls.RETIRED_VALUES = getattr(cls, "RETIRED_VALUES", {})
        init, setattr_, validate = cls.__init__, cls.__setattr__, cls.validate

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with named_errors(cls, kwargs):
                init(self, *args, **kwargs)

        def __setattr__(self, key: str, value: Any) -> None:
            require_representable(f"{name}.{key}", value)
            with named_errors(cls, {key: value}):
                setattr_(self, key, value)

        def validate_all(self) -> None:
            """Run the rules across fields again (the field rules ran on every assignment)."""
            with named_errors(cls, {}):
                validate(self)

        cls.__init__, cls.__setattr__, cls.validate = __init__, __setattr__, validate_all
        return cls

    return wrap


@contextmanager
def named_errors(cls: type, values: dict[str, Any]) -> Iterator[None]:
    """Turn huggingface_hub's validation errors into one line naming the recipe key
    (``values``: what was being set, to show the offending one)."""
    try:
        yield
    except StrictDataclassFieldValidationError as exc:
        key = re.search(r"field '(\w+)'", str(exc)).group(1)
        if isinstance(exc.__cause__, TypeError):
            annotation = typing.get_type_hints(cls)[key]
            raise TextVAEError(f"recipe key '{cls.NAME}.{key}': expected {_describe(annotation)}, "
                               f"got {shown(values.get(key, '?'))}") from None
        raise TextVAEError(f"recipe key '{cls.NAME}.{key}': {exc.__cause__}") from None
    except StrictDataclassClassValidationError as exc:
        key = re.search(r"validator '?validate_(\w+)", str(exc)).group(1)
        raise TextVAEError(f"recipe key '{cls.NAME}.{key}': {exc.__cause__}") from None


def check_value(key: str, value: Any, annotation: Any, *rules: Rule) -> Any:
    """``value`` read from YAML for ``annotation`` (see :func:`from_yaml`), type-checked and held to
    ``rules``; for keys outside a section (the seed), with the same one-line error."""
    value = from_yaml(value, annotation)
    if isinstance(value, (list, dict)) and not _admits_container(annotation):
        # Refused before huggingface_hub's check, whose message holds repr(value): a YAML alias
        # bomb would take minutes and gigabytes to print.
        raise TextVAEError(f"recipe key '{key}': expected {_describe(annotation)}, got {shown(value)}")
    try:
        type_validator(key, value, annotation)
    except TypeError:
        raise TextVAEError(f"recipe key '{key}': expected {_describe(annotation)}, got {shown(value)}") from None
    for rule in rules:  # first: the key's own range says more than "64-bit"
        try:
            rule(value)
        except ValueError as exc:
            raise TextVAEError(f"recipe key '{key}': {exc}") from None
    require_representable(key, value)
    return value


ANY = object()
"""The neutral value of a retired option that changed nothing at any value (it applied only to a
retired variant)."""


def drop_retired(values: dict[str, Any], retired: dict[str, tuple[Any, str]],
                 retired_values: dict[str, dict[Any, str]], name: Callable[[str], str]) -> dict[str, Any]:
    """``values`` without the options of retired designs.

    ``retired``: ``key -> (neutral value, why it went and what replaced it)``; ``retired_values``:
    ``key -> {value: why}`` for the retired choices (strings) of a kept key. A retired key at its neutral
    value is what an earlier version wrote for a design that is kept (its resolved recipes and
    exports record every key), so it is dropped with one :class:`RetiredOptionWarning`; any other
    value, or a retired choice, is refused in one line naming it (``name(key)``) and its replacement.
    """
    ignored = []
    for key, value in values.items():
        if isinstance(value, str) and value in retired_values.get(key, {}):
            raise TextVAEError(f"{name(key)}: {value} was retired: {retired_values[key][value]}")
        if key in retired:
            neutral, why = retired[key]
            if neutral is not ANY and value != neutral:
                raise TextVAEError(f"{name(key)}: retired: {why}")
            ignored.append(name(key))
    if ignored:
        warnings.warn(RetiredOptionWarning(f"ignored {', '.join(ignored)}: retired, and set to the value under "
                                           "which it changed nothing"), stacklevel=2)
    return {key: value for key, value in values.items() if key not in retired}


def from_mapping(cls: type, values: Any) -> Any:
    """Build section ``cls`` from a YAML mapping: unknown keys and bad values are named."""
    if not isinstance(values, dict):
        raise TextVAEError(f"recipe section '{cls.NAME}' must be a mapping, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = drop_retired(values, cls.RETIRED, cls.RETIRED_VALUES, lambda key: f"recipe key '{cls.NAME}.{key}'")
    unknown = [key for key in values if key not in names]
    if unknown:
        raise TextVAEError(f"unknown recipe key '{cls.NAME}.{unknown[0]}' (known: {', '.join(sorted(names))})")
    return cls(**{key: check_value(f"{cls.NAME}.{key}", value, hints[key]) for key, value in values.items()})


def from_yaml(value: Any, annotation: Any) -> Any:
    """Undo what YAML 1.1 and hand-written recipes do to a value of type ``annotation``.

    An int where a float is meant (``lr: 1``), ``1e-4`` read as a string, a list for a
    tuple, and a bare ``no``/``yes`` read as a boolean where the choice is the word. Anything
    else is returned as it is, for the type check to judge.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return value if value is None or len(non_none) != 1 else from_yaml(value, non_none[0])
    if origin is Literal and isinstance(value, bool) and ("yes" if value else "no") in args:
        return "yes" if value else "no"
    if origin is tuple and isinstance(value, list) and len(value) == len(args):
        return tuple(from_yaml(v, a) for v, a in zip(value, args, strict=True))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def shown(value: Any) -> str:
    """``repr(value)`` cut short: a YAML alias bomb must not become a gigabyte error message."""
    return _SHORT.repr(value)


def _admits_container(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_admits_container(arg) for arg in typing.get_args(annotation))
    return origin in (tuple, list, dict) or annotation in (tuple, list, dict, Any)


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    return getattr(annotation, "__name__", str(annotation))
