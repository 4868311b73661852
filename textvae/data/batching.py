"""Length-bucketed batches that split evenly across processes.

Sentences vary from 1 to 80+ tokens; random batches are mostly padding. The sampler
shuffles, sorts by length inside large chunks (``bucket_batches`` batches each, so
batches are homogeneous but the epoch stays random), cuts batches, and shuffles their
order. It shards by rank itself and guarantees every rank the same number of batches
(collective ops in DDP hang otherwise) with every example exactly once per epoch.
The order is a pure function of ``(seed, epoch)``, which is what makes mid-epoch resume
exact: ``set_epoch(epoch, start_batch=k)`` replays the epoch from its ``k``-th batch.

Because it already shards, do not pass the resulting DataLoader through
``accelerator.prepare`` (that would shard again); move batches to the device instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from textvae.data.tokenized import TokenRows, as_token_rows
from textvae.errors import TextVAEError
from textvae.padding import pad_ids


def _balanced_count(count: int, n: int, num_replicas: int) -> int:
    """The batch count after balancing: the next multiple of ``num_replicas``, unless that
    needs more batches than examples (only with batch size 1): then the previous one."""
    target = -(-count // num_replicas) * num_replicas
    return target if target <= n else count // num_replicas * num_replicas


_SORT_BLOCK = 1 << 20  # positions sorted per call: bounds the sort's temporaries


def _sort_within_chunks(order: np.ndarray, lengths: np.ndarray, chunk: int) -> np.ndarray:
    """``order`` sorted by length (stably) within consecutive chunks of ``chunk`` positions.

    The same result as ``order[np.lexsort((lengths[order], np.arange(n) // chunk))]``,
    computed a block of whole chunks at a time on one combined integer key.
    """
    block = chunk * max(1, _SORT_BLOCK // chunk)
    span = int(lengths.max(initial=0)) + 1
    out = np.empty_like(order)
    for start in range(0, len(order), block):
        part = order[start : start + block]
        key = np.arange(len(part), dtype=np.int64) // chunk * span + lengths[part]
        out[start : start + block] = part[np.argsort(key, kind="stable")]
    return out


def _balance(batches: list[np.ndarray], n: int, num_replicas: int) -> list[np.ndarray]:
    """Make the batch count a multiple of ``num_replicas`` without dropping anything:
    split the largest batch in two until it fits, or, in the batch-size-1 corner, merge
    the two smallest."""
    target = _balanced_count(len(batches), n, num_replicas)
    batches = list(batches)
    while len(batches) < target:
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        half = len(batches[i]) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    while len(batches) > target:
        i, j = sorted(sorted(range(len(batches)), key=lambda k: len(batches[k]))[:2])
        batches[i] = np.concatenate([batches[i], batches.pop(j)])
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: this rank's share of one epoch's batches.

    Args:
        lengths: length of every example (any unit; only the order matters).
        batch_size: examples per batch (a few batches may be split in two to balance ranks).
        shuffle: random order per epoch; ``False`` gives the evaluation order: longest
            sentences first over the whole split (ties in index order), every epoch alike.
        seed: with the epoch, fixes the order.
        bucket_batches: sorting happens within chunks of ``bucket_batches * batch_size``.
        num_replicas, rank: the process group (``Accelerator().num_processes``/``process_index``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 bucket_batches: int = 50, num_replicas: int = 1, rank: int = 0) -> None:
        self.lengths = np.asarray(lengths)  # a memory-mapped array stays one (no copy)
        if self.lengths.dtype.kind not in "iu":
            self.lengths = self.lengths.astype(np.int64)
        n = len(self.lengths)
        if batch_size < 1:
            raise TextVAEError(f"data.batch_size must be at least 1, got {batch_size}")
        if bucket_batches < 1:
            raise TextVAEError(f"data.bucket_batches must be at least 1, got {bucket_batches}")
        if not 0 <= rank < num_replicas:
            raise TextVAEError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if n < num_replicas:
            raise TextVAEError(f"{n} examples cannot be shared by {num_replicas} processes")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_batches, self.num_replicas, self.rank = bucket_batches, num_replicas, rank
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate; skip its first ``start_batch`` batches (resume)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise TextVAEError(f"cannot resume at batch {start_batch}: an epoch has {self.batches_per_epoch}")
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank gets in a full epoch (the same on every rank)."""
        n = len(self.lengths)
        return _balanced_count(-(-n // self.batch_size), n, self.num_replicas) // self.num_replicas

    def epoch_arrays(self) -> list[np.ndarray]:
        """All ranks' batches of the current epoch, in order (rank ``r`` takes ``r::R``), as index arrays.

        Indices are int32 below 2^31 sentences: with the sort done in blocks, the epoch of a
        10M-sentence corpus costs about 100 MB, not the gigabyte of Python lists.
        """
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        if self.shuffle:
            # The same draws as rng.permutation(n), in half the memory.
            order = rng.permutation(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64))
            order = _sort_within_chunks(order, self.lengths, self.bucket_batches * self.batch_size)
        else:
            order = np.lexsort((np.arange(n), -self.lengths.astype(np.int64)))
        batches = np.split(order, np.arange(self.batch_size, n, self.batch_size))
        batches = _balance(batches, n, self.num_replicas)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def epoch_batches(self) -> list[list[int]]:
        """:meth:`epoch_arrays` as lists of ints."""
        return [b.tolist() for b in self.epoch_arrays()]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.epoch_arrays()[self.rank :: self.num_replicas]
        for batch in mine[self.start_batch :]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class Collator:
    """Right-pads a list of id lists into ``input_ids`` and ``attention_mask`` (both (B, T) int64)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        return pad_ids(batch, self.pad_id)


Features = Callable[[list[int]], dict[str, torch.Tensor]]


class IndexCollator:
    """A batch of sentence indices -> the padded ids, plus ``features(indices)`` when given
    (per-sentence tensors kept outside the id lists, such as cached decoder states)."""

    def __init__(self, ids: Sequence[Sequence[int]] | TokenRows, pad_id: int, features: Features | None = None) -> None:
        self.ids, self.pad, self.features = as_token_rows(ids), Collator(pad_id), features

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.pad(self.ids.gather(indices))
        if self.features is not None:
            batch.update(self.features(indices))
        return batch


def evaluation_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """A split's batches (lists of indices) in the evaluation order, longest sentences first.

    The order every evaluation number is computed in, whatever the number of processes:
    process ``r`` of ``R`` evaluates batches ``r::R`` of this one list (their counts need not
    match, evaluation runs no collective inside its loop). Pad them with :class:`Collator`.
    """
    return BucketBatchSampler(lengths, batch_size, shuffle=False).epoch_batches()


def make_dataloader(ids: Sequence[Sequence[int]] | TokenRows, batch_size: int, pad_id: int, *, shuffle: bool,
                    seed: int = 0, bucket_batches: int = 50, num_replicas: int = 1, rank: int = 0,
                    features: Features | None = None) -> DataLoader:
    """A DataLoader over ``ids`` with :class:`BucketBatchSampler` batches for this rank.

    Call ``loader.batch_sampler.set_epoch(epoch)`` before each epoch (and pass
    ``start_batch`` to resume mid-epoch). ``features`` adds per-sentence tensors to every
    batch (see :class:`IndexCollator`).

    The loader gets a generator of its own: every new DataLoader iterator draws a worker
    base seed, and from the global RNG that draw would shift the dropout masks of a run
    resumed mid-epoch (it opens one iterator more than the uninterrupted run).
    """
    rows = as_token_rows(ids)
    sampler = BucketBatchSampler(rows.lengths, batch_size, shuffle=shuffle, seed=seed,
                                 bucket_batches=bucket_batches, num_replicas=num_replicas, rank=rank)
    # The dataset is the indices themselves: the collator gathers each batch in one go.
    return DataLoader(range(len(rows)), batch_sampler=sampler, collate_fn=IndexCollator(rows, pad_id, features),
                      generator=torch.Generator().manual_seed(seed))
