import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.data.tokenized import LengthPolicy, TokenRows

EOS = 7


def naive(rows: list[list[int]], policy: LengthPolicy) -> list[list[int]]:
    """The policy row by row, as the pipeline applied it before the arrays."""
    if policy.policy == "drop":
        return [row for row in rows if len(row) <= policy.limit]
    out = []
    for row in rows:
        if len(row) <= policy.limit:
            out.append(row)
        elif policy.eos_id is not None and row[-1] == policy.eos_id:
            out.append(row[: policy.limit - 1] + [policy.eos_id])
        else:
            out.append(row[: policy.limit])
    return out


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 9), max_size=12), max_size=20), max_length=st.integers(1, 8),
       added=st.integers(0, 2), policy=st.sampled_from(["truncate", "drop"]), eos=st.sampled_from([EOS, None]))
def test_the_vectorised_policy_is_the_row_by_row_one(rows, max_length, added, policy, eos):
    rule = LengthPolicy(max_length, policy, eos, added)
    flat = TokenRows.from_lists(rows)
    ids, lengths, kept = rule.apply(flat.ids, flat.lengths)
    got = TokenRows(ids, np.concatenate([[0], np.cumsum(lengths)]))
    assert list(got) == naive(rows, rule)
    assert kept.tolist() == [len(row) <= rule.limit or policy == "truncate" for row in rows]


def test_token_rows_index_like_lists():
    rows = [[1, 5, 2], [1, 2], [1, 7, 8, 9, 2]]
    flat = TokenRows.from_lists(rows)
    assert len(flat) == 3 and list(flat) == rows and flat[-1] == rows[-1]
    assert flat.gather([2, 0]) == [rows[2], rows[0]] and flat.lengths.tolist() == [3, 2, 5]
    assert flat == TokenRows.from_lists(rows) and flat != TokenRows.from_lists(rows[:2])
    assert isinstance(flat[0][0], int)
    with pytest.raises(IndexError):
        flat[3]
