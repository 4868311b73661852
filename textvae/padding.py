"""The model's input format, ``<bos> w_1 ... w_n <eos>`` right-padded, built from id lists.

A foundation module: the data layer's batches and the model's own text API both pad
here, so the two cannot disagree about the format.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad id lists into ``input_ids`` and ``attention_mask``, both (B, T) int64."""
    lengths = torch.tensor([len(row) for row in rows])
    input_ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(row, dtype=torch.long) for row in rows], batch_first=True, padding_value=pad_id)
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def default_attention_mask(input_ids: torch.Tensor, pad_id: int | None, eos_id: int) -> torch.Tensor:
    """(B, T) 1 on the tokens of right-padded ``<bos> ... <eos>`` rows, 0 on the padding.

    With a pad id of its own, every non-pad token; where the pad id is also EOS (pretrained
    tokenizers without a pad token pad with EOS), everything up to the first EOS after BOS.
    """
    if pad_id is not None and pad_id != eos_id:
        return (input_ids != pad_id).long()
    eos = input_ids == eos_id
    eos[:, 0] = False  # BOS may be the EOS token (GPT-2's <|endoftext|>)
    after = eos.long().cumsum(dim=1) - eos.long()  # EOS tokens strictly before each position
    return (after == 0).long()
