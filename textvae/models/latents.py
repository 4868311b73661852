"""Using the latent space: codes of many sentences, attribute vectors, edits and analogies.

A trained VAE is worth its code only if the code can be used: written out for another
tool, or moved to change one property of a sentence. Everything here goes through the
model's public text API (``encode``, ``decode``, ``config.latent_size``), so it works the
same for every decoder and tokenizer a :class:`~textvae.models.TextVAEModel` may have.

* :func:`encode_in_batches`, :func:`decode_in_batches`: posterior means and log-variances
  of any number of sentences, and the sentences of any number of codes.
* :class:`AttributeVectors`: for each labelled attribute (``tense``) and each of its values
  (``past``), the mean code of the sentences with that value, and how many there were.
  Moving a code by ``mean[target] - mean[current]`` is the attribute arithmetic of
  Optimus (Li et al. 2020); the current value is given or read off the nearest mean.
  Saved as one safetensors file (the means as tensors, values and counts in its header).
* :func:`edit` and :func:`analogy`: the same, sentence in, sentence out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textvae.atomic import write_bytes
from textvae.errors import InvalidArgument, TextVAEError

if TYPE_CHECKING:
    from textvae.models.modeling_textvae import TextVAEModel

Scalar = str | int | float | bool | None
ATTRIBUTES_FILE = "attributes.safetensors"
HEADER_KEY = "textvae_attributes"  # the safetensors metadata entry holding values, counts and provenance
FORMAT_VERSION = 1


class _Nearest:
    """The type of :data:`NEAREST`."""

    def __repr__(self) -> str:
        return "NEAREST"


NEAREST = _Nearest()
"""As a current value: each code's own, read off the nearest mean."""


def value_name(value: Scalar) -> str:
    """A label value as the command line writes it: strings as they are, the rest as JSON
    (``true``, ``3``, ``null``), so ``--set negation=true`` names the JSON ``true``."""
    return value if isinstance(value, str) else json.dumps(value)


def encode_in_batches(model: TextVAEModel, texts: Sequence[str], batch_size: int = 64,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior parameters ``(mu, logvar)``, each (N, d) float32 on the CPU, row i for ``texts[i]``.

    Args:
        batch_size: Sentences per ``model.encode`` call.
        progress: Draw a progress bar on stderr (when it is a terminal).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise InvalidArgument("batch_size", f"must be at least 1, got {batch_size}")
    mus, logvars = [], []
    with tqdm(total=len(texts), desc="encode", unit="sentence", disable=None if progress else True) as bar:
        for start in range(0, len(texts), batch_size):
            mu, logvar = model.encode(list(texts[start : start + batch_size]))
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
            bar.update(len(mu))
    d = model.config.latent_size
    if not mus:
        return torch.empty(0, d), torch.empty(0, d)
    return torch.cat(mus), torch.cat(logvars)


def decode_in_batches(model: TextVAEModel, z: torch.Tensor, batch_size: int = 256, progress: bool = False,
                      **decode_options: Any) -> list[str]:
    """``model.decode`` over the rows of ``z`` (N, d), ``batch_size`` rows at a time.

    ``decode_options`` are :meth:`~textvae.models.TextVAEModel.decode`'s; a ``seed`` seeds
    each batch alike, so sampled decodes depend on the batch size.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise InvalidArgument("batch_size", f"must be at least 1, got {batch_size}")
    out: list[str] = []
    with tqdm(total=len(z), desc="decode", unit="sentence", disable=None if progress else True) as bar:
        for start in range(0, len(z), batch_size):
            out += model.decode(z[start : start + batch_size], **decode_options)
            bar.update(min(batch_size, len(z) - start))
    return out


@dataclass
class AttributeVectors:
    """Mean codes per value of each attribute.

    Attributes:
        means: attribute -> (V, d) mean posterior mean of the sentences with each value.
        values: attribute -> its V values, ordered by :func:`value_name`.
        counts: attribute -> how many sentences each mean averages.
        info: provenance kept in the saved file (source files, minimum count, ...).
    """

    means: dict[str, torch.Tensor]
    values: dict[str, list[Scalar]]
    counts: dict[str, list[int]]
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, codes: torch.Tensor, labels: Mapping[str, Sequence[Scalar]], min_count: int = 1,
            info: Mapping[str, Any] | None = None) -> AttributeVectors:
        """The mean of ``codes`` (N, d) over the rows of each value of each attribute.

        Args:
            labels: attribute -> N values, one per row of ``codes``.
            min_count: Fewest rows a value may have: a mean over a handful of codes is
                mostly noise, and an edit towards it would say more about those few
                sentences than about the attribute.
        """
        if min_count < 1:
            raise InvalidArgument("min_count", f"must be at least 1, got {min_count}")
        if not labels:
            raise TextVAEError("no attributes to compute vectors for")
        codes = codes.float().cpu()
        means, values, counts = {}, {}, {}
        for attribute, column in labels.items():
            if len(column) != len(codes):
                raise TextVAEError(f"attribute '{attribute}' has {len(column)} values for {len(codes)} codes")
            values[attribute] = _distinct(attribute, column)
            index = _indices(values[attribute], column)
            count = torch.bincount(index, minlength=len(values[attribute]))
            rare = [(value_name(v), int(n)) for v, n in zip(values[attribute], count, strict=True) if n < min_count]
            if rare:
                seen = ", ".join(f"'{name}' {n}x" for name, n in rare)
                raise InvalidArgument("min_count", f"attribute '{attribute}' has values seen fewer than "
                                      f"{min_count} times ({seen}): give more labelled sentences or a lower minimum")
            sums = torch.zeros(len(count), codes.shape[1]).index_add_(0, index, codes)
            means[attribute] = sums / count.unsqueeze(1)
            counts[attribute] = count.tolist()
        return cls(means, values, counts, dict(info or {}))

    @property
    def latent_size(self) -> int:
        return next(iter(self.means.values())).shape[1]

    @property
    def attributes(self) -> list[str]:
        return list(self.means)

    def index(self, attribute: str, value: Scalar) -> int:
        """Position of ``value`` (or of its :func:`value_name`, as a command line gives it)."""
        names = [value_name(v) for v in self.values[self._known(attribute)]]
        wanted = value if isinstance(value, str) else value_name(value)
        if wanted not in names:
            raise TextVAEError(f"attribute '{attribute}' has no value '{wanted}' (stored: {', '.join(names)})")
        return names.index(wanted)

    def indices(self, attribute: str, column: Sequence[Scalar]) -> torch.Tensor:
        """(N,) position of each of N label values (all stored ones) among the attribute's values."""
        return _indices(self.values[self._known(attribute)], column)

    def _known(self, attribute: str) -> str:
        if attribute not in self.means:
            raise TextVAEError(f"unknown attribute '{attribute}' (stored: {', '.join(self.attributes)})")
        return attribute

    def predict(self, z: torch.Tensor, attribute: str) -> torch.Tensor:
        """(N,) index of the mean nearest to each row of ``z`` (N, d): the value a code most looks like."""
        return torch.cdist(z.float().cpu(), self.means[self._known(attribute)]).argmin(1)

    def direction(self, z: torch.Tensor, attribute: str, target: Scalar, current: Scalar | _Nearest = NEAREST,
                  strength: float = 1.0) -> torch.Tensor:
        """``strength * (mean[target] - mean[current])`` for every row of ``z`` (N, d): add it to ``z``.

        Args:
            current: The value the sentences have now (``None`` is the JSON ``null``);
                by default, :data:`NEAREST`, each row's nearest mean.
        """
        to = self.index(attribute, target)
        if isinstance(current, _Nearest):
            start = self.predict(z, attribute)
        else:
            start = torch.full((len(z),), self.index(attribute, current))
        means = self.means[attribute]
        delta = means[to].unsqueeze(0) - means[start]  # (N, d)
        return strength * delta.to(z.device, z.dtype)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write one safetensors file atomically: a crash leaves the old file or the new one."""
        from safetensors.torch import save

        header = {"version": FORMAT_VERSION, "info": self.info,
                  "attributes": {a: {"values": self.values[a], "counts": self.counts[a]} for a in self.means}}
        data = save({a: m.contiguous() for a, m in self.means.items()}, metadata={HEADER_KEY: json.dumps(header)})
        return write_bytes(path, data)

    @classmethod
    def load(cls, path: str | Path) -> AttributeVectors:
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise TextVAEError(f"{path}: no such file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})[HEADER_KEY])
                means = {a: handle.get_tensor(a) for a in header["attributes"]}
        except (SafetensorError, OSError, KeyError, ValueError, TypeError):
            raise TextVAEError(f"{path}: not a textvae attribute-vectors file") from None
        if header.get("version") != FORMAT_VERSION:
            raise TextVAEError(f"{path}: attribute-vectors format {header.get('version')} (this textvae reads "
                               f"{FORMAT_VERSION})")
        stored = header["attributes"]
        return cls(means, {a: s["values"] for a, s in stored.items()}, {a: s["counts"] for a, s in stored.items()},
                   header.get("info", {}))

    def check_model(self, model: TextVAEModel) -> None:
        """Refuse vectors computed with a code of another size."""
        if self.latent_size != model.config.latent_size:
            raise TextVAEError(f"the attribute vectors have {self.latent_size} dimensions, the model's code "
                               f"{model.config.latent_size}: they were computed with another model")


def _distinct(attribute: str, column: Sequence[Scalar]) -> list[Scalar]:
    """The distinct values of a column, ordered by name; a single value, or two that print alike, is refused."""
    by_key: dict[str, Scalar] = {}
    for value in column:
        by_key.setdefault(json.dumps(value), value)
    ordered = sorted(by_key.values(), key=value_name)
    if len(ordered) == 1:  # every code would sit nearest its one mean: accuracy 1.000, no edit possible
        raise TextVAEError(f"attribute '{attribute}' has a single value ('{value_name(ordered[0])}'): vectors of it "
                           "tell nothing apart; give sentences with other values too")
    names = [value_name(v) for v in ordered]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise TextVAEError(f"attribute '{attribute}' has two values written '{clash}' (a string and a JSON "
                           f"value): rename one")
    return ordered


def _indices(values: list[Scalar], column: Sequence[Scalar]) -> torch.Tensor:
    position = {json.dumps(v): i for i, v in enumerate(values)}
    return torch.tensor([position[json.dumps(v)] for v in column], dtype=torch.long)


# ---------------------------------------------------------------------- sentence level
def edit(model: TextVAEModel, vectors: AttributeVectors, sentences: Sequence[str] | str,
         changes: Mapping[str, Scalar], current: Mapping[str, Scalar] | None = None, strength: float = 1.0,
         **decode_options: Any) -> list[str]:
    """Decode each sentence's posterior mean moved towards the ``changes`` (attribute -> value).

    Args:
        current: attribute -> the value the sentences have now; attributes not named
            here are predicted per sentence from the nearest mean.
        strength: How far to move: 1 goes from one mean to the other.
        decode_options: :meth:`~textvae.models.TextVAEModel.decode`'s (``max_length``,
            ``num_beams``, ``do_sample``, ``seed``, ...).
    """
    vectors.check_model(model)
    if not changes:
        raise TextVAEError("edit needs at least one change (attribute -> target value)")
    current = dict(current or {})
    unknown = sorted(set(current) - set(changes))
    if unknown:
        raise TextVAEError(f"a current value is given for {', '.join(unknown)}, which no change names")
    mu, _ = model.encode([sentences] if isinstance(sentences, str) else list(sentences))
    z = mu.float().cpu()  # every current value is predicted from the unedited code
    moved = z + sum(vectors.direction(z, a, target, current.get(a, NEAREST), strength) for a, target in changes.items())
    if not bool(torch.isfinite(moved).all()):  # decoding infinities would print empty sentences
        raise InvalidArgument("strength", f"{strength:g} moves the codes past the largest float: use a smaller one")
    return model.decode(moved.to(mu.device, mu.dtype), **decode_options)


def analogy(model: TextVAEModel, a: Sequence[str] | str, b: Sequence[str] | str, c: Sequence[str] | str,
            **decode_options: Any) -> list[str]:
    """``a : b :: c : ?``, decoded from ``z_c + (z_b - z_a)`` (posterior means), row by row."""
    rows = [[s] if isinstance(s, str) else list(s) for s in (a, b, c)]
    if len({len(r) for r in rows}) != 1:
        raise TextVAEError(f"analogy needs as many A, B and C sentences (got {', '.join(str(len(r)) for r in rows)})")
    mu, _ = model.encode([s for r in rows for s in r])
    z_a, z_b, z_c = mu.view(3, len(rows[0]), -1)
    return model.decode(z_c + (z_b - z_a), **decode_options)
