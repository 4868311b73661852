"""Corpus statistics: the numbers to compare with a paper's data table before training.

Counts are of whitespace-separated tokens, the unit the published PTB/Yahoo/Yelp/SNLI
tables use, so a mismatch here means the files differ, not that a tokenizer does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textvae.data.corpora import resolve_corpus
from textvae.data.reading import SentenceStream, hf_split_streams

_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class SplitStats:
    name: str
    source: str
    lines: int
    tokens: int
    blank: int


@dataclass
class CorpusStats:
    source: str
    splits: list[SplitStats]
    word_types: int
    """Distinct tokens of the first split (train for a corpus)."""
    lengths: np.ndarray
    """Tokens per sentence of the first split."""

    def render(self, bins: int = 12, bar_width: int = 40) -> str:
        """A plain-text table followed by a length histogram with ``#`` bars."""
        first = self.splits[0].name
        w = max(len(s.name) for s in self.splits) + 2
        out = [self.source, f"{'split':<{w}}{'lines':>10}{'tokens':>14}{'blank':>8}"]
        out += [f"{s.name:<{w}}{s.lines:>10,}{s.tokens:>14,}{s.blank:>8,}" for s in self.splits]
        out.append(f"word types ({first}): {self.word_types:,}")
        out.append(f"sentence length in tokens ({first}; min {self.lengths.min()}, "
                   f"mean {self.lengths.mean():.1f}, max {self.lengths.max()}):")
        histogram = length_histogram(self.lengths, bins)
        peak = max(count for _, count in histogram)
        out += [f"  {label:>9} {count:>9,}  {'#' * round(bar_width * count / peak)}" for label, count in histogram]
        return "\n".join(out)


def length_histogram(lengths: np.ndarray, bins: int = 12) -> list[tuple[str, int]]:
    """``(label, count)`` per bin, from the shortest sentence up.

    The bin width is the smallest round number that fits the 99th percentile into
    ``bins`` bins; the last bin is open (``56+``) so one outlier cannot squash the rest.
    """
    lengths = np.asarray(lengths)
    low = int(lengths.min())
    span = int(np.percentile(lengths, 99)) - low + 1
    step = next((s for s in _STEPS if s * bins >= span), _STEPS[-1])
    index = np.minimum((lengths - low) // step, bins - 1)
    counts = np.bincount(index, minlength=bins)
    used = int(index.max()) + 1
    labels = [str(low + k * step) if step == 1 else f"{low + k * step}-{low + (k + 1) * step - 1}" for k in range(used)]
    if used == bins and lengths.max() >= low + bins * step:
        labels[-1] = f"{low + (bins - 1) * step}+"
    return list(zip(labels, counts[:used].tolist(), strict=True))


def corpus_stats(target: str | Path, data_dir: str | Path | None = None,
                 text_column: str | None = None) -> CorpusStats:
    """Statistics of a corpus directory, a registered corpus name or a single text file;
    with ``text_column``, of that column of a local Hugging Face dataset directory.

    The text is streamed: what is kept is one length per sentence and the first split's
    word types.
    """
    path = Path(target)
    if text_column is not None:
        streams = hf_split_streams(path, text_column)
    else:
        files = {path.name: path} if path.is_file() else resolve_corpus(target, data_dir)
        streams = {name: SentenceStream.from_file(file) for name, file in files.items()}
    splits, first = [], None
    for name, stream in streams.items():
        parts, types = [], set()
        for sentences, _ in stream:
            parts.append(np.fromiter((len(line.split()) for line in sentences), dtype=np.int32, count=len(sentences)))
            if first is None:
                types.update(" ".join(sentences).split())
        lengths = np.concatenate(parts).astype(np.int64)
        splits.append(SplitStats(name, stream.source, stream.lines_read, int(lengths.sum()), stream.blank_skipped))
        if first is None:
            first = lengths, len(types)
    source = str(path) if path.exists() else f"{target} ({Path(splits[0].source).parent})"
    return CorpusStats(source, splits, first[1], first[0])
