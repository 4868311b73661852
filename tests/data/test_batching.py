import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.data.batching import BucketBatchSampler, Collator, evaluation_order, make_dataloader
from textvae.errors import TextVAEError


def lengths_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 60, size=n)


def epoch_indices(lengths, batch_size, replicas, **kw) -> list[list[list[int]]]:
    """Each rank's batches for one epoch."""
    return [list(BucketBatchSampler(lengths, batch_size, num_replicas=replicas, rank=r, **kw)) for r in range(replicas)]


def flat(per_rank) -> list[int]:
    return sorted(i for batches in per_rank for batch in batches for i in batch)


@pytest.mark.parametrize(("n", "replicas"), [(1, 1), (2, 2), (7, 1), (7, 2), (33, 2), (100, 2), (1001, 1), (1001, 2)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_once_per_epoch_and_equal_batch_counts(n, replicas, shuffle):
    per_rank = epoch_indices(lengths_of(n), 8, replicas, shuffle=shuffle, bucket_batches=3)
    assert flat(per_rank) == list(range(n))
    counts = [len(batches) for batches in per_rank]
    assert len(set(counts)) == 1
    assert counts[0] == BucketBatchSampler(lengths_of(n), 8, num_replicas=replicas).batches_per_epoch


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 17), replicas=st.integers(1, 5),
       bucket=st.integers(1, 6), seed=st.integers(0, 3), epoch=st.integers(0, 3))
def test_partition_property(n, batch_size, replicas, bucket, seed, epoch):
    lengths = lengths_of(n, seed)
    if n < replicas:
        with pytest.raises(TextVAEError, match=f"{n} examples cannot be shared by {replicas} processes"):
            BucketBatchSampler(lengths, batch_size, num_replicas=replicas)
        return
    samplers = [BucketBatchSampler(lengths, batch_size, seed=seed, bucket_batches=bucket, num_replicas=replicas, rank=r)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    per_rank = [list(s) for s in samplers]
    assert flat(per_rank) == list(range(n))
    assert {len(b) for b in per_rank} == {len(samplers[0])}
    assert all(len(batch) >= 1 for batches in per_rank for batch in batches)


def test_batches_are_length_homogeneous():
    lengths = lengths_of(5000)
    batches = list(BucketBatchSampler(lengths, 32))

    def padding(batches):
        return np.mean([1 - lengths[b].sum() / (len(b) * lengths[b].max()) for b in batches])

    rng = np.random.default_rng(1)
    random_batches = np.array_split(rng.permutation(len(lengths)), len(batches))
    assert padding(random_batches) > 0.4
    assert padding(batches) < 0.1


def test_order_depends_on_seed_and_epoch_only():
    lengths = lengths_of(500)
    a, b = BucketBatchSampler(lengths, 16, seed=3), BucketBatchSampler(lengths, 16, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(BucketBatchSampler(lengths, 16, seed=4)) != list(BucketBatchSampler(lengths, 16, seed=3))


def test_resume_mid_epoch_replays_the_rest():
    sampler = BucketBatchSampler(lengths_of(300), 16, seed=1, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert len(sampler) == len(full) - 3 and list(sampler) == full[3:]
    with pytest.raises(TextVAEError, match="cannot resume at batch 99"):
        sampler.set_epoch(2, start_batch=99)


def test_uneven_batch_count_is_balanced_by_splitting_not_dropping():
    per_rank = epoch_indices(np.full(5 * 10, 7), 10, 2, shuffle=False)  # 5 batches of 10 for 2 ranks
    sizes = sorted(len(b) for batches in per_rank for b in batches)
    assert sizes == [5, 5, 10, 10, 10, 10]


def test_batch_size_one_with_odd_count_merges():
    per_rank = epoch_indices(np.arange(1, 6), 1, 2)
    assert flat(per_rank) == [0, 1, 2, 3, 4] and [len(b) for b in per_rank] == [2, 2]


def test_collator_right_pads():
    batch = Collator(pad_id=0)([[1, 5, 2], [1, 2], [1, 7, 8, 9, 2]])
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[1, 5, 2, 0, 0], [1, 2, 0, 0, 0], [1, 7, 8, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_make_dataloader_yields_padded_batches_covering_the_data():
    ids = [[1] + [5] * k + [2] for k in range(1, 40)]
    loader = make_dataloader(ids, 4, pad_id=0, shuffle=True, seed=0, bucket_batches=2)
    loader.batch_sampler.set_epoch(1)
    rows = [row[row != 0].tolist() for batch in loader for row in batch["input_ids"]]
    assert sorted(rows, key=len) == ids
    assert len(loader) == 10


def test_opening_a_loader_leaves_the_global_rng_untouched():
    # A resumed run opens one iterator more than an uninterrupted one; if that drew from
    # the global RNG, every later dropout mask would differ.
    loader = make_dataloader([[1, 5, 2]] * 8, 4, pad_id=0, shuffle=True, seed=0)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    next(iter(loader))
    assert torch.equal(torch.rand(3), want)


def _two_process_worker(out_dir: str) -> None:
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    lengths = lengths_of(101)
    sampler = BucketBatchSampler(lengths, 8, seed=7, num_replicas=acc.num_processes, rank=acc.process_index)
    sampler.set_epoch(1)
    seen = [i for batch in sampler for i in batch]
    everything = gather_object([(acc.process_index, len(sampler), seen)])
    if acc.is_main_process:
        with open(f"{out_dir}/seen.json", "w") as f:
            json.dump(everything, f)


def test_two_processes_see_every_index_exactly_once(tmp_path, monkeypatch):
    from accelerate import debug_launcher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    debug_launcher(_two_process_worker, args=(str(tmp_path),), num_processes=2)
    results = json.loads((tmp_path / "seen.json").read_text())
    assert sorted(rank for rank, _, _ in results) == [0, 1]
    assert len({count for _, count, _ in results}) == 1
    assert sorted(i for _, _, seen in results for i in seen) == list(range(101))


def test_the_evaluation_order_is_longest_first_over_the_whole_split():
    lengths = lengths_of(1001)
    batches = evaluation_order(lengths, 64)
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(range(1001))  # every sentence once
    assert order == sorted(range(1001), key=lambda i: (-lengths[i], i))  # longest first, ties by index
    assert [len(b) for b in batches] == [64] * 15 + [41]
    assert evaluation_order(lengths, 64) == batches  # the same every time
